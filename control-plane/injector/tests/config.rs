//! `parse_config()`: the chart's `config.yaml`, its defaults and the mistakes it refuses.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use vigil_injector::{InjectorConfig, NativeSidecar, ProxyPorts, parse_config};

#[test]
fn empty_file_gives_the_documented_defaults() {
    for text in ["", "\n", "{}", "# nothing set\n"] {
        assert_eq!(
            parse_config(text).unwrap(),
            InjectorConfig::default(),
            "{text:?}"
        );
    }
    let d = InjectorConfig::default();
    assert_eq!(
        d.proxy_image,
        format!(
            "ghcr.io/vigil-mesh/vigil-proxy:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(d.image_pull_policy, "IfNotPresent");
    assert_eq!(
        d.controller_address,
        "vigil-controller.vigil-system.svc:8443"
    );
    assert_eq!(d.proxy_uid, 2102);
    assert_eq!(
        d.ports,
        ProxyPorts {
            inbound: 4143,
            outbound: 4140,
            admin: 4191
        }
    );
    let res = d.resources.clone().unwrap();
    let q = |s: &str| Quantity(s.into());
    assert_eq!(
        res.requests.unwrap(),
        BTreeMap::from([("cpu".into(), q("10m")), ("memory".into(), q("20Mi"))])
    );
    assert_eq!(
        res.limits.unwrap(),
        BTreeMap::from([("memory".into(), q("128Mi"))])
    );
    assert_eq!(d.log_level, "info");
    assert!(d.tls.groups.is_empty() && d.tls.cipher_suites.is_empty());
    assert_eq!(d.native_sidecar, NativeSidecar::Auto);
    assert_eq!(d.token_audience, "vigil-ca");
    assert_eq!(d.token_expiration_seconds, 3600);
    assert_eq!(d.control_plane_namespace, "vigil-system");
    assert_eq!(d.skip_namespaces, ["kube-system"]);
    assert!(d.trust_anchors_pem.is_empty() && d.controller_identity.is_empty());
    assert!(!d.cluster_has_native_sidecars);
}

#[test]
fn every_key_of_a_full_yaml_file_is_read() {
    let c = parse_config(
        r#"
proxyImage: registry.example/vigil-proxy:1.2.3
imagePullPolicy: Always
controllerAddress: ctl.mesh.svc:9443
proxyUid: 3000
ports: {inbound: 5143, outbound: 5140, admin: 5191}
resources:
  requests: {cpu: 5m, memory: 16Mi}
logLevel: debug,vigil_proxy=trace
tls: {groups: [X25519, secp256r1, x25519], cipherSuites: [tls13_aes_128_gcm_sha256]}
nativeSidecar: never
tokenAudience: vigil-test
tokenExpirationSeconds: 7200
controlPlaneNamespace: mesh
skipNamespaces: [kube-system, monitoring]
"#,
    )
    .unwrap();
    assert_eq!(c.proxy_image, "registry.example/vigil-proxy:1.2.3");
    assert_eq!(c.image_pull_policy, "Always");
    assert_eq!(c.controller_address, "ctl.mesh.svc:9443");
    assert_eq!(c.proxy_uid, 3000);
    assert_eq!(
        (c.ports.inbound, c.ports.outbound, c.ports.admin),
        (5143, 5140, 5191)
    );
    let res = c.resources.unwrap();
    assert_eq!(res.requests.unwrap()["memory"], Quantity("16Mi".into()));
    assert_eq!(res.limits, None);
    assert_eq!(c.log_level, "debug,vigil_proxy=trace");
    // Stored by canonical name, duplicates dropped, order kept.
    assert_eq!(c.tls.groups, ["x25519", "p256"]);
    assert_eq!(c.tls.cipher_suites, ["TLS_AES_128_GCM_SHA256"]);
    assert_eq!(c.native_sidecar, NativeSidecar::Never);
    assert_eq!(c.token_audience, "vigil-test");
    assert_eq!(c.token_expiration_seconds, 7200);
    assert_eq!(c.control_plane_namespace, "mesh");
    assert_eq!(c.skip_namespaces, ["kube-system", "monitoring"]);
}

#[test]
fn json_and_partial_files_keep_the_other_defaults() {
    let c = parse_config(r#"{"nativeSidecar": "always", "ports": {"admin": 9999}}"#).unwrap();
    assert_eq!(c.native_sidecar, NativeSidecar::Always);
    assert_eq!((c.ports.inbound, c.ports.admin), (4143, 9999));
    assert_eq!(c.proxy_uid, 2102);
    // What the controller's /config dump serializes parses back to the same settings.
    let dumped = serde_json::to_string(&c).unwrap();
    assert_eq!(parse_config(&dumped).unwrap(), c);
}

#[test]
fn unknown_keys_and_unusable_values_are_refused_with_what_to_fix() {
    for (text, want) in [
        ("proxyImge: x\n", "proxyImge"),
        ("ports: {inbund: 1}\n", "inbund"),
        ("trustAnchorsPem: x\n", "trustAnchorsPem"),
        (r#"{"logLevl": "debug"}"#, "logLevl"),
        ("nativeSidecar: sometimes\n", "sometimes"),
        ("proxyUid: many\n", "proxyUid"),
        ("proxyUid: 0\n", "non-root"),
        ("ports: {inbound: 1, outbound: 1}\n", "distinct"),
        ("ports: {admin: 0}\n", "non-zero"),
        (
            "imagePullPolicy: Sometimes\n",
            "Always, IfNotPresent or Never",
        ),
        ("tokenExpirationSeconds: 60\n", "at least 600"),
        (
            "tls: {groups: [x448]}\n",
            "tls.groups: unknown key-exchange group \"x448\"",
        ),
        (
            "tls: {cipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]}\n",
            "tls.cipherSuites: unknown TLS 1.3 cipher suite \"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"",
        ),
        (
            "tls: {cipherSuites: TLS_AES_128_GCM_SHA256}\n",
            "cipherSuites",
        ),
        ("tls: {ciphers: []}\n", "ciphers"),
        ("controllerAddress: ''\n", "controllerAddress"),
        ("- a list\n", "injector configuration"),
    ] {
        let e = parse_config(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}
