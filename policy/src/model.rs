//! The proxy's policy format: one workload's compiled, self-contained policy.
//!
//! This is what the controller computes for each workload from the CRDs (and pushes in a
//! snapshot), and what `vigil-proxy run --policy FILE` reads in file mode (YAML or JSON).
//! Everything in it is already resolved: segments and selectors have become SPIFFE IDs or
//! ID patterns, JIT windows are absolute times. It is validated and indexed by
//! [`crate::Policy::compile`]; an invalid document never becomes a permissive policy.
//!
//! ```yaml
//! generation: 7
//! workload: spiffe://cluster.local/ns/shop/sa/orders
//! defaultPolicy: deny            # deny | audit | allow-authenticated
//! inbound:
//!   - policy: shop/frontend-to-orders
//!     action: allow              # allow | deny  (deny wins)
//!     mode: enforce              # enforce | audit
//!     ports: [8080]
//!     from:
//!       - id: spiffe://cluster.local/ns/shop/sa/frontend
//!       - id: spiffe://cluster.local/ns/ops/sa/*
//!     http:
//!       methods: [GET, POST]
//!       paths: [{prefix: /orders}]
//!     validUntil: 1795883600     # unix seconds (JIT access)
//!     rateLimit: {requestsPerSecond: 50, burst: 100}
//! revoked:
//!   ids: [spiffe://cluster.local/ns/shop/sa/compromised]
//! outbound:
//!   passthrough: true
//!   destinations:
//!     - address: 127.0.0.1:9443
//!       identities: [spiffe://cluster.local/ns/shop/sa/payments]
//! ```

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One workload's policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyPolicy {
    /// Version of this policy; increases with every change the controller makes.
    #[serde(default)]
    pub generation: u64,
    /// The workload this policy is for (informational; the proxy checks it matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// What happens to a request no rule decides.
    #[serde(default)]
    pub default_policy: DefaultPolicy,
    /// The workload itself is quarantined: all its traffic, both directions, is denied.
    #[serde(default, skip_serializing_if = "is_false")]
    pub quarantined: bool,
    /// Inbound rules, in order (order only breaks ties in reporting; deny always wins).
    #[serde(default)]
    pub inbound: Vec<Rule>,
    /// Peers that must be refused and disconnected.
    #[serde(default)]
    pub revoked: Revocations,
    /// Where this workload's outbound traffic may go and whom it must find there.
    #[serde(default)]
    pub outbound: Outbound,
}

/// The decision for requests no rule matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Zero trust: deny.
    #[default]
    Deny,
    /// Allow, but log and count as "would deny" (migration).
    Audit,
    /// Allow any peer with a valid SVID from the trust bundle; deny plaintext.
    AllowAuthenticated,
}

/// A word that is not a [`DefaultPolicy`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a default policy: expected one of deny, audit, allow-authenticated")]
pub struct UnknownDefaultPolicy(pub String);

impl DefaultPolicy {
    /// Every default policy, in the order [`Self::NAMES`] names them.
    pub const ALL: [Self; 3] = [Self::Deny, Self::Audit, Self::AllowAuthenticated];
    /// The words for them: in policy files, the `vigil.dev/default-policy` annotation and
    /// the controller's `--default-policy`, the one spelling everywhere.
    pub const NAMES: [&'static str; 3] = ["deny", "audit", "allow-authenticated"];

    /// The word for this default policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => Self::NAMES[0],
            Self::Audit => Self::NAMES[1],
            Self::AllowAuthenticated => Self::NAMES[2],
        }
    }
}

impl std::str::FromStr for DefaultPolicy {
    type Err = UnknownDefaultPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDefaultPolicy(s.to_string()))
    }
}

impl std::fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Permit matching requests (unless a deny also matches).
    Allow,
    /// Refuse matching requests; wins over any allow.
    Deny,
}

/// Whether a rule takes effect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The rule decides.
    #[default]
    Enforce,
    /// The rule is evaluated and reported ("would deny/allow") but never changes the outcome.
    Audit,
}

