//! `inject()` on enrolled pods: the layout of the injected pod, its containers, volume,
//! annotations and probe routes, and the patch that carries them.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use support::*;
use vigil_injector::{
    Decision, InjectorConfig, NativeSidecar, ProxyTls, config::MeshHttp1, inject,
};

// === layout ===

#[test]
fn native_sidecar_runs_right_after_vigil_init_and_gates_the_rest() {
    let out = injected(&config(true), &pod(APP));
    assert_eq!(init_names(&out), ["vigil-init", "vigil-proxy", "migrate"]);
    assert_eq!(container_names(&out), ["app", "metrics"]);
    let proxy = container(&out, "vigil-proxy");
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert!(proxy.lifecycle.is_none());
    let startup = proxy
        .startup_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        (startup.path.as_deref(), &startup.port),
        (Some("/ready"), &IntOrString::Int(4191))
    );
}

#[test]
fn without_native_sidecars_the_proxy_is_the_first_container_held_by_post_start() {
    let out = injected(&config(false), &pod(APP));
    assert_eq!(init_names(&out), ["vigil-init", "migrate"]);
    assert_eq!(container_names(&out), ["vigil-proxy", "app", "metrics"]);
    let proxy = container(&out, "vigil-proxy");
    assert_eq!(proxy.restart_policy, None);
    assert_eq!(proxy.startup_probe, None);
    let hook = proxy
        .lifecycle
        .as_ref()
        .unwrap()
        .post_start
        .as_ref()
        .unwrap();
    assert_eq!(
        hook.exec.as_ref().unwrap().command.as_deref().unwrap(),
        [
            "vigil-proxy",
            "wait-ready",
            "--admin",
            "127.0.0.1:4191",
            "--timeout",
            "120s"
        ]
    );
}

#[test]
fn native_sidecar_setting_overrides_cluster_support() {
    let mode = |native_sidecar, cluster| {
        let cfg = InjectorConfig {
            native_sidecar,
            ..config(cluster)
        };
        init_names(&injected(&cfg, &pod(APP))).contains(&"vigil-proxy")
    };
    assert!(mode(NativeSidecar::Auto, true));
    assert!(!mode(NativeSidecar::Auto, false));
    assert!(mode(NativeSidecar::Always, false));
    assert!(!mode(NativeSidecar::Never, true));
}

#[test]
fn pods_without_init_containers_volumes_or_annotations_get_them() {
    let p = pod("metadata: {name: a}\nspec: {containers: [{name: app, image: x}]}\n");
    let cfg = config(true);
    let Decision::Inject(patch) = inject(&cfg, "shop", &p, &enabled_namespace()).unwrap() else {
        panic!("not injected")
    };
    let out: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(apply(&serde_json::to_value(&p).unwrap(), &patch)).unwrap();
    assert_eq!(init_names(&out), ["vigil-init", "vigil-proxy"]);
    let volumes = out.spec.as_ref().unwrap().volumes.as_ref().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(
        out.metadata.annotations.unwrap()["kubectl.kubernetes.io/default-container"],
        "app"
    );
}

// === the containers and the volume ===

#[test]
fn init_container_programs_iptables_with_the_configured_ports() {
    let out = injected(&config(true), &pod(APP));
    let init = container(&out, "vigil-init");
    assert_eq!(init.image, Some(InjectorConfig::default().proxy_image));
    assert_eq!(
        init.args.as_deref().unwrap(),
        [
            "init",
            "--inbound-port",
            "4143",
            "--outbound-port",
            "4140",
            "--admin-port",
            "4191",
            "--proxy-uid",
            "2102"
        ]
    );
    let sc = init.security_context.as_ref().unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_non_root), (Some(0), Some(false)));
    assert_eq!(
        (sc.allow_privilege_escalation, sc.read_only_root_filesystem),
        (Some(false), Some(true))
    );
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.add.as_deref().unwrap(), ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(caps.drop.as_deref().unwrap(), ["ALL"]);
    assert!(init.resources.as_ref().unwrap().limits.is_some());
}

