//! `Segment`: a named microsegment, a set of workloads chosen by labels.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::PolicyStatus;

/// A microsegment: the workloads whose labels match `podSelector`, in this namespace or in
/// the namespaces `namespaceSelector` matches. Policies and metrics refer to segments by
/// `namespace/name` (or `name` within the same namespace).
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "policy.vigil.dev",
    version = "v1alpha1",
    kind = "Segment",
    namespaced,
    status = "PolicyStatus",
    shortname = "seg",
    cel
)]
#[serde(rename_all = "camelCase")]
pub struct SegmentSpec {
    /// Workloads (pods) with these labels are members. An empty selector selects all.
    pub pod_selector: LabelSelector,
    /// Namespaces whose workloads may be members; absent means only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}
