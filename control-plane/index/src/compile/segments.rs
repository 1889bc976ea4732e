//! Segments: each one's members, computed once through the label index (a selector with
//! `matchLabels` touches only the workloads carrying those labels).

use std::collections::{BTreeMap, BTreeSet};

use super::{Verdict, workloads::PodIndex};
use crate::{
    resources::{Kind, ObjectKey, Resources},
    selector,
};

/// Members of every segment; each segment gets a verdict naming them.
pub(super) fn members(
    res: &Resources,
    pods: &PodIndex<'_, '_>,
    verdicts: &mut BTreeMap<(Kind, ObjectKey), Verdict>,
) -> BTreeMap<ObjectKey, BTreeSet<ObjectKey>> {
    let members: BTreeMap<ObjectKey, BTreeSet<ObjectKey>> = res
        .segments
        .iter()
        .map(|(seg_key, seg)| {
            let none = BTreeMap::new();
            let ns_labels = |ns: &str| res.namespaces.get(ns).map_or(&none, |n| &n.labels);
            let set = pods.select(&seg.spec.pod_selector, |k| {
                match &seg.spec.namespace_selector {
                    None => k.namespace == seg_key.namespace,
                    Some(sel) => selector::matches(sel, ns_labels(&k.namespace)),
                }
            });
            (seg_key.clone(), set)
        })
        .collect();
    for (key, set) in &members {
        verdicts.insert(
            (Kind::Segment, key.clone()),
            Verdict {
                targets: set.clone(),
                ..Verdict::default()
            },
        );
    }
    members
}
