//! The cluster side of `vigil quarantine`: the `Quarantine` custom resource, created and
//! deleted through the API server (typed by `vigil-crds`, so the object is exactly what
//! the CRD's schema and CEL rules accept).

use anyhow::Result;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use vigil_crds::{Quarantine, QuarantineSpec};

use super::Field;
use crate::cluster::{ClusterArgs, ClusterError, not_found, runtime};

/// The CRD's plural (for messages and discovery).
const PLURAL: &str = "quarantines";
/// Marks Quarantines this command created (`kubectl get qt -l ...` lists them).
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "vigil-cli");

/// Creates the Quarantine `target` in the namespace of `-n` / the context; returns the
/// namespace.
pub(super) fn create(
    args: &ClusterArgs,
    field: Field,
    target: &str,
    reason: &str,
) -> Result<String> {
    runtime()?.block_on(async {
        let cluster = args.connect().await?;
        let ns = cluster.namespace.clone();
        let mut q = Quarantine::new(
            target,
            QuarantineSpec {
                pod_selector: None,
                service_account: matches!(field, Field::ServiceAccount).then(|| target.into()),
                workload: matches!(field, Field::Workload).then(|| target.into()),
                reason: reason.to_string(),
            },
        );
        q.metadata.labels = Some([(MANAGED_BY.0.into(), MANAGED_BY.1.into())].into());
        let api = Api::<Quarantine>::namespaced(cluster.client.clone(), &ns);
        match api.create(&PostParams::default(), &q).await {
            Ok(_) => Ok(ns),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Err(anyhow::anyhow!(
                "Quarantine {ns}/{target} already exists in the cluster (`vigil unquarantine -n {ns} {target}` lifts it)"
            )),
            Err(e) => Err(cluster
                .error(e, "create", &format!("{PLURAL} in namespace {ns}"), Some(PLURAL))
                .into()),
        }
    })
}

/// Deletes the Quarantine `target` in the namespace of `-n` / the context; returns the
/// namespace.
pub(super) fn delete(args: &ClusterArgs, target: &str) -> Result<String> {
    runtime()?.block_on(async {
        let cluster = args.connect().await?;
        let ns = cluster.namespace.clone();
        let api = Api::<Quarantine>::namespaced(cluster.client.clone(), &ns);
        match api.delete(target, &DeleteParams::default()).await {
            Ok(_) => Ok(ns),
            Err(kube::Error::Api(s)) if not_found(&s) => {
                if cluster.serves(PLURAL).await? {
                    Err(anyhow::anyhow!(
                        "no Quarantine {ns}/{target} in the cluster (`kubectl get quarantines -n {ns}` lists them)"
                    ))
                } else {
                    Err(ClusterError::CrdMissing {
                        url: cluster.url.clone(),
                        plural: PLURAL,
                    }
                    .into())
                }
            }
            Err(e) => Err(cluster
                .error(e, "delete", &format!("{PLURAL} in namespace {ns}"), Some(PLURAL))
                .into()),
        }
    })
}
