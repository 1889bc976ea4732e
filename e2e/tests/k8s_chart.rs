//! The Helm chart, rendered by real Helm, checked without a cluster: every value
//! documented, the chart's CRDs are the generated ones, `helm lint` clean (default and HA
//! values) and bad values refused by the schema with its message, and the rendered
//! manifests follow the controller's contract (env, ports, probes, security context, the
//! injector ConfigMap parsed by the injector's own parser, RBAC without Secrets).
//! `k8s_helm.rs` takes the same chart to the apiserver.

#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde_json::{Value, json};
use vigil_e2e::{
    chart::{NS, app_version, chart, chart_dir, ha_values, kinds, one, template},
    k8s,
};

// ---------------------------------------------------------------------------------------
// Files only (helm is not even needed).

/// `values.yaml`: a comment directly above every key, nested ones included.
#[test]
fn every_value_is_documented_by_a_comment_above_it() {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let mut previous = "";
    let mut undocumented = Vec::new();
    let mut keys = 0;
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start();
        let is_key = body
            .split_once(':')
            .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()))
            && !body.starts_with('#');
        if is_key {
            keys += 1;
            let indent = line.len() - body.len();
            let p = previous.trim_start();
            if !(p.starts_with('#') && previous.len() - p.len() == indent) {
                undocumented.push(format!("line {}: {line}", n + 1));
            }
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    assert!(
        keys > 40,
        "only {keys} keys found: is the check still reading values.yaml?"
    );
    assert!(
        undocumented.is_empty(),
        "keys without a comment directly above them:\n{}",
        undocumented.join("\n")
    );
}

