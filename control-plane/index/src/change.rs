//! What a change to the resources touches, as far as the index's incremental path cares:
//! only AccessPolicies (which it recompiles alone), or anything else (a full compile).

use std::collections::{BTreeMap, BTreeSet};

use crate::resources::{Kind, ObjectKey, Resource, Resources};

/// What changed in the resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Only these AccessPolicies (added, replaced or removed).
    Policies(BTreeSet<ObjectKey>),
    /// Something else: recompile everything.
    Everything,
}

impl Change {
    /// Adding or replacing `r`.
    pub(crate) fn of(r: &Resource) -> Self {
        Self::deleting(r.id().0, &r.id().1)
    }

    /// Removing the resource `kind`/`key`.
    pub(crate) fn deleting(kind: Kind, key: &ObjectKey) -> Self {
        match kind {
            Kind::AccessPolicy => Self::Policies(BTreeSet::from([key.clone()])),
            _ => Self::Everything,
        }
    }

    /// Replacing every resource `old` with `new`.
    pub(crate) fn between(old: &Resources, new: &Resources) -> Self {
        let same_rest = differing(&old.workloads, &new.workloads, same_object).is_empty()
            && differing(&old.segments, &new.segments, same_object).is_empty()
            && differing(&old.quarantines, &new.quarantines, same_object).is_empty()
            && old.namespaces == new.namespaces
            && old.services == new.services;
        if !same_rest {
            return Self::Everything;
        }
        Self::Policies(differing(&old.policies, &new.policies, same_object))
    }
}

/// Same metadata and spec (what the compiler reads; the CRD types have no `PartialEq`
/// of their own, and their status does not matter here).
fn same_object<K>(a: &K, b: &K) -> bool
where
    K: kube::Resource + kube::core::object::HasSpec,
    K::Spec: PartialEq,
{
    a.meta() == b.meta() && a.spec() == b.spec()
}

/// The keys present in one map only, or in both with values that are not `same`.
fn differing<V>(
    a: &BTreeMap<ObjectKey, V>,
    b: &BTreeMap<ObjectKey, V>,
    same: fn(&V, &V) -> bool,
) -> BTreeSet<ObjectKey> {
    let one_way = |x: &BTreeMap<ObjectKey, V>, y: &BTreeMap<ObjectKey, V>| {
        x.iter()
            .filter(|(k, v)| y.get(*k).is_none_or(|w| !same(v, w)))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    one_way(a, b).into_iter().chain(one_way(b, a)).collect()
}
