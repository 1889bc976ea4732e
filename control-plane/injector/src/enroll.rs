//! Who is injected: the namespace rules, enrollment by annotation (the pod's own value
//! wins over its namespace's), and the pods that cannot or need not be injected.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::{
    annotations::{INJECT, INJECTED},
    config::InjectorConfig,
    sidecar::PROXY,
};

/// Why a pod is left alone (allowed unchanged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The control plane's namespace or one of `skipNamespaces`: never injected, so the
    /// mesh can never take down the components that run it.
    Namespace(String),
    /// No `vigil.dev/inject: enabled` on the pod or its namespace (or `disabled` on the pod).
    NotEnrolled,
    /// It already has the proxy (a container named `vigil-proxy`, or `vigil.dev/injected`).
    AlreadyInjected,
    /// Host-network pods share the node's network namespace: iptables rules would capture
    /// the whole node's traffic.
    HostNetwork,
    /// No containers: nothing to protect (the apiserver rejects such a pod anyway).
    NoContainers,
}

// === impl SkipReason ===

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Namespace(ns) => write!(f, "namespace {ns} is never injected"),
            Self::NotEnrolled => write!(
                f,
                "not enrolled: no {INJECT}=enabled on the pod or its namespace"
            ),
            Self::AlreadyInjected => f.write_str("already injected"),
            Self::HostNetwork => f.write_str("hostNetwork pods cannot be intercepted"),
            Self::NoContainers => f.write_str("the pod has no containers"),
        }
    }
}

/// Whether `namespace` is one the injector never touches (not even to validate).
pub fn protected_namespace(config: &InjectorConfig, namespace: &str) -> Option<SkipReason> {
    let protected = namespace == config.control_plane_namespace
        || config.skip_namespaces.iter().any(|n| n == namespace);
    protected.then(|| SkipReason::Namespace(namespace.to_string()))
}

/// The enrollment rule, shared with the controller (which treats a pod as a mesh
/// workload only if it is enrolled and carries the proxy): `vigil.dev/inject` on the pod
/// decides; without it, the namespace's.
pub fn enrolled(pod: &Pod, namespace_annotations: &BTreeMap<String, String>) -> bool {
    match pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECT))
        .map(String::as_str)
    {
        Some(v) => v == "enabled",
        None => namespace_annotations
            .get(INJECT)
            .is_some_and(|v| v == "enabled"),
    }
}

/// Whether the pod carries the injected proxy (as a native sidecar or a container).
pub fn has_proxy(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == PROXY)
    })
}

/// Whether to inject a pod of an unprotected namespace whose annotations are valid:
/// `None` to inject, `Some(reason)` to leave it alone.
pub fn check(pod: &Pod, namespace_annotations: &BTreeMap<String, String>) -> Option<SkipReason> {
    let annotations = pod.metadata.annotations.as_ref();
    if !enrolled(pod, namespace_annotations) {
        return Some(SkipReason::NotEnrolled);
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Some(SkipReason::NoContainers);
    };
    if has_proxy(pod) || annotations.is_some_and(|a| a.contains_key(INJECTED)) {
        return Some(SkipReason::AlreadyInjected);
    }
    if spec.host_network == Some(true) {
        return Some(SkipReason::HostNetwork);
    }
    if spec.containers.is_empty() {
        return Some(SkipReason::NoContainers);
    }
    None
}
