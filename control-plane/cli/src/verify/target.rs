//! FROM and TO of `vigil verify`, as kubectl names things, and the pod each resolves to.
//!
//! ```text
//!   web                 pod web in -n's namespace (as `kubectl logs web`)
//!   pod/web-7d9f-x2x4   the same, kubectl's TYPE/NAME (po, pod, pods)
//!   deploy/web          a Ready pod of Deployment web (deploy, deployment, sts,
//!                       statefulset, ds, daemonset; plurals and `.apps` accepted)
//!   shop/web            pod web in namespace shop (as `vigil explain --to`)
//!   shop/deploy/web     Deployment web in namespace shop
//! ```
//!
//! In `A/B`, a type name wins: a namespace named like a type is written `NS/pod/NAME`.

use std::{collections::BTreeMap, fmt};

use anyhow::{Context, Result};
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, StatefulSet},
    core::v1::Pod,
};
use kube::{Api, ResourceExt, api::ListParams};
use vigil_crds::LabelSelector;

use crate::cluster::Cluster;

/// What a FROM or TO names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// None: `-n`'s namespace.
    pub(crate) namespace: Option<String>,
    /// The kind of object.
    pub(crate) kind: Kind,
    /// Its name.
    pub(crate) name: String,
}

/// The kinds FROM and TO may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One pod.
    Pod,
    /// A Deployment's pods.
    Deployment,
    /// A StatefulSet's pods.
    StatefulSet,
    /// A DaemonSet's pods.
    DaemonSet,
}

// === impl Target ===

/// Parses FROM / TO (clap's value parser).
pub(crate) fn parse(s: &str) -> Result<Target, String> {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{s:?}: {USAGE}"));
    }
    let target = |namespace: Option<&str>, kind, name: &str| Target {
        namespace: namespace.map(str::to_string),
        kind,
        name: name.to_string(),
    };
    match parts[..] {
        [name] => Ok(target(None, Kind::Pod, name)),
        [first, name] => Ok(match Kind::parse(first) {
            Some(kind) => target(None, kind, name),
            None => target(Some(first), Kind::Pod, name),
        }),
        [ns, kind, name] => match Kind::parse(kind) {
            Some(kind) => Ok(target(Some(ns), kind, name)),
            None => Err(format!("{s:?}: unknown type {kind:?}; {USAGE}")),
        },
        _ => Err(format!("{s:?}: {USAGE}")),
    }
}

/// How FROM / TO are written (for errors).
const USAGE: &str = "expected NAME (a pod), TYPE/NAME (pod, deploy, sts, ds), NAMESPACE/NAME (a pod) or NAMESPACE/TYPE/NAME";

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{}/{}", self.kind.short(), self.name)
    }
}

impl Target {
    /// The pod it names: itself, or the workload's first Ready pod (by name), else its
    /// first pod.
    pub(crate) async fn resolve(&self, cluster: &Cluster) -> Result<Pod> {
        let ns = self.namespace.as_deref().unwrap_or(&cluster.namespace);
        let what = format!("{} {ns}/{}", self.kind.noun(), self.name);
        let client = cluster.client.clone();
        let selector = match self.kind {
            Kind::Pod => {
                return Api::<Pod>::namespaced(client, ns)
                    .get_opt(&self.name)
                    .await
                    .map_err(|e| cluster.error(e, "get", &what, None))?
                    .with_context(|| format!("no {what} (kubectl -n {ns} get pods)"));
            }
            Kind::Deployment => {
                get(
                    cluster,
                    Api::<Deployment>::namespaced(client, ns),
                    &self.name,
                    &what,
                )
                .await?
                .spec
                .selector
            }
            Kind::StatefulSet => {
                get(
                    cluster,
                    Api::<StatefulSet>::namespaced(client, ns),
                    &self.name,
                    &what,
                )
                .await?
                .spec
                .selector
            }
            Kind::DaemonSet => {
                get(
                    cluster,
                    Api::<DaemonSet>::namespaced(client, ns),
                    &self.name,
                    &what,
                )
                .await?
                .spec
                .selector
            }
        };
        let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| cluster.error(e, "list", &format!("pods in {ns}"), None))?;
        pick(pods.items, &selector).with_context(|| {
            format!(
                "{what} has no pods (kubectl -n {ns} describe {} {})",
                self.kind.short(),
                self.name
            )
        })
    }
}

