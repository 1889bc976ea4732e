//! `vigil check` after `helm install`: is every part of Vigil healthy? Each concern has
//! its file; a check the caller's RBAC does not allow is a failure saying which
//! permission is missing.

mod ca;
mod ca_secret;
mod controller;
mod crds;
pub(crate) mod pods;
mod policies;
mod proxies;
mod webhook;
mod webhook_reach;

use super::{could_not, report::Check};
use crate::cluster::{Cluster, ClusterError};

/// The post-install checks, in order. An unreachable API server is an error (exit 2).
pub(super) async fn run(cluster: &Cluster, namespace: &str) -> Result<Vec<Check>, ClusterError> {
    let crds = crds::check(cluster).await;
    // Kinds whose CRD is not served are not listed by the policy check.
    let served = crds.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
    let mut checks = could_not(crds::ID, crds::TITLE, crds.map(|(c, _)| c))?;
    checks.extend(could_not(
        controller::ID,
        controller::TITLE,
        controller::check(cluster, namespace).await,
    )?);
    let secret = ca_secret::read(cluster, namespace).await;
    let roots = secret
        .as_ref()
        .ok()
        .and_then(|s| s.as_ref().ok())
        .map(|ca| ca.roots.clone());
    checks.extend(could_not(
        ca::ID,
        ca::TITLE,
        secret.map(|s| ca::check(s, namespace)),
    )?);
    checks.extend(could_not(
        webhook::ID,
        webhook::TITLE,
        webhook::check(cluster, namespace, roots.as_deref()).await,
    )?);
    let pods = pods::check(cluster, namespace).await;
    let running = pods.as_ref().ok().map(|(_, running)| running.clone());
    checks.extend(could_not(pods::ID, pods::TITLE, pods.map(|(c, _)| c))?);
    checks.extend(proxies::check(cluster, namespace, running.as_deref()).await);
    checks.extend(could_not(
        policies::ID,
        policies::TITLE,
        policies::check(cluster, &served).await,
    )?);
    Ok(checks)
}
