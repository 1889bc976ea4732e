//! The controller's admin API (`/status`) without a port-forward: its pods are found
//! through the API server (the chart's Deployment, its selector, the pods that run) and
//! asked through the pod proxy ([`Cluster::pod_get`]).
//!
//! ```text
//!   Deployment vigil-controller ─ selector ─► running pods ─ pods/proxy :admin/status ─► reports
//!                                                                               └─ merge ─► one report
//! ```
//!
//! Every replica serves proxies and knows the proxies connected to it (their acks,
//! certificates), and counts generations of its own, so with several replicas the
//! reports are merged: a workload is described by the replica its proxy is connected to
//! (its generation, what the proxy applied, in sync or not), connections and `enforcing`
//! counts add up, and the header's generation is the highest.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{Api, ResourceExt, api::ListParams};
use vigil_controller::status::{ResourceReport, StatusReport, WorkloadReport};

use crate::{
    check::chart,
    cluster::{Cluster, named_port},
};

/// The controller container's admin port when its spec does not name one.
const DEFAULT_ADMIN_PORT: u16 = 9191;

/// One controller replica's report.
pub(crate) struct Replica {
    /// Its pod.
    pub(crate) pod: String,
    /// The report, as sent.
    pub(crate) raw: serde_json::Value,
    /// The report, parsed.
    pub(crate) report: StatusReport,
}

/// Every running replica's `/status` in the release namespace `ns`.
pub(crate) async fn replicas(cluster: &Cluster, ns: &str) -> Result<Vec<Replica>> {
    let name = chart::CONTROLLER;
    let deployment = Api::<Deployment>::namespaced(cluster.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| cluster.error(e, "get", &format!("deployment {ns}/{name}"), None))?
        .with_context(|| {
            format!(
                "no Deployment {ns}/{name} in the cluster at {}: is Vigil installed in {ns}? (-n names its namespace; `vigil check` says what is missing; for a controller outside Kubernetes pass --controller ADDR)",
                cluster.url
            )
        })?;
    let selector = deployment.spec.selector;
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.error(e, "list", &format!("pods in {ns}"), None))?;
    let running: Vec<&Pod> = pods
        .items
        .iter()
        .filter(|p| vigil_index::selector::matches(&selector, p.labels()))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some())
        })
        .collect();
    if running.is_empty() {
        bail!(
            "no running pod of Deployment {ns}/{name}: check `kubectl -n {ns} get pods` and `vigil check`"
        );
    }
    let mut out = Vec::new();
    for pod in running {
        let pod_name = pod.name_any();
        let body = cluster
            .pod_get(ns, &pod_name, admin_port(pod), "/status")
            .await
            .with_context(|| format!("asking controller pod {ns}/{pod_name} for /status"))?;
        let raw: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("{ns}/{pod_name}'s /status is not JSON"))?;
        let report: StatusReport = serde_json::from_value(raw.clone())
            .with_context(|| format!("{ns}/{pod_name}'s /status is not a status report"))?;
        out.push(Replica {
            pod: pod_name,
            raw,
            report,
        });
    }
    Ok(out)
}

/// The `admin` port of the controller container (the chart's name), else 9191.
fn admin_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .find_map(|c| named_port(c, "admin"))
        .unwrap_or(DEFAULT_ADMIN_PORT)
}

/// Whether a workload's proxy enforces the controller's current snapshot for it — the
/// one definition `vigil status`, `vigil verify` and `vigil check` use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProxySync {
    /// No policy stream from its proxy to the controller (replica) that describes it.
    NotConnected,
    /// It applied the controller's current generation for it.
    InSync,
    /// It applied another (older) generation, or none: behind, or the current one was
    /// invalid for it (the controller records only valid applies; the proxy's log says).
    Behind,
}

/// `w` (from the controller's `/status`) as its proxy applied `applied`: the controller's
/// own record (`w.applied`, the proxy's acks) or what the proxy says (its `/config`).
pub(crate) fn sync(w: &WorkloadReport, applied: Option<u64>) -> ProxySync {
    if w.connected == 0 {
        ProxySync::NotConnected
    } else if applied == Some(w.generation) {
        ProxySync::InSync
    } else {
        ProxySync::Behind
    }
}

