//! `vigil verify FROM TO`: is this edge of the mesh secure and open, live? One line per
//! check, `✔` / `!` / `✘` with the fix; `-o json|yaml`; exit 0 if no check failed, 1 if
//! one did, 2 if it could not be asked (usage, API server, no such pod).
//!
//! ```text
//!   FROM, TO ─ target.rs ─► pods ─ view.rs: each proxy's /config, /peers ──┐ (pods/proxy, through
//!                                  controller_admin: the controller's /status ┤  the API server)
//!              policy_source + local_policy (explain's evaluator) ─ verdict ──┴─► checks.rs ─► report
//! ```
//!
//! - in the mesh: the pod has the injected `vigil-proxy` and it is ready;
//! - in sync: the generation the proxy applied (its `/config`) is the controller's current
//!   one for that workload (`/status` of the replica the proxy is connected to); also
//!   fails on an invalid policy or a quarantine;
//! - SVIDs: SPIFFE ID, serial and expiry as each proxy shows them (never key material),
//!   and the ID is the one of the pod's service account;
//! - mTLS: FROM's proxy recorded an outbound mTLS connection to TO's SPIFFE ID and TO's
//!   proxy an inbound one from FROM's (`/peers`). Identities are per service account: the
//!   record says FROM's proxy spoke mTLS with a pod holding TO's identity, and TO's proxy
//!   with a pod holding FROM's;
//! - policy: the decision `vigil explain` makes for FROM's identity (unauthenticated if
//!   FROM is outside the mesh) to TO on `--port` (default: TO's first declared port) and
//!   `--method`/`--path`, with the policy and rule, from the cluster's policies.

mod checks;
mod target;
mod view;

use anyhow::{Context, Result, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde::Serialize;
use vigil_cert_authority::{SpiffeId, TrustDomain};
use vigil_controller::status::StatusReport;
use vigil_policy::model::DefaultPolicy;

use crate::{
    check::{
        chart,
        installed::pods::restart,
        report::{Check, check_lines, exit_code},
    },
    cluster::{Cluster, ClusterArgs, runtime},
    controller_admin,
    local_policy::{Case, Loaded, Verdict},
    output::OutputArgs,
    policy_source::SourceArgs,
};
use checks::{Role, Side, Sidecar};
use target::Target;

/// Flags of `vigil verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The caller: NAME (a pod), TYPE/NAME (pod, deploy, sts, ds), NAMESPACE/NAME (a pod)
    /// or NAMESPACE/TYPE/NAME; a workload stands for its first Ready pod.
    #[arg(value_parser = target::parse, value_name = "FROM")]
    from: Target,
    /// The callee, written the same way.
    #[arg(value_parser = target::parse, value_name = "TO")]
    to: Target,
    /// Port on TO (default: the first port its app container declares).
    #[arg(long)]
    port: Option<u16>,
    /// HTTP method (omit method and path for an opaque TCP connection).
    #[arg(long)]
    method: Option<String>,
    /// HTTP path (normalised first, as the proxy does).
    #[arg(long)]
    path: Option<String>,
    /// The namespace Vigil runs in (its controller is asked whether the proxies are in
    /// sync).
    #[arg(long, value_name = "NAMESPACE", default_value = chart::NAMESPACE)]
    vigil_namespace: String,
    /// Trust domain, used only when no proxy's certificate says it.
    #[arg(long, env = "VIGIL_TRUST_DOMAIN", default_value = "cluster.local", value_parser = crate::parse_trust_domain)]
    trust_domain: TrustDomain,
    /// `-o table|json|yaml`.
    #[command(flatten)]
    out: OutputArgs,
}

/// What `-o json|yaml` prints.
#[derive(Debug, Serialize)]
struct Report {
    /// The API server asked.
    cluster: String,
    from: SideReport,
    to: SideReport,
    /// The request judged.
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// The identity the policy was asked about (`unauthenticated` outside the mesh).
    caller: String,
    /// The decision, explained (none if it could not be made).
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<Verdict>,
    checks: Vec<Check>,
    failed: usize,
    warnings: usize,
}

/// FROM or TO in the report.
#[derive(Debug, Serialize)]
struct SideReport {
    /// As given.
    target: String,
    /// `namespace/pod` it resolved to.
    pod: String,
    /// What its proxy's admin port says (none outside the mesh).
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<view::ProxyView>,
}

