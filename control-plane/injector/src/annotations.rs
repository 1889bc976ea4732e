//! The `vigil.dev/*` annotations users may set on pods, and their validation.
//!
//! Every Vigil annotation of a pod reaching the injector (outside the skipped namespaces)
//! is validated, enrolled or not: a typo such as `vigil.dev/inject: enabeld` must be a
//! refused pod with a message naming the annotation, never a pod silently outside the mesh.

use std::collections::BTreeMap;

use vigil_policy::model::DefaultPolicy;

/// `enabled` / `disabled`, on the pod or its namespace.
pub const INJECT: &str = "vigil.dev/inject";
/// Ports whose traffic the proxy never inspects (comma-separated): `VIGIL_PROXY_OPAQUE_PORTS`.
pub const OPAQUE_PORTS: &str = "vigil.dev/opaque-ports";
/// Ports whose app speaks HTTP/1.1 only (comma-separated): HTTP/2 requests for them reach
/// the app as HTTP/1.1 (`VIGIL_PROXY_HTTP1_APP_PORTS`).
pub const HTTP1_APP_PORTS: &str = "vigil.dev/http1-app-ports";
/// Inbound ports that bypass the proxy (iptables, `--skip-inbound-ports`).
pub const SKIP_INBOUND_PORTS: &str = "vigil.dev/skip-inbound-ports";
/// Outbound destination ports that bypass the proxy (iptables, `--skip-outbound-ports`).
pub const SKIP_OUTBOUND_PORTS: &str = "vigil.dev/skip-outbound-ports";
/// `deny` | `audit` | `allow-authenticated` ([`DefaultPolicy::NAMES`]): validated here,
/// read by the controller.
pub const DEFAULT_POLICY: &str = vigil_crds::DEFAULT_POLICY_ANNOTATION;
/// How the pod's proxy sends its app's HTTP/1.1 requests to other proxies, `auto`, `http1`
/// or `http2` (`VIGIL_PROXY_MESH_HTTP1`); overrides the chart's `injector.meshHttp1`.
pub const MESH_HTTP1: &str = "vigil.dev/mesh-http1";
/// Set on injected pods (the injector's version); also marks a pod as already injected.
pub const INJECTED: &str = "vigil.dev/injected";
/// Which container `kubectl logs/exec` pick by default; set to the first app container.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

const INJECT_VALUES: [&str; 2] = ["enabled", "disabled"];
/// The values of [`MESH_HTTP1`] (the proxy's `--mesh-http1`).
pub const MESH_HTTP1_VALUES: [&str; 3] = ["auto", "http1", "http2"];

/// A pod the injector must refuse (the webhook answers `allowed: false` with this text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// An annotation with a value it cannot have.
    #[error("annotation {annotation}={value:?} is invalid: expected {expected}")]
    InvalidAnnotation {
        /// The annotation.
        annotation: String,
        /// Its value.
        value: String,
        /// What it may be.
        expected: String,
    },
    /// An app container declares a port the proxy listens on: the proxy could not bind it.
    #[error(
        "container {container:?} declares port {port}, which the vigil proxy uses ({listener}); \
         change the app's port or the injector's `ports` setting"
    )]
    PortConflict {
        /// The app container.
        container: String,
        /// The port.
        port: u16,
        /// Which proxy listener needs it.
        listener: &'static str,
    },
    /// The patch could not be encoded (a bug: k8s types always serialize).
    #[error("cannot encode the patch: {0}")]
    Encode(String),
}

/// What the pod's annotations ask of injection, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSettings {
    /// `vigil.dev/opaque-ports`, sorted and deduplicated.
    pub opaque_ports: Vec<u16>,
    /// `vigil.dev/http1-app-ports`, sorted and deduplicated.
    pub http1_app_ports: Vec<u16>,
    /// `vigil.dev/skip-inbound-ports`, sorted and deduplicated.
    pub skip_inbound: Vec<u16>,
    /// `vigil.dev/skip-outbound-ports`, sorted and deduplicated.
    pub skip_outbound: Vec<u16>,
    /// `vigil.dev/mesh-http1`, if set (one of [`MESH_HTTP1_VALUES`]).
    pub mesh_http1: Option<String>,
}

// === impl PodSettings ===

impl PodSettings {
    /// Validates every Vigil annotation of a pod and keeps the ones injection uses.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Result<Self, InjectError> {
        one_of(annotations, INJECT, &INJECT_VALUES)?;
        one_of(annotations, DEFAULT_POLICY, &DefaultPolicy::NAMES)?;
        one_of(annotations, MESH_HTTP1, &MESH_HTTP1_VALUES)?;
        let list = |a: &str| annotations.get(a).map_or(Ok(Vec::new()), |v| ports(a, v));
        Ok(Self {
            opaque_ports: list(OPAQUE_PORTS)?,
            http1_app_ports: list(HTTP1_APP_PORTS)?,
            skip_inbound: list(SKIP_INBOUND_PORTS)?,
            skip_outbound: list(SKIP_OUTBOUND_PORTS)?,
            mesh_http1: annotations.get(MESH_HTTP1).cloned(),
        })
    }
}

fn invalid(annotation: &str, value: &str, expected: impl Into<String>) -> InjectError {
    InjectError::InvalidAnnotation {
        annotation: annotation.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

fn one_of(
    annotations: &BTreeMap<String, String>,
    annotation: &str,
    allowed: &[&str],
) -> Result<(), InjectError> {
    match annotations.get(annotation) {
        Some(v) if !allowed.contains(&v.as_str()) => Err(invalid(
            annotation,
            v,
            format!("one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

/// `a, b,c` → ports 1-65535, sorted, deduplicated. Empty entries are ignored.
pub fn ports(annotation: &str, value: &str) -> Result<Vec<u16>, InjectError> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u16>() {
            Ok(p) if p > 0 => out.push(p),
            _ => {
                return Err(invalid(
                    annotation,
                    value,
                    format!("a comma-separated list of ports 1-65535 ({part:?} is not one)"),
                ));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn port_lists_are_trimmed_sorted_and_deduplicated() {
        assert_eq!(ports(OPAQUE_PORTS, " 5432,80,, 80 ").unwrap(), [80, 5432]);
        assert_eq!(ports(OPAQUE_PORTS, "").unwrap(), Vec::<u16>::new());
        assert_eq!(vigil_policy::model::port_list(&[80, 443]), "80,443");
        for bad in ["0", "65536", "-1", "80-90", "http"] {
            let e = ports(OPAQUE_PORTS, bad).unwrap_err().to_string();
            assert!(e.contains(OPAQUE_PORTS) && e.contains("1-65535"), "{e}");
        }
    }
}