#[test]
fn proxy_container_env_ports_probes_and_security() {
    let out = injected(&config(true), &pod(APP));
    let proxy = container(&out, "vigil-proxy");
    assert_eq!(proxy.args.as_deref().unwrap(), ["run"]);
    let env = env_of(&out, "vigil-proxy");
    let expected = [
        ("VIGIL_PROXY_WORKLOAD", "$(POD_NAMESPACE)/$(POD_NAME)"),
        (
            "VIGIL_PROXY_CONTROLLER",
            "vigil-controller.vigil-system.svc:8443",
        ),
        (
            "VIGIL_PROXY_CONTROLLER_IDENTITY",
            "spiffe://cluster.local/ns/vigil-system/sa/vigil-controller",
        ),
        ("VIGIL_PROXY_TRUST_ANCHORS", TRUST_ANCHORS),
        (
            "VIGIL_PROXY_SERVICE_ACCOUNT_TOKEN_FILE",
            "/var/run/secrets/vigil.dev/serviceaccount/token",
        ),
        ("VIGIL_PROXY_INBOUND", "[::]:4143"),
        ("VIGIL_PROXY_OUTBOUND", "127.0.0.1:4140"),
        ("VIGIL_PROXY_ADMIN", "[::]:4191"),
        ("VIGIL_PROXY_LOG", "info"),
        ("VIGIL_PROXY_LOG_FORMAT", "json"),
        ("VIGIL_PROXY_PROBE_ROUTES", "8080:/,8080:/healthz"),
    ];
    assert_eq!(
        env,
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    );
    // POD_NAME / POD_NAMESPACE come from the downward API, before their first use.
    let all = proxy.env.as_ref().unwrap();
    let field = |i: usize| {
        let e = &all[i];
        (
            e.name.as_str(),
            e.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path
                .as_str(),
        )
    };
    assert_eq!(field(0), ("POD_NAME", "metadata.name"));
    assert_eq!(field(1), ("POD_NAMESPACE", "metadata.namespace"));

    let ports: Vec<_> = proxy
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref().unwrap(), p.container_port))
        .collect();
    assert_eq!(ports, [("vigil-admin", 4191), ("vigil-inbound", 4143)]);
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p.as_ref().unwrap().http_get.clone().unwrap();
        (get.path.unwrap(), get.port)
    };
    assert_eq!(
        probe(&proxy.readiness_probe),
        ("/ready".into(), IntOrString::Int(4191))
    );
    assert_eq!(
        probe(&proxy.liveness_probe),
        ("/live".into(), IntOrString::Int(4191))
    );

    let sc = proxy.security_context.as_ref().unwrap();
    assert_eq!(
        (sc.run_as_user, sc.run_as_non_root),
        (Some(2102), Some(true))
    );
    assert_eq!(
        (sc.allow_privilege_escalation, sc.read_only_root_filesystem),
        (Some(false), Some(true))
    );
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(),
        ["ALL"]
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(proxy.resources, InjectorConfig::default().resources);
    let mount = &proxy.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (
            mount.name.as_str(),
            mount.mount_path.as_str(),
            mount.read_only
        ),
        (
            "vigil-token",
            "/var/run/secrets/vigil.dev/serviceaccount",
            Some(true)
        )
    );
}

#[test]
fn controller_identity_is_omitted_when_unknown() {
    let cfg = InjectorConfig {
        controller_identity: String::new(),
        ..config(true)
    };
    let env = env_of(&injected(&cfg, &pod(APP)), "vigil-proxy");
    assert!(!env.contains_key("VIGIL_PROXY_CONTROLLER_IDENTITY"));
}

