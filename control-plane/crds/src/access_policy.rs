//! `AccessPolicy`: who may call a segment, on which ports, with which requests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::PolicyStatus;

/// Allows or denies traffic to a target. **Deny wins** over any allow; a workload with no
/// matching allow is denied (zero trust, unless its default policy says otherwise).
/// Audit mode evaluates and reports ("would deny") without ever blocking.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "policy.vigil.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    namespaced,
    status = "PolicyStatus",
    shortname = "ap",
    cel,
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Until","type":"string","jsonPath":".spec.validUntil"}"#
)]
#[x_kube(validation = Rule::new(
    "!has(self.validFrom) || !has(self.validUntil) || timestamp(self.validUntil) > timestamp(self.validFrom)"
).message("validUntil must be after validFrom"))]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// What the policy protects.
    pub target: PolicyTarget,
    /// `Allow` or `Deny`.
    pub action: PolicyAction,
    /// `Enforce` (default) or `Audit`.
    #[serde(default)]
    pub mode: PolicyMode,
    /// Who the policy is about; any entry may match.
    #[x_kube(validation = Rule::new("size(self) > 0").message("from must name at least one source"))]
    #[schemars(length(max = 64))]
    pub from: Vec<PolicySource>,
    /// L4/L7 conditions; any rule may match. None means: every request on the target ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub rules: Vec<PolicyRule>,
    /// Not in effect before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("timestamp(self) > timestamp('1970-01-01T00:00:00Z')").message("validFrom must be an RFC 3339 time"))]
    #[schemars(length(max = 64))]
    pub valid_from: Option<String>,
    /// Not in effect from this time on (RFC 3339): just-in-time access expires by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("timestamp(self) > timestamp('1970-01-01T00:00:00Z')").message("validUntil must be an RFC 3339 time"))]
    #[schemars(length(max = 64))]
    pub valid_until: Option<String>,
    /// Requests per second (and burst) per source identity; allow policies only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

/// The protected workloads: a segment or a pod selector (in the policy's namespace).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.segment) != has(self.podSelector)").message("target needs exactly one of segment or podSelector"))]
#[serde(rename_all = "camelCase")]
pub struct PolicyTarget {
    /// A Segment, `name` (this namespace) or `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Workloads in this namespace with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Ports on the target; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(p, p > 0)").message("ports must be 1-65535"))]
    #[schemars(length(max = 64))]
    pub ports: Vec<u16>,
}

/// `Allow` or `Deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PolicyAction {
    /// Permit matching traffic (unless a deny matches too).
    Allow,
    /// Refuse matching traffic; wins over any allow.
    Deny,
}

/// `Enforce` or `Audit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PolicyMode {
    /// The policy decides.
    #[default]
    Enforce,
    /// The policy is evaluated and reported, never blocks.
    Audit,
}

/// One kind of source; set exactly one field.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new(
    "(has(self.spiffeId) ? 1 : 0) + (has(self.segment) ? 1 : 0) + (has(self.__namespace__) ? 1 : 0) + (has(self.serviceAccount) ? 1 : 0) + (has(self.authenticated) ? 1 : 0) + (has(self.unauthenticated) ? 1 : 0) + (has(self.cidr) ? 1 : 0) == 1"
).message("set exactly one of spiffeId, segment, namespace, serviceAccount, authenticated, unauthenticated, cidr"))]
#[serde(rename_all = "camelCase")]
pub struct PolicySource {
    /// A SPIFFE ID or pattern: `spiffe://cluster.local/ns/shop/sa/*` (`*` = one segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// The members of a Segment, `name` or `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Every workload in a namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A service account, `name` (this namespace) or `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Any workload with a valid mesh identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self").message("authenticated can only be true"))]
    pub authenticated: Option<bool>,
    /// Plaintext callers from outside the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self").message("unauthenticated can only be true"))]
    pub unauthenticated: Option<bool>,
    /// Callers whose source address is in this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

/// L4 and L7 conditions, all of which must hold; within a list, any entry may match.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Ports (overrides the target's ports for this rule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(p, p > 0)").message("ports must be 1-65535"))]
    #[schemars(length(max = 64))]
    pub ports: Vec<u16>,
    /// HTTP methods, uppercase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub methods: Vec<String>,
    /// Request paths (normalised before matching).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub paths: Vec<PathMatchSpec>,
    /// Request headers; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatchSpec>,
    /// gRPC services and methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub grpc: Vec<GrpcMatchSpec>,
}

/// A path match; set exactly one field.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("(has(self.exact) ? 1 : 0) + (has(self.prefix) ? 1 : 0) + (has(self.glob) ? 1 : 0) == 1").message("set exactly one of exact, prefix, glob"))]
#[serde(rename_all = "camelCase")]
pub struct PathMatchSpec {
    /// The whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// A prefix on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A glob: `*` within a segment, `**` across segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
}

/// A header match; set exactly one of `exact`, `regex`, `present`.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("(has(self.exact) ? 1 : 0) + (has(self.regex) ? 1 : 0) + (has(self.present) ? 1 : 0) == 1").message("set exactly one of exact, regex, present"))]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatchSpec {
    /// Header name (case-insensitive).
    pub name: String,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value matches this regular expression (whole value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The header is present (true) or absent (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A gRPC service, optionally one method.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcMatchSpec {
    /// Fully qualified service name, e.g. `orders.v1.Orders`.
    pub service: String,
    /// A method of it; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A token bucket per source identity.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained rate.
    #[x_kube(validation = Rule::new("self >= 1").message("requestsPerSecond must be at least 1"))]
    pub requests_per_second: u32,
    /// Bucket size; defaults to the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}
