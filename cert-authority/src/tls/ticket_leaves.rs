//! The client leaves a mesh server's tickets refer to instead of carrying them.
//!
//! Unlike the issuer, a client's leaf is not the server's own: the server learns it when
//! it seals a state that holds it, gives it an id — never reused within the store's life,
//! which is its config's — and puts the leaf back when a ticket naming that id opens. A
//! ticket whose leaf is no longer remembered opens to nothing: the client makes a full
//! handshake, and its next ticket names its leaf again.
//!
//! Memory is bounded by two generations of at most `per_generation` leaves each (512 in
//! the mesh's configs, ~0.6 KB per leaf: at most ~0.6 MB, and one leaf per client pod in
//! practice). A leaf goes in the current generation; when that is full it becomes the
//! previous one and the one before is dropped. A leaf sealed again while in the previous
//! generation moves back to the current one with its id, so a client that keeps resuming
//! keeps its leaf.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};

use rustc_hash::FxHashMap;

/// Leaves per generation in the mesh's server configs.
pub(super) const PER_GENERATION: usize = 512;

/// The leaves one ticketer learned.
pub(super) struct Leaves {
    generations: Mutex<Generations>,
    per_generation: usize,
}

#[derive(Default)]
struct Generations {
    current: Generation,
    previous: Generation,
    next_id: u64,
}

#[derive(Default)]
struct Generation {
    ids: FxHashMap<Arc<[u8]>, u64>,
    leaves: FxHashMap<u64, Arc<[u8]>>,
}

impl Generation {
    fn insert(&mut self, leaf: Arc<[u8]>, id: u64) {
        self.ids.insert(leaf.clone(), id);
        self.leaves.insert(id, leaf);
    }

    fn remove(&mut self, leaf: &[u8]) -> Option<(Arc<[u8]>, u64)> {
        let (leaf, id) = self.ids.remove_entry(leaf)?;
        self.leaves.remove(&id);
        Some((leaf, id))
    }
}

impl Generations {
    fn id_of(&mut self, leaf: &[u8], per_generation: usize) -> u64 {
        if let Some(&id) = self.current.ids.get(leaf) {
            return id;
        }
        let (leaf, id) = self.previous.remove(leaf).unwrap_or_else(|| {
            let id = self.next_id;
            self.next_id += 1;
            (Arc::from(leaf), id)
        });
        if self.current.ids.len() >= per_generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(leaf, id);
        id
    }

    fn leaf(&self, id: u64) -> Option<&Arc<[u8]>> {
        self.current
            .leaves
            .get(&id)
            .or_else(|| self.previous.leaves.get(&id))
    }
}

impl Leaves {
    /// An empty store of two generations of `per_generation` leaves (at least one).
    pub(super) fn new(per_generation: usize) -> Self {
        Self {
            generations: Mutex::default(),
            per_generation: per_generation.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id of each leaf, learning those it does not know.
    pub(super) fn ids<'a>(&self, leaves: impl IntoIterator<Item = &'a [u8]>) -> Vec<u64> {
        let mut g = self.lock();
        leaves
            .into_iter()
            .map(|leaf| g.id_of(leaf, self.per_generation))
            .collect()
    }

    /// The leaf of each id; `None` if any is not remembered.
    pub(super) fn leaves(&self, ids: &[u64]) -> Option<Vec<Arc<[u8]>>> {
        let g = self.lock();
        ids.iter().map(|&id| g.leaf(id).cloned()).collect()
    }
}

impl fmt::Debug for Leaves {
    // How many, not the certificates.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.lock();
        f.debug_struct("Leaves")
            .field("current", &g.current.ids.len())
            .field("previous", &g.previous.ids.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn leaf(n: u32) -> Vec<u8> {
        format!("leaf {n}").into_bytes()
    }

    #[test]
    fn a_leaf_keeps_its_id_and_comes_back_by_it() {
        let l = Leaves::new(4);
        let ids = l.ids([&leaf(1)[..], &leaf(2), &leaf(1)]);
        assert_eq!(ids[0], ids[2], "the same leaf, the same id");
        assert_ne!(ids[0], ids[1]);
        let back = l.leaves(&ids).unwrap();
        assert_eq!(*back[0], leaf(1)[..]);
        assert_eq!(*back[1], leaf(2)[..]);
        assert!(l.leaves(&[ids[0], 99]).is_none(), "one unknown id: none");
        assert_eq!(l.leaves(&[]).unwrap().len(), 0);
        assert!(
            Leaves::new(4).leaves(&ids[..1]).is_none(),
            "ids are per store"
        );
        let debug = format!("{l:?}");
        assert!(
            debug.contains("current: 2") && !debug.contains("leaf"),
            "{debug}"
        );
    }

    #[test]
    fn two_generations_are_remembered_and_a_leaf_sealed_again_moves_up() {
        let l = Leaves::new(2);
        let first = l.ids([&leaf(0)[..]])[0];
        let kept = l.ids([&leaf(1)[..]])[0];
        // Current {0, 1} full: 2 starts a new one, {0, 1} previous.
        l.ids([&leaf(2)[..]]);
        assert!(
            l.leaves(&[first, kept]).is_some(),
            "the previous generation"
        );
        // Sealing 1 again moves it to the current generation, with its id.
        assert_eq!(l.ids([&leaf(1)[..]])[0], kept);
        // Current {2, 1} full: 3 starts a new one, {2, 1} previous, 0 forgotten.
        l.ids([&leaf(3)[..]]);
        assert!(
            l.leaves(&[first]).is_none(),
            "two generations on: forgotten"
        );
        assert_eq!(*l.leaves(&[kept]).unwrap()[0], leaf(1)[..]);
        // Learned again, a forgotten leaf gets a new id: the old one stays unknown.
        let again = l.ids([&leaf(0)[..]])[0];
        assert_ne!(again, first);
        assert!(l.leaves(&[first]).is_none());
        // Never more than two generations.
        for n in 10..1_000 {
            l.ids([&leaf(n)[..]]);
        }
        let g = l.lock();
        assert!(g.current.ids.len() <= 2 && g.previous.ids.len() <= 2);
        assert_eq!(g.current.ids.len(), g.current.leaves.len());
        assert_eq!(g.previous.ids.len(), g.previous.leaves.len());
    }
}
