//! The three CRDs exist and are `Established` (the API server serves them).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

use crate::{
    check::{chart, get_opt, report::Check},
    cluster::{Cluster, ClusterError},
};

pub(super) const ID: &str = "crds";
pub(super) const TITLE: &str = "CRDs installed and Established";

/// One check per CRD, and the kinds that are served.
pub(super) async fn check(
    cluster: &Cluster,
) -> Result<(Vec<Check>, Vec<&'static str>), ClusterError> {
    let api = Api::<CustomResourceDefinition>::all(cluster.client.clone());
    let mut checks = Vec::new();
    let mut served = Vec::new();
    for (name, kind, id) in chart::CRDS {
        let title = format!("CRD {name} Established");
        let crd = get_opt(cluster, &api, name, "customresourcedefinitions").await?;
        let Some(crd) = crd else {
            checks.push(Check::fail(
                id,
                title,
                "not installed",
                "kubectl apply -f charts/vigil/crds/ (Helm installs CRDs only on first install; helm upgrade does not restore a deleted one)",
            ));
            continue;
        };
        let established = crd
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .find(|c| c.type_ == "Established");
        match established {
            Some(c) if c.status == "True" => {
                served.push(kind);
                checks.push(Check::ok(id, title));
            }
            other => checks.push(Check::fail(
                id,
                title,
                format!(
                    "not Established: {}",
                    other
                        .and_then(|c| c.message.clone())
                        .unwrap_or_else(|| "no condition yet".into())
                ),
                format!("kubectl describe crd {name} (a name conflict or an invalid schema keeps it from being served)"),
            )),
        }
    }
    Ok((checks, served))
}
