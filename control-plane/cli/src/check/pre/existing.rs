//! Vigil is not installed already (a second `helm install` would fail on the CRDs and
//! the webhook configuration; an upgrade is `helm upgrade`).

use k8s_openapi::{
    api::{admissionregistration::v1::MutatingWebhookConfiguration, apps::v1::Deployment},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::Api;

use crate::{
    check::{chart, get_opt, report::Check},
    cluster::{Cluster, ClusterError},
};

pub(super) const ID: &str = "not-installed";
pub(super) const TITLE: &str = "Vigil not installed yet";

/// What of Vigil is already there: a warning naming it, else ok.
pub(super) async fn check(cluster: &Cluster, namespace: &str) -> Result<Vec<Check>, ClusterError> {
    let mut found = Vec::new();
    let crds = Api::<CustomResourceDefinition>::all(cluster.client.clone());
    for (name, _, _) in chart::CRDS {
        if get_opt(cluster, &crds, name, "customresourcedefinitions")
            .await?
            .is_some()
        {
            found.push(format!("CRD {name}"));
        }
    }
    let webhooks = Api::<MutatingWebhookConfiguration>::all(cluster.client.clone());
    if get_opt(
        cluster,
        &webhooks,
        chart::WEBHOOK,
        "mutatingwebhookconfigurations",
    )
    .await?
    .is_some()
    {
        found.push(format!("MutatingWebhookConfiguration {}", chart::WEBHOOK));
    }
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), namespace);
    let what = format!("deployments in namespace {namespace}");
    if get_opt(cluster, &deployments, chart::CONTROLLER, &what)
        .await?
        .is_some()
    {
        found.push(format!("Deployment {namespace}/{}", chart::CONTROLLER));
    }
    Ok(vec![if found.is_empty() {
        Check::ok(ID, TITLE)
    } else {
        Check::warn(
            ID,
            TITLE,
            format!("already there: {}", found.join(", ")),
            format!(
                "to change an installed Vigil use `helm upgrade vigil charts/vigil -n {namespace}`, then `vigil check`"
            ),
        )
    }])
}
