//! Meeting a sorted set of keys with a map of the same keys.
//!
//! A change can touch every workload (10,000 in B10). Looking each one up by key cost more
//! than the work done for it: an `ObjectKey` is two strings, and a B-tree search compares
//! a few dozen of them. The keys come sorted, so these walk the map alongside them
//! instead — unless the keys are few next to the map, where a search per key is cheaper
//! than the walk.

use std::collections::{BTreeMap, BTreeSet};

use crate::resources::ObjectKey;

/// Below this many map entries per key, a search per key beats walking the map.
pub(crate) const WALK_RATIO: usize = 16;

/// Whether `keys` keys are better searched for than walked to in a map of `map` entries.
pub(crate) fn search(keys: usize, map: usize) -> bool {
    keys.saturating_mul(WALK_RATIO) < map
}

/// Each of `keys` with its value in `map`, in key order.
pub(crate) fn join<'a, V>(
    keys: &'a BTreeSet<ObjectKey>,
    map: &'a BTreeMap<ObjectKey, V>,
) -> Vec<(&'a ObjectKey, Option<&'a V>)> {
    if search(keys.len(), map.len()) {
        return keys.iter().map(|k| (k, map.get(k))).collect();
    }
    let mut walk = map.iter().peekable();
    keys.iter()
        .map(|k| {
            while walk.next_if(|(m, _)| *m < k).is_some() {}
            (k, walk.next_if(|(m, _)| *m == k).map(|(_, v)| v))
        })
        .collect()
}

/// Calls `f` on the value in `map` of each of `keys` that it has, in key order.
pub(crate) fn for_each_mut<V>(
    keys: &BTreeSet<ObjectKey>,
    map: &mut BTreeMap<ObjectKey, V>,
    mut f: impl FnMut(&ObjectKey, &mut V),
) {
    if search(keys.len(), map.len()) {
        for k in keys {
            if let Some(v) = map.get_mut(k) {
                f(k, v);
            }
        }
        return;
    }
    let mut walk = map.iter_mut().peekable();
    for k in keys {
        while walk.next_if(|(m, _)| *m < k).is_some() {}
        if let Some((m, v)) = walk.next_if(|(m, _)| *m == k) {
            f(m, v);
        }
    }
}
