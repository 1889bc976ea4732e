//! Access policies: each one's targets and rules, into the inbound rules of every target.
//! A policy that does not compile is rejected; a rejected **deny** policy becomes a
//! deny-all on its targets' ports (fail closed). Rules whose window has closed are left
//! out, and the next window edge is reported so the index recompiles then.

use std::collections::{BTreeMap, BTreeSet};

use vigil_cert_authority::TrustDomain;
use vigil_crds::{AccessPolicy, PolicyAction};
use vigil_policy::model::{Action, Mode, Rule, Source};

use super::{
    Compiled, Verdict, translate,
    workloads::{PodIndex, WorkloadInfo},
};
use crate::resources::{Kind, ObjectKey, Resources};

/// What the policy steps share: the trust domain, workloads and segment membership.
pub(super) struct Inputs<'a, 'r> {
    pub(super) td: &'a TrustDomain,
    pub(super) pods: &'a PodIndex<'a, 'r>,
    pub(super) infos: &'a BTreeMap<ObjectKey, WorkloadInfo<'r>>,
    pub(super) segments: &'a BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
}

/// The inbound rules of every target at `now`; each policy gets a verdict, and
/// `out.next_change` the next time a validity window opens or closes.
pub(super) fn inbound_rules(
    res: &Resources,
    inputs: &Inputs<'_, '_>,
    now: u64,
    out: &mut Compiled,
) -> BTreeMap<ObjectKey, Vec<Rule>> {
    let mut inbound: BTreeMap<ObjectKey, Vec<Rule>> = BTreeMap::new();
    for (key, p) in &res.policies {
        let mut verdict = Verdict::default();
        let targets = targets(key, p, inputs, &mut verdict);
        match translate::rules(key, p, inputs, &mut verdict) {
            Ok(rules) => {
                for r in &rules {
                    for t in [r.valid_from, r.valid_until].into_iter().flatten() {
                        if t > now {
                            out.next_change = Some(out.next_change.map_or(t, |n| n.min(t)));
                        }
                    }
                }
                let live: Vec<Rule> = rules
                    .into_iter()
                    .filter(|r| r.valid_until.is_none_or(|u| u > now))
                    .collect();
                for t in &targets {
                    inbound
                        .entry(t.clone())
                        .or_default()
                        .extend(live.iter().cloned());
                }
            }
            Err(reason) => {
                tracing::warn!(policy = %key, %reason, "AccessPolicy rejected");
                if p.spec.action == PolicyAction::Deny {
                    let deny_all = deny_all(key, p);
                    for t in &targets {
                        inbound.entry(t.clone()).or_default().push(deny_all.clone());
                    }
                    verdict
                        .warnings
                        .push("rejected deny policy: its targets deny all traffic on its ports until it is fixed".into());
                }
                verdict.accepted = Err(reason);
            }
        }
        verdict.targets = targets;
        out.verdicts
            .insert((Kind::AccessPolicy, key.clone()), verdict);
    }
    inbound
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
