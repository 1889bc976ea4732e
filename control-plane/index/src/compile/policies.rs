//! Access policies: each one's targets and rules, into the inbound rules of every target.
//! A policy that does not compile is rejected; a rejected **deny** policy becomes a
//! deny-all on its targets' ports (fail closed). Rules whose window has closed are left
//! out, and the next window edge is reported so the index recompiles then. Each policy's
//! result is a [`PolicyPart`], kept for the incremental path.

use std::collections::{BTreeMap, BTreeSet};

use vigil_cert_authority::TrustDomain;
use vigil_crds::{AccessPolicy, PolicyAction};
use vigil_policy::model::{Action, Mode, Rule, Source};

use super::{
    Compiled, Verdict, translate,
    workloads::{Infos, PodIndex},
};
use crate::resources::{Kind, ObjectKey, Resources};

/// What the policy steps share: the trust domain, workloads and segment membership.
pub(super) struct Inputs<'a, 'r> {
    pub(super) td: &'a TrustDomain,
    pub(super) pods: &'a PodIndex<'a, 'r>,
    pub(super) infos: &'a Infos<'r>,
    pub(super) segments: &'a BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
}

/// What one policy gives each of its targets, kept between compiles so that changing one
/// policy recompiles that policy alone (`incremental.rs`). Its targets are in its verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PolicyPart {
    /// The rules every target gets: the live rules, or the deny-all standing in for a
    /// rejected deny policy.
    pub(crate) rules: Vec<Rule>,
    /// The next time (after the compile's `now`) one of its windows opens or closes.
    pub(crate) next_change: Option<u64>,
}

impl PolicyPart {
    /// Whether it allows anyone (only allow rules decide who may reach whom).
    pub(super) fn allows(&self) -> bool {
        self.rules.iter().any(|r| r.action == Action::Allow)
    }
}

/// The inbound rules of every target at `now`; each policy gets a verdict and a part
/// (`out.parts`), and `out.next_change` the next time a validity window opens or closes.
pub(super) fn inbound_rules(
    res: &Resources,
    inputs: &Inputs<'_, '_>,
    now: u64,
    out: &mut Compiled,
) -> BTreeMap<ObjectKey, Vec<Rule>> {
    let mut inbound: BTreeMap<ObjectKey, Vec<Rule>> = BTreeMap::new();
    for (key, p) in &res.policies {
        let (part, verdict) = part(key, p, inputs, now);
        for t in &verdict.targets {
            inbound
                .entry(t.clone())
                .or_default()
                .extend(part.rules.iter().cloned());
        }
        out.verdicts
            .insert((Kind::AccessPolicy, key.clone()), verdict);
        out.cache.parts.insert(key.clone(), part);
    }
    out.next_change = next_change(&out.cache.parts);
    inbound
}

/// One policy at `now`: what its targets get, and its verdict (naming the targets).
pub(super) fn part(
    key: &ObjectKey,
    p: &AccessPolicy,
    inputs: &Inputs<'_, '_>,
    now: u64,
) -> (PolicyPart, Verdict) {
    let mut verdict = Verdict::default();
    let mut part = PolicyPart::default();
    let targets = targets(key, p, inputs, &mut verdict);
    match translate::rules(key, p, inputs, &mut verdict) {
        Ok(rules) => {
            for r in &rules {
                for t in [r.valid_from, r.valid_until].into_iter().flatten() {
                    if t > now {
                        part.next_change = Some(part.next_change.map_or(t, |n| n.min(t)));
                    }
                }
            }
            part.rules = rules
                .into_iter()
                .filter(|r| r.valid_until.is_none_or(|u| u > now))
                .collect();
        }
        Err(reason) => {
            tracing::warn!(policy = %key, %reason, "AccessPolicy rejected");
            if p.spec.action == PolicyAction::Deny {
                part.rules = vec![deny_all(key, p)];
                verdict
                    .warnings
                    .push("rejected deny policy: its targets deny all traffic on its ports until it is fixed".into());
            }
            verdict.accepted = Err(reason);
        }
    }
    verdict.targets = targets;
    (part, verdict)
}

/// The earliest window edge of all parts.
pub(super) fn next_change(parts: &BTreeMap<ObjectKey, PolicyPart>) -> Option<u64> {
    parts.values().filter_map(|p| p.next_change).min()
}

/// Every policy's part with its targets, in the policies' order, for [`inbound_of`].
pub(super) fn with_targets<'c>(
    parts: &'c BTreeMap<ObjectKey, PolicyPart>,
    verdicts: &'c BTreeMap<(Kind, ObjectKey), Verdict>,
) -> Vec<(&'c PolicyPart, &'c BTreeSet<ObjectKey>)> {
    parts
        .iter()
        .filter(|(_, part)| !part.rules.is_empty())
        .filter_map(|(key, part)| {
            let v = verdicts.get(&(Kind::AccessPolicy, key.clone()))?;
            Some((part, &v.targets))
        })
        .collect()
}

/// The inbound rules of one workload: the rules of every policy targeting it, in the
/// policies' order (what [`inbound_rules`] gives it).
pub(super) fn inbound_of(
    workload: &ObjectKey,
    policies: &[(&PolicyPart, &BTreeSet<ObjectKey>)],
) -> Vec<Rule> {
    let mut rules = Vec::new();
    for (part, targets) in policies {
        if targets.contains(workload) {
            rules.extend(part.rules.iter().cloned());
        }
    }
    rules
}

/// What stands in for a rejected deny policy: deny everyone on its ports.
fn deny_all(key: &ObjectKey, p: &AccessPolicy) -> Rule {
    Rule {
        policy: key.to_string(),
        rule: 0,
        action: Action::Deny,
        mode: Mode::Enforce,
        ports: p.spec.target.ports.clone(),
        from: vec![Source::Authenticated, Source::Unauthenticated],
        http: None,
        valid_from: None,
        valid_until: None,
        rate_limit: None,
    }
}

/// The workloads a policy protects: its target segment's members, or the pods its
/// selector picks in its namespace.
fn targets(
    key: &ObjectKey,
    p: &AccessPolicy,
    inputs: &Inputs<'_, '_>,
    verdict: &mut Verdict,
) -> BTreeSet<ObjectKey> {
    match (&p.spec.target.segment, &p.spec.target.pod_selector) {
        (Some(seg), _) => {
            let seg_key = ObjectKey::parse_relative(seg, &key.namespace);
            inputs.segments.get(&seg_key).cloned().unwrap_or_else(|| {
                verdict
                    .warnings
                    .push(format!("target segment {seg_key} does not exist (yet)"));
                BTreeSet::new()
            })
        }
        (None, Some(sel)) => inputs.pods.select(sel, |k| k.namespace == key.namespace),
        (None, None) => BTreeSet::new(),
    }
}