#[test]
fn mesh_tls_settings_reach_the_proxy_only_when_set() {
    let env = env_of(&injected(&config(true), &pod(APP)), "vigil-proxy");
    assert!(!env.contains_key("VIGIL_PROXY_TLS_GROUPS"));
    assert!(!env.contains_key("VIGIL_PROXY_TLS_CIPHER_SUITES"));
    let cfg = InjectorConfig {
        tls: ProxyTls {
            groups: vec!["x25519".into(), "p256".into()],
            cipher_suites: vec![
                "TLS_AES_128_GCM_SHA256".into(),
                "TLS_AES_256_GCM_SHA384".into(),
            ],
        },
        ..config(true)
    };
    let env = env_of(&injected(&cfg, &pod(APP)), "vigil-proxy");
    assert_eq!(env["VIGIL_PROXY_TLS_GROUPS"], "x25519,p256");
    assert_eq!(
        env["VIGIL_PROXY_TLS_CIPHER_SUITES"],
        "TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384"
    );
}

#[test]
fn the_mesh_hop_of_http1_follows_the_chart_and_the_pod_annotation() {
    let hop = |cfg: &InjectorConfig, annotation: Option<&str>| {
        let p = match annotation {
            Some(v) => pod(&APP.replace(
                "team: shop",
                &format!("vigil.dev/mesh-http1: {v}\n    team: shop"),
            )),
            None => pod(APP),
        };
        env_of(&injected(cfg, &p), "vigil-proxy")
            .get("VIGIL_PROXY_MESH_HTTP1")
            .cloned()
    };
    let default = config(true);
    assert_eq!(
        hop(&default, None),
        None,
        "the proxy's default is left unsaid"
    );
    assert_eq!(hop(&default, Some("http2")).as_deref(), Some("http2"));
    assert_eq!(hop(&default, Some("http1")).as_deref(), Some("http1"));
    assert_eq!(hop(&default, Some("auto")), None);
    let chart_h2 = InjectorConfig {
        mesh_http1: MeshHttp1::Http2,
        ..config(true)
    };
    assert_eq!(hop(&chart_h2, None).as_deref(), Some("http2"));
    assert_eq!(
        hop(&chart_h2, Some("auto")),
        None,
        "the pod's annotation overrides the chart"
    );
    assert_eq!(hop(&chart_h2, Some("http1")).as_deref(), Some("http1"));
}

#[test]
fn token_volume_is_a_projected_token_for_the_ca() {
    let cfg = InjectorConfig {
        token_audience: "vigil-test".into(),
        token_expiration_seconds: 7200,
        ..config(true)
    };
    let out = injected(&cfg, &pod(APP));
    let volumes = out.spec.as_ref().unwrap().volumes.as_ref().unwrap();
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["data", "vigil-token"]
    );
    let sources = volumes[1]
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap();
    let sat = sources[0].service_account_token.as_ref().unwrap();
    assert_eq!(
        (
            sat.audience.as_deref(),
            sat.expiration_seconds,
            sat.path.as_str()
        ),
        (Some("vigil-test"), Some(7200), "token")
    );
}

#[test]
fn annotations_mark_the_pod_and_default_kubectl_to_the_app() {
    let out = injected(&config(true), &pod(APP));
    let ann = out.metadata.annotations.unwrap();
    assert_eq!(ann["vigil.dev/injected"], env!("CARGO_PKG_VERSION"));
    assert_eq!(ann["kubectl.kubernetes.io/default-container"], "app");
    assert_eq!(ann["team"], "shop");
    assert!(out.metadata.labels.is_none());

    let chosen = pod(&APP.replace(
        "team: shop",
        "kubectl.kubernetes.io/default-container: metrics",
    ));
    let ann = injected(&config(false), &chosen)
        .metadata
        .annotations
        .unwrap();
    assert_eq!(ann["kubectl.kubernetes.io/default-container"], "metrics");
}

// === probes and port annotations ===

