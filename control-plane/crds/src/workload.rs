//! `Workload` (local mode): what a pod is in Kubernetes, written by hand.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vigil_policy::model::DefaultPolicy;

/// A workload in local mode: a name, a namespace, a service account (its identity is
/// `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`), labels (in `metadata.labels`) and
/// the addresses where other workloads reach it.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "local.vigil.dev",
    version = "v1alpha1",
    kind = "Workload",
    namespaced,
    cel
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Service account; the identity derives from it.
    #[serde(default = "default_sa")]
    pub service_account: String,
    /// `host:port` addresses the workload serves on (what callers connect to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// `host:port` of this workload's inbound proxy, when callers must be sent there
    /// explicitly (local demos); absent means the addresses are intercepted transparently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Decision for requests no policy decides; absent means the controller's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_policy: Option<DefaultPolicySpec>,
    /// Traffic to destinations outside the mesh; absent means the controller's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressMode>,
    /// Extra labels (merged over `metadata.labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_sa() -> String {
    "default".to_string()
}

/// The default for requests no policy decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DefaultPolicySpec {
    /// Zero trust.
    Deny,
    /// Allow and report "would deny" (migration).
    Audit,
    /// Allow any mesh identity; deny plaintext.
    AllowAuthenticated,
}

/// The pod and namespace annotation that sets [`DefaultPolicySpec`] in Kubernetes mode
/// (a pod's wins over its namespace's); its values are [`DefaultPolicy::NAMES`].
pub const DEFAULT_POLICY_ANNOTATION: &str = "vigil.dev/default-policy";

impl From<DefaultPolicySpec> for DefaultPolicy {
    fn from(d: DefaultPolicySpec) -> Self {
        match d {
            DefaultPolicySpec::Deny => Self::Deny,
            DefaultPolicySpec::Audit => Self::Audit,
            DefaultPolicySpec::AllowAuthenticated => Self::AllowAuthenticated,
        }
    }
}

impl From<DefaultPolicy> for DefaultPolicySpec {
    fn from(d: DefaultPolicy) -> Self {
        match d {
            DefaultPolicy::Deny => Self::Deny,
            DefaultPolicy::Audit => Self::Audit,
            DefaultPolicy::AllowAuthenticated => Self::AllowAuthenticated,
        }
    }
}

/// What happens to traffic to destinations outside the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EgressMode {
    /// Pass through in plaintext.
    Passthrough,
    /// Refuse.
    Strict,
}
