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
pub use workload::{
    DEFAULT_POLICY_ANNOTATION, DefaultPolicySpec, EgressMode, Workload, WorkloadSpec,
};

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

/// Fields in `doc` that the CRD's schema does not define (what the apiserver would prune
/// silently). Local mode refuses them, so a typo such as `validUnti` is an error rather than
/// a policy that never expires. Paths look like `spec.target.segmnt`; `metadata` is not
/// checked (its schema is Kubernetes' own).
pub fn unknown_fields<K: kube::CustomResourceExt>(doc: &serde_json::Value) -> Vec<String> {
    let crd = K::crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    if let (Some(props), Some(obj)) = (schema.get("properties"), doc.as_object()) {
        for (k, v) in obj {
            match k.as_str() {
                "apiVersion" | "kind" | "metadata" => {}
                _ => match props.get(k) {
                    Some(s) => walk(s, v, k, &mut out),
                    None => out.push(k.clone()),
                },
            }
        }
    }
    out
}

fn walk(schema: &serde_json::Value, value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&serde_json::Value::Bool(true)) {
        return;
    }
    match value {
        serde_json::Value::Object(obj) => {
            let props = schema.get("properties");
            let additional = schema.get("additionalProperties");
            for (k, v) in obj {
                let p = format!("{path}.{k}");
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) => walk(s, v, &p, out),
                    (None, Some(a)) if a.is_object() => walk(a, v, &p, out),
                    (None, Some(serde_json::Value::Bool(true))) => {}
                    _ => out.push(p),
                }
            }
        }
        serde_json::Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(s, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}
