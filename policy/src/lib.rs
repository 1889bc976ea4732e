//! Vigil's policy as the data plane sees it, and the one decision function.
//!
//! - [`model`]: the proxy's policy format ([`ProxyPolicy`]) — one workload's compiled,
//!   self-contained policy, as pushed by the controller or read from a file;
//! - [`Policy::compile`]: validation and indexing (fail closed: an invalid document is an
//!   error, and callers use [`Policy::deny_all`]);
//! - [`Policy::evaluate`]: allow or deny for a request or connection, with the rule that
//!   decided — used by the proxy, `vigil explain` and `vigil policy test` alike;
//! - [`path::normalize`]: the canonical form of request paths that policy is matched
//!   against (and that the proxy forwards).
//!
//! It does not know about CRDs, Kubernetes or the network: the controller compiles CRDs
//! into [`ProxyPolicy`]; the proxy supplies requests.

pub mod compile;
pub mod error;
pub mod evaluate;
pub mod http_match;
mod index;
pub mod model;
pub mod path;
pub mod pattern;

pub use compile::{Destination, Policy};
pub use error::PolicyError;
pub use evaluate::{AuditFinding, Decision, Peer, Reason, Request};
pub use http_match::HttpRequest;
pub use model::ProxyPolicy;
pub use pattern::SpiffePattern;

/// Unix seconds now: the clock every caller of [`Policy::evaluate`] passes (time-bound
/// access windows), and the controller's for expiring them. A clock before the epoch
/// reads as 0.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
