//! `vigil status`: what the controller says about its proxies and policies.
//!
//! Where the controller is: `--controller ADDR` (or `VIGIL_CONTROLLER_ADMIN`) is its admin
//! address, asked directly (local mode, a port-forward). Without it, the controller is
//! found through the API server of the chosen cluster (`--kubeconfig`, `--context`; `-n`
//! is Vigil's namespace, default `vigil-system`) and asked through the pod proxy — every
//! replica, merged ([`crate::controller_admin`]). With no cluster configuration at all
//! (no kubeconfig, not in a pod), it is local mode's default, `127.0.0.1:9191`.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use vigil_controller::status::StatusReport;

use crate::{
    check::chart,
    cluster::{ClusterArgs, ClusterError, runtime},
    controller_admin::{self, ProxySync},
    output::{Format, OutputArgs},
};

/// Local mode's admin address, used when neither `--controller` nor a cluster is given.
const LOCAL_ADMIN: &str = "127.0.0.1:9191";

/// Flags of `vigil status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The controller's admin address (its `--admin`, e.g. 127.0.0.1:9191 for local mode
    /// or a port-forward). Without it, the controller is found through the API server.
    #[arg(long, env = "VIGIL_CONTROLLER_ADMIN")]
    pub(crate) controller: Option<SocketAddr>,
    /// `-o table|json|yaml` (json and yaml: the controller's report as it sent it; merged
    /// when several replicas answer).
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

/// Where the report came from.
enum Origin {
    /// An admin address, asked directly.
    Direct(SocketAddr),
    /// Controller pods, through the API server.
    Cluster {
        url: String,
        namespace: String,
        pods: Vec<String>,
    },
}

const WORKLOAD_HEADER: [&str; 6] = [
    "WORKLOAD",
    "IDENTITY",
    "GEN",
    "APPLIED",
    "PROXY",
    "CERT EXPIRES",
];
const RESOURCE_HEADER: [&str; 6] = ["KIND", "NAME", "ACCEPTED", "TARGETS", "ENFORCING", "NOTES"];

pub(crate) fn run(a: StatusArgs, cluster: &ClusterArgs) -> Result<u8> {
    let (raw, origin) = runtime()?.block_on(report(a.controller, cluster))?;
    if a.out.format() != Format::Table {
        // As sent: a newer controller's extra fields survive.
        a.out.print(&raw, |_| ())?;
        return Ok(0);
    }
    let r: StatusReport =
        serde_json::from_value(raw).context("the controller's /status is not a status report")?;
    match origin {
        Origin::Direct(addr) => println!("controller {addr}"),
        Origin::Cluster {
            url,
            namespace,
            pods,
        } => println!(
            "controller {namespace}/{} through the API server at {url}",
            pods.join(", ")
        ),
    }
    print_table(&r);
    Ok(0)
}

/// The report, from the address given, else through the cluster, else from local mode's
/// default address.
async fn report(
    addr: Option<SocketAddr>,
    args: &ClusterArgs,
) -> Result<(serde_json::Value, Origin)> {
    let direct = |addr: SocketAddr| async move {
        let body = fetch(addr)
            .await
            .with_context(|| format!("querying the controller at {addr}"))?;
        let raw: serde_json::Value =
            serde_json::from_str(&body).context("the controller's /status is not JSON")?;
        Ok::<_, anyhow::Error>((raw, Origin::Direct(addr)))
    };
    if let Some(addr) = addr {
        return direct(addr).await;
    }
    let cluster = match args.connect().await {
        Ok(c) => c,
        // Nothing names a cluster and none is configured: local mode.
        Err(ClusterError::Config(_)) if args.kubeconfig.is_none() && args.context.is_none() => {
            return direct(LOCAL_ADMIN.parse()?).await;
        }
        Err(e) => return Err(e.into()),
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| chart::NAMESPACE.to_string());
    let replicas = controller_admin::replicas(&cluster, &namespace)
        .await
        .context("finding the controller through the API server (or pass --controller ADDR)")?;
    let pods = replicas.iter().map(|r| r.pod.clone()).collect();
    let raw = if replicas.len() == 1 {
        replicas
            .into_iter()
            .map(|r| r.raw)
            .next()
            .unwrap_or_default()
    } else {
        serde_json::to_value(controller_admin::merge(
            replicas.into_iter().map(|r| r.report).collect(),
        ))?
    };
    Ok((
        raw,
        Origin::Cluster {
            url: cluster.url,
            namespace,
            pods,
        },
    ))
}

fn print_table(r: &StatusReport) {
    println!(
        "generation {}  trust domain {}  roots {}  issuer expires {}",
        r.generation,
        r.trust_domain,
        r.bundle_roots,
        fmt_time(i64::try_from(r.issuer_not_after).unwrap_or(0))
    );
    println!();
    println!(
        "{:<28} {:<48} {:>6} {:>8} {:<10} {}",
        WORKLOAD_HEADER[0],
        WORKLOAD_HEADER[1],
        WORKLOAD_HEADER[2],
        WORKLOAD_HEADER[3],
        WORKLOAD_HEADER[4],
        WORKLOAD_HEADER[5]
    );
    for w in &r.workloads {
        let proxy = match controller_admin::sync(w, w.applied) {
            ProxySync::NotConnected => "offline",
            ProxySync::InSync => "in sync",
            ProxySync::Behind => "behind",
        };
        println!(
            "{:<28} {:<48} {:>6} {:>8} {:<10} {}",
            w.workload,
            w.identity.as_deref().unwrap_or("-"),
            w.generation,
            w.applied.map_or("-".to_string(), |g| g.to_string()),
            proxy,
            w.cert_not_after.map_or("-".to_string(), fmt_time)
        );
    }
    println!();
    println!(
        "{:<14} {:<36} {:<9} {:>7} {:>9}  {}",
        RESOURCE_HEADER[0],
        RESOURCE_HEADER[1],
        RESOURCE_HEADER[2],
        RESOURCE_HEADER[3],
        RESOURCE_HEADER[4],
        RESOURCE_HEADER[5]
    );
    for res in &r.resources {
        let notes = res
            .reason
            .iter()
            .chain(res.warnings.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "{:<14} {:<36} {:<9} {:>7} {:>9}  {}",
            res.kind,
            res.name,
            if res.accepted { "yes" } else { "NO" },
            res.targets,
            res.enforcing,
            notes
        );
    }
    for e in &r.source_errors {
        println!("\nsource error: {e}");
    }
}

async fn fetch(addr: SocketAddr) -> Result<String> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/status")
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
    Ok(String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned())
}

pub(crate) fn fmt_time(secs: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}
