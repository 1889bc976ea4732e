//! The Helm chart against real Helm and the real kube-apiserver: lint clean (default and
//! HA values), bad values refused by the schema with its message, the rendered
//! manifests follow the controller's contract (env, ports, probes, security context, the
//! injector ConfigMap parsed by the injector's own parser), every rendered object is
//! accepted by the apiserver (server-side dry run), `helm install` works without
//! `--wait` and `helm uninstall` keeps the CA, and the chart's RBAC gives the controller
//! exactly what it needs — requests authenticated as the chart's ServiceAccount are
//! refused (403) what it must not do.
//!
//! One apiserver for this binary. Only `install_uninstall_and_least_privilege_rbac`
//! changes cluster state; the dry run uses server-side apply (`dryRun=All`, forced), which
//! validates whether or not the release is installed at that moment, so the tests run in
//! parallel.

#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{
    api::{
        admissionregistration::v1::MutatingWebhookConfiguration,
        apps::v1::Deployment,
        authentication::v1::{TokenReview, TokenReviewSpec},
        authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        },
        coordination::v1::Lease,
        core::v1::{ConfigMap, Event, Namespace, Pod, Secret, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{
        DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
        WatchParams,
    },
    discovery::{ApiResource, Scope},
};
use serde_json::{Value, json};
use vigil_e2e::k8s;

/// The release namespace: the controller token user is `vigil-system/vigil-controller`.
const NS: &str = "vigil-system";
const CRDS: [&str; 3] = [
    "accesspolicies.policy.vigil.dev",
    "quarantines.policy.vigil.dev",
    "segments.policy.vigil.dev",
];

fn chart_dir() -> PathBuf {
    k8s::repo_root().join("charts/vigil")
}

fn chart() -> String {
    chart_dir().display().to_string()
}

fn ha_values() -> String {
    chart_dir().join("values-ha.yaml").display().to_string()
}

/// The chart's appVersion (image tags default to it).
fn app_version() -> String {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    let chart: Value = serde_saphyr::from_str(&text).unwrap();
    chart["appVersion"].as_str().unwrap().to_string()
}

/// `helm template vigil charts/vigil -n vigil-system <extra>`: the rendered documents.
fn template(cluster: &k8s::Cluster, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "vigil",
        chart.as_str(),
        "-n",
        NS,
        "--kube-version",
        "1.36.3",
    ];
    args.extend_from_slice(extra);
    let (ok, out) = cluster.helm(&args);
    assert!(ok, "helm {args:?}:\n{out}");
    documents(&out)
}

/// YAML documents of a multi-document stream (empty and comment-only ones dropped).
fn documents(text: &str) -> Vec<Value> {
    text.split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{e}\n{doc}")))
        .collect()
}

/// The one rendered object of `kind` (panics if there is not exactly one).
fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "{} {kind} rendered", found.len());
    found[0]
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

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
            "injector.nativeSidecar=never,injector.proxyImage.tag=dev,trustDomain=example.org",
            "--set-json",
            r#"webhook.namespaceSelector={"matchLabels":{"mesh":"on"}}"#,
            "--set-json",
            r#"webhook.objectSelector={"matchExpressions":[{"key":"vigil.dev/skip","operator":"DoesNotExist"}]}"#,
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
    assert_eq!(cfg.proxy_image, "ghcr.io/vigil-mesh/vigil-proxy:dev");

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

/// Server-side apply with `dryRun=All` (forced) of every rendered object: the
/// apiserver's full validation and admission, whether or not the release is installed.
async fn dry_run(client: &Client, docs: &[Value]) -> usize {
    let mut n = 0;
    for doc in docs {
        let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let types = obj.types.clone().unwrap();
        let (group, version) = match types.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), types.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &types.kind);
        let (ar, caps): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{gvk:?} is not served: {e}"));
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = obj.metadata.namespace.as_deref();
            assert_eq!(ns, Some(NS), "{} without the release namespace", types.kind);
            Api::namespaced_with(client.clone(), NS, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let name = obj.metadata.name.clone().unwrap();
        let mut pp = PatchParams::apply("vigil-e2e-dry-run").force();
        pp.dry_run = true;
        api.patch(&name, &pp, &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("the apiserver refused {} {name}: {e}", types.kind));
        n += 1;
    }
    n
}

