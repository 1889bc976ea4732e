//! From Kubernetes objects to the index's [`Resources`]: which pods are mesh workloads,
//! with which identity, labels and addresses.
//!
//! A pod is a mesh workload when it is enrolled (`vigil.dev/inject: enabled` on the pod,
//! or on its namespace and not `disabled` on the pod) **and** carries the injected
//! `vigil-proxy` container: a pod annotated after it was created has no proxy, so
//! sending it mTLS would fail. Finished pods (Succeeded/Failed) are not workloads. Its
//! identity is its service account (which must exist); its addresses are each pod IP with each TCP port
//! the app containers declare.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use kube::ResourceExt;
use vigil_crds::{
    AccessPolicy, DEFAULT_POLICY_ANNOTATION, DefaultPolicySpec, EgressMode, Quarantine, Segment,
    Workload, WorkloadSpec,
};
use vigil_index::{NamespaceMeta, ObjectKey, Resource, Resources, ServiceBackends};
use vigil_policy::model::DefaultPolicy;

/// The proxy container's name (the injector's).
pub const PROXY_CONTAINER: &str = vigil_injector::sidecar::PROXY;

/// Everything the reflectors hold, at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Pods.
    pub pods: Vec<std::sync::Arc<Pod>>,
    /// Namespaces.
    pub namespaces: Vec<std::sync::Arc<Namespace>>,
    /// ServiceAccounts.
    pub service_accounts: Vec<std::sync::Arc<ServiceAccount>>,
    /// Segments.
    pub segments: Vec<std::sync::Arc<Segment>>,
    /// Access policies.
    pub policies: Vec<std::sync::Arc<AccessPolicy>>,
    /// Quarantines.
    pub quarantines: Vec<std::sync::Arc<Quarantine>>,
    /// Services.
    pub services: Vec<std::sync::Arc<Service>>,
    /// EndpointSlices.
    pub slices: Vec<std::sync::Arc<EndpointSlice>>,
}

/// Whether the pod is enrolled by annotation (the injector's rule).
pub fn enrolled(pod: &Pod, ns_annotations: Option<&BTreeMap<String, String>>) -> bool {
    vigil_injector::enroll::enrolled(pod, ns_annotations.unwrap_or(&BTreeMap::new()))
}

/// Whether the pod carries the injected proxy (the injector's rule).
pub fn has_proxy(pod: &Pod) -> bool {
    vigil_injector::enroll::has_proxy(pod)
}

/// The workload a pod is, if it is one.
pub fn workload(pod: &Pod, ns_annotations: Option<&BTreeMap<String, String>>) -> Option<Workload> {
    if !enrolled(pod, ns_annotations) || !has_proxy(pod) {
        return None;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let mut ips: Vec<String> = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone())
    {
        ips.push(ip);
    }
    let mut ports: Vec<i32> = spec
        .containers
        .iter()
        .filter(|c| c.name != PROXY_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map(|p| p.container_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let addresses = ips
        .iter()
        .flat_map(|ip| {
            ports
                .iter()
                .map(move |p| match ip.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V6(_)) => format!("[{ip}]:{p}"),
                    _ => format!("{ip}:{p}"),
                })
        })
        .collect();
    let default_policy = pod
        .annotations()
        .get(DEFAULT_POLICY_ANNOTATION)
        .and_then(|v| v.parse::<DefaultPolicy>().ok())
        .map(DefaultPolicySpec::from);
    let egress = match pod
        .annotations()
        .get("vigil.dev/egress")
        .map(String::as_str)
    {
        Some("strict") => Some(EgressMode::Strict),
        Some("passthrough") => Some(EgressMode::Passthrough),
        _ => None,
    };
    let mut w = Workload::new(
        &pod.name_any(),
        WorkloadSpec {
            service_account: spec
                .service_account_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            addresses,
            proxy: None,
            default_policy,
            egress,
            labels: BTreeMap::new(),
        },
    );
    w.metadata.namespace = pod.namespace();
    w.metadata.labels = Some(pod.labels().clone());
    Some(w)
}

/// Compiles the reflectors' contents into the index's input.
pub fn resources(s: &Snapshot) -> Resources {
    let mut out = Resources::default();
    let mut ns_annotations = BTreeMap::new();
    for ns in &s.namespaces {
        let name = ns.name_any();
        ns_annotations.insert(name.clone(), ns.annotations().clone());
        out.apply(Resource::Namespace(
            name,
            NamespaceMeta {
                labels: ns.labels().clone(),
                annotations: ns.annotations().clone(),
            },
        ));
    }
    // An identity exists only while its ServiceAccount does: deleting the account takes
    // its pods out of the mesh (their certificates are not renewed, peers stop accepting).
    let accounts: std::collections::BTreeSet<ObjectKey> = s
        .service_accounts
        .iter()
        .map(|a| ObjectKey::of(a.as_ref()))
        .collect();
    for pod in &s.pods {
        let ns = pod.namespace().unwrap_or_default();
        if let Some(w) = workload(pod, ns_annotations.get(&ns)) {
            if accounts.contains(&ObjectKey::new(&ns, &w.spec.service_account)) {
                out.apply(Resource::Workload(w));
            } else {
                tracing::debug!(pod = %ObjectKey::of(pod.as_ref()), account = %w.spec.service_account, "service account not found; not a workload");
            }
        }
    }
    for x in &s.segments {
        out.apply(Resource::Segment((**x).clone()));
    }
    for x in &s.policies {
        out.apply(Resource::AccessPolicy((**x).clone()));
    }
    for x in &s.quarantines {
        out.apply(Resource::Quarantine((**x).clone()));
    }
    // A pod being deleted keeps its identity and policy until it is gone (its in-flight
    // requests finish), but is no Service backend for new requests from the moment its
    // deletion starts — before the EndpointSlice controller says so.
    let terminating: std::collections::BTreeSet<ObjectKey> = s
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .map(|p| ObjectKey::of(p.as_ref()))
        .collect();
    out.services = services(&s.services, &s.slices, &terminating);
    out
}

