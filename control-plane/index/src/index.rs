//! The index: compiled policy per workload, published on `watch` channels.
//!
//! Every change recompiles everything (simple and deterministic; fine up to thousands of
//! workloads — incremental compilation is future work) and bumps the generation; only
//! workloads whose policy actually changed receive a new snapshot, stamped with the new
//! generation. A `watch` channel holds only the latest value, so bursts of changes
//! coalesce to the latest snapshot for a slow consumer. Proxies acknowledge what they
//! applied; [`Index::status`] says who enforces what.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use tokio::sync::watch;
use vigil_cert_authority::SpiffeId;
use vigil_policy::model::{Destination, ProxyPolicy};

use crate::{
    compile::{Compiled, Settings, Verdict, compile},
    resources::{Kind, ObjectKey, Resource, Resources},
};

/// What a proxy receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The generation at which this workload's policy last changed.
    pub generation: u64,
    /// The workload's identity (None while the workload is unknown).
    pub identity: Option<SpiffeId>,
    /// Its policy (with `generation` set).
    pub policy: ProxyPolicy,
}

struct Entry {
    tx: watch::Sender<Arc<Snapshot>>,
    /// When the current snapshot was published (for propagation latency).
    published: Instant,
    /// Last generation this workload's proxy acknowledged, and when.
    acked: Option<(u64, Instant)>,
}

/// Per-workload status for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadStatus {
    /// `namespace/name`.
    pub workload: ObjectKey,
    /// Identity, if known.
    pub identity: Option<SpiffeId>,
    /// The generation of its current snapshot.
    pub generation: u64,
    /// The generation its proxy last acknowledged.
    pub acked: Option<u64>,
    /// Whether its proxy enforces the current snapshot.
    pub up_to_date: bool,
}

/// The policy index.
pub struct Index {
    settings: Settings,
    resources: Resources,
    generation: u64,
    entries: BTreeMap<ObjectKey, Entry>,
    compiled: Compiled,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("generation", &self.generation)
            .field("workloads", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// An empty index.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            resources: Resources::default(),
            generation: 0,
            entries: BTreeMap::new(),
            compiled: Compiled::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The current generation (increases with every effective change).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The resources as the index holds them.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// Adds or replaces a resource and recompiles.
    pub fn apply(&mut self, r: Resource, now: u64) {
        self.resources.apply(r);
        self.recompute(now);
    }

    /// Removes a resource and recompiles.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey, now: u64) {
        if self.resources.delete(kind, key) {
            self.recompute(now);
        }
    }

    /// Replaces every resource at once (a full reload of a source) and recompiles.
    pub fn replace(&mut self, resources: Resources, now: u64) {
        self.resources = resources;
        self.recompute(now);
    }

    /// Recompiles if a validity window opened or closed since the last compile. Returns
    /// true if it recompiled.
    pub fn tick(&mut self, now: u64) -> bool {
        if self.compiled.next_change.is_some_and(|t| now >= t) {
            self.recompute(now);
            return true;
        }
        false
    }

    /// When the next validity window opens or closes (unix seconds).
    pub fn next_change(&self) -> Option<u64> {
        self.compiled.next_change
    }

    /// A receiver of `workload`'s snapshots. An unknown workload gets a deny-all snapshot
    /// until it appears.
    pub fn watch(&mut self, workload: &ObjectKey) -> watch::Receiver<Arc<Snapshot>> {
        let generation = self.generation;
        self.entries
            .entry(workload.clone())
            .or_insert_with(|| Entry {
                tx: watch::Sender::new(Arc::new(unknown(generation))),
                published: Instant::now(),
                acked: None,
            })
            .tx
            .subscribe()
    }

    /// The identity of a known workload.
    pub fn identity(&self, workload: &ObjectKey) -> Option<&SpiffeId> {
        self.compiled.workloads.get(workload).map(|w| &w.identity)
    }

    /// The mesh workload serving `address`, if any (for `Policy.Resolve`).
    pub fn resolve(&self, address: &std::net::SocketAddr) -> Option<&Destination> {
        self.compiled.addresses.get(address)
    }

    /// Records that `workload`'s proxy applied `generation`. Returns how long it took since
    /// that snapshot was published, if it is the current one.
    pub fn ack(&mut self, workload: &ObjectKey, generation: u64) -> Option<std::time::Duration> {
        let entry = self.entries.get_mut(workload)?;
        let now = Instant::now();
        entry.acked = Some((generation, now));
        (entry.tx.borrow().generation == generation).then(|| now.duration_since(entry.published))
    }

    /// Verdict of every resource.
    pub fn verdicts(&self) -> &BTreeMap<(Kind, ObjectKey), Verdict> {
        &self.compiled.verdicts
    }

    /// Status of every workload the index knows or has been asked about.
    pub fn status(&self) -> Vec<WorkloadStatus> {
        self.entries
            .iter()
            .map(|(k, e)| {
                let snap = e.tx.borrow();
                let acked = e.acked.map(|a| a.0);
                WorkloadStatus {
                    workload: k.clone(),
                    identity: snap.identity.clone(),
                    generation: snap.generation,
                    acked,
                    up_to_date: acked == Some(snap.generation),
                }
            })
            .collect()
    }

    /// How many of a resource's target workloads have proxies enforcing their current snapshot.
    pub fn enforcing(&self, kind: Kind, key: &ObjectKey) -> u32 {
        let Some(v) = self.compiled.verdicts.get(&(kind, key.clone())) else {
            return 0;
        };
        let n = v
            .targets
            .iter()
            .filter(|t| {
                self.entries
                    .get(*t)
                    .is_some_and(|e| e.acked.map(|a| a.0) == Some(e.tx.borrow().generation))
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn recompute(&mut self, now: u64) {
        let compiled = compile(&self.resources, &self.settings, now);
        let next = self.generation + 1;
        let mut changed = false;
        // Known workloads get their policy; entries for workloads that vanished get deny-all.
        let keys: Vec<ObjectKey> = compiled
            .workloads
            .keys()
            .chain(self.entries.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for key in keys {
            let (identity, policy) = match compiled.workloads.get(&key) {
                Some(w) => (Some(w.identity.clone()), w.policy.clone()),
                None => (None, ProxyPolicy::default()),
            };
            let entry = self.entries.entry(key).or_insert_with(|| Entry {
                tx: watch::Sender::new(Arc::new(unknown(0))),
                published: Instant::now(),
                acked: None,
            });
            let current = entry.tx.borrow().clone();
            let same = current.identity == identity
                && ProxyPolicy {
                    generation: 0,
                    ..current.policy.clone()
                } == policy;
            if !same {
                changed = true;
                let snapshot = Snapshot {
                    generation: next,
                    identity,
                    policy: ProxyPolicy {
                        generation: next,
                        ..policy
                    },
                };
                entry.published = Instant::now();
                entry.tx.send_replace(Arc::new(snapshot));
            }
        }
        if changed {
            self.generation = next;
        }
        self.compiled = compiled;
    }
}

fn unknown(generation: u64) -> Snapshot {
    Snapshot {
        generation,
        identity: None,
        policy: ProxyPolicy {
            generation,
            ..ProxyPolicy::default()
        },
    }
}