async fn ensure_namespace(client: &Client, name: &str) {
    let r = Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await;
    match r {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_is_accepted_by_the_apiserver() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let admin = cluster.admin();
    ensure_namespace(&admin, NS).await;
    let ha = ha_values();
    for (what, extra) in [
        ("default values", vec![]),
        ("values-ha.yaml", vec!["-f", ha.as_str()]),
        (
            "webhook URL, selectors, PDB",
            vec![
                "--set",
                "webhook.url=https://127.0.0.1:9443/inject,podDisruptionBudget.enabled=true",
                "--set-json",
                r#"webhook.namespaceSelector={"matchLabels":{"mesh":"on"}}"#,
                "--set-json",
                r#"webhook.objectSelector={"matchLabels":{"app":"x"}}"#,
            ],
        ),
    ] {
        let docs = template(cluster, &extra);
        let n = dry_run(&admin, &docs).await;
        assert_eq!(n, docs.len(), "{what}");
        assert!(
            n >= 9,
            "{what}: {n} objects (the CRDs are checked by k8s_crds.rs)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The installed release and the controller's permissions.

/// (verb, resource[.group][/subresource], namespace, name, allowed)
type Access<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, bool);

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// What the apiserver's authorizer says about the controller doing `verb` on
/// `group/resource[/subresource]` (in `ns`, named `name`): a SelfSubjectAccessReview
/// made with the controller's own credentials.
async fn can(
    ctl: &Client,
    verb: &str,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> bool {
    // "accesspolicies.policy.vigil.dev/status" -> group, resource, subresource
    let (rest, sub) = resource
        .split_once('/')
        .map_or((resource, None), |(r, s)| (r, Some(s.to_string())));
    let (res, group) = rest.split_once('.').unwrap_or((rest, ""));
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(res.into()),
                subresource: sub,
                namespace: ns.map(String::from),
                name: name.map(String::from),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(ctl.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_uninstall_and_least_privilege_rbac() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let admin = cluster.admin();
    let chart = chart();

    // Install (no --wait: nothing runs without a kubelet). The webhook points at a dead
    // loopback port, never at a Service (the apiserver must only dial loopback here), and
    // failurePolicy is Ignore: no controller answers in this test, and pods of other tests
    // and namespaces must still be created.
    let started = std::time::Instant::now();
    let out = cluster.helm_ok(&[
        "install",
        "vigil",
        &chart,
        "-n",
        NS,
        "--create-namespace",
        "--set",
        "webhook.url=https://127.0.0.1:1/inject",
        "--set",
        "webhook.failurePolicy=Ignore",
    ]);
    for words in [
        "STATUS: deployed",
        "kubectl annotate namespace <ns> vigil.dev/inject=enabled",
        "vigil status",
        "helm never creates or deletes it",
    ] {
        assert!(out.contains(words), "NOTES.txt: {words:?} missing:\n{out}");
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("helm install: {:.2} s", started.elapsed().as_secs_f64());
    }

    // What the release created.
    Api::<Deployment>::namespaced(admin.clone(), NS)
        .get("vigil-controller")
        .await
        .unwrap();
    let svc = Api::<Service>::namespaced(admin.clone(), NS)
        .get("vigil-controller")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap().len(), 3);
    Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .get("vigil-controller")
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .get("vigil-controller-injector")
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .get("vigil-controller")
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .get("vigil-controller")
        .await
        .unwrap();
    Api::<Role>::namespaced(admin.clone(), NS)
        .get("vigil-controller")
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), NS)
        .get("vigil-controller")
        .await
        .unwrap();
    let mwcs = Api::<MutatingWebhookConfiguration>::all(admin.clone());
    let hook = mwcs.get("vigil-injector").await.unwrap().webhooks.unwrap()[0].clone();
    assert_eq!(
        hook.client_config.url.as_deref(),
        Some("https://127.0.0.1:1/inject")
    );
    assert!(
        hook.client_config.service.is_none(),
        "tests must never make the apiserver dial a Service IP"
    );
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    // The CRDs come from the chart's crds/ (nothing else in this binary installs them).
    let crds = Api::<CustomResourceDefinition>::all(admin.clone());
    for name in CRDS {
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(
                crds.clone(),
                name,
                kube::runtime::conditions::is_crd_established(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established in 30 s"))
        .unwrap();
    }
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    assert!(
        secrets.get_opt("vigil-ca").await.unwrap().is_none(),
        "the chart must not create the CA Secret"
    );
    // A pod in an ordinary namespace is still created (failurePolicy Ignore).
    let other = cluster.namespace("tenant").await;
    let victim: Pod = serde_json::from_value(
        json!({"metadata": {"name": "victim"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}),
    )
    .unwrap();
    Api::<Pod>::namespaced(admin.clone(), &other)
        .create(&PostParams::default(), &victim)
        .await
        .unwrap();

    // ---- RBAC, as the controller: what it needs, with real requests.
    let ctl = cluster.as_controller();
    Api::<Pod>::all(ctl.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    drop(
        Api::<Namespace>::all(ctl.clone())
            .watch(&WatchParams::default().timeout(1), "0")
            .await
            .unwrap(),
    );
    Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::all(ctl.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<ServiceAccount>::all(ctl.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let ap = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.vigil.dev", "v1alpha1", "AccessPolicy"),
        "accesspolicies",
    );
    Api::<DynamicObject>::all_with(ctl.clone(), &ap)
        .list(&ListParams::default())
        .await
        .unwrap();
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: "not-a-token".into(),
            audiences: Some(vec!["vigil-ca".into()]),
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(ctl.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    assert_ne!(reviewed.status.unwrap().authenticated, Some(true));
    let leases: Api<Lease> = Api::namespaced(ctl.clone(), NS);
    leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "vigil-controller"}})).unwrap(),
        )
        .await
        .unwrap();
    leases.get("vigil-controller").await.unwrap();
    leases
        .patch(
            "vigil-controller",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "vigil-controller-0"}})),
        )
        .await
        .unwrap();
    let ctl_secrets: Api<Secret> = Api::namespaced(ctl.clone(), NS);
    ctl_secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "vigil-ca"}, "stringData": {"ca.json": "{}"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    ctl_secrets.get("vigil-ca").await.unwrap();
    // Its own webhook configuration: read and patch (the caBundle).
    let ctl_mwcs = Api::<MutatingWebhookConfiguration>::all(ctl.clone());
    ctl_mwcs.get("vigil-injector").await.unwrap();
    ctl_mwcs
        .patch(
            "vigil-injector",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle",
                  "value": k8s_b64(cluster.ca_pem.as_bytes())}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    // Events about the objects it watches.
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "victim.vigil"},
        "involvedObject": {"kind": "Pod", "name": "victim", "namespace": other},
        "reason": "Enrolled", "message": "test", "type": "Normal"
    }))
    .unwrap();
    Api::<Event>::namespaced(ctl.clone(), &other)
        .create(&PostParams::default(), &event)
        .await
        .unwrap();

    // ---- ...and what it must not do, with real requests.
    Api::<Secret>::namespaced(admin.clone(), &other)
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "db-password"}, "stringData": {"p": "hunter2"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    forbidden(
        Api::<Secret>::namespaced(ctl.clone(), &other)
            .get("db-password")
            .await,
        "reading a Secret in another namespace",
    );
    forbidden(
        Api::<Secret>::all(ctl.clone())
            .list(&ListParams::default())
            .await,
        "listing Secrets cluster-wide",
    );
    forbidden(
        ctl_secrets.list(&ListParams::default()).await,
        "listing Secrets in its own namespace",
    );
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    forbidden(
        ctl_secrets.get("unrelated").await,
        "reading another Secret in its own namespace",
    );
    forbidden(
        ctl_secrets
            .delete("vigil-ca", &DeleteParams::default())
            .await,
        "deleting the CA Secret",
    );
    let ctl_pods = Api::<Pod>::namespaced(ctl.clone(), &other);
    let mut x = victim.clone();
    x.metadata.name = Some("x".into());
    forbidden(
        ctl_pods.create(&PostParams::default(), &x).await,
        "creating pods",
    );
    forbidden(
        ctl_pods.delete("victim", &DeleteParams::default()).await,
        "deleting pods",
    );
    forbidden(
        ctl_pods
            .patch(
                "victim",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        "patching pods",
    );
    let mut policy: DynamicObject = serde_saphyr::from_str(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec: {target: {segment: a}, action: Allow, from: [{authenticated: true}]}\n",
    )
    .unwrap();
    policy.metadata.namespace = Some(other.clone());
    Api::<DynamicObject>::namespaced_with(admin.clone(), &other, &ap)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let ctl_policies = Api::<DynamicObject>::namespaced_with(ctl.clone(), &other, &ap);
    forbidden(
        ctl_policies
            .patch(
                "p",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"action": "Deny"}})),
            )
            .await,
        "changing a policy's spec",
    );
    forbidden(
        ctl_policies.delete("p", &DeleteParams::default()).await,
        "deleting a policy",
    );
    ctl_policies
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .unwrap();
    let other_hook: MutatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": {"name": "someone-else"}, "webhooks": []}))
            .unwrap();
    mwcs.create(&PostParams::default(), &other_hook)
        .await
        .unwrap();
    forbidden(
        ctl_mwcs
            .patch(
                "someone-else",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        "patching another webhook configuration",
    );
    forbidden(
        ctl_mwcs
            .delete("vigil-injector", &DeleteParams::default())
            .await,
        "deleting its own webhook configuration",
    );
    forbidden(
        Api::<Lease>::namespaced(ctl.clone(), "kube-system")
            .get("kube-controller-manager")
            .await,
        "reading leases outside its own",
    );

    // ---- The whole matrix, from the authorizer (SelfSubjectAccessReview as the
    // controller): (verb, resource[.group][/subresource], namespace, name, allowed).
    let o = Some(other.as_str());
    let ns = Some(NS);
    #[rustfmt::skip]
    let matrix: &[Access<'_>] = &[
        ("watch", "pods", None, None, true),
        ("watch", "namespaces", None, None, true),
        ("watch", "serviceaccounts", None, None, true),
        ("watch", "services", None, None, true),
        ("watch", "endpointslices.discovery.k8s.io", None, None, true),
        ("watch", "segments.policy.vigil.dev", None, None, true),
        ("watch", "quarantines.policy.vigil.dev", None, None, true),
        ("update", "accesspolicies.policy.vigil.dev/status", o, Some("p"), true),
        ("patch", "segments.policy.vigil.dev/status", o, Some("s"), true),
        ("create", "tokenreviews.authentication.k8s.io", None, None, true),
        ("create", "events", o, None, true),
        ("patch", "events.events.k8s.io", o, Some("e"), true),
        ("create", "secrets", ns, None, true),
        ("update", "secrets", ns, Some("vigil-ca"), true),
        ("update", "leases.coordination.k8s.io", ns, Some("vigil-controller"), true),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None, Some("vigil-injector"), true),
        // refused
        ("get", "secrets", o, Some("db-password"), false),
        ("list", "secrets", None, None, false),
        ("watch", "secrets", ns, None, false),
        ("get", "secrets", ns, Some("unrelated"), false),
        ("delete", "secrets", ns, Some("vigil-ca"), false),
        ("create", "secrets", o, None, false),
        ("get", "configmaps", ns, Some("vigil-controller-injector"), false),
        ("create", "pods", o, None, false),
        ("update", "pods", o, Some("victim"), false),
        ("delete", "pods", o, Some("victim"), false),
        ("create", "pods/exec", o, Some("victim"), false),
        ("create", "pods/eviction", o, Some("victim"), false),
        ("create", "serviceaccounts/token", o, Some("default"), false),
        ("update", "namespaces", None, Some("default"), false),
        ("list", "nodes", None, None, false),
        ("create", "accesspolicies.policy.vigil.dev", o, None, false),
        ("update", "accesspolicies.policy.vigil.dev", o, Some("p"), false),
        ("delete", "quarantines.policy.vigil.dev", o, Some("q"), false),
        ("update", "leases.coordination.k8s.io", ns, Some("other"), false),
        ("delete", "leases.coordination.k8s.io", ns, Some("vigil-controller"), false),
        ("create", "leases.coordination.k8s.io", Some("kube-system"), None, false),
        ("list", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None, None, false),
        ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None, None, false),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None, Some("someone-else"), false),
        ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io", None, None, false),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None, None, false),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", None, Some("vigil-controller"), false),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", None, None, false),
        ("impersonate", "serviceaccounts", o, Some("default"), false),
    ];
    let mut wrong = Vec::new();
    for &(verb, resource, ns, name, want) in matrix {
        if can(&ctl, verb, resource, ns, name).await != want {
            wrong.push(format!(
                "{verb} {resource} ns={ns:?} name={name:?}: expected {}",
                if want { "allowed" } else { "refused" }
            ));
        }
    }
    assert!(wrong.is_empty(), "RBAC:\n{}", wrong.join("\n"));

    // ---- helm uninstall removes the release but never the CA Secret or the CRDs
    // (and with them every policy).
    cluster.helm_ok(&["uninstall", "vigil", "-n", NS]);
    assert!(
        mwcs.get_opt("vigil-injector").await.unwrap().is_none(),
        "the webhook configuration goes with the release"
    );
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), NS)
            .get_opt("vigil-controller")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        secrets.get_opt("vigil-ca").await.unwrap().is_some(),
        "helm uninstall deleted the CA Secret"
    );
    for name in CRDS {
        assert!(
            crds.get_opt(name).await.unwrap().is_some(),
            "{name} deleted"
        );
    }
    Api::<DynamicObject>::namespaced_with(admin.clone(), &other, &ap)
        .get("p")
        .await
        .unwrap();
}

fn k8s_b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