/// A port list in the comma-separated form flags, annotations and iptables' `multiport`
/// take: `[80, 443]` → `"80,443"`.
pub fn port_list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One compiled rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// The AccessPolicy this rule came from, `namespace/name` (for explain, logs, metrics).
    pub policy: String,
    /// Index of the rule within that policy.
    #[serde(default)]
    pub rule: u32,
    /// Allow or deny.
    pub action: Action,
    /// Enforce or audit.
    #[serde(default)]
    pub mode: Mode,
    /// Destination ports on this workload; empty means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Who the rule is about; at least one source.
    pub from: Vec<Source>,
    /// L7 conditions; absent means the rule is L4 only (matches connections and requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
    /// Not in effect before this time (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<u64>,
    /// Not in effect from this time on (unix seconds): just-in-time access expires by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<u64>,
    /// Per-source-identity rate limit on requests this allow rule admits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A traffic source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Source {
    /// A SPIFFE ID, or a pattern where whole path segments may be `*`
    /// (`spiffe://td/ns/shop/sa/*` = every service account in namespace `shop`).
    Id(String),
    /// Any peer with a valid SVID.
    Authenticated,
    /// Plaintext peers (outside the mesh). Only ever matches unauthenticated traffic.
    Unauthenticated,
    /// Peers whose source address is in this network (authenticated or not).
    Cidr(IpNet),
}

/// L7 conditions, all of which must hold. Within a list, any entry may match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatch {
    /// HTTP methods (uppercase); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Paths; empty means any. Matched against the normalised path without query.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatch>,
    /// Headers; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// gRPC services/methods (become path matches `/<service>/<method>`); any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc: Vec<GrpcMatch>,
}

/// How to match a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A path prefix on segment boundaries: `/api` matches `/api` and `/api/x`, not
    /// `/apix`. A prefix ending in `/` matches anything below it.
    Prefix(String),
    /// A glob: `*` matches within one segment, `**` across segments.
    Glob(String),
}

/// How to match a header (names are case-insensitive; several values are joined with
/// `,` before matching, so a second copy of a header cannot satisfy or dodge a rule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name.
    pub name: String,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value matches this regular expression (anchored at both ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The header is present (true) or absent (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A gRPC service, optionally one method.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMatch {
    /// Fully qualified service, e.g. `orders.v1.Orders`.
    pub service: String,
    /// Method name; absent means every method of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A token bucket per source identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate.
    pub requests_per_second: u32,
    /// Bucket size (burst); defaults to the rate.
    #[serde(default)]
    pub burst: u32,
}

/// Revoked peers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revocations {
    /// Revoked identities (exact SPIFFE IDs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Revoked certificate serial numbers, lowercase hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serials: Vec<String>,
}

/// Outbound configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outbound {
    /// Let traffic to destinations that are not in the mesh through in plaintext.
    /// Off means such traffic is refused (strict egress).
    #[serde(default)]
    pub passthrough: bool,
    /// Mesh destinations: address and the identities allowed to serve it.
    #[serde(default)]
    pub destinations: Vec<Destination>,
}

/// A mesh destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The address the application connects to.
    pub address: SocketAddr,
    /// Where the destination's inbound proxy listens, if not `address` (non-transparent
    /// setups such as the demo); defaults to `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<SocketAddr>,
    /// SPIFFE IDs the server may present.
    pub identities: Vec<String>,
    /// For a virtual address (a Kubernetes Service's `ClusterIP:port`): the ready
    /// backends (`podIP:targetPort`). The outbound sends each HTTP request, and each
    /// opaque connection, to one of them — so a pooled mesh connection is never pinned
    /// to one backend, and a backend that is going away (its pod deleted) stops getting
    /// new requests as soon as a snapshot without it arrives, while its in-flight
    /// requests finish. Empty: connect to `proxy` (or `address`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<SocketAddr>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn default_policy_words_are_the_policy_files_words() {
        for d in DefaultPolicy::ALL {
            let word = d.as_str();
            assert_eq!(word.parse::<DefaultPolicy>(), Ok(d));
            assert_eq!(serde_json::to_value(d).unwrap(), word);
            assert_eq!(d.to_string(), word);
        }
        for bad in ["", "Deny", "allow", "allow_authenticated", " deny"] {
            let err = bad.parse::<DefaultPolicy>().unwrap_err();
            assert_eq!(err, UnknownDefaultPolicy(bad.to_string()));
            assert!(err.to_string().contains("allow-authenticated"), "{err}");
        }
    }
}