#[test]
fn probe_routes_come_from_plain_http_probes_only() {
    // APP: readiness on named port `http` (8080:/healthz), liveness on 8080 with no path
    // (8080:/), a tcpSocket startup probe, an HTTPS probe and an unresolvable named port.
    let env = env_of(&injected(&config(true), &pod(APP)), "vigil-proxy");
    assert_eq!(env["VIGIL_PROXY_PROBE_ROUTES"], "8080:/,8080:/healthz");

    let duplicated = pod(&APP.replace(
        "{httpGet: {port: 8080}}",
        "{httpGet: {path: /healthz, port: 8080}}",
    ));
    let env = env_of(&injected(&config(true), &duplicated), "vigil-proxy");
    assert_eq!(env["VIGIL_PROXY_PROBE_ROUTES"], "8080:/healthz");

    let env = env_of(
        &injected(&config(true), &bare("{vigil.dev/inject: enabled}")),
        "vigil-proxy",
    );
    assert!(!env.contains_key("VIGIL_PROXY_PROBE_ROUTES"));
}

#[test]
fn port_annotations_reach_the_init_container_and_the_proxy() {
    let p = pod(&APP.replace(
        "team: shop",
        "vigil.dev/opaque-ports: '5432, 3306'\n    vigil.dev/http1-app-ports: '8080,80,8080'\n    vigil.dev/skip-inbound-ports: '9000'\n    vigil.dev/skip-outbound-ports: '587,25,25'",
    ));
    let out = injected(&config(true), &p);
    assert_eq!(
        env_of(&out, "vigil-proxy")["VIGIL_PROXY_OPAQUE_PORTS"],
        "3306,5432"
    );
    assert_eq!(
        env_of(&out, "vigil-proxy")["VIGIL_PROXY_HTTP1_APP_PORTS"],
        "80,8080"
    );
    let args = container(&out, "vigil-init").args.clone().unwrap();
    assert_eq!(
        args[9..],
        [
            "--skip-inbound-ports",
            "9000",
            "--skip-outbound-ports",
            "25,587"
        ]
    );
    let plain = injected(&config(true), &pod(APP));
    assert_eq!(
        container(&plain, "vigil-init").args.as_ref().unwrap().len(),
        9
    );
    assert!(!env_of(&plain, "vigil-proxy").contains_key("VIGIL_PROXY_OPAQUE_PORTS"));
    assert!(!env_of(&plain, "vigil-proxy").contains_key("VIGIL_PROXY_HTTP1_APP_PORTS"));
}

// === the patch itself ===

#[test]
fn the_patch_only_inserts_and_leaves_unknown_fields_where_they_were() {
    let raw = serde_json::json!({
        "metadata": {"name": "web", "annotations": {"vigil.dev/inject": "enabled"}},
        "spec": {
            "containers": [
                {"name": "app", "image": "x", "fieldFromTheFuture": {"a": 1}},
                {"name": "side", "image": "y"}
            ],
            "initContainers": [{"name": "migrate", "image": "m"}],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    });
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(raw.clone()).unwrap();
    for cfg in [config(true), config(false)] {
        let Decision::Inject(patch) = inject(&cfg, "shop", &typed, &none()).unwrap() else {
            panic!("not injected")
        };
        for op in &patch.0 {
            assert!(matches!(op, json_patch::PatchOperation::Add(_)), "{op:?}");
        }
        let out = apply(&raw, &patch);
        let containers = out["spec"]["containers"].as_array().unwrap();
        let app = containers.iter().find(|c| c["name"] == "app").unwrap();
        assert_eq!(app["fieldFromTheFuture"], serde_json::json!({"a": 1}));
        let proxy = containers
            .iter()
            .chain(out["spec"]["initContainers"].as_array().unwrap())
            .find(|c| c["name"] == "vigil-proxy")
            .unwrap();
        assert!(proxy.get("fieldFromTheFuture").is_none());
        assert_eq!(
            out["metadata"]["annotations"]["vigil.dev/injected"],
            env!("CARGO_PKG_VERSION")
        );
    }
}
