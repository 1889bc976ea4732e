//! CRD status and Events, written by the leader only.
//!
//! Every second the leader compares what each Segment / AccessPolicy / Quarantine
//! should report — `Accepted` (or not, with the compiler's reason), the generation it
//! describes, how many workloads it targets and how many proxies connected to this
//! replica have acked a snapshot that includes it — with what it last wrote, and patches
//! the status subresource where they differ. It publishes Events for what an operator
//! must notice: a policy rejected (Warning `PolicyRejected`), a quarantine applied
//! (Normal `QuarantineApplied`).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;
use vigil_crds::PolicyStatus;
use vigil_index::{Kind, ObjectKey};

use super::{Kube, reflectors::Stores};
use crate::state::State;

/// What was last written, per object (ignoring transition times).
type Written = BTreeMap<(Kind, ObjectKey), PolicyStatus>;

/// Runs until the task is dropped.
pub async fn run(state: Arc<State>, k: Kube, stores: Arc<Stores>, leading: watch::Receiver<bool>) {
    let recorder = Recorder::new(
        k.client.clone(),
        Reporter {
            controller: "vigil-controller".into(),
            instance: Some(k.holder.clone()),
        },
    );
    let mut w = Writer {
        state: &state,
        k: &k,
        recorder: &recorder,
        written: Written::new(),
    };
    loop {
        if *leading.borrow() {
            w.write_kind(Kind::AccessPolicy, &stores.policies.state())
                .await;
            w.write_kind(Kind::Segment, &stores.segments.state()).await;
            w.write_kind(Kind::Quarantine, &stores.quarantines.state())
                .await;
            // Forget deleted objects.
            let live: std::collections::BTreeSet<(Kind, ObjectKey)> =
                keys(Kind::AccessPolicy, &stores.policies.state())
                    .chain(keys(Kind::Segment, &stores.segments.state()))
                    .chain(keys(Kind::Quarantine, &stores.quarantines.state()))
                    .collect();
            w.written.retain(|k, _| live.contains(k));
        } else {
            // A new leader rewrites everything once: its view may differ.
            w.written.clear();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn keys<K: Resource>(
    kind: Kind,
    objects: &[Arc<K>],
) -> impl Iterator<Item = (Kind, ObjectKey)> + '_ {
    objects
        .iter()
        .map(move |o| (kind, ObjectKey::of(o.as_ref())))
}

/// What the status loop needs at hand.
struct Writer<'a> {
    state: &'a State,
    k: &'a Kube,
    recorder: &'a Recorder,
    written: Written,
}

/// The status `obj` should have now.
fn desired<K: Resource>(state: &State, kind: Kind, obj: &K) -> PolicyStatus {
    let key = ObjectKey::of(obj);
    let index = state.index();
    let verdict = index.verdicts().get(&(kind, key.clone())).cloned();
    let enforcing = index.enforcing(kind, &key);
    drop(index);
    let generation = obj.meta().generation;
    let (status, reason, message) = match &verdict {
        None => ("Unknown", "Pending", "not compiled yet".to_string()),
        Some(v) => match &v.accepted {
            Ok(()) if v.warnings.is_empty() => (
                "True",
                "Accepted",
                "compiled and pushed to the proxies it targets".to_string(),
            ),
            Ok(()) => ("True", "AcceptedWithWarnings", v.warnings.join("; ")),
            Err(why) => ("False", "Invalid", why.clone()),
        },
    };
    PolicyStatus {
        conditions: vec![Condition {
            type_: "Accepted".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            // Filled in when written (kept from the last write if the status did not flip).
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }],
        observed_generation: generation,
        target_workloads: verdict.map(|v| u32::try_from(v.targets.len()).unwrap_or(u32::MAX)),
        enforcing_proxies: Some(enforcing),
    }
}

impl Writer<'_> {
    async fn write_kind<K>(&mut self, kind: Kind, objects: &[Arc<K>])
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let (state, k, recorder) = (self.state, self.k, self.recorder);
        let written = &mut self.written;
        for obj in objects {
            let key = ObjectKey::of(obj.as_ref());
            let mut want = desired(state, kind, obj.as_ref());
            let before = written.get(&(kind, key.clone()));
            if before == Some(&want) {
                continue;
            }
            // lastTransitionTime: now if the condition flipped, else what the object has.
            let current: Option<PolicyStatus> = serde_json::to_value(obj.as_ref())
                .ok()
                .and_then(|v| v.get("status").cloned())
                .and_then(|s| serde_json::from_value(s).ok());
            let previous = current.as_ref().and_then(|s| s.conditions.first());
            let mut to_write = want.clone();
            if let Some(c) = to_write.conditions.first_mut() {
                c.last_transition_time = match previous {
                    Some(p) if p.status == c.status => p.last_transition_time.clone(),
                    _ => Time(Timestamp::now()),
                };
            }
            let api: Api<K> = Api::namespaced(k.client.clone(), &key.namespace);
            let patch = serde_json::json!({ "status": to_write });
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    announce(recorder, kind, obj.as_ref(), before, &want).await;
                    if let Some(c) = want.conditions.first_mut() {
                        c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
                    }
                    written.insert((kind, key), want);
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(kind = %kind, object = %key, error = %e, "writing status failed; will retry")
                }
            }
        }
    }
}

/// Events for changes an operator must notice.
async fn announce<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    kind: Kind,
    obj: &K,
    before: Option<&PolicyStatus>,
    now: &PolicyStatus,
) {
    let cond = |s: Option<&PolicyStatus>| {
        s.and_then(|s| s.conditions.first())
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    let (was, is) = (cond(before), cond(Some(now)));
    if was == is {
        return;
    }
    let event = match (&is, kind) {
        (Some((s, why)), _) if s == "False" => Event {
            type_: EventType::Warning,
            reason: "PolicyRejected".into(),
            note: Some(format!("{kind} rejected: {why}")),
            action: "Compile".into(),
            secondary: None,
        },
        (Some((s, _)), Kind::Quarantine)
            if s == "True" && was.as_ref().is_none_or(|(w, _)| w != "True") =>
        {
            Event {
                type_: EventType::Normal,
                reason: "QuarantineApplied".into(),
                note: Some(format!(
                    "quarantine {} applied to {} workload(s): their open connections are closed and new ones refused",
                    obj.name_any(),
                    now.target_workloads.unwrap_or(0)
                )),
                action: "Quarantine".into(),
                secondary: None,
            }
        }
        _ => return,
    };
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an event failed");
    }
}
