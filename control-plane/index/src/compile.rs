//! Resources -> one [`ProxyPolicy`] per workload.
//!
//! ```text
//!   Workload ── identity spiffe://<td>/ns/<ns>/sa/<sa>, labels, addresses
//!   Segment  ── members: workloads matching its selectors
//!   AccessPolicy ── targets (segment / pod selector) x sources (segment members, IDs,
//!                   namespaces, service accounts, (un)authenticated, CIDRs) x rules
//!                   -> rules in each target's `inbound`
//!   Quarantine ── members -> `quarantined: true` on them, their identities revoked everywhere
//!   outbound ── for each workload, the destinations whose policy admits it
//!   addresses ── every workload address -> its identity (on-demand discovery, so a call
//!                to a mesh workload outside the table still goes over mTLS)
//!   services ── ClusterIP:port -> the identities of its backends (services.rs)
//! ```
//!
//! A policy that does not compile is rejected (its status says why) — and if it is a
//! **deny** policy, its targets get a deny-all rule in its place, because silently dropping
//! a deny would open what it was meant to close (fail closed).

use std::collections::{BTreeMap, BTreeSet};

use vigil_cert_authority::{SpiffeId, TrustDomain};
use vigil_crds::{AccessPolicy, DefaultPolicySpec, EgressMode, PolicyAction, PolicyMode, Workload};
use vigil_policy::{
    Policy, SpiffePattern,
    model::{
        Action, DefaultPolicy, Destination, GrpcMatch, HeaderMatch, HttpMatch, Mode, PathMatch,
        ProxyPolicy, RateLimit, Rule, Source,
    },
};

use crate::{
    resources::{Kind, ObjectKey, Resources},
    selector,
};

mod reachability;
mod services;

use reachability::reachability;

/// Annotation on a namespace choosing its workloads' default policy.
pub const DEFAULT_POLICY_ANNOTATION: &str = "vigil.dev/default-policy";

/// Controller-wide settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Trust domain of every identity.
    pub trust_domain: TrustDomain,
    /// Default policy where neither workload nor namespace says.
    pub default_policy: DefaultPolicy,
    /// Whether traffic to non-mesh destinations passes through, where the workload does not say.
    pub egress_passthrough: bool,
}

/// What compiling produced.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// Policy per workload (generation 0; the index assigns generations).
    pub workloads: BTreeMap<ObjectKey, CompiledWorkload>,
    /// Verdict per resource.
    pub verdicts: BTreeMap<(Kind, ObjectKey), Verdict>,
    /// The next time (unix seconds) a validity window opens or closes.
    pub next_change: Option<u64>,
    /// Every workload address, to the destination it is (answers `Policy.Resolve`).
    pub addresses: BTreeMap<std::net::SocketAddr, Destination>,
}

/// One workload's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledWorkload {
    /// Its identity.
    pub identity: SpiffeId,
    /// Its policy.
    pub policy: ProxyPolicy,
}

/// Accepted or not, and what it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `Err(reason)` if rejected.
    pub accepted: Result<(), String>,
    /// Notes for the operator that do not reject (e.g. an unknown segment).
    pub warnings: Vec<String>,
    /// Workloads it applies to.
    pub targets: BTreeSet<ObjectKey>,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            accepted: Ok(()),
            warnings: Vec::new(),
            targets: BTreeSet::new(),
        }
    }
}

struct WorkloadInfo<'a> {
    workload: &'a Workload,
    identity: SpiffeId,
    labels: BTreeMap<String, String>,
}

