//! `Quarantine`: cut workloads off, mesh-wide, now.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::PolicyStatus;

/// Quarantines workloads in this namespace: their identities are revoked (every proxy
/// refuses and disconnects them) and all their inbound and outbound traffic is denied.
/// Deleting the Quarantine restores access. Identities are per service account, so every
/// workload sharing a quarantined workload's service account is cut off too.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "policy.vigil.dev",
    version = "v1alpha1",
    kind = "Quarantine",
    namespaced,
    status = "PolicyStatus",
    shortname = "qt",
    cel,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason"}"#
)]
#[x_kube(validation = Rule::new(
    "(has(self.podSelector) ? 1 : 0) + (has(self.serviceAccount) ? 1 : 0) + (has(self.workload) ? 1 : 0) == 1"
).message("set exactly one of podSelector, serviceAccount, workload"))]
#[serde(rename_all = "camelCase")]
pub struct QuarantineSpec {
    /// Workloads in this namespace with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// The workloads running as this service account (in this namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// One workload (pod) by name, in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Why (shown in status, events and logs).
    #[x_kube(validation = Rule::new("size(self) > 0").message("reason must not be empty"))]
    pub reason: String,
}
