//! Services as destinations: a virtual address (ClusterIP:port) is a mesh destination when
//! every backend is a mesh workload — mTLS to an endpoint without a proxy would fail —
//! and then serves the union of their identities, with its ready endpoints for callers'
//! proxies to balance over.

use std::collections::{BTreeMap, BTreeSet};

use vigil_policy::model::Destination;

use super::CompiledWorkload;
use crate::resources::{ObjectKey, Resources};

/// Each fully meshed service's destinations, keyed by backend workload (the outbound
/// tables add them for callers that may reach that backend); their addresses also go into
/// `addresses` for on-demand discovery.
pub(super) fn destinations(
    res: &Resources,
    workloads: &BTreeMap<ObjectKey, CompiledWorkload>,
    addresses: &mut BTreeMap<std::net::SocketAddr, Destination>,
) -> BTreeMap<ObjectKey, Vec<Destination>> {
    let mut by_backend: BTreeMap<ObjectKey, Vec<Destination>> = BTreeMap::new();
    for svc in res.services.values() {
        let identities: Option<BTreeSet<String>> = svc
            .backends
            .iter()
            .map(|b| workloads.get(b).map(|cw| cw.identity.to_string()))
            .collect();
        let Some(identities) = identities.filter(|i| !i.is_empty()) else {
            continue;
        };
        for address in &svc.addresses {
            let d = Destination {
                address: *address,
                proxy: None,
                identities: identities.iter().cloned().collect(),
                endpoints: svc.endpoints.get(address).cloned().unwrap_or_default(),
            };
            addresses.entry(*address).or_insert_with(|| d.clone());
            for b in &svc.backends {
                by_backend.entry(b.clone()).or_default().push(d.clone());
            }
        }
    }
    by_backend
}
