//! Workloads: each one's identity and labels (rejected when its namespace and service
//! account do not form a SPIFFE ID), the label index selectors run on, and the assembly
//! of its policy from what the other steps computed.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use vigil_cert_authority::{SpiffeId, TrustDomain};
use vigil_crds::{DEFAULT_POLICY_ANNOTATION, EgressMode, Workload};
use vigil_policy::model::{DefaultPolicy, Outbound, ProxyPolicy, Revocations, Rule};

use super::{CompiledWorkload, Settings, Verdict};
use crate::{
    resources::{Kind, NamespaceMeta, ObjectKey, Resources},
    selector, sorted,
};

/// A workload that has an identity.
pub(super) struct WorkloadInfo<'a> {
    pub(super) workload: &'a Workload,
    pub(super) identity: &'a SpiffeId,
    /// `metadata.labels` overlaid with `spec.labels` (borrowed when there are none of the
    /// latter: copying every workload's labels was a tenth of a compile).
    pub(super) labels: Cow<'a, BTreeMap<String, String>>,
}

/// The workloads that have an identity, by key (borrowed: building this map allocates
/// nothing per workload but its labels when `spec.labels` overlays them).
pub(super) type Infos<'a> = BTreeMap<&'a ObjectKey, WorkloadInfo<'a>>;

/// Every workload's identity, for those whose namespace and service account form one; each
/// workload gets a verdict. A full compile keeps the result for the incremental path
/// (`Cache::identities`), which cannot change them.
pub(super) fn identities(
    res: &Resources,
    td: &TrustDomain,
    verdicts: &mut BTreeMap<(Kind, ObjectKey), Verdict>,
) -> BTreeMap<ObjectKey, SpiffeId> {
    let mut ids = Vec::with_capacity(res.workloads.len());
    for (key, w) in &res.workloads {
        let mut v = Verdict::default();
        match SpiffeId::workload(td, &key.namespace, &w.spec.service_account) {
            Ok(identity) => {
                v.targets.insert(key.clone());
                ids.push((key.clone(), identity));
            }
            Err(e) => {
                v.accepted = Err(format!(
                    "namespace/service account do not form a SPIFFE ID: {e}"
                ))
            }
        }
        verdicts.insert((Kind::Workload, key.clone()), v);
    }
    // In key order already: collected in bulk, not one search per insert.
    ids.into_iter().collect()
}

/// The workloads of `res` that have an identity in `ids` (made from the same workloads).
pub(super) fn infos<'a>(res: &'a Resources, ids: &'a BTreeMap<ObjectKey, SpiffeId>) -> Infos<'a> {
    let mut infos = Vec::with_capacity(ids.len());
    sorted::visit(ids.iter(), &res.workloads, |key, identity, w| {
        let Some(w) = w else { return };
        let labels = if w.spec.labels.is_empty() {
            Cow::Borrowed(kube::ResourceExt::labels(w))
        } else {
            Cow::Owned(Resources::workload_labels(w))
        };
        infos.push((
            key,
            WorkloadInfo {
                workload: w,
                identity,
                labels,
            },
        ));
    });
    // In key order: collected in bulk, not one search per insert.
    infos.into_iter().collect()
}

/// Each workload's policy, without its outbound destinations (the outbound step adds
/// them once every inbound is known).
pub(super) fn assemble(
    res: &Resources,
    settings: &Settings,
    infos: &Infos<'_>,
    mut inbound: BTreeMap<ObjectKey, Vec<Rule>>,
    quarantined: &BTreeSet<ObjectKey>,
    revoked: &[String],
) -> BTreeMap<ObjectKey, CompiledWorkload> {
    let mut out = BTreeMap::new();
    for (key, info) in infos {
        let w = info.workload;
        let is_quarantined = quarantined.contains(key);
        let policy = ProxyPolicy {
            generation: 0,
            workload: Some(info.identity.to_string()),
            default_policy: workload_default(w, res.namespaces.get(&key.namespace), settings),
            quarantined: is_quarantined,
            inbound: inbound.remove(key).unwrap_or_default(),
            revoked: Revocations {
                ids: revoked.to_vec(),
                serials: Vec::new(),
            },
            outbound: Outbound {
                passthrough: !is_quarantined
                    && w.spec.egress.map_or(settings.egress_passthrough, |e| {
                        e == EgressMode::Passthrough
                    }),
                destinations: Vec::new(),
            },
        };
        out.insert(
            (*key).clone(),
            CompiledWorkload {
                identity: info.identity.clone(),
                policy,
            },
        );
    }
    out
}

/// The workload's own default, else its namespace's annotation, else the controller's.
fn workload_default(
    w: &Workload,
    ns: Option<&NamespaceMeta>,
    settings: &Settings,
) -> DefaultPolicy {
    if let Some(d) = w.spec.default_policy {
        return d.into();
    }
    ns.and_then(|n| n.annotations.get(DEFAULT_POLICY_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(settings.default_policy)
}

/// Where a workload's inbound proxy listens, when callers must be sent there explicitly.
pub(super) fn proxy_of(info: &WorkloadInfo<'_>) -> Option<std::net::SocketAddr> {
    info.workload
        .spec
        .proxy
        .as_deref()
        .and_then(|p| p.parse().ok())
}

/// Workloads by label, for selectors. The label index is built at the first selector
/// with `matchLabels`: a recompile whose selectors have none (segments' members are
/// kept, an empty pod selector takes the namespace) does not pay for it.
pub(super) struct PodIndex<'i, 'w> {
    infos: &'i Infos<'w>,
    by_label: std::cell::OnceCell<BTreeMap<(&'i str, &'i str), BTreeSet<&'i ObjectKey>>>,
}

impl<'i, 'w> PodIndex<'i, 'w> {
    pub(super) fn new(infos: &'i Infos<'w>) -> Self {
        Self {
            infos,
            by_label: std::cell::OnceCell::new(),
        }
    }

    fn by_label(&self) -> &BTreeMap<(&'i str, &'i str), BTreeSet<&'i ObjectKey>> {
        self.by_label.get_or_init(|| {
            let mut by_label: BTreeMap<(&str, &str), BTreeSet<&ObjectKey>> = BTreeMap::new();
            for (&k, info) in self.infos {
                for (lk, lv) in info.labels.iter() {
                    by_label
                        .entry((lk.as_str(), lv.as_str()))
                        .or_default()
                        .insert(k);
                }
            }
            by_label
        })
    }

    /// Workloads matching `sel` and `keep`.
    pub(super) fn select(
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
                    match self.by_label().get(&(k.as_str(), v.as_str())) {
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
            None => self.infos.keys().copied().collect(),
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
