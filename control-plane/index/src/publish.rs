//! Each workload's watch channel and ack cell, and publishing compiled policies to them.
//!
//! A change publishes to up to every workload; [`publish`] walks the entries alongside
//! its sorted items rather than searching for each (see `sorted.rs`).

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::watch;
use vigil_policy::model::ProxyPolicy;

use crate::{
    acks::AckCell, compile::CompiledWorkload, index::Snapshot, resources::ObjectKey, sorted,
};

/// A workload's channel: its current snapshot, and its acknowledgements.
pub(crate) struct Entry {
    pub(crate) tx: watch::Sender<Arc<Snapshot>>,
    /// The current snapshot's generation and when it was published; the proxy's last
    /// acknowledgement (shared with the workload's [`Acker`](crate::Acker)s).
    pub(crate) acks: Arc<AckCell>,
}

impl Entry {
    /// An unknown workload's entry: deny-all at `generation`.
    pub(crate) fn new(generation: u64) -> Self {
        Self {
            tx: watch::Sender::new(Arc::new(unknown(generation))),
            acks: AckCell::new(generation),
        }
    }
}

/// What to publish: each key with its compiled policy (deny-all for `None`), in key order.
pub(crate) type Items<'a> = [(&'a ObjectKey, Option<&'a CompiledWorkload>)];

/// The entries' keys that `workloads` lacks, in order.
pub(crate) fn gone(
    entries: &BTreeMap<ObjectKey, Entry>,
    workloads: &BTreeMap<ObjectKey, CompiledWorkload>,
) -> Vec<ObjectKey> {
    let mut gone = Vec::new();
    sorted::visit(entries.keys().map(|k| (k, ())), workloads, |k, (), w| {
        if w.is_none() {
            gone.push(k.clone());
        }
    });
    gone
}

/// Every compiled workload, and deny-all for each of `gone`, in key order.
pub(crate) fn everything<'a>(
    workloads: &'a BTreeMap<ObjectKey, CompiledWorkload>,
    gone: &'a [ObjectKey],
) -> Vec<(&'a ObjectKey, Option<&'a CompiledWorkload>)> {
    let mut out = Vec::with_capacity(workloads.len() + gone.len());
    let mut gone = gone.iter().peekable();
    for (k, cw) in workloads {
        while let Some(g) = gone.next_if(|g| *g < k) {
            out.push((g, None));
        }
        out.push((k, Some(cw)));
    }
    out.extend(gone.map(|g| (g, None)));
    out
}

/// Publishes each of `items` (sorted by key) to its watchers at generation `next`, where
/// it differs from what they have; a key without an entry gets one. Returns whether
/// anything was published.
pub(crate) fn publish(
    entries: &mut BTreeMap<ObjectKey, Entry>,
    items: &Items<'_>,
    next: u64,
) -> bool {
    let mut changed = false;
    let mut missing = Vec::new();
    sorted::visit_mut(
        items.iter().map(|&(key, cw)| (key, cw)),
        entries,
        |key, cw, entry| match entry {
            Some(entry) => changed |= publish_one(entry, cw, next),
            None => missing.push((key, cw)),
        },
    );
    for (key, cw) in missing {
        let entry = entries.entry(key.clone()).or_insert_with(|| Entry::new(0));
        changed |= publish_one(entry, cw, next);
    }
    changed
}

/// Publishes `compiled` (deny-all if `None`) to one entry at generation `next`, if it
/// differs from what its watchers have. Returns whether it did.
fn publish_one(entry: &mut Entry, compiled: Option<&CompiledWorkload>, next: u64) -> bool {
    let default = ProxyPolicy::default();
    let (identity, policy) = match compiled {
        Some(w) => (Some(&w.identity), &w.policy),
        None => (None, &default),
    };
    let same = {
        let current = entry.tx.borrow();
        current.identity.as_ref() == identity && same_policy(&current.policy, policy)
    };
    if same {
        return false;
    }
    let snapshot = Snapshot {
        generation: next,
        identity: identity.cloned(),
        policy: ProxyPolicy {
            generation: next,
            ..policy.clone()
        },
    };
    // Before sending: an ack of `next` must find it published (acks.rs).
    entry.acks.published(next);
    entry.tx.send_replace(Arc::new(snapshot));
    true
}

/// Equal apart from the generation.
fn same_policy(a: &ProxyPolicy, b: &ProxyPolicy) -> bool {
    let ProxyPolicy {
        generation: _,
        workload,
        default_policy,
        quarantined,
        inbound,
        revoked,
        outbound,
    } = a;
    *workload == b.workload
        && *default_policy == b.default_policy
        && *quarantined == b.quarantined
        && *inbound == b.inbound
        && *revoked == b.revoked
        && *outbound == b.outbound
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
