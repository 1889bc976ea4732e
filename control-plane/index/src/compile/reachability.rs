//! Who may reach whom, by inverting the compiled allow rules (not by testing every pair
//! of workloads): the basis of each workload's outbound table.

use std::collections::{BTreeMap, BTreeSet};

use vigil_cert_authority::SpiffeId;
use vigil_policy::{
    SpiffePattern,
    model::{Action, DefaultPolicy, Source},
};

use super::CompiledWorkload;
use crate::resources::ObjectKey;

/// Who may reach whom: workloads open to every mesh identity, and per caller the
/// workloads whose allow rules name it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reachability {
    /// Workloads any mesh identity may reach.
    pub(super) open: BTreeSet<ObjectKey>,
    /// Per caller, the workloads whose allow rules name it.
    pub(super) by_caller: BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
}

/// Inverts the allow rules: who may reach each workload.
pub(super) fn reachability(workloads: &BTreeMap<ObjectKey, CompiledWorkload>) -> Reachability {
    let mut by_identity: BTreeMap<&str, Vec<&ObjectKey>> = BTreeMap::new();
    for (k, cw) in workloads {
        by_identity.entry(cw.identity.as_str()).or_default().push(k);
    }
    let mut r = Reachability {
        open: BTreeSet::new(),
        by_caller: BTreeMap::new(),
    };
    for (target, cw) in workloads {
        let p = &cw.policy;
        if p.quarantined {
            continue;
        }
        if p.default_policy != DefaultPolicy::Deny {
            r.open.insert(target.clone());
            continue;
        }
        for rule in p.inbound.iter().filter(|r| r.action == Action::Allow) {
            for s in &rule.from {
                match s {
                    Source::Authenticated => {
                        r.open.insert(target.clone());
                    }
                    Source::Id(pattern) => {
                        let Ok(pat) = SpiffePattern::parse(pattern) else {
                            continue;
                        };
                        let callers: Vec<&&ObjectKey> = if pat.is_exact() {
                            by_identity
                                .get(pattern.as_str())
                                .into_iter()
                                .flatten()
                                .collect()
                        } else {
                            by_identity
                                .iter()
                                .filter(|(id, _)| {
                                    SpiffeId::parse(id).is_ok_and(|id| pat.matches(&id))
                                })
                                .flat_map(|(_, ks)| ks.iter())
                                .collect()
                        };
                        for c in callers {
                            r.by_caller
                                .entry((*c).clone())
                                .or_default()
                                .insert(target.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    r
}

/// The callers whose outbound table may differ between `old` and `new`: every workload
/// if the open set changed, else those whose reachable set changed.
pub(super) fn changed_callers(
    old: &Reachability,
    new: &Reachability,
    workloads: &BTreeMap<ObjectKey, CompiledWorkload>,
) -> BTreeSet<ObjectKey> {
    if old.open != new.open {
        return workloads.keys().cloned().collect();
    }
    let differs = |a: &BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
                   b: &BTreeMap<ObjectKey, BTreeSet<ObjectKey>>| {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    differs(&old.by_caller, &new.by_caller)
        .into_iter()
        .chain(differs(&new.by_caller, &old.by_caller))
        .collect()
}
