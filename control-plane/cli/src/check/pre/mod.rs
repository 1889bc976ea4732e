//! `vigil check --pre`: can this cluster take Vigil? Nothing is changed; every question
//! is a read or a SelfSubjectAccessReview.

mod admission;
mod existing;
mod rbac;
mod version;

use super::{could_not, report::Check};
use crate::cluster::{Cluster, ClusterError};

/// The pre-install checks, in order. An unreachable API server is an error (exit 2).
pub(super) async fn run(cluster: &Cluster, namespace: &str) -> Result<Vec<Check>, ClusterError> {
    let mut checks = version::checks(cluster).await?;
    checks.extend(could_not(
        admission::ID,
        admission::TITLE,
        admission::check(cluster).await,
    )?);
    checks.extend(could_not(
        rbac::ID,
        rbac::TITLE,
        rbac::check(cluster, namespace).await,
    )?);
    checks.extend(could_not(
        existing::ID,
        existing::TITLE,
        existing::check(cluster, namespace).await,
    )?);
    Ok(checks)
}