/// Each Service's `ClusterIP:port`s, the pods its EndpointSlices point at, and for each
/// virtual address the ready endpoints (`podIP:port`) of pods not in `terminating`.
/// Headless Services (clusterIP None) have no virtual address: callers reach the pods
/// directly.
pub fn services(
    services: &[std::sync::Arc<Service>],
    slices: &[std::sync::Arc<EndpointSlice>],
    terminating: &std::collections::BTreeSet<ObjectKey>,
) -> BTreeMap<ObjectKey, ServiceBackends> {
    let mut out: BTreeMap<ObjectKey, ServiceBackends> = BTreeMap::new();
    // Per Service: (virtual address, port name) for matching EndpointSlice ports.
    let mut named: BTreeMap<ObjectKey, Vec<(std::net::SocketAddr, String)>> = BTreeMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ips: Vec<std::net::IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let mut addresses: Vec<std::net::SocketAddr> = ips
            .iter()
            .flat_map(|ip| {
                spec.ports
                    .iter()
                    .flatten()
                    .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                    .filter_map(move |p| u16::try_from(p.port).ok().map(|port| (*ip, port).into()))
            })
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        let by_name: Vec<(std::net::SocketAddr, String)> = ips
            .iter()
            .flat_map(|ip| {
                spec.ports
                    .iter()
                    .flatten()
                    .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                    .filter_map(move |p| {
                        let port = u16::try_from(p.port).ok()?;
                        Some(((*ip, port).into(), p.name.clone().unwrap_or_default()))
                    })
            })
            .collect();
        if !addresses.is_empty() {
            let key = ObjectKey::of(svc.as_ref());
            named.insert(key.clone(), by_name);
            out.insert(
                key,
                ServiceBackends {
                    addresses,
                    ..ServiceBackends::default()
                },
            );
        }
    }
    for slice in slices {
        let Some(name) = slice.labels().get("kubernetes.io/service-name") else {
            continue;
        };
        let ns = slice.namespace().unwrap_or_default();
        let key = ObjectKey::new(&ns, name);
        let Some(svc) = out.get_mut(&key) else {
            continue;
        };
        add_endpoints(
            svc,
            slice,
            named.get(&key).map(Vec::as_slice).unwrap_or_default(),
            terminating,
        );
        for ep in slice.endpoints.iter().flatten() {
            match &ep.target_ref {
                Some(r) if r.kind.as_deref() == Some("Pod") => {
                    if let Some(pod) = &r.name {
                        svc.backends.insert(ObjectKey::new(
                            r.namespace.clone().unwrap_or_else(|| ns.clone()),
                            pod,
                        ));
                    }
                }
                // An endpoint that is not a pod (external, manual): never a mesh backend.
                _ => {
                    svc.backends.insert(ObjectKey::new(
                        "",
                        format!("external:{}", ep.addresses.join(",")),
                    ));
                }
            }
        }
    }
    out
}

/// Adds the slice's serving endpoints to each virtual address whose port name the slice
/// carries: ready (unset means ready), not terminating, and not a pod in `terminating`.
fn add_endpoints(
    svc: &mut ServiceBackends,
    slice: &EndpointSlice,
    named: &[(std::net::SocketAddr, String)],
    terminating: &std::collections::BTreeSet<ObjectKey>,
) {
    let ns = slice.namespace().unwrap_or_default();
    for (virt, port_name) in named {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == *port_name)
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let leaving = cond.and_then(|c| c.terminating).unwrap_or(false)
                || ep.target_ref.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("Pod")
                        && r.name.as_ref().is_some_and(|n| {
                            terminating.contains(&ObjectKey::new(
                                r.namespace.clone().unwrap_or_else(|| ns.clone()),
                                n,
                            ))
                        })
                });
            if !ready || leaving {
                continue;
            }
            let list = svc.endpoints.entry(*virt).or_default();
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<std::net::IpAddr>()
                    && ip.is_ipv4() == virt.is_ipv4()
                {
                    list.push((ip, port).into());
                }
            }
            list.sort_unstable();
            list.dedup();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
