//! The values metric labels (and the matching access-log fields) may take, as types.
//!
//! A metric is counted with one of these values and nothing else, so every label stays
//! bounded, a misspelt label is a compile error, and a sink other than Prometheus (the
//! access log today, OTLP or an audit log next) receives the same value, not a string
//! someone formatted. `as_str` is the exposition form; tests and dashboards match it.

use serde::{Deserialize, Serialize};

/// Which listener the traffic came through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic to this workload.
    #[default]
    Inbound,
    /// Traffic from this workload.
    Outbound,
}

/// The `decision` of a request or connection (label and access-log field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// This proxy let it through.
    Allow,
    /// This proxy refused it (authorization, a rejection before it, or a failure to
    /// reach the destination).
    Deny,
    /// Outbound mesh traffic sent on over mTLS: the destination's proxy decides, this one
    /// only knows what came back.
    Forward,
    /// Nothing was decided yet (a request cancelled before its decision).
    #[default]
    None,
}

/// Why traffic was refused before (or instead of) authorization:
/// `vigil_proxy_rejected_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejected {
    /// Neither redirected by iptables nor configured with a destination.
    NoDestination,
    /// `CONNECT` is never proxied inbound.
    ConnectMethod,
    /// An `Upgrade` header that is not a list of protocols.
    MalformedUpgrade,
    /// A path with more than one reading (docs/path-contract.md).
    AmbiguousPath,
    /// The deciding allow rule's rate limit was exhausted.
    RateLimited,
    /// The local app could not be reached, or answered nonsense.
    AppUnavailable,
    /// The destination's proxy (or a passthrough destination) could not be reached.
    UpstreamUnavailable,
    /// This workload is quarantined: nothing leaves it.
    Quarantine,
    /// Not a mesh destination, and passthrough is off.
    EgressDenied,
    /// The controller could not say whether a destination is in the mesh.
    DiscoveryUnavailable,
    /// `accept(2)` failed (e.g. out of file descriptors).
    AcceptError,
    /// The listener's connection limit was reached.
    ConnectionLimit,
    /// Too many connections were still detecting or handshaking.
    PendingHandshakes,
    /// Too many of those from one source address.
    PendingPerSource,
}

/// Why the proxy closed an established connection: `vigil_proxy_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Closed {
    /// This workload was quarantined.
    Quarantine,
    /// The peer's certificate was revoked.
    Revoked,
    /// Policy no longer allows what the connection was allowed for.
    Policy,
}

/// `rx` (from the peer) or `tx` (to it): `vigil_proxy_bytes_total{flow}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Received from the peer.
    Rx,
    /// Sent to the peer.
    Tx,
}

// === impl Direction ===

impl Direction {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

// === impl Decision ===

impl Decision {
    /// `Allow` or `Deny`.
    pub const fn of(allowed: bool) -> Self {
        if allowed { Self::Allow } else { Self::Deny }
    }

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Forward => "forward",
            Self::None => "none",
        }
    }
}

// === impl Rejected ===

impl Rejected {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoDestination => "no_destination",
            Self::ConnectMethod => "connect_method",
            Self::MalformedUpgrade => "malformed_upgrade",
            Self::AmbiguousPath => "ambiguous_path",
            Self::RateLimited => "rate_limited",
            Self::AppUnavailable => "app_unavailable",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::Quarantine => "quarantine",
            Self::EgressDenied => "egress_denied",
            Self::DiscoveryUnavailable => "discovery_unavailable",
            Self::AcceptError => "accept_error",
            Self::ConnectionLimit => "connection_limit",
            Self::PendingHandshakes => "pending_handshakes",
            Self::PendingPerSource => "pending_per_source",
        }
    }
}

// === impl Closed ===

impl Closed {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Quarantine => "quarantine",
            Self::Revoked => "revoked",
            Self::Policy => "policy",
        }
    }

    /// Why a denied connection or request closes: the decision's reason, as a close reason.
    pub fn of(reason: vigil_policy::Reason) -> Self {
        match reason {
            vigil_policy::Reason::Revoked => Self::Revoked,
            vigil_policy::Reason::Quarantined => Self::Quarantine,
            _ => Self::Policy,
        }
    }
}

// === impl Flow ===

impl Flow {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rx => "rx",
            Self::Tx => "tx",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serialized form (the access log's) is the label form.
    #[test]
    fn serialized_values_are_the_label_values() {
        let json = |v: &dyn erased::Ser| v.json();
        for d in [Direction::Inbound, Direction::Outbound] {
            assert_eq!(json(&d), format!("\"{}\"", d.as_str()));
        }
        for d in [
            Decision::Allow,
            Decision::Deny,
            Decision::Forward,
            Decision::None,
        ] {
            assert_eq!(json(&d), format!("\"{}\"", d.as_str()));
        }
        for c in [Closed::Quarantine, Closed::Revoked, Closed::Policy] {
            assert_eq!(json(&c), format!("\"{}\"", c.as_str()));
        }
        for r in [
            Rejected::NoDestination,
            Rejected::ConnectMethod,
            Rejected::MalformedUpgrade,
            Rejected::AmbiguousPath,
            Rejected::RateLimited,
            Rejected::AppUnavailable,
            Rejected::UpstreamUnavailable,
            Rejected::Quarantine,
            Rejected::EgressDenied,
            Rejected::DiscoveryUnavailable,
            Rejected::AcceptError,
            Rejected::ConnectionLimit,
            Rejected::PendingHandshakes,
            Rejected::PendingPerSource,
        ] {
            assert_eq!(json(&r), format!("\"{}\"", r.as_str()));
        }
    }

    mod erased {
        pub(super) trait Ser {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Ser for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }
}
