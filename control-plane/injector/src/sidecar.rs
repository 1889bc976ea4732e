//! The objects injection adds: the iptables init container, the proxy container (native
//! sidecar or regular first container) and the projected token volume.
//!
//! Ordering is what makes the pod safe from its first packet: `vigil-init` runs first, so
//! no other container opens a connection before the redirection exists. As a native
//! sidecar the proxy comes right after it and its startup probe holds every later init
//! container and the app until it is ready. As a regular container it is the first one,
//! and its `postStart` hook (`vigil-proxy wait-ready`) holds the app, because the kubelet
//! starts the next container only when the hook returns. In that mode the user's own init
//! containers run before the proxy exists, with their traffic already redirected: their
//! outbound connections fail (list those ports in `vigil.dev/skip-outbound-ports`).
//!
//! `vigil-init` needs root with NET_ADMIN/NET_RAW, which the `baseline` and `restricted`
//! Pod Security levels forbid: meshed namespaces need `privileged` admission.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
        Lifecycle, LifecycleHandler, ObjectFieldSelector, Probe, ProjectedVolumeSource,
        ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection,
        Volume, VolumeMount, VolumeProjection,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};

use vigil_policy::model::port_list;

use crate::{annotations::PodSettings, config::InjectorConfig};

/// The proxy container's name.
pub const PROXY: &str = "vigil-proxy";
/// The init container's name.
pub const INIT: &str = "vigil-init";
/// The projected token volume.
pub const TOKEN_VOLUME: &str = "vigil-token";
/// Where the token volume is mounted in the proxy.
pub const TOKEN_DIR: &str = "/var/run/secrets/vigil.dev/serviceaccount";
/// How long the app is held waiting for the proxy to be ready.
const READY_TIMEOUT_SECONDS: i32 = 120;

/// `vigil-proxy init`: iptables redirection to the proxy's listeners, the proxy's own
/// traffic (by UID) and the skipped ports exempt.
pub fn init_container(config: &InjectorConfig, settings: &PodSettings) -> Container {
    let p = &config.ports;
    let mut args = vec![
        "init".to_string(),
        "--inbound-port".into(),
        p.inbound.to_string(),
        "--outbound-port".into(),
        p.outbound.to_string(),
        "--admin-port".into(),
        p.admin.to_string(),
        "--proxy-uid".into(),
        config.proxy_uid.to_string(),
    ];
    if !settings.skip_inbound.is_empty() {
        args.extend([
            "--skip-inbound-ports".into(),
            port_list(&settings.skip_inbound),
        ]);
    }
    if !settings.skip_outbound.is_empty() {
        args.extend([
            "--skip-outbound-ports".into(),
            port_list(&settings.skip_outbound),
        ]);
    }
    let q = |s: &str| Quantity(s.to_string());
    Container {
        name: INIT.into(),
        image: Some(config.proxy_image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some(args),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), q("10m")),
                ("memory".to_string(), q("10Mi")),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), q("100m")),
                ("memory".to_string(), q("50Mi")),
            ])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// `vigil-proxy run`, configured through its `VIGIL_PROXY_*` environment. `native` makes
/// it a native sidecar (an init container with `restartPolicy: Always`).
pub fn proxy_container(
    config: &InjectorConfig,
    settings: &PodSettings,
    probe_routes: &[String],
    native: bool,
) -> Container {
    let p = &config.ports;
    let mut proxy = Container {
        name: PROXY.into(),
        image: Some(config.proxy_image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some(vec!["run".into()]),
        env: Some(proxy_env(config, settings, probe_routes)),
        ports: Some(vec![
            port("vigil-admin", p.admin),
            port("vigil-inbound", p.inbound),
        ]),
        readiness_probe: Some(admin_probe(config, "/ready", 5, 3)),
        liveness_probe: Some(admin_probe(config, "/live", 10, 3)),
        resources: config.resources.clone(),
        security_context: Some(SecurityContext {
            run_as_user: Some(config.proxy_uid),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    if native {
        // The kubelet starts the next init container (and the app) once this succeeds.
        proxy.restart_policy = Some("Always".into());
        proxy.startup_probe = Some(admin_probe(config, "/ready", 1, READY_TIMEOUT_SECONDS));
    } else {
        proxy.lifecycle = Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "vigil-proxy".into(),
                        "wait-ready".into(),
                        "--admin".into(),
                        format!("127.0.0.1:{}", p.admin),
                        "--timeout".into(),
                        format!("{READY_TIMEOUT_SECONDS}s"),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        });
    }
    proxy
}

/// The projected service-account token (audience `tokenAudience`) the proxy presents to
/// the controller for its first certificate; the kubelet rotates it.
pub fn token_volume(config: &InjectorConfig) -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(config.token_audience.clone()),
                    expiration_seconds: Some(config.token_expiration_seconds),
                    path: "token".into(),
                    ..ServiceAccountTokenProjection::default()
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn proxy_env(config: &InjectorConfig, settings: &PodSettings, routes: &[String]) -> Vec<EnvVar> {
    let p = &config.ports;
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        value_env("VIGIL_PROXY_WORKLOAD", "$(POD_NAMESPACE)/$(POD_NAME)"),
        value_env("VIGIL_PROXY_CONTROLLER", &config.controller_address),
    ];
    if !config.controller_identity.is_empty() {
        env.push(value_env(
            "VIGIL_PROXY_CONTROLLER_IDENTITY",
            &config.controller_identity,
        ));
    }
    env.extend([
        value_env("VIGIL_PROXY_TRUST_ANCHORS", &config.trust_anchors_pem),
        value_env(
            "VIGIL_PROXY_SERVICE_ACCOUNT_TOKEN_FILE",
            &format!("{TOKEN_DIR}/token"),
        ),
        value_env("VIGIL_PROXY_INBOUND", &format!("[::]:{}", p.inbound)),
        value_env("VIGIL_PROXY_OUTBOUND", &format!("127.0.0.1:{}", p.outbound)),
        value_env("VIGIL_PROXY_ADMIN", &format!("[::]:{}", p.admin)),
        value_env("VIGIL_PROXY_LOG", &config.log_level),
        value_env("VIGIL_PROXY_LOG_FORMAT", "json"),
    ]);
    if !settings.opaque_ports.is_empty() {
        env.push(value_env(
            "VIGIL_PROXY_OPAQUE_PORTS",
            &port_list(&settings.opaque_ports),
        ));
    }
    if !settings.http1_app_ports.is_empty() {
        env.push(value_env(
            "VIGIL_PROXY_HTTP1_APP_PORTS",
            &port_list(&settings.http1_app_ports),
        ));
    }
    if !routes.is_empty() {
        env.push(value_env("VIGIL_PROXY_PROBE_ROUTES", &routes.join(",")));
    }
    if !config.tls.groups.is_empty() {
        env.push(value_env(
            "VIGIL_PROXY_TLS_GROUPS",
            &config.tls.groups.join(","),
        ));
    }
    if !config.tls.cipher_suites.is_empty() {
        env.push(value_env(
            "VIGIL_PROXY_TLS_CIPHER_SUITES",
            &config.tls.cipher_suites.join(","),
        ));
    }
    // The pod's annotation, else the chart's setting; the proxy's default is left unsaid.
    let mesh_http1 = (settings.mesh_http1.as_deref()).unwrap_or(config.mesh_http1.as_str());
    if mesh_http1 != crate::config::MeshHttp1::default().as_str() {
        env.push(value_env("VIGIL_PROXY_MESH_HTTP1", mesh_http1));
    }
    env
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn admin_probe(config: &InjectorConfig, path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(config.ports.admin)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}
