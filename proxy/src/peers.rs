//! The peers this proxy has spoken mTLS with recently: for each peer SPIFFE ID and
//! direction, when it was first and last seen and how many connections — what `vigil
//! verify` reads (`/peers` on the admin port) to say, from the proxies' own view, that an
//! edge is mTLS today.
//!
//! ```text
//! inbound: handshake verified ──► seen(Inbound, client id) ─┐
//! outbound: server verified ────► seen(Outbound, server id) ┴► record (≤ max peers) ─► /peers
//! ```
//!
//! Cost: one short lock and one hash lookup per connection, after its handshake (never per
//! request: an HTTP/2 connection carrying a thousand requests counts once); no allocation
//! unless the peer is new. Memory: at most `max` peers (`--peer-record-max`); a new peer
//! beyond that replaces the one seen least recently, and `evicted` says how many did.
//! It holds identities, counters and times — nothing secret; a peer's certificate, key or
//! address is never kept.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use vigil_cert_authority::SpiffeId;

use crate::metrics::labels::Direction;

/// The record (cheap to clone; clones share it).
#[derive(Clone, Debug)]
pub struct Peers {
    inner: Arc<Mutex<Record>>,
}

#[derive(Debug)]
struct Record {
    /// Most peers kept (0: the record is off).
    max: usize,
    peers: HashMap<SpiffeId, Sides>,
    /// Peers replaced because the record was full.
    evicted: u64,
    /// Counts every `seen`: orders peers by recency where seconds tie.
    tick: u64,
}

/// What was seen of one peer, per direction.
#[derive(Clone, Copy, Debug, Default)]
struct Sides {
    inbound: Option<Seen>,
    outbound: Option<Seen>,
    /// The record's tick when either was last seen.
    tick: u64,
}

/// Connections in one direction with one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// First verified handshake (unix seconds).
    pub first_seen: u64,
    /// Latest verified handshake (unix seconds). A pooled connection carries requests
    /// long after it: this is when the connection was made, not the last request.
    pub last_seen: u64,
    /// Connections made.
    pub connections: u64,
}

/// One line of `/peers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The peer's verified SPIFFE ID.
    pub id: String,
    /// `inbound` (the peer connected to this workload) or `outbound` (this workload
    /// connected to the peer).
    pub direction: Direction,
    /// When and how often.
    #[serde(flatten)]
    pub seen: Seen,
}

/// `/peers` (the wire form `vigil verify` reads back).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersReport {
    /// Most peers kept.
    pub max: usize,
    /// Peers replaced because the record was full (the record is partial if not 0).
    pub evicted: u64,
    /// Most recently seen first.
    pub peers: Vec<PeerEntry>,
}

// === impl Peers ===

impl Peers {
    /// A record of at most `max` peers (0: off).
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Record {
                max,
                peers: HashMap::with_capacity(max.min(64)),
                evicted: 0,
                tick: 0,
            })),
        }
    }

    /// A verified mTLS connection with `peer` in `direction`, at `now` (unix seconds).
    pub fn seen(&self, direction: Direction, peer: &SpiffeId, now: u64) {
        let mut r = self.lock();
        if r.max == 0 {
            return;
        }
        r.tick += 1;
        let tick = r.tick;
        if let Some(sides) = r.peers.get_mut(peer) {
            touch(sides.side(direction), now);
            sides.tick = tick;
            return;
        }
        if r.peers.len() >= r.max {
            // Full: the peer seen least recently makes room (a scan of at most `max`
            // entries, only when a new peer arrives at a full record).
            if let Some(oldest) = r
                .peers
                .iter()
                .min_by_key(|(_, s)| s.tick)
                .map(|(id, _)| id.clone())
            {
                r.peers.remove(&oldest);
                r.evicted += 1;
            }
        }
        let mut sides = Sides {
            tick,
            ..Sides::default()
        };
        touch(sides.side(direction), now);
        r.peers.insert(peer.clone(), sides);
    }

    /// Everything recorded, most recently seen first.
    pub fn report(&self) -> PeersReport {
        let r = self.lock();
        let mut peers: Vec<PeerEntry> = r
            .peers
            .iter()
            .flat_map(|(id, s)| {
                [
                    (Direction::Inbound, s.inbound),
                    (Direction::Outbound, s.outbound),
                ]
                .into_iter()
                .filter_map(move |(direction, seen)| {
                    Some(PeerEntry {
                        id: id.to_string(),
                        direction,
                        seen: seen?,
                    })
                })
            })
            .collect();
        peers.sort_by(|a, b| {
            b.seen
                .last_seen
                .cmp(&a.seen.last_seen)
                .then_with(|| a.id.cmp(&b.id))
        });
        PeersReport {
            max: r.max,
            evicted: r.evicted,
            peers,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        // A panic while holding the lock leaves counters that are still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl Sides ===

impl Sides {
    fn side(&mut self, direction: Direction) -> &mut Option<Seen> {
        match direction {
            Direction::Inbound => &mut self.inbound,
            Direction::Outbound => &mut self.outbound,
        }
    }
}

/// One more connection in `slot`'s direction.
fn touch(slot: &mut Option<Seen>, now: u64) {
    match slot {
        Some(s) => {
            s.last_seen = s.last_seen.max(now);
            s.connections += 1;
        }
        None => {
            *slot = Some(Seen {
                first_seen: now,
                last_seen: now,
                connections: 1,
            });
        }
    }
}

#[cfg(test)]
mod tests;
