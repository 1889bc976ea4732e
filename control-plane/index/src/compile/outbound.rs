//! Outbound: each workload's destination table (the workloads whose inbound policy admits
//! it, and the services they back), and the table of every workload address that answers
//! on-demand discovery (`Policy.Resolve`).

use std::collections::{BTreeMap, BTreeSet, btree_map::Entry};

use vigil_policy::model::Destination;

use super::{
    Compiled, CompiledWorkload,
    reachability::{Reachability, reachability},
    services,
    workloads::{Infos, proxy_of},
};
use crate::resources::{Kind, ObjectKey, Resources};

/// Fills in every non-quarantined workload's destinations. Computed by inverting the
/// allow rules (who may reach X), not by testing every pair. Who may reach whom and the
/// services' destinations are kept in `out.cache` for the incremental path.
pub(super) fn destinations(res: &Resources, infos: &Infos<'_>, out: &mut Compiled) {
    let reachable = reachability(&out.workloads);
    let service_dests = services::destinations(res, &out.workloads, &mut out.addresses);
    let tables: BTreeMap<ObjectKey, Vec<Destination>> = out
        .workloads
        .iter()
        .filter(|(_, cw)| !cw.policy.quarantined)
        .map(|(key, _)| {
            let dests = table(key, &reachable, infos, &out.workloads, &service_dests);
            (key.clone(), dests)
        })
        .collect();
    for (key, dests) in tables {
        if let Some(cw) = out.workloads.get_mut(&key) {
            cw.policy.outbound.destinations = dests;
        }
    }
    out.cache.reachability = reachable;
    out.cache.service_dests = service_dests;
}

/// One caller's destination table: the addresses of every workload it may reach, and the
/// services they back.
pub(super) fn table(
    key: &ObjectKey,
    reachable: &Reachability,
    infos: &Infos<'_>,
    workloads: &BTreeMap<ObjectKey, CompiledWorkload>,
    service_dests: &BTreeMap<ObjectKey, Vec<Destination>>,
) -> Vec<Destination> {
    let mut seen = BTreeSet::new();
    let mut dests = Vec::new();
    for other_key in reachable
        .open
        .iter()
        .chain(reachable.by_caller.get(key).into_iter().flatten())
    {
        if other_key == key {
            continue;
        }
        let (Some(info), Some(other)) = (infos.get(other_key), workloads.get(other_key)) else {
            continue;
        };
        let proxy = proxy_of(info);
        for addr in &info.workload.spec.addresses {
            if let Ok(address) = addr.parse()
                && seen.insert(address)
            {
                dests.push(Destination {
                    address,
                    proxy,
                    identities: vec![other.identity.to_string()],
                    endpoints: Vec::new(),
                });
            }
        }
        // Services it backs: a caller that may reach a backend may call the service.
        for d in service_dests.get(other_key).into_iter().flatten() {
            if seen.insert(d.address) {
                dests.push(d.clone());
            }
        }
    }
    dests
}

/// Every workload address, to the workload serving it; an address claimed twice, or not
/// `host:port`, is a warning on the workload.
pub(super) fn addresses(infos: &Infos<'_>, out: &mut Compiled) {
    for (key, info) in infos {
        let proxy = proxy_of(info);
        for addr in &info.workload.spec.addresses {
            let warning = match addr.parse::<std::net::SocketAddr>() {
                Err(_) => Some(format!("address {addr:?} is not host:port")),
                Ok(address) => match out.addresses.entry(address) {
                    Entry::Vacant(e) => {
                        e.insert(Destination {
                            address,
                            proxy,
                            identities: vec![info.identity.to_string()],
                            endpoints: Vec::new(),
                        });
                        None
                    }
                    Entry::Occupied(e) => Some(format!(
                        "address {addr} is also claimed by a workload running as {}; calls to it go there",
                        e.get().identities.join(", ")
                    )),
                },
            };
            if let Some(w) = warning
                && let Some(v) = out.verdicts.get_mut(&(Kind::Workload, (*key).clone()))
            {
                v.warnings.push(w);
            }
        }
    }
}
