//! `vigil check [--pre]`: can this cluster take Vigil (`--pre`, before `helm install`),
//! and is every part of an installed Vigil healthy (without `--pre`)? One line per check,
//! `✔` / `!` (warning) / `✘` with the fix under it; `-o json|yaml` for scripts; exit 0 if
//! no check failed, 1 if one did, 2 if the cluster could not be asked at all.
//!
//! ```text
//!   --pre      pre/version.rs    API server reachable, Kubernetes >= the chart's kubeVersion,
//!                                native sidecars (1.29+)
//!              pre/admission.rs  admissionregistration.k8s.io/v1 served
//!              pre/rbac.rs       SelfSubjectAccessReviews: may the caller create what the chart installs
//!              pre/existing.rs   Vigil not installed already
//!   installed  installed/crds.rs        the CRDs exist and are Established
//!              installed/controller.rs  Deployment ready, leader Lease held and fresh
//!              installed/webhook.rs     webhook configuration (webhook_reach.rs: its Service's endpoints, or URL),
//!                                       its caBundle holds the CA root the webhook's cert chains to
//!              installed/ca.rs          CA Secret present, root and issuer not expiring
//!              installed/pods.rs        every enrolled pod carries the injected proxy
//!              installed/policies.rs    no policy rejected; proxies enforcing each one (status)
//! ```
//!
//! Everything is read through the API server (the names are the chart's, `chart.rs`;
//! `-n` is the release namespace, default `vigil-system`). Whether each proxy applied the
//! latest snapshot is the controller's admin API (`vigil status`), which the API server
//! does not expose; the policies' `enforcingProxies` status is what is checked here.

pub(crate) mod chart;
pub(crate) mod installed;
mod pre;
pub(crate) mod report;

use anyhow::Result;
use clap::Args;

use crate::{
    cluster::{Cluster, ClusterArgs, ClusterError, runtime},
    output::OutputArgs,
};
use report::{Check, Report};

/// Flags of `vigil check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Before installing: can this cluster take Vigil (version, admission webhooks, RBAC
    /// to install, native sidecars)? Without it: is the installed Vigil healthy?
    #[arg(long)]
    pre: bool,
    /// `-o table|json|yaml`.
    #[command(flatten)]
    out: OutputArgs,
}

/// Runs the checks; the exit code is 1 if one failed.
pub(crate) fn run(a: CheckArgs, args: &ClusterArgs) -> Result<u8> {
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| chart::NAMESPACE.to_string());
    let report = runtime()?.block_on(async {
        let cluster = args.connect().await?;
        let mut report = Report {
            mode: if a.pre { "pre-install" } else { "installed" },
            cluster: cluster.url.clone(),
            namespace: namespace.clone(),
            ..Report::default()
        };
        let checks = if a.pre {
            pre::run(&cluster, &namespace).await?
        } else {
            installed::run(&cluster, &namespace).await?
        };
        report.extend(checks);
        Ok::<_, ClusterError>(report)
    })?;
    a.out.print(&report, |r| {
        for line in r.lines() {
            println!("{line}");
        }
    })?;
    Ok(report.exit_code())
}

/// A check that could not be made: a failure saying why, unless the API server is not
/// reachable at all, which ends the run (exit 2).
fn could_not(
    id: &'static str,
    title: &str,
    result: Result<Vec<Check>, ClusterError>,
) -> Result<Vec<Check>, ClusterError> {
    match result {
        Ok(checks) => Ok(checks),
        Err(e @ (ClusterError::Unreachable { .. } | ClusterError::Config(_))) => Err(e),
        Err(ClusterError::Forbidden { verb, what, .. }) => Ok(vec![Check::fail(
            id,
            title,
            format!("cannot check: you may not {verb} {what}"),
            format!(
                "run vigil check with a user who may {verb} {what} (a cluster admin, or a read-only role for it)"
            ),
        )]),
        Err(e) => Ok(vec![Check::fail(
            id,
            title,
            format!("cannot check: {e}"),
            "see the error; retry when the API server answers".to_string(),
        )]),
    }
}

/// `get` of one object, `None` if it does not exist.
async fn get_opt<K>(
    cluster: &Cluster,
    api: &kube::Api<K>,
    name: &str,
    what: &str,
) -> Result<Option<K>, ClusterError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| cluster.error(e, "get", what, None))
}