/// `charts/vigil/crds/` is a byte-for-byte copy of the generated `crds/` (`make
/// generate` copies, `make check-generated` checks; this catches a hand edit).
#[test]
fn the_chart_ships_the_generated_crds() {
    let yaml_files = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    };
    let generated = yaml_files(&k8s::repo_root().join("crds"));
    let shipped = yaml_files(&chart_dir().join("crds"));
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        [
            "policy.vigil.dev_accesspolicies.yaml",
            "policy.vigil.dev_quarantines.yaml",
            "policy.vigil.dev_segments.yaml"
        ]
    );
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>()
    );
    for (name, text) in &generated {
        assert!(
            shipped[name] == *text,
            "charts/vigil/crds/{name} differs from crds/{name}: run `make generate`"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Helm, no cluster state.

#[test]
fn the_chart_lints_clean_and_its_schema_refuses_bad_values() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let (chart, ha) = (chart(), ha_values());
    for extra in [vec![], vec!["-f", ha.as_str()]] {
        for strict in [false, true] {
            let mut args = vec!["lint", chart.as_str()];
            if strict {
                args.push("--strict");
            }
            args.extend(extra.iter().copied());
            let (ok, out) = cluster.helm(&args);
            assert!(
                ok && out.contains("1 chart(s) linted, 0 chart(s) failed"),
                "helm {args:?}:\n{out}"
            );
            assert!(
                !out.contains("[WARNING]") && !out.contains("[ERROR]"),
                "helm {args:?}:\n{out}"
            );
        }
    }
    // (value, what the schema must say: helm's own message, naming the key)
    for (set, want) in [
        (
            "webhook.failurePolicy=Sometimes",
            "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'",
        ),
        ("replicas=0", "at '/replicas': minimum: got 0, want 1"),
        ("replicaz=3", "additional properties 'replicaz' not allowed"),
        (
            "defaultPolicy=allow-all",
            "at '/defaultPolicy': value must be one of 'deny', 'audit', 'allow-authenticated'",
        ),
        (
            "egress=open",
            "at '/egress': value must be one of 'passthrough', 'strict'",
        ),
        (
            "injector.nativeSidecar=maybe",
            "at '/injector/nativeSidecar': value must be one of 'auto', 'always', 'never'",
        ),
        (
            "webhook.url=http://127.0.0.1:9443/inject",
            "at '/webhook/url'",
        ),
        ("webhook.timeoutSeconds=60", "at '/webhook/timeoutSeconds'"),
        (
            "webhook.failurPolicy=Ignore",
            "additional properties 'failurPolicy' not allowed",
        ),
        (
            "injector.ports.inbound=70000",
            "at '/injector/ports/inbound'",
        ),
        (
            "injector.tls.cipherSuites={TLS_RSA_WITH_AES_128_CBC_SHA}",
            "at '/injector/tls/cipherSuites/0': value must be one of",
        ),
        (
            "injector.tls.groups={x448}",
            "at '/injector/tls/groups/0': value must be one of",
        ),
        (
            "injector.meshHttp1=h2",
            "at '/injector/meshHttp1': value must be one of",
        ),
    ] {
        let (ok, out) = cluster.helm(&["lint", &chart, "--set", set]);
        assert!(!ok, "lint accepted {set}:\n{out}");
        assert!(
            out.contains(want),
            "lint --set {set}: expected {want:?} in\n{out}"
        );
        // install/template refuse it too, before anything reaches a cluster
        let (ok, out) = cluster.helm(&["template", "vigil", &chart, "-n", NS, "--set", set]);
        assert!(!ok && out.contains(want), "template --set {set}:\n{out}");
    }
}

/// The Deployment, Service, webhook configuration, ConfigMap and RBAC as the controller
/// expects them (the contract with `vigil-controller` and `vigil-injector`).
#[test]
fn rendered_manifests_follow_the_controller_contract() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let version = app_version();
    let docs = template(cluster, &[]);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "MutatingWebhookConfiguration",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into(),
        "no Secret (the controller owns the CA), no PDB with one replica"
    );

    // Deployment.
    let deploy = one(&docs, "Deployment");
    let pod = &deploy["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(deploy["metadata"]["name"], "vigil-controller");
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(spec["serviceAccountName"], "vigil-controller");
    let selector = deploy["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(&pod["metadata"]["labels"][k], v, "pod label {k}");
    }
    assert_eq!(
        spec["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["image"],
        format!("ghcr.io/vigil-mesh/vigil-controller:{version}")
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        c["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "capabilities": {"drop": ["ALL"]}})
    );
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().unwrap() {
        let value = e
            .get("value")
            .cloned()
            .unwrap_or_else(|| e["valueFrom"].clone());
        assert!(
            env.insert(e["name"].as_str().unwrap().to_string(), value)
                .is_none(),
            "{} set twice",
            e["name"]
        );
    }
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let expected: BTreeMap<String, Value> = [
        ("VIGIL_CONTROLLER_KUBERNETES", json!("true")),
        ("VIGIL_CONTROLLER_NAMESPACE", field("metadata.namespace")),
        ("VIGIL_CONTROLLER_POD_NAME", field("metadata.name")),
        ("VIGIL_CONTROLLER_STATE_DIR", json!("/var/run/vigil/ca")),
        ("VIGIL_CONTROLLER_CA_SECRET", json!("vigil-ca")),
        ("VIGIL_CONTROLLER_LEASE", json!("vigil-controller")),
        ("VIGIL_CONTROLLER_LISTEN", json!("0.0.0.0:8443")),
        ("VIGIL_CONTROLLER_ADMIN", json!("0.0.0.0:9191")),
        ("VIGIL_CONTROLLER_WEBHOOK_LISTEN", json!("0.0.0.0:9443")),
        ("VIGIL_CONTROLLER_WEBHOOK_CONFIG", json!("vigil-injector")),
        (
            "VIGIL_CONTROLLER_WEBHOOK_SANS",
            json!(
                "vigil-controller.vigil-system.svc,vigil-controller.vigil-system.svc.cluster.local"
            ),
        ),
        (
            "VIGIL_CONTROLLER_INJECTOR_CONFIG",
            json!("/etc/vigil/injector/config.yaml"),
        ),
        ("VIGIL_CONTROLLER_TRUST_DOMAIN", json!("cluster.local")),
        (
            "VIGIL_CONTROLLER_IDENTITY",
            json!("spiffe://cluster.local/ns/vigil-system/sa/vigil-controller"),
        ),
        ("VIGIL_CONTROLLER_TOKEN_AUDIENCE", json!("vigil-ca")),
        ("VIGIL_CONTROLLER_SVID_TTL", json!("1h")),
        ("VIGIL_CONTROLLER_DEFAULT_POLICY", json!("deny")),
        ("VIGIL_CONTROLLER_EGRESS", json!("passthrough")),
        ("VIGIL_CONTROLLER_LOG", json!("info")),
        ("VIGIL_CONTROLLER_LOG_FORMAT", json!("json")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(env, expected);
    // Every variable is one the controller reads (a renamed flag fails here, not in a
    // cluster where an unknown variable is silently ignored).
    let declared = controller_env_vars();
    for name in env.keys() {
        assert!(
            declared.contains(name),
            "{name} is not declared by vigil-controller (env = \"...\" in control-plane/controller/src)"
        );
    }
    let ports: BTreeMap<String, i64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [("admin", 9191), ("grpc", 8443), ("webhook", 9443)]
            .map(|(k, v)| (k.to_string(), v))
            .into()
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/ready", "port": "admin"})
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/live", "port": "admin"})
    );
    let mounts: BTreeMap<String, String> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["mountPath"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let volume = |name: &str| {
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"))
            .clone()
    };
    assert_eq!(mounts["ca-state"], "/var/run/vigil/ca");
    assert_eq!(volume("ca-state")["emptyDir"]["medium"], "Memory");
    assert_eq!(mounts["injector"], "/etc/vigil/injector");
    assert_eq!(
        volume("injector")["configMap"]["name"],
        "vigil-controller-injector"
    );

    // Service.
    let svc = one(&docs, "Service");
    assert_eq!(svc["metadata"]["name"], "vigil-controller");
    assert_eq!(
        &svc["spec"]["selector"],
        &deploy["spec"]["selector"]["matchLabels"]
    );
    let svc_ports: BTreeMap<String, (i64, String)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                (
                    p["port"].as_i64().unwrap(),
                    p["targetPort"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(svc_ports["grpc"], (8443, "grpc".to_string()));
    assert_eq!(svc_ports["admin"], (9191, "admin".to_string()));
    assert_eq!(svc_ports["webhook"], (443, "webhook".to_string()));

    // Webhook configuration: through the Service by default.
    let mwc = one(&docs, "MutatingWebhookConfiguration");
    assert_eq!(mwc["metadata"]["name"], "vigil-injector");
    let hooks = mwc["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook["name"], "inject.vigil.dev");
    assert_eq!(
        hook["clientConfig"],
        json!({"service": {"name": "vigil-controller", "namespace": NS, "path": "/inject", "port": 443}})
    );
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
    assert_eq!(hook["timeoutSeconds"], 10);
    assert_eq!(
        hook["rules"],
        json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["pods"], "scope": "Namespaced"}])
    );
    assert_eq!(
        hook["namespaceSelector"],
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                     "values": ["kube-system", NS]}]})
    );
    assert!(hook.get("objectSelector").is_none());

    // The injector's ConfigMap, read by the injector's own parser (unknown keys refused).
    let cm = one(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "vigil-controller-injector");
    let cfg = vigil_injector::parse_config(cm["data"]["config.yaml"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}\n{}", cm["data"]["config.yaml"]));
    assert_eq!(
        cfg.proxy_image,
        format!("ghcr.io/vigil-mesh/vigil-proxy:{version}")
    );
    assert_eq!(cfg.image_pull_policy, "IfNotPresent");
    assert_eq!(
        cfg.controller_address,
        "vigil-controller.vigil-system.svc:8443"
    );
    assert_eq!(cfg.proxy_uid, 2102);
    assert_eq!(
        cfg.ports,
        vigil_injector::ProxyPorts {
            inbound: 4143,
            outbound: 4140,
            admin: 4191
        }
    );
    assert_eq!(cfg.log_level, "info");
    assert_eq!(cfg.tls, vigil_injector::ProxyTls::default());
    assert_eq!(cfg.mesh_http1, vigil_injector::config::MeshHttp1::Auto);
    assert_eq!(cfg.native_sidecar, vigil_injector::NativeSidecar::Auto);
    assert_eq!(cfg.token_audience, "vigil-ca");
    assert_eq!(cfg.token_expiration_seconds, 3600);
    assert_eq!(cfg.control_plane_namespace, NS);
    assert_eq!(cfg.skip_namespaces, ["kube-system"]);
    let res = serde_json::to_value(cfg.resources.unwrap()).unwrap();
    assert_eq!(
        res,
        json!({"requests": {"cpu": "10m", "memory": "20Mi"}, "limits": {"memory": "128Mi"}})
    );

    // RBAC: nothing on Secrets cluster-wide; its webhook configuration by name only.
    let cr = one(&docs, "ClusterRole");
    let rules = cr["rules"].as_array().unwrap();
    for r in rules {
        let res: Vec<&str> = r["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(!res.contains(&"secrets") && !res.contains(&"*"), "{r}");
        let verbs: Vec<&str> = r["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(!verbs.contains(&"*") && !verbs.contains(&"delete"), "{r}");
        if res.contains(&"pods") {
            assert_eq!(verbs, ["get", "list", "watch"], "no pod writes");
        }
        if res.contains(&"mutatingwebhookconfigurations") {
            assert_eq!(r["resourceNames"], json!(["vigil-injector"]));
            assert_eq!(verbs, ["get", "patch"]);
        }
    }
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], NS);
    let named: Vec<&Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("resourceNames").is_some())
        .collect();
    assert_eq!(named.len(), 2);
    for (r, subject) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let b = one(&docs, r);
        assert_eq!(b["roleRef"]["kind"], subject);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "vigil-controller", "namespace": NS}])
        );
    }

    // Values reach the objects: names, URL mode, selectors, injector settings.
    let docs = template(
        cluster,
        &[
            "--set",
            "webhook.url=https://127.0.0.1:9443/inject,webhook.name=other-injector,webhook.failurePolicy=Ignore",
            "--set",
            "ca.secretName=my-ca,leaderElection.leaseName=my-lease,serviceAccount.name=mesh-ctl",
            "--set",
            "injector.nativeSidecar=never,injector.proxyImage.tag=dev,trustDomain=example.org,injector.meshHttp1=http2",
            "--set-json",
            r#"webhook.namespaceSelector={"matchLabels":{"mesh":"on"}}"#,
            "--set-json",
            r#"webhook.objectSelector={"matchExpressions":[{"key":"vigil.dev/skip","operator":"DoesNotExist"}]}"#,
            "--set-json",
            r#"injector.tls={"groups":["x25519"],"cipherSuites":["TLS_AES_128_GCM_SHA256","TLS_AES_256_GCM_SHA384"]}"#,
        ],
    );
    let hook = &one(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(
        hook["clientConfig"],
        json!({"url": "https://127.0.0.1:9443/inject"}),
        "URL mode: no service"
    );
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(
        hook["namespaceSelector"],
        json!({"matchLabels": {"mesh": "on"}})
    );
    assert_eq!(
        hook["objectSelector"]["matchExpressions"][0]["key"],
        "vigil.dev/skip"
    );
    let env: BTreeMap<&str, &Value> =
        one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), &e["value"]))
            .collect();
    assert_eq!(env["VIGIL_CONTROLLER_WEBHOOK_CONFIG"], "other-injector");
    assert_eq!(env["VIGIL_CONTROLLER_CA_SECRET"], "my-ca");
    assert_eq!(env["VIGIL_CONTROLLER_LEASE"], "my-lease");
    assert_eq!(
        env["VIGIL_CONTROLLER_IDENTITY"],
        "spiffe://example.org/ns/vigil-system/sa/mesh-ctl"
    );
    let cr = one(&docs, "ClusterRole");
    assert!(
        cr["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resourceNames"] == json!(["other-injector"]))
    );
    let role_names: Vec<&Value> = one(&docs, "Role")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.get("resourceNames"))
        .collect();
    assert_eq!(role_names, [&json!(["my-ca"]), &json!(["my-lease"])]);
    assert_eq!(one(&docs, "ServiceAccount")["metadata"]["name"], "mesh-ctl");
    let cfg = vigil_injector::parse_config(
        one(&docs, "ConfigMap")["data"]["config.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(cfg.native_sidecar, vigil_injector::NativeSidecar::Never);
    assert_eq!(cfg.mesh_http1, vigil_injector::config::MeshHttp1::Http2);
    assert_eq!(cfg.proxy_image, "ghcr.io/vigil-mesh/vigil-proxy:dev");
    assert_eq!(cfg.tls.groups, ["x25519"]);
    assert_eq!(
        cfg.tls.cipher_suites,
        ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"]
    );

    // HA values: 3 replicas spread over nodes (the anti-affinity selects these very
    // pods), a PodDisruptionBudget that leaves 2 up.
    let docs = template(cluster, &["-f", &ha_values()]);
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 3);
    let terms = deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .unwrap();
    assert_eq!(terms[0]["topologyKey"], "kubernetes.io/hostname");
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for (k, v) in terms[0]["labelSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&labels[k], v, "anti-affinity label {k} not on the pods");
    }
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert_eq!(
        &pdb["spec"]["selector"]["matchLabels"],
        &deploy["spec"]["selector"]["matchLabels"]
    );
    // More than one replica always gets a PDB, even without the HA file.
    let docs = template(cluster, &["--set", "replicas=2"]);
    one(&docs, "PodDisruptionBudget");
}

/// Every `"VIGIL_CONTROLLER_..."` string literal in the controller's sources (clap's
/// `env = "..."` attributes, and the log filter read by `main.rs`).
fn controller_env_vars() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for part in text.split("\"VIGIL_CONTROLLER_").skip(1) {
                    if let Some((rest, _)) = part.split_once('"') {
                        out.insert(format!("VIGIL_CONTROLLER_{rest}"));
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(
        &k8s::repo_root().join("control-plane/controller/src"),
        &mut out,
    );
    out
}
