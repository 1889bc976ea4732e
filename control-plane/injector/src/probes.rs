//! Kubelet probes of a meshed pod, and the proxy's probe routes.
//!
//! The kubelet probes from the node, in plaintext and without a mesh identity, and iptables
//! sends those connections to the proxy's inbound listener like any other. So:
//!
//! - `httpGet` probes (scheme HTTP) become `VIGIL_PROXY_PROBE_ROUTES` entries `PORT:PATH`:
//!   the proxy lets a plaintext GET/HEAD to exactly that port and (normalized) path through
//!   to the app, and nothing else. The probes themselves are not rewritten.
//! - `tcpSocket` probes succeed anyway: the proxy accepts the TCP connection.
//! - `exec` probes never touch the network. HTTPS and gRPC probes are not declared (the
//!   proxy cannot tell them from other plaintext clients): use `exec`, or list the port in
//!   `vigil.dev/skip-inbound-ports`.
//!
//! A route is built exactly as the proxy will match it: the kubelet's path without its
//! query, `/`-prefixed, normalized with the policy engine's normalizer (the proxy refuses a
//! route that is not normalized, and matches the normalized request path). A probe that
//! cannot be declared is skipped with a warning rather than failing the pod.

use std::collections::BTreeSet;

use k8s_openapi::{
    api::core::v1::{Container, HTTPGetAction, Pod},
    apimachinery::pkg::util::intstr::IntOrString,
};

/// `PORT:PATH` of every plain-HTTP probe of the pod's containers (including the user's own
/// native sidecars), deduplicated and sorted by port then path.
pub fn routes(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let probes = [&c.liveness_probe, &c.readiness_probe, &c.startup_probe];
        for get in probes
            .into_iter()
            .flatten()
            .filter_map(|p| p.http_get.as_ref())
        {
            if let Some(route) = route(c, get) {
                out.insert(route);
            }
        }
    }
    out.into_iter()
        .map(|(port, path)| format!("{port}:{path}"))
        .collect()
}

fn route(c: &Container, get: &HTTPGetAction) -> Option<(u16, String)> {
    if get
        .scheme
        .as_deref()
        .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
    {
        return None;
    }
    let port = match &get.port {
        IntOrString::Int(p) => u16::try_from(*p).ok().filter(|p| *p > 0),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    };
    let Some(port) = port else {
        tracing::warn!(container = %c.name, port = ?get.port, "probe port not found among the container's ports; the probe is not declared to the proxy");
        return None;
    };
    let raw = get.path.as_deref().unwrap_or_default();
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    match vigil_policy::path::normalize(&path) {
        Ok(p) if !p.contains(',') => Some((port, p.into_owned())),
        Ok(_) => {
            tracing::warn!(container = %c.name, path = raw, "probe path contains a comma, which the proxy's route list cannot carry; the probe is not declared");
            None
        }
        Err(e) => {
            tracing::warn!(container = %c.name, path = raw, error = %e, "probe path is ambiguous and the proxy refuses it; the probe is not declared");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn container(port: IntOrString, path: Option<&str>, scheme: Option<&str>) -> Container {
        let get = HTTPGetAction {
            port,
            path: path.map(Into::into),
            scheme: scheme.map(Into::into),
            ..HTTPGetAction::default()
        };
        serde_json::from_value(serde_json::json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": get},
        }))
        .unwrap()
    }

    #[test]
    fn paths_are_declared_as_the_proxy_matches_them() {
        let cases = [
            (IntOrString::Int(80), None, None, Some((80, "/"))),
            (
                IntOrString::Int(80),
                Some(""),
                Some("HTTP"),
                Some((80, "/")),
            ),
            (
                IntOrString::String("http".into()),
                Some("healthz"),
                None,
                Some((8080, "/healthz")),
            ),
            (
                IntOrString::Int(80),
                Some("/a/./b//c?full=1"),
                None,
                Some((80, "/a/b/c")),
            ),
            (IntOrString::Int(80), Some("/h"), Some("HTTPS"), None),
            (IntOrString::String("grpc".into()), Some("/h"), None, None),
            (IntOrString::Int(0), Some("/h"), None, None),
            (IntOrString::Int(80), Some("/a%2Fb"), None, None),
            (IntOrString::Int(80), Some("/a,b"), None, None),
        ];
        for (port, path, scheme, want) in cases {
            let c = container(port.clone(), path, scheme);
            let get = c
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            let got = route(&c, get);
            assert_eq!(
                got,
                want.map(|(p, s)| (p, s.to_string())),
                "{port:?} {path:?} {scheme:?}"
            );
        }
    }
}
