//! The injector's decision for one pod: leave it alone (and why), refuse it (invalid
//! annotations, port conflicts), or the patch that adds the sidecar.
//!
//! The order of the checks matters: protected namespaces are never even validated (the
//! control plane must always start); everywhere else every `vigil.dev/*` annotation is
//! validated before enrollment, so a typo in `vigil.dev/inject` itself is refused rather
//! than read as "not enrolled".

use std::collections::BTreeMap;

use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;

use crate::{
    annotations::{DEFAULT_CONTAINER, INJECTED, InjectError, PodSettings},
    config::InjectorConfig,
    enroll::{self, SkipReason},
    patch::{self, Additions},
    probes, sidecar,
};

/// The injector's answer for one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Leave it alone.
    Skip(SkipReason),
    /// Apply this patch (insertions only, see [`crate::patch`]).
    Inject(Patch),
}

/// Decides and, for an enrolled pod, computes the patch. `namespace` is the request's (a
/// pod's own `metadata.namespace` is often empty on CREATE); `namespace_annotations` are
/// that namespace's annotations.
pub fn inject(
    config: &InjectorConfig,
    namespace: &str,
    pod: &Pod,
    namespace_annotations: &BTreeMap<String, String>,
) -> Result<Decision, InjectError> {
    if let Some(reason) = enroll::protected_namespace(config, namespace) {
        return Ok(Decision::Skip(reason));
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let settings = PodSettings::from_annotations(&annotations)?;
    if let Some(reason) = enroll::check(pod, namespace_annotations) {
        return Ok(Decision::Skip(reason));
    }
    check_ports(config, pod)?;

    let native = config.native();
    let routes = probes::routes(pod);
    let mut added = BTreeMap::from([(INJECTED.to_string(), env!("CARGO_PKG_VERSION").into())]);
    let first_app = pod.spec.as_ref().and_then(|s| s.containers.first());
    if let Some(app) = first_app
        && !annotations.contains_key(DEFAULT_CONTAINER)
    {
        added.insert(DEFAULT_CONTAINER.into(), app.name.clone());
    }
    let additions = Additions {
        init: sidecar::init_container(config, &settings),
        proxy: sidecar::proxy_container(config, &settings, &routes, native),
        native,
        volume: sidecar::token_volume(config),
        annotations: added,
    };
    Ok(Decision::Inject(patch::build(pod, &additions)?))
}

/// Refuses a pod whose containers declare a port one of the proxy's listeners needs: the
/// proxy would fail to bind it and the pod would never become ready.
fn check_ports(config: &InjectorConfig, pod: &Pod) -> Result<(), InjectError> {
    let p = &config.ports;
    let listeners = [
        (p.inbound, "inbound"),
        (p.outbound, "outbound"),
        (p.admin, "admin"),
    ];
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    // Containers that run alongside the proxy: app containers and native sidecars.
    let sidecars = spec.init_containers.iter().flatten();
    let running = sidecars.filter(|c| c.restart_policy.as_deref() == Some("Always"));
    for c in spec.containers.iter().chain(running) {
        let tcp = c.ports.iter().flatten();
        for declared in tcp.filter(|d| d.protocol.as_deref().is_none_or(|p| p == "TCP")) {
            if let Some((port, listener)) = listeners
                .iter()
                .find(|(port, _)| i32::from(*port) == declared.container_port)
            {
                return Err(InjectError::PortConflict {
                    container: c.name.clone(),
                    port: *port,
                    listener,
                });
            }
        }
    }
    Ok(())
}