/// Runs the checks; the exit code is 1 if one failed.
pub(crate) fn run(a: VerifyArgs, args: &ClusterArgs) -> Result<u8> {
    if a.method.is_none() && a.path.is_some() {
        bail!("--path needs --method");
    }
    let rt = runtime()?;
    let (url, from, to, from_pod, to_pod, controller) = rt.block_on(gather(&a, args))?;
    drop(rt);
    let port = match a.port {
        Some(p) => p,
        None => app_port(&to_pod).with_context(|| {
            format!("--port: {} declares no container port; pass --port", to.pod)
        })?,
    };
    // The cluster's policies, read and compiled as `vigil explain` does (its own
    // connection: the loader runs its own runtime).
    let td = [&to, &from]
        .iter()
        .find_map(|s| s.id().and_then(|id| SpiffeId::parse(id).ok()))
        .map_or_else(|| a.trust_domain.clone(), |id| id.trust_domain().clone());
    let caller = caller(&from, &from_pod, &td);
    let source = SourceArgs {
        dir: None,
        overlay: None,
    }
    .load(args)?;
    let loaded = Loaded::new(source, &td, DefaultPolicy::Deny);
    let case = Case {
        from: caller.clone(),
        to: to.pod.clone(),
        port,
        method: a.method.clone(),
        path: a.path.clone(),
        at: vigil_policy::unix_now(),
        ..Case::default()
    };
    let verdict = loaded.decide(&case).map_err(|e| format!("{e:#}"));
    let request = describe(port, a.method.as_deref(), a.path.as_deref(), &caller);
    let explain = format!(
        "vigil explain --from {caller} --to {} --port {port}{}",
        to.pod,
        a.method
            .as_deref()
            .map(|m| format!(" --method {m} --path {}", a.path.as_deref().unwrap_or("/")))
            .unwrap_or_default()
    );
    let mut checks = vec![checks::enrolled(&from), checks::enrolled(&to)];
    for side in [&from, &to] {
        checks.extend(checks::in_sync(side, &controller));
        checks.extend(checks::svid(side, vigil_policy::unix_now()));
    }
    checks.push(checks::mtls(&from, &to, port));
    checks.push(checks::policy(&from, &to, &request, &verdict, &explain));
    let failed = checks
        .iter()
        .filter(|c| c.outcome == crate::check::report::Outcome::Fail)
        .count();
    let warnings = checks
        .iter()
        .filter(|c| c.outcome == crate::check::report::Outcome::Warn)
        .count();
    let code = exit_code(&checks);
    let report = Report {
        cluster: url,
        from: side_report(&a.from, from),
        to: side_report(&a.to, to),
        port,
        method: a.method,
        path: a.path,
        caller,
        decision: verdict.ok(),
        checks,
        failed,
        warnings,
    };
    a.out.print(&report, |r| {
        println!(
            "vigil verify {} ({}) → {} ({}), {request}, on {}",
            r.from.target, r.from.pod, r.to.target, r.to.pod, r.cluster
        );
        for line in check_lines(&r.checks) {
            println!("{line}");
        }
        println!(
            "{} checks: {} failed, {} warnings",
            r.checks.len(),
            r.failed,
            r.warnings
        );
    })?;
    Ok(code)
}

/// The pods, their proxies and the controller's report.
async fn gather(
    a: &VerifyArgs,
    args: &ClusterArgs,
) -> Result<(String, Side, Side, Pod, Pod, Result<StatusReport, String>)> {
    let cluster = args.connect().await?;
    let from_pod = a.from.resolve(&cluster).await?;
    let to_pod = a.to.resolve(&cluster).await?;
    let from = side(&cluster, Role::From, &from_pod).await;
    let to = side(&cluster, Role::To, &to_pod).await;
    let controller = controller_admin::replicas(&cluster, &a.vigil_namespace)
        .await
        .map(|r| controller_admin::merge(r.into_iter().map(|r| r.report).collect()))
        .map_err(|e| format!("{e:#}"));
    Ok((cluster.url.clone(), from, to, from_pod, to_pod, controller))
}

/// A pod and its sidecar as its admin port shows it.
async fn side(cluster: &Cluster, role: Role, pod: &Pod) -> Side {
    let sidecar = match view::proxy_container(pod) {
        None => Sidecar::Missing,
        Some(_)
            if pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_none() =>
        {
            Sidecar::Unreadable(format!(
                "the pod is not running (phase {})",
                pod.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .unwrap_or("unknown")
            ))
        }
        Some(c) => match view::read(cluster, pod, c).await {
            Ok(v) => Sidecar::Seen(Box::new(v)),
            Err(e) => Sidecar::Unreadable(format!("{e:#}")),
        },
    };
    Side {
        role,
        pod: format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        restart: restart(pod),
        sidecar,
    }
}

/// Who FROM is to TO's policy: its certificate's SPIFFE ID; for an injected pod whose
/// proxy could not be read, its service account's; outside the mesh, `unauthenticated`.
fn caller(from: &Side, pod: &Pod, td: &TrustDomain) -> String {
    match (&from.sidecar, from.id()) {
        (_, Some(id)) => id.to_string(),
        (Sidecar::Missing, _) => "unauthenticated".into(),
        _ => format!(
            "spiffe://{td}/ns/{}/sa/{}",
            pod.namespace().unwrap_or_default(),
            from.service_account
        ),
    }
}

/// The first port the pod's app containers declare.
fn app_port(pod: &Pod) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .filter(|c| c.name != vigil_injector::sidecar::PROXY)
        .flat_map(|c| c.ports.iter().flatten())
        .find_map(|p| u16::try_from(p.container_port).ok())
}

/// `GET /orders/1 on port 8080 from spiffe://…` / `a TCP connection to port 5432 from …`.
fn describe(port: u16, method: Option<&str>, path: Option<&str>, caller: &str) -> String {
    match method {
        Some(m) => format!("{m} {} on port {port} from {caller}", path.unwrap_or("/")),
        None => format!("a TCP connection to port {port} from {caller}"),
    }
}

fn side_report(target: &Target, side: Side) -> SideReport {
    SideReport {
        target: target.to_string(),
        pod: side.pod,
        proxy: match side.sidecar {
            Sidecar::Seen(v) => Some(*v),
            _ => None,
        },
    }
}
