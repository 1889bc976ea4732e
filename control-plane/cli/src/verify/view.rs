//! A pod's sidecar as it sees itself: its admin port's `/config` (identity, policy
//! generation) and `/peers` (the mTLS peers it recorded), read through the API server's
//! pod proxy.
//!
//! The injected proxy's admin port listens on the pod IP (`[::]:4191`: the kubelet's
//! probes need it), so the API server can reach it; it carries no secret — certificates
//! and keys never leave the proxy — and the caller needs RBAC `get pods/proxy` in the
//! pod's namespace, which is what a kubectl user with `port-forward` rights has too.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use vigil_injector::sidecar::PROXY;
use vigil_proxy::peers::{PeerEntry, PeersReport};

use crate::cluster::{Cluster, named_port};

/// The injected proxy's admin port when its container does not name one.
const DEFAULT_ADMIN_PORT: u16 = 4191;
/// The admin port's name in the injected container.
const ADMIN_PORT_NAME: &str = "vigil-admin";

/// What a proxy's admin port says.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProxyView {
    /// Ready to serve (credentials and a valid policy).
    pub(crate) ready: bool,
    /// Its SVID.
    pub(crate) identity: Option<Svid>,
    /// The policy it enforces.
    pub(crate) policy: PolicyView,
    /// Its recent mTLS peers.
    pub(crate) peers: PeersReport,
}

/// The proxy's certificate, as `/config` shows it (no key material exists there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Svid {
    /// SPIFFE ID.
    pub(crate) id: String,
    /// Serial, hex.
    pub(crate) serial: String,
    /// Unix seconds.
    pub(crate) not_before: u64,
    /// Unix seconds.
    pub(crate) not_after: u64,
}

/// The proxy's policy state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PolicyView {
    /// The generation of the snapshot it applied.
    pub(crate) generation: u64,
    /// A policy was loaded.
    pub(crate) loaded: bool,
    /// Why the policy in force is invalid (deny-all), if it is.
    pub(crate) invalid: Option<String>,
    /// This workload is quarantined.
    pub(crate) quarantined: bool,
}

/// The parts of `/config` read here.
#[derive(Deserialize)]
struct ConfigDoc {
    ready: bool,
    identity: Option<Svid>,
    policy: PolicyView,
}

/// The injected proxy container (native sidecar or regular), if the pod has one.
pub(crate) fn proxy_container(pod: &Pod) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == PROXY)
}

/// The proxy container's admin port.
fn admin_port(c: &Container) -> u16 {
    named_port(c, ADMIN_PORT_NAME).unwrap_or(DEFAULT_ADMIN_PORT)
}

/// Reads `pod`'s proxy through the API server.
pub(crate) async fn read(cluster: &Cluster, pod: &Pod, proxy: &Container) -> Result<ProxyView> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let port = admin_port(proxy);
    let config = cluster.pod_get(&ns, &name, port, "/config").await?;
    let doc: ConfigDoc = serde_json::from_str(&config)
        .with_context(|| format!("{ns}/{name}'s proxy /config is not what vigil-proxy serves"))?;
    let peers = cluster.pod_get(&ns, &name, port, "/peers").await?;
    let peers: PeersReport = serde_json::from_str(&peers).with_context(|| {
        format!("{ns}/{name}'s proxy has no /peers record: is it older than this vigil? (upgrade the chart)")
    })?;
    Ok(ProxyView {
        ready: doc.ready,
        identity: doc.identity,
        policy: doc.policy,
        peers,
    })
}

// === impl ProxyView ===

impl ProxyView {
    /// Its record of `id` in `direction` (`inbound` / `outbound`).
    pub(crate) fn peer(
        &self,
        id: &str,
        direction: vigil_proxy::metrics::labels::Direction,
    ) -> Option<&PeerEntry> {
        self.peers
            .peers
            .iter()
            .find(|p| p.id == id && p.direction == direction)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_container_and_its_admin_port_are_the_injectors() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "initContainers": [
                    {"name": "vigil-init"},
                    {"name": "vigil-proxy", "ports": [
                        {"name": "vigil-admin", "containerPort": 14191},
                        {"name": "vigil-inbound", "containerPort": 4143}]},
                ],
                "containers": [{"name": "app"}],
            },
        }))
        .unwrap();
        let c = proxy_container(&pod).unwrap();
        assert_eq!(admin_port(c), 14191);
        let plain: Pod =
            serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "app"}]}}))
                .unwrap();
        assert!(proxy_container(&plain).is_none());
    }

    #[test]
    fn reads_the_proxys_config_document() {
        let doc: ConfigDoc = serde_json::from_value(serde_json::json!({
            "config": {"admin": "[::]:4191"},
            "ready": true,
            "identity": {"id": "spiffe://cluster.local/ns/shop/sa/web", "not_before": 1,
                         "not_after": 2, "serial": "0a1b", "trust_bundle_roots": 1},
            "policy": {"generation": 7, "loaded": true, "invalid": null, "quarantined": false,
                       "document": {}},
            "access_log_dropped": 0,
        }))
        .unwrap();
        assert_eq!(doc.identity.unwrap().serial, "0a1b");
        assert_eq!(doc.policy.generation, 7);
    }
}
