//! May the caller install the chart? One SelfSubjectAccessReview per kind of object the
//! chart creates (`helm install` runs as the caller), cluster-wide and in the release
//! namespace — the API server's own authorizer answers, so no guess about roles.

use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::Namespace,
};
use kube::{Api, api::PostParams};

use crate::{
    check::{get_opt, report::Check},
    cluster::{Cluster, ClusterError},
};

pub(super) const ID: &str = "install-permissions";
pub(super) const TITLE: &str = "permission to install the chart";

/// Cluster-scoped kinds the chart creates: `(group, resource)`.
const CLUSTER_SCOPED: [(&str, &str); 4] = [
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
];
/// Kinds the chart creates in the release namespace (Secrets: Helm stores the release
/// in one).
const NAMESPACED: [(&str, &str); 8] = [
    ("apps", "deployments"),
    ("", "services"),
    ("", "serviceaccounts"),
    ("", "configmaps"),
    ("", "secrets"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("policy", "poddisruptionbudgets"),
];

/// Every `create` the install needs, asked of the authorizer.
pub(super) async fn check(cluster: &Cluster, namespace: &str) -> Result<Vec<Check>, ClusterError> {
    let mut wanted: Vec<(&str, &str, Option<&str>)> = CLUSTER_SCOPED
        .iter()
        .map(|(g, r)| (*g, *r, None))
        .chain(NAMESPACED.iter().map(|(g, r)| (*g, *r, Some(namespace))))
        .collect();
    // `--create-namespace` needs this too when the namespace is not there yet (a
    // caller who may not even read it is asked anyway).
    let namespaces = Api::<Namespace>::all(cluster.client.clone());
    if !matches!(
        get_opt(cluster, &namespaces, namespace, "namespaces").await,
        Ok(Some(_))
    ) {
        wanted.push(("", "namespaces", None));
    }
    let mut missing = Vec::new();
    for (group, resource, ns) in wanted {
        if !may_create(cluster, group, resource, ns).await? {
            let what = if group.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            };
            missing.push(match ns {
                Some(ns) => format!("{what} in {ns}"),
                None => what,
            });
        }
    }
    Ok(vec![if missing.is_empty() {
        Check::ok(ID, TITLE)
    } else {
        Check::fail(
            ID,
            TITLE,
            format!("you may not create {}", missing.join(", ")),
            "install as a cluster admin, or ask one for these permissions (`kubectl auth can-i create <resource> -n <namespace>` shows each)",
        )
    }])
}

/// The authorizer's answer to "may I create `resource` (in `ns`)?".
async fn may_create(
    cluster: &Cluster,
    group: &str,
    resource: &str,
    ns: Option<&str>,
) -> Result<bool, ClusterError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some("create".into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: ns.map(String::from),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(cluster.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| cluster.error(e, "create", "selfsubjectaccessreviews", None))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}
