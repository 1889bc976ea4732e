//! Meeting sorted keys with a map of the same keys — the one place that decides between
//! walking and searching.
//!
//! A change can touch every workload (10,000 in B10). Looking each one up by key cost more
//! than the work done for it: an `ObjectKey` is two strings, and a B-tree search compares
//! a few dozen of them. The keys come sorted, so [`visit`] and [`visit_mut`] walk the map
//! alongside them instead — unless the keys are few next to the map, where a search per
//! key is cheaper than the walk.

use std::collections::{BTreeMap, BTreeSet};

use crate::resources::ObjectKey;

/// Below this many map entries per key, a search per key beats walking the map.
const WALK_RATIO: usize = 16;

fn search(keys: usize, map: usize) -> bool {
    keys.saturating_mul(WALK_RATIO) < map
}

/// Calls `f` with each of `items` (sorted by key, each key once) and its key's value in
/// `map`, if any.
pub(crate) fn visit<'k, 'm, T, V>(
    items: impl ExactSizeIterator<Item = (&'k ObjectKey, T)>,
    map: &'m BTreeMap<ObjectKey, V>,
    mut f: impl FnMut(&'k ObjectKey, T, Option<&'m V>),
) {
    if search(items.len(), map.len()) {
        items.for_each(|(k, t)| f(k, t, map.get(k)));
        return;
    }
    let mut walk = map.iter().peekable();
    for (k, t) in items {
        while walk.next_if(|(m, _)| *m < k).is_some() {}
        f(k, t, walk.next_if(|(m, _)| *m == k).map(|(_, v)| v));
    }
}

/// [`visit`], with the values mutable.
pub(crate) fn visit_mut<'k, T, V>(
    items: impl ExactSizeIterator<Item = (&'k ObjectKey, T)>,
    map: &mut BTreeMap<ObjectKey, V>,
    mut f: impl FnMut(&'k ObjectKey, T, Option<&mut V>),
) {
    if search(items.len(), map.len()) {
        items.for_each(|(k, t)| f(k, t, map.get_mut(k)));
        return;
    }
    let mut walk = map.iter_mut().peekable();
    for (k, t) in items {
        while walk.next_if(|(m, _)| *m < k).is_some() {}
        f(k, t, walk.next_if(|(m, _)| *m == k).map(|(_, v)| v));
    }
}

/// Each of `keys` with its value in `map`, in key order.
pub(crate) fn join<'a, V>(
    keys: &'a BTreeSet<ObjectKey>,
    map: &'a BTreeMap<ObjectKey, V>,
) -> Vec<(&'a ObjectKey, Option<&'a V>)> {
    let mut out = Vec::with_capacity(keys.len());
    visit(keys.iter().map(|k| (k, ())), map, |k, (), v| {
        out.push((k, v))
    });
    out
}
