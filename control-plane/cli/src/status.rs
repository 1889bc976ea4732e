//! `vigil status`: what the controller says about its proxies and policies.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use vigil_controller::status::StatusReport;

use crate::output::{Format, OutputArgs};

/// Flags of `vigil status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The controller's admin address (its `--admin`).
    #[arg(long, env = "VIGIL_CONTROLLER_ADMIN", default_value = "127.0.0.1:9191")]
    pub(crate) controller: SocketAddr,
    /// `-o table|json|yaml` (json and yaml: the controller's report as it sent it).
    #[command(flatten)]
    pub(crate) out: OutputArgs,
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

pub(crate) fn run(a: StatusArgs) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = rt
        .block_on(fetch(a.controller))
        .with_context(|| format!("querying the controller at {}", a.controller))?;
    if a.out.format() != Format::Table {
        // As sent: a newer controller's extra fields survive.
        let raw: serde_json::Value =
            serde_json::from_str(&body).context("the controller's /status is not JSON")?;
        a.out.print(&raw, |_| ())?;
        return Ok(0);
    }
    let r: StatusReport =
        serde_json::from_str(&body).context("the controller's /status is not a status report")?;
    print_table(&r);
    Ok(0)
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
        let proxy = match (w.connected, w.up_to_date) {
            (0, _) => "offline",
            (_, true) => "in sync",
            (_, false) => "behind",
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

fn fmt_time(secs: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}
