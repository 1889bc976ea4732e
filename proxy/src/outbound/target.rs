//! Where a mesh destination is: the proxy to connect to, the identities it may present,
//! and a virtual address's backends. Resolved from the pushed table or a static route
//! (`connect.rs`), or on demand (`discovery.rs`).

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc};

use vigil_cert_authority::SpiffeId;

/// A resolved mesh destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Where the destination's inbound proxy listens.
    pub proxy: SocketAddr,
    /// Identities it may present.
    pub identities: BTreeSet<SpiffeId>,
    /// A virtual address's backends: connect to one of these instead of `proxy`.
    pub endpoints: Arc<[SocketAddr]>,
}

impl From<&vigil_policy::Destination> for Target {
    fn from(d: &vigil_policy::Destination) -> Self {
        Self {
            proxy: d.proxy,
            identities: d.identities.clone(),
            endpoints: d.endpoints.clone(),
        }
    }
}

impl Target {
    /// The backend `endpoint` of this (virtual) destination, as a target of its own.
    pub(super) fn backend(&self, endpoint: SocketAddr) -> Self {
        Self {
            proxy: endpoint,
            identities: self.identities.clone(),
            endpoints: Arc::from([]),
        }
    }
}
