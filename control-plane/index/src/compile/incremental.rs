//! Recompiling after AccessPolicy changes only, from what the last compile kept.
//!
//! A policy's part (its rules, its targets, its next window edge) depends on the
//! workloads, segments and namespaces — not on other policies. So when only policies
//! changed, and no validity window opened or closed since the parts were compiled:
//!
//! ```text
//!   changed policies ── recompiled parts and verdicts (the rest kept)
//!        │ old ∪ new targets
//!        ▼
//!   their targets ── inbound rebuilt from the parts that target them
//!        │ only if an allow rule came or went
//!        ▼
//!   who may reach whom ── recomputed, compared with the kept one
//!        │ callers whose reachable set changed (all of them if the open set changed)
//!        ▼
//!   their outbound tables rebuilt
//! ```
//!
//! Identities, segments, quarantines, revocations, addresses and services cannot change
//! with a policy and are kept: the workloads' view the policies compile against is
//! rebuilt from the kept identities and the resources without allocating per workload,
//! and the label index only if a changed policy's selector needs it (`workloads.rs`).
//! Anything else (a workload, segment, quarantine, namespace or service change, a window
//! edge passed, time going backwards) takes the full [`compile`](super::compile).

use std::collections::BTreeSet;

use super::{
    Compiled, Settings, outbound, policies,
    reachability::{changed_callers, reachability},
    workloads,
};
use crate::{
    resources::{Kind, ObjectKey, Resources},
    sorted,
};

/// Recompiles `compiled` in place after the AccessPolicies `changed` were added, replaced
/// or removed in `res` (nothing else changed since `compiled` was made from it). Returns
/// the workloads whose policy may have changed, or `None` — having touched nothing — when
/// only a full compile will do.
pub(crate) fn policies_changed(
    compiled: &mut Compiled,
    res: &Resources,
    settings: &Settings,
    changed: &BTreeSet<ObjectKey>,
    now: u64,
) -> Option<BTreeSet<ObjectKey>> {
    // Parts filtered rules and found window edges at `cache.at`: still right at `now` if
    // no edge lies in between.
    let cache = &compiled.cache;
    if !cache.ready || now < cache.at || compiled.next_change.is_some_and(|t| now >= t) {
        return None;
    }
    let infos = workloads::infos(res, &compiled.cache.identities);
    let pods = workloads::PodIndex::new(&infos);
    let segments = std::mem::take(&mut compiled.cache.segments);
    let inputs = policies::Inputs {
        td: &settings.trust_domain,
        pods: &pods,
        infos: &infos,
        segments: &segments,
    };

    let mut targets = BTreeSet::new();
    let mut allows = false;
    for key in changed {
        let id = (Kind::AccessPolicy, key.clone());
        if let Some(old) = compiled.cache.parts.remove(key) {
            allows |= old.allows();
        }
        // `append` merges in one pass (a policy can target thousands; one insert each
        // was a search each).
        if let Some(mut old) = compiled.verdicts.remove(&id) {
            targets.append(&mut old.targets);
        }
        if let Some(p) = res.policies.get(key) {
            let (part, verdict) = policies::part(key, p, &inputs, now);
            allows |= part.allows();
            targets.append(&mut verdict.targets.clone());
            compiled.verdicts.insert(id, verdict);
            compiled.cache.parts.insert(key.clone(), part);
        }
    }
    compiled.next_change = policies::next_change(&compiled.cache.parts);

    let by_policy = policies::with_targets(&compiled.cache.parts, &compiled.verdicts);
    sorted::visit_mut(
        targets.iter().map(|t| (t, ())),
        &mut compiled.workloads,
        |t, (), cw| {
            if let Some(cw) = cw {
                cw.policy.inbound = policies::inbound_of(t, &by_policy);
            }
        },
    );
    drop(by_policy);

    let mut affected = targets;
    if allows {
        let reachable = reachability(&compiled.workloads);
        let callers = changed_callers(
            &compiled.cache.reachability,
            &reachable,
            &compiled.workloads,
        );
        for caller in callers {
            let Some(cw) = compiled.workloads.get(&caller) else {
                continue;
            };
            if cw.policy.quarantined {
                continue;
            }
            let dests = outbound::table(
                &caller,
                &reachable,
                &infos,
                &compiled.workloads,
                &compiled.cache.service_dests,
            );
            if let Some(cw) = compiled.workloads.get_mut(&caller) {
                cw.policy.outbound.destinations = dests;
            }
            affected.insert(caller);
        }
        compiled.cache.reachability = reachable;
    }
    compiled.cache.segments = segments;
    compiled.cache.at = now;
    affected.retain(|k| compiled.workloads.contains_key(k));
    Some(affected)
}