/// One report from every replica's: a workload as the replica its proxy is connected to
/// sees it (connections and enforcing proxies add up), the newest generation.
pub(crate) fn merge(mut reports: Vec<StatusReport>) -> StatusReport {
    if reports.len() <= 1 {
        return reports.pop().unwrap_or_default();
    }
    let mut merged = StatusReport {
        workloads: Vec::new(),
        resources: Vec::new(),
        source_errors: Vec::new(),
        ..reports[0].clone()
    };
    let mut workloads: BTreeMap<String, WorkloadReport> = BTreeMap::new();
    let mut resources: BTreeMap<(String, String), ResourceReport> = BTreeMap::new();
    for r in reports {
        merged.generation = merged.generation.max(r.generation);
        for w in r.workloads {
            match workloads.get_mut(&w.workload) {
                None => {
                    workloads.insert(w.workload.clone(), w);
                }
                Some(seen) => {
                    // Generations are each replica's own count: the proxy's applied one
                    // is compared with its replica's, never with another's.
                    let connected = seen.connected + w.connected;
                    if seen.connected == 0 && w.connected > 0 {
                        *seen = w;
                    }
                    seen.connected = connected;
                }
            }
        }
        for res in r.resources {
            let key = (res.kind.clone(), res.name.clone());
            match resources.get_mut(&key) {
                None => {
                    resources.insert(key, res);
                }
                Some(seen) => {
                    seen.enforcing = (seen.enforcing + res.enforcing).min(seen.targets);
                }
            }
        }
        for e in r.source_errors {
            if !merged.source_errors.contains(&e) {
                merged.source_errors.push(e);
            }
        }
    }
    merged.workloads = workloads.into_values().collect();
    merged.resources = resources.into_values().collect();
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(name: &str, connected: usize, applied: Option<u64>) -> WorkloadReport {
        WorkloadReport {
            workload: name.into(),
            identity: Some(format!("spiffe://cluster.local/ns/shop/sa/{name}")),
            generation: 7,
            applied,
            up_to_date: applied == Some(7),
            connected,
            cert_not_after: applied.map(|_| 1_000),
        }
    }

    fn policy(enforcing: u32) -> ResourceReport {
        ResourceReport {
            kind: "AccessPolicy".into(),
            name: "shop/p".into(),
            accepted: true,
            targets: 2,
            enforcing,
            ..ResourceReport::default()
        }
    }

    #[test]
    fn each_workload_is_described_by_the_replica_its_proxy_is_connected_to() {
        let a = StatusReport {
            generation: 7,
            workloads: vec![
                workload("shop/web", 1, Some(7)),
                workload("shop/orders", 0, None),
            ],
            resources: vec![policy(1)],
            ..StatusReport::default()
        };
        let b = StatusReport {
            generation: 7,
            workloads: vec![
                workload("shop/web", 0, None),
                workload("shop/orders", 1, Some(6)),
            ],
            resources: vec![policy(0)],
            source_errors: vec!["x".into()],
            ..StatusReport::default()
        };
        let m = merge(vec![a, b]);
        assert_eq!(m.generation, 7);
        let web = &m.workloads[1];
        assert_eq!(
            (
                web.workload.as_str(),
                web.connected,
                web.applied,
                web.up_to_date
            ),
            ("shop/web", 1, Some(7), true)
        );
        let orders = &m.workloads[0];
        assert_eq!(
            (
                orders.connected,
                orders.applied,
                orders.up_to_date,
                orders.cert_not_after
            ),
            (1, Some(6), false, Some(1_000))
        );
        assert_eq!(m.resources[0].enforcing, 1);
        assert_eq!(m.source_errors, vec!["x".to_string()]);
    }

    #[test]
    fn one_replica_is_its_own_report() {
        let a = StatusReport {
            generation: 3,
            workloads: vec![workload("shop/web", 0, None)],
            ..StatusReport::default()
        };
        assert_eq!(merge(vec![a.clone()]), a);
    }
}
