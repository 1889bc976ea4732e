//! What a workload's proxy acknowledged, kept beside the index rather than in it.
//!
//! Each workload's entry shares one [`AckCell`] with the [`Acker`]s handed to its policy
//! streams, so an ack on a stream records itself without the index lock. That lock is
//! held for the whole of a change (tens of milliseconds at 10,000 workloads), and the
//! first proxies to receive the change ack while it is still held: an ack that waited
//! for the lock blocked a runtime thread until the change was done (B10, issue 15).
//!
//! The cell holds the generation of the workload's current snapshot and when it was
//! published, written *before* the snapshot is sent: a proxy that acks generation `g`
//! has received `g`, so the cell already says `g` (or something newer), and an ack is
//! "current" exactly when the cell's generation is the acked one.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// One workload's published generation and last acknowledgement.
#[derive(Debug)]
pub(crate) struct AckCell(Mutex<AckState>);

#[derive(Clone, Copy, Debug)]
pub(crate) struct AckState {
    /// The generation of the current snapshot, and when it was published.
    pub(crate) published: (u64, Instant),
    /// The last generation the proxy acknowledged, and when.
    pub(crate) acked: Option<(u64, Instant)>,
}

impl AckCell {
    pub(crate) fn new(generation: u64) -> Arc<Self> {
        Arc::new(Self(Mutex::new(AckState {
            published: (generation, Instant::now()),
            acked: None,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, AckState> {
        // The state is two plain values, valid after any panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called before `generation` is sent to the workload's watchers.
    pub(crate) fn published(&self, generation: u64) {
        self.lock().published = (generation, Instant::now());
    }

    pub(crate) fn state(&self) -> AckState {
        *self.lock()
    }

    /// Records that the proxy applied `generation`; how long that took since it was
    /// published, if it is the current one.
    pub(crate) fn ack(&self, generation: u64) -> Option<Duration> {
        let now = Instant::now();
        let mut s = self.lock();
        s.acked = Some((generation, now));
        (s.published.0 == generation).then(|| now.duration_since(s.published.1))
    }
}

/// Records one workload's acknowledgements without the index lock (see the module
/// docs); from [`Index::acker`](crate::Index::acker).
#[derive(Clone, Debug)]
pub struct Acker(pub(crate) Arc<AckCell>);

impl Acker {
    /// Same as [`Index::ack`](crate::Index::ack) for this acker's workload.
    pub fn ack(&self, generation: u64) -> Option<Duration> {
        self.0.ack(generation)
    }
}
