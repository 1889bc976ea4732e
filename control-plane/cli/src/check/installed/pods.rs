//! Every enrolled pod carries the injected proxy. A pod enrolled (`vigil.dev/inject:
//! enabled` on it or its namespace) without the `vigil-proxy` container was created
//! before the enrollment or while the webhook was not called; it is outside the mesh
//! until it is re-created. Which pods the webhook would inject is the injector's own
//! rule (`vigil_injector::enroll::check`); the control-plane namespace and the chart's
//! `injector.skipNamespaces` (read from its ConfigMap; default `kube-system`) are never
//! injected.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration},
    core::v1::{ConfigMap, Namespace, Pod},
};
use kube::{Api, ResourceExt, api::ListParams};
use vigil_index::selector;
use vigil_injector::{InjectorConfig, enroll};

use crate::{
    check::{chart, report::Check},
    cluster::{Cluster, ClusterError},
};

pub(super) const ID: &str = "pods-injected";
pub(super) const TITLE: &str = "enrolled pods injected";

/// One failure per workload (Deployment, StatefulSet, DaemonSet or bare pod) with pods
/// not injected, else one ok line; and the injected pods that run (`namespace/name`),
/// whose proxies `proxies-in-sync` checks.
pub(super) async fn check(
    cluster: &Cluster,
    ns: &str,
) -> Result<(Vec<Check>, Vec<String>), ClusterError> {
    let namespaces = Api::<Namespace>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.error(e, "list", "namespaces", None))?;
    let annotations: BTreeMap<String, BTreeMap<String, String>> = namespaces
        .items
        .iter()
        .map(|n| (n.name_any(), n.annotations().clone()))
        .collect();
    let labels: BTreeMap<String, BTreeMap<String, String>> = namespaces
        .items
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect();
    let pods = Api::<Pod>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.error(e, "list", "pods in all namespaces", None))?;
    let config = injector_config(cluster, ns).await;
    let hook = webhook(cluster).await;
    let (mut injected, mut missing) = (0, BTreeMap::<String, BTreeSet<String>>::new());
    let mut running = Vec::new();
    for pod in &pods.items {
        let pod_ns = pod.namespace().unwrap_or_default();
        if enroll::protected_namespace(&config, &pod_ns).is_some()
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let empty = BTreeMap::new();
        let ns_annotations = annotations.get(&pod_ns).unwrap_or(&empty);
        if !enroll::enrolled(pod, ns_annotations) {
            continue;
        }
        match enroll::check(pod, ns_annotations) {
            None => {
                let ns_labels = labels.get(&pod_ns).unwrap_or(&empty);
                let fix = match unseen(hook.as_ref(), pod, &pod_ns, ns_labels) {
                    Some(why) => format!("{why}; then {}", restart(pod)),
                    None => format!("restart it so the webhook injects it: {}", restart(pod)),
                };
                missing
                    .entry(fix)
                    .or_default()
                    .insert(format!("{pod_ns}/{}", pod.name_any()));
            }
            Some(enroll::SkipReason::AlreadyInjected) => {
                injected += 1;
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    running.push(format!("{pod_ns}/{}", pod.name_any()));
                }
            }
            Some(_) => {}
        }
    }
    if missing.is_empty() {
        let ok = Check::ok(ID, TITLE)
            .with_detail(format!("{injected} enrolled pod(s), all with vigil-proxy"));
        return Ok((vec![ok], running));
    }
    let failed = missing
        .into_iter()
        .map(|(fix, pods)| {
            let pods: Vec<String> = pods.into_iter().collect();
            Check::fail(
                ID,
                TITLE,
                format!(
                    "enrolled but without the vigil-proxy sidecar (outside the mesh): {}",
                    pods.join(", ")
                ),
                fix,
            )
        })
        .collect();
    Ok((failed, running))
}

