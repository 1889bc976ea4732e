//! Quarantines: the workloads each one cuts off (by pod selector, service account or
//! name, in its namespace), and the identities every proxy must then refuse.

use std::collections::{BTreeMap, BTreeSet};

use super::{Verdict, workloads::Infos};
use crate::{
    resources::{Kind, ObjectKey, Resources},
    selector,
};

/// Every quarantined workload; each quarantine gets a verdict naming its members.
pub(super) fn members(
    res: &Resources,
    infos: &Infos<'_>,
    verdicts: &mut BTreeMap<(Kind, ObjectKey), Verdict>,
) -> BTreeSet<ObjectKey> {
    let mut quarantined: BTreeSet<ObjectKey> = BTreeSet::new();
    for (key, q) in &res.quarantines {
        let members: BTreeSet<ObjectKey> = infos
            .iter()
            .filter(|(k, info)| {
                k.namespace == key.namespace
                    && match (
                        &q.spec.pod_selector,
                        &q.spec.service_account,
                        &q.spec.workload,
                    ) {
                        (Some(sel), _, _) => selector::matches(sel, &info.labels),
                        (_, Some(sa), _) => &info.workload.spec.service_account == sa,
                        (_, _, Some(name)) => &k.name == name,
                        _ => false,
                    }
            })
            .map(|(&k, _)| k.clone())
            .collect();
        quarantined.extend(members.iter().cloned());
        verdicts.insert(
            (Kind::Quarantine, key.clone()),
            Verdict {
                targets: members,
                ..Verdict::default()
            },
        );
    }
    quarantined
}

/// The identities of the quarantined workloads, sorted and deduplicated: revoked on every
/// proxy.
pub(super) fn revoked(quarantined: &BTreeSet<ObjectKey>, infos: &Infos<'_>) -> Vec<String> {
    quarantined
        .iter()
        .filter_map(|k| infos.get(k).map(|i| i.identity.to_string()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
