//! Vigil's policy API as Kubernetes custom resources, Rust types first.
//!
//! Group `policy.vigil.dev`, version `v1alpha1`:
//!
//! ```text
//!   Segment ──────────── a named set of workloads (pod selector [+ namespace selector])
//!      ▲  ▲
//!      │  └── AccessPolicy.spec.from[].segment      who may call
//!      └───── AccessPolicy.spec.target.segment      whom the policy protects
//!   Quarantine ───────── workloads cut off: identities revoked, all traffic denied
//! ```
//!
//! plus the local-mode kind `Workload` (group `local.vigil.dev`), which stands in for a pod
//! when Vigil runs without Kubernetes. Schemas are derived from these types (with CEL
//! `x-kubernetes-validations` where a structural schema cannot express a rule), written to
//! `crds/*.yaml` by the `crdgen` binary, and the same CEL rules run client-side in local
//! mode ([`validate`]), so both modes accept exactly the same documents.

// The KubeSchema derive emits helper items that trip `unreachable_pub`; every public type
// here is in fact re-exported below.
#![allow(unreachable_pub)]

pub mod access_policy;
pub mod quarantine;
pub mod segment;
pub mod status;
pub mod workload;

pub use access_policy::{
    AccessPolicy, AccessPolicySpec, GrpcMatchSpec, HeaderMatchSpec, PathMatchSpec, PolicyAction,
    PolicyMode, PolicyRule, PolicySource, PolicyTarget, RateLimitSpec,
};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
pub use quarantine::{Quarantine, QuarantineSpec};
pub use segment::{Segment, SegmentSpec};
pub use status::PolicyStatus;
pub use workload::{DefaultPolicySpec, EgressMode, Workload, WorkloadSpec};

/// API group of the policy CRDs.
pub const GROUP: &str = "policy.vigil.dev";
/// API group of the local-mode kinds.
pub const LOCAL_GROUP: &str = "local.vigil.dev";
/// The one version.
pub const VERSION: &str = "v1alpha1";

/// The CEL rules of a resource, evaluated locally (exactly what the apiserver evaluates).
/// Returns every failure, each as `field: message`.
pub fn validate<K: kube::CustomResourceExt + serde::Serialize>(
    resource: &K,
) -> Result<(), Vec<String>> {
    kube::core::cel::validate_cel(resource).map_err(|errs| {
        errs.into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect()
    })
}