/// Compiles every resource at time `now` (unix seconds).
pub fn compile(res: &Resources, settings: &Settings, now: u64) -> Compiled {
    let mut out = Compiled::default();
    let td = &settings.trust_domain;

    // Workloads and their identities.
    let mut infos: BTreeMap<ObjectKey, WorkloadInfo<'_>> = BTreeMap::new();
    for (key, w) in &res.workloads {
        let mut v = Verdict::default();
        match SpiffeId::workload(td, &key.namespace, &w.spec.service_account) {
            Ok(identity) => {
                v.targets.insert(key.clone());
                infos.insert(
                    key.clone(),
                    WorkloadInfo {
                        workload: w,
                        identity,
                        labels: Resources::workload_labels(w),
                    },
                );
            }
            Err(e) => {
                v.accepted = Err(format!(
                    "namespace/service account do not form a SPIFFE ID: {e}"
                ))
            }
        }
        out.verdicts.insert((Kind::Workload, key.clone()), v);
    }

    // Membership of every segment, computed once, through a label index so a selector
    // with matchLabels touches only the workloads carrying those labels.
    let pods = PodIndex::new(&infos);
    let members: BTreeMap<ObjectKey, BTreeSet<ObjectKey>> = res
        .segments
        .iter()
        .map(|(seg_key, seg)| {
            let ns_labels = |ns: &str| {
                res.namespaces
                    .get(ns)
                    .map(|n| n.labels.clone())
                    .unwrap_or_default()
            };
            let set = pods.select(&seg.spec.pod_selector, |k| {
                match &seg.spec.namespace_selector {
                    None => k.namespace == seg_key.namespace,
                    Some(sel) => selector::matches(sel, &ns_labels(&k.namespace)),
                }
            });
            (seg_key.clone(), set)
        })
        .collect();
    let segment_members =
        |seg_key: &ObjectKey| -> Option<BTreeSet<ObjectKey>> { members.get(seg_key).cloned() };
    for key in res.segments.keys() {
        let members = segment_members(key).unwrap_or_default();
        out.verdicts.insert(
            (Kind::Segment, key.clone()),
            Verdict {
                targets: members,
                ..Verdict::default()
            },
        );
    }

    // Quarantines.
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
            .map(|(k, _)| k.clone())
            .collect();
        quarantined.extend(members.iter().cloned());
        out.verdicts.insert(
            (Kind::Quarantine, key.clone()),
            Verdict {
                targets: members,
                ..Verdict::default()
            },
        );
    }
    let revoked: Vec<String> = quarantined
        .iter()
        .filter_map(|k| infos.get(k).map(|i| i.identity.to_string()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    // Access policies -> inbound rules per target.
    let mut inbound: BTreeMap<ObjectKey, Vec<Rule>> = BTreeMap::new();
    for (key, p) in &res.policies {
        let mut verdict = Verdict::default();
        let targets = policy_targets(key, p, &pods, &segment_members, &mut verdict);
        let compiled = policy_rules(key, p, td, &segment_members, &infos, &mut verdict);
        match compiled {
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
                    let deny_all = Rule {
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
                    };
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

    // Assemble each workload's policy.
    for (key, info) in &infos {
        let w = info.workload;
        let default_policy = workload_default(w, res.namespaces.get(&key.namespace), settings);
        let rules = inbound.remove(key).unwrap_or_default();
        let is_quarantined = quarantined.contains(key);
        let policy = ProxyPolicy {
            generation: 0,
            workload: Some(info.identity.to_string()),
            default_policy,
            quarantined: is_quarantined,
            inbound: rules,
            revoked: vigil_policy::model::Revocations {
                ids: revoked.clone(),
                serials: Vec::new(),
            },
            outbound: vigil_policy::model::Outbound {
                passthrough: !is_quarantined
                    && w.spec.egress.map_or(settings.egress_passthrough, |e| {
                        e == EgressMode::Passthrough
                    }),
                destinations: Vec::new(),
            },
        };
        out.workloads.insert(
            key.clone(),
            CompiledWorkload {
                identity: info.identity.clone(),
                policy,
            },
        );
    }

    // Outbound: the destinations whose inbound policy admits each workload. Computed by
    // inverting the allow rules (who may reach X), not by testing every pair.
    let reachable = reachability(&out.workloads);
    let service_dests = services::destinations(res, &out.workloads, &mut out.addresses);
    let tables: BTreeMap<ObjectKey, Vec<Destination>> = out
        .workloads
        .iter()
        .filter(|(_, cw)| !cw.policy.quarantined)
        .map(|(key, _)| {
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
                let (Some(info), Some(other)) =
                    (infos.get(other_key), out.workloads.get(other_key))
                else {
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
            (key.clone(), dests)
        })
        .collect();
    for (key, dests) in tables {
        if let Some(cw) = out.workloads.get_mut(&key) {
            cw.policy.outbound.destinations = dests;
        }
    }
    for (key, info) in &infos {
        let proxy = proxy_of(info);
        for addr in &info.workload.spec.addresses {
            let warning = match addr.parse::<std::net::SocketAddr>() {
                Err(_) => Some(format!("address {addr:?} is not host:port")),
                Ok(address) => match out.addresses.entry(address) {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(Destination {
                            address,
                            proxy,
                            identities: vec![info.identity.to_string()],
                            endpoints: Vec::new(),
                        });
                        None
                    }
                    std::collections::btree_map::Entry::Occupied(e) => Some(format!(
                        "address {addr} is also claimed by a workload running as {}; calls to it go there",
                        e.get().identities.join(", ")
                    )),
                },
            };
            if let Some(w) = warning
                && let Some(v) = out.verdicts.get_mut(&(Kind::Workload, key.clone()))
            {
                v.warnings.push(w);
            }
        }
    }
    out
}

/// Where a workload's inbound proxy listens, when callers must be sent there explicitly.
fn proxy_of(info: &WorkloadInfo<'_>) -> Option<std::net::SocketAddr> {
    info.workload
        .spec
        .proxy
        .as_deref()
        .and_then(|p| p.parse().ok())
}

/// Workloads by label, for selectors.
struct PodIndex<'i, 'w> {
    infos: &'i BTreeMap<ObjectKey, WorkloadInfo<'w>>,
    by_label: BTreeMap<(&'i str, &'i str), BTreeSet<&'i ObjectKey>>,
}

impl<'i, 'w> PodIndex<'i, 'w> {
    fn new(infos: &'i BTreeMap<ObjectKey, WorkloadInfo<'w>>) -> Self {
        let mut by_label: BTreeMap<(&str, &str), BTreeSet<&ObjectKey>> = BTreeMap::new();
        for (k, info) in infos {
            for (lk, lv) in &info.labels {
                by_label
                    .entry((lk.as_str(), lv.as_str()))
                    .or_default()
                    .insert(k);
            }
        }
        Self { infos, by_label }
    }

    /// Workloads matching `sel` and `keep`.
    fn select(
        &self,
        sel: &vigil_crds::LabelSelector,
        keep: impl Fn(&ObjectKey) -> bool,
    ) -> BTreeSet<ObjectKey> {
        let wanted = sel.match_labels.as_ref().filter(|m| !m.is_empty());
        let candidates: Vec<&ObjectKey> = match wanted {
            Some(labels) => {
                // Intersect the smallest posting lists first.
                let mut lists: Vec<&BTreeSet<&ObjectKey>> = Vec::new();
                for (k, v) in labels {
                    match self.by_label.get(&(k.as_str(), v.as_str())) {
                        Some(l) => lists.push(l),
                        None => return BTreeSet::new(),
                    }
                }
                lists.sort_by_key(|l| l.len());
                lists[0]
                    .iter()
                    .copied()
                    .filter(|k| lists[1..].iter().all(|l| l.contains(k)))
                    .collect()
            }
            None => self.infos.keys().collect(),
        };
        candidates
            .into_iter()
            .filter(|k| {
                keep(k)
                    && self
                        .infos
                        .get(*k)
                        .is_some_and(|i| selector::matches(sel, &i.labels))
            })
            .cloned()
            .collect()
    }
}

fn workload_default(
    w: &Workload,
    ns: Option<&crate::resources::NamespaceMeta>,
    settings: &Settings,
) -> DefaultPolicy {
    if let Some(d) = w.spec.default_policy {
        return match d {
            DefaultPolicySpec::Deny => DefaultPolicy::Deny,
            DefaultPolicySpec::Audit => DefaultPolicy::Audit,
            DefaultPolicySpec::AllowAuthenticated => DefaultPolicy::AllowAuthenticated,
        };
    }
    match ns
        .and_then(|n| n.annotations.get(DEFAULT_POLICY_ANNOTATION))
        .map(String::as_str)
    {
        Some("deny") => DefaultPolicy::Deny,
        Some("audit") => DefaultPolicy::Audit,
        Some("allow-authenticated") => DefaultPolicy::AllowAuthenticated,
        _ => settings.default_policy,
    }
}

fn policy_targets(
    key: &ObjectKey,
    p: &AccessPolicy,
    pods: &PodIndex<'_, '_>,
    segment_members: &impl Fn(&ObjectKey) -> Option<BTreeSet<ObjectKey>>,
    verdict: &mut Verdict,
) -> BTreeSet<ObjectKey> {
    match (&p.spec.target.segment, &p.spec.target.pod_selector) {
        (Some(seg), _) => {
            let seg_key = ObjectKey::parse_relative(seg, &key.namespace);
            segment_members(&seg_key).unwrap_or_else(|| {
                verdict
                    .warnings
                    .push(format!("target segment {seg_key} does not exist (yet)"));
                BTreeSet::new()
            })
        }
        (None, Some(sel)) => pods.select(sel, |k| k.namespace == key.namespace),
        (None, None) => BTreeSet::new(),
    }
}

/// The compiled rules of one policy (validated by the proxy's own compiler).
fn policy_rules(
    key: &ObjectKey,
    p: &AccessPolicy,
    td: &TrustDomain,
    segment_members: &impl Fn(&ObjectKey) -> Option<BTreeSet<ObjectKey>>,
    infos: &BTreeMap<ObjectKey, WorkloadInfo<'_>>,
    verdict: &mut Verdict,
) -> Result<Vec<Rule>, String> {
    let spec = &p.spec;
    if let Err(errs) = vigil_crds::validate(p) {
        return Err(errs.join("; "));
    }
    let mut from: Vec<Source> = Vec::new();
    for (i, s) in spec.from.iter().enumerate() {
        let at = |what: &str| format!("from[{i}]: {what}");
        if let Some(id) = &s.spiffe_id {
            SpiffePattern::parse(id).map_err(|e| at(&e.to_string()))?;
            from.push(Source::Id(id.clone()));
        } else if let Some(seg) = &s.segment {
            let seg_key = ObjectKey::parse_relative(seg, &key.namespace);
            match segment_members(&seg_key) {
                Some(members) => {
                    let ids: BTreeSet<String> = members
                        .iter()
                        .filter_map(|m| infos.get(m).map(|i| i.identity.to_string()))
                        .collect();
                    from.extend(ids.into_iter().map(Source::Id));
                }
                None => verdict
                    .warnings
                    .push(at(&format!("segment {seg_key} does not exist (yet)"))),
            }
        } else if let Some(ns) = &s.namespace {
            let pattern = format!("spiffe://{td}/ns/{ns}/sa/*");
            SpiffePattern::parse(&pattern).map_err(|e| at(&e.to_string()))?;
            from.push(Source::Id(pattern));
        } else if let Some(sa) = &s.service_account {
            let sa_key = ObjectKey::parse_relative(sa, &key.namespace);
            let id = SpiffeId::workload(td, &sa_key.namespace, &sa_key.name)
                .map_err(|e| at(&e.to_string()))?;
            from.push(Source::Id(id.to_string()));
        } else if s.authenticated == Some(true) {
            from.push(Source::Authenticated);
        } else if s.unauthenticated == Some(true) {
            from.push(Source::Unauthenticated);
        } else if let Some(cidr) = &s.cidr {
            from.push(Source::Cidr(
                cidr.parse()
                    .map_err(|e| at(&format!("cidr {cidr:?}: {e}")))?,
            ));
        }
    }
    let mut dedup = BTreeSet::new();
    from.retain(|s| dedup.insert(format!("{s:?}")));

    let valid_from = spec.valid_from.as_deref().map(parse_time).transpose()?;
    let valid_until = spec.valid_until.as_deref().map(parse_time).transpose()?;
    let rate_limit = spec.rate_limit.as_ref().map(|rl| RateLimit {
        requests_per_second: rl.requests_per_second,
        burst: rl.burst.unwrap_or(rl.requests_per_second),
    });
    let action = match spec.action {
        PolicyAction::Allow => Action::Allow,
        PolicyAction::Deny => Action::Deny,
    };
    let mode = match spec.mode {
        PolicyMode::Enforce => Mode::Enforce,
        PolicyMode::Audit => Mode::Audit,
    };
    let base = Rule {
        policy: key.to_string(),
        rule: 0,
        action,
        mode,
        ports: spec.target.ports.clone(),
        from: from.clone(),
        http: None,
        valid_from,
        valid_until,
        rate_limit,
    };
    let rules: Vec<Rule> = if spec.rules.is_empty() {
        vec![base]
    } else {
        spec.rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let http = HttpMatch {
                    methods: r.methods.clone(),
                    paths: r
                        .paths
                        .iter()
                        .filter_map(|p| match (&p.exact, &p.prefix, &p.glob) {
                            (Some(v), _, _) => Some(PathMatch::Exact(v.clone())),
                            (_, Some(v), _) => Some(PathMatch::Prefix(v.clone())),
                            (_, _, Some(v)) => Some(PathMatch::Glob(v.clone())),
                            _ => None,
                        })
                        .collect(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| HeaderMatch {
                            name: h.name.clone(),
                            exact: h.exact.clone(),
                            regex: h.regex.clone(),
                            present: h.present,
                        })
                        .collect(),
                    grpc: r
                        .grpc
                        .iter()
                        .map(|g| GrpcMatch {
                            service: g.service.clone(),
                            method: g.method.clone(),
                        })
                        .collect(),
                };
                let is_l7 = !(http.methods.is_empty()
                    && http.paths.is_empty()
                    && http.headers.is_empty()
                    && http.grpc.is_empty());
                Rule {
                    rule: u32::try_from(i).unwrap_or(u32::MAX),
                    ports: if r.ports.is_empty() {
                        spec.target.ports.clone()
                    } else {
                        r.ports.clone()
                    },
                    http: is_l7.then_some(http),
                    ..base.clone()
                }
            })
            .collect()
    };
    if from.is_empty() {
        verdict
            .warnings
            .push("no source resolved to any workload yet; the policy matches no one".into());
        return Ok(Vec::new());
    }
    // The proxy's own compiler is the judge of validity (regexes, globs, methods...).
    Policy::compile(ProxyPolicy {
        inbound: rules.clone(),
        ..ProxyPolicy::default()
    })
    .map_err(|e| e.to_string())?;
    Ok(rules)
}

fn parse_time(s: &str) -> Result<u64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("time {s:?} is not RFC 3339: {e}"))?;
    u64::try_from(t.unix_timestamp()).map_err(|_| format!("time {s:?} is before 1970"))
}