async fn get<K>(cluster: &Cluster, api: Api<K>, name: &str, what: &str) -> Result<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| cluster.error(e, "get", what, None))?
        .with_context(|| format!("no {what}"))
}

/// Of the pods `selector` selects that are not being deleted: the first Ready one by
/// name, else the first.
fn pick(pods: Vec<Pod>, selector: &LabelSelector) -> Option<Pod> {
    let empty = BTreeMap::new();
    let mut mine: Vec<Pod> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            vigil_index::selector::matches(selector, p.metadata.labels.as_ref().unwrap_or(&empty))
        })
        .collect();
    mine.sort_by_key(|p| (!ready(p), p.name_any()));
    mine.into_iter().next()
}

/// The pod's Ready condition is True.
pub(crate) fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

// === impl Kind ===

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        let s = s.strip_suffix(".apps").unwrap_or(&s);
        Some(match s {
            "po" | "pod" | "pods" => Self::Pod,
            "deploy" | "deployment" | "deployments" => Self::Deployment,
            "sts" | "statefulset" | "statefulsets" => Self::StatefulSet,
            "ds" | "daemonset" | "daemonsets" => Self::DaemonSet,
            _ => return None,
        })
    }

    fn short(self) -> &'static str {
        match self {
            Self::Pod => "pod",
            Self::Deployment => "deploy",
            Self::StatefulSet => "sts",
            Self::DaemonSet => "ds",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Pod => "pod",
            Self::Deployment => "deployment",
            Self::StatefulSet => "statefulset",
            Self::DaemonSet => "daemonset",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(ns: Option<&str>, kind: Kind, name: &str) -> Target {
        Target {
            namespace: ns.map(str::to_string),
            kind,
            name: name.into(),
        }
    }

    #[test]
    fn names_are_read_as_kubectl_reads_them() {
        assert_eq!(parse("web").unwrap(), t(None, Kind::Pod, "web"));
        assert_eq!(parse("pod/web-1").unwrap(), t(None, Kind::Pod, "web-1"));
        assert_eq!(
            parse("deploy/web").unwrap(),
            t(None, Kind::Deployment, "web")
        );
        assert_eq!(
            parse("deployment.apps/web").unwrap(),
            t(None, Kind::Deployment, "web")
        );
        assert_eq!(parse("STS/db").unwrap(), t(None, Kind::StatefulSet, "db"));
        assert_eq!(
            parse("shop/web").unwrap(),
            t(Some("shop"), Kind::Pod, "web")
        );
        assert_eq!(
            parse("shop/ds/agent").unwrap(),
            t(Some("shop"), Kind::DaemonSet, "agent")
        );
        assert_eq!(
            parse("shop/deploy/web").unwrap().to_string(),
            "shop/deploy/web"
        );
    }

    #[test]
    fn malformed_names_say_how_to_write_them() {
        for bad in ["", "/web", "deploy/", "a/b/c/d", "shop/job/x"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("expected NAME"), "{bad}: {e}");
        }
    }

    fn pod(name: &str, app: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_workload_resolves_to_its_first_ready_pod() {
        let sel: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"app": "web"}})).unwrap();
        let pods = vec![
            pod("web-a", "web", false),
            pod("api-a", "api", true),
            pod("web-c", "web", true),
            pod("web-b", "web", true),
        ];
        assert_eq!(pick(pods, &sel).unwrap().name_any(), "web-b");
        assert!(pick(vec![pod("api-a", "api", true)], &sel).is_none());
    }
}