/// The injector's webhook, if it can be read (its selectors say which pods the API
/// server sends it).
async fn webhook(cluster: &Cluster) -> Option<MutatingWebhook> {
    Api::<MutatingWebhookConfiguration>::all(cluster.client.clone())
        .get_opt(chart::WEBHOOK)
        .await
        .ok()??
        .webhooks?
        .into_iter()
        .next()
}

/// Why the API server would not send `pod` to the webhook even when re-created (its
/// namespace or labels are outside the webhook's selectors), or `None`.
fn unseen(
    hook: Option<&MutatingWebhook>,
    pod: &Pod,
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
) -> Option<String> {
    let hook = hook?;
    if let Some(sel) = &hook.namespace_selector
        && !selector::matches(sel, ns_labels)
    {
        return Some(format!(
            "the webhook's namespaceSelector does not select namespace {ns}: label it to match (kubectl label namespace {ns} KEY=VALUE) or widen webhook.namespaceSelector (helm upgrade)"
        ));
    }
    if let Some(sel) = &hook.object_selector
        && !selector::matches(sel, pod.labels())
    {
        return Some(format!(
            "the webhook's objectSelector does not select pod {ns}/{}: label the pod template to match or widen webhook.objectSelector (helm upgrade)",
            pod.name_any()
        ));
    }
    None
}

/// The injector's settings from the chart's ConfigMap (its `skipNamespaces`); the
/// defaults, with `ns` as the control plane's namespace, if it cannot be read.
async fn injector_config(cluster: &Cluster, ns: &str) -> InjectorConfig {
    let (name, key) = chart::INJECTOR_CONFIG;
    let configmaps = Api::<ConfigMap>::namespaced(cluster.client.clone(), ns);
    let text = configmaps
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data?.remove(key));
    text.and_then(|t| vigil_injector::parse_config(&t).ok())
        .unwrap_or_else(|| InjectorConfig {
            control_plane_namespace: ns.to_string(),
            ..InjectorConfig::default()
        })
}

/// The command that re-creates `pod` through its owner (so the webhook sees it again).
pub(crate) fn restart(pod: &Pod) -> String {
    let ns = pod.namespace().unwrap_or_default();
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    let hash = pod.labels().get("pod-template-hash");
    match owner.map(|o| (o.kind.as_str(), o.name.as_str())) {
        Some(("ReplicaSet", rs)) => match hash.and_then(|h| rs.strip_suffix(&format!("-{h}"))) {
            Some(deployment) => format!("kubectl -n {ns} rollout restart deployment/{deployment}"),
            None => format!(
                "kubectl -n {ns} delete pod {} (its ReplicaSet {rs} re-creates it)",
                pod.name_any()
            ),
        },
        Some(("StatefulSet", name)) => {
            format!("kubectl -n {ns} rollout restart statefulset/{name}")
        }
        Some(("DaemonSet", name)) => format!("kubectl -n {ns} rollout restart daemonset/{name}"),
        Some((kind, name)) => format!(
            "kubectl -n {ns} delete pod {} (its {kind} {name} re-creates it)",
            pod.name_any()
        ),
        None => format!(
            "kubectl -n {ns} get pod {0} -o yaml | kubectl replace --force -f - (a bare pod: re-created from its spec)",
            pod.name_any()
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(owner: Option<(&str, &str)>, hash: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-7d9f-x2x4", "namespace": "shop",
                "labels": hash.map(|h| serde_json::json!({"pod-template-hash": h})).unwrap_or_default(),
                "ownerReferences": owner.map(|(kind, name)| vec![serde_json::json!({
                    "apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": true
                })]).unwrap_or_default(),
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_fix_restarts_the_owner() {
        assert_eq!(
            restart(&pod(Some(("ReplicaSet", "web-7d9f")), Some("7d9f"))),
            "kubectl -n shop rollout restart deployment/web"
        );
        assert_eq!(
            restart(&pod(Some(("StatefulSet", "db")), None)),
            "kubectl -n shop rollout restart statefulset/db"
        );
        assert!(restart(&pod(None, None)).contains("kubectl replace --force"));
    }
}
