//! The index: compiled policy per workload, published on `watch` channels.
//!
//! A change that touches only AccessPolicies recompiles those policies and the workloads
//! they affect (`compile/incremental.rs`) and compares only those workloads' policies with
//! what they have; any other change recompiles everything ([`compile`], the reference —
//! the tests check both give the same snapshots and generations over random sequences of
//! changes). A change that alters someone's policy bumps the generation; only workloads
//! whose policy actually changed receive a new snapshot, stamped with the new
//! generation. A `watch` channel holds only the latest value, so bursts of changes
//! coalesce to the latest snapshot for a slow consumer. Proxies acknowledge what they
//! applied (a stream's acks through an [`Acker`], without this index's lock: `acks.rs`);
//! [`Index::status`] says who enforces what.

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::watch;
use vigil_cert_authority::SpiffeId;
use vigil_policy::model::{Destination, ProxyPolicy};

use crate::{
    acks::Acker,
    change::Change,
    compile::{Compiled, Settings, Verdict, compile, policies_changed},
    publish::{Entry, everything, gone, publish},
    resources::{Kind, ObjectKey, Resource, Resources},
    sorted::join,
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
    /// Whether AccessPolicy changes take the incremental path (off: every change
    /// recompiles everything, the reference the tests compare with).
    incremental: bool,
    /// How many recompiles were full, and how many incremental.
    recompiles: (u64, u64),
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
            incremental: true,
            recompiles: (0, 0),
        }
    }

    /// Turns the incremental path on (the default) or off (every change recompiles
    /// everything: slower, same result — what the equivalence tests compare with).
    pub fn set_incremental(&mut self, on: bool) {
        self.incremental = on;
    }

    /// How many recompiles were full, and how many took the incremental path.
    pub fn recompiles(&self) -> (u64, u64) {
        self.recompiles
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
        let change = Change::of(&r);
        self.resources.apply(r);
        self.recompute(now, change);
    }

    /// Removes a resource and recompiles.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey, now: u64) {
        if self.resources.delete(kind, key) {
            self.recompute(now, Change::deleting(kind, key));
        }
    }

    /// Replaces every resource at once (a full reload of a source) and recompiles what
    /// the difference touches.
    pub fn replace(&mut self, resources: Resources, now: u64) {
        let change = if self.incremental {
            Change::between(&self.resources, &resources)
        } else {
            Change::Everything
        };
        self.resources = resources;
        self.recompute(now, change);
    }

    /// Recompiles if a validity window opened or closed since the last compile. Returns
    /// true if it recompiled.
    pub fn tick(&mut self, now: u64) -> bool {
        if self.compiled.next_change.is_some_and(|t| now >= t) {
            self.recompute(now, Change::Everything);
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
        self.entry(workload).tx.subscribe()
    }

    /// Records `workload`'s acknowledgements without this index's lock, for a stream that
    /// watches it (an unknown workload gets an entry, as with [`Index::watch`]).
    pub fn acker(&mut self, workload: &ObjectKey) -> Acker {
        Acker(Arc::clone(&self.entry(workload).acks))
    }

    fn entry(&mut self, workload: &ObjectKey) -> &Entry {
        let generation = self.generation;
        self.entries
            .entry(workload.clone())
            .or_insert_with(|| Entry::new(generation))
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
    pub fn ack(&self, workload: &ObjectKey, generation: u64) -> Option<std::time::Duration> {
        self.entries.get(workload)?.acks.ack(generation)
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
                let acked = e.acks.state().acked.map(|a| a.0);
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
                self.entries.get(*t).is_some_and(|e| {
                    let s = e.acks.state();
                    s.acked.is_some_and(|a| a.0 == s.published.0)
                })
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn recompute(&mut self, now: u64, change: Change) {
        let next = self.generation + 1;
        let affected = match change {
            Change::Policies(keys) if self.incremental => policies_changed(
                &mut self.compiled,
                &self.resources,
                &self.settings,
                &keys,
                now,
            ),
            _ => None,
        };
        let changed = match affected {
            // Only these workloads' policies may have changed; every other one is as
            // published (and every known workload has an entry since the last full compile).
            Some(keys) => {
                self.recompiles.1 += 1;
                let items = join(&keys, &self.compiled.workloads);
                publish(&mut self.entries, &items, next)
            }
            None => {
                self.recompiles.0 += 1;
                self.compiled = compile(&self.resources, &self.settings, now);
                // Every workload, and deny-all for entries of workloads that vanished (or
                // never were).
                let gone = gone(&self.entries, &self.compiled.workloads);
                let items = everything(&self.compiled.workloads, &gone);
                publish(&mut self.entries, &items, next)
            }
        };
        if changed {
            self.generation = next;
        }
    }
}
