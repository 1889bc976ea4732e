//! Fixtures shared by the injector's tests: pods written as users write them (YAML), a
//! configuration with the runtime fields filled in, and helpers that apply a patch.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use vigil_injector::{Decision, InjectorConfig, SkipReason, inject};

/// An enrolled pod with a user init container, a volume, two app containers and probes of
/// every kind.
pub(crate) const APP: &str = r#"
metadata:
  name: web
  annotations:
    vigil.dev/inject: enabled
    team: shop
spec:
  serviceAccountName: web
  initContainers:
  - name: migrate
    image: example/migrate
  volumes:
  - name: data
    emptyDir: {}
  containers:
  - name: app
    image: example/web
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /healthz, port: http}}
    livenessProbe: {httpGet: {port: 8080}}
    startupProbe: {tcpSocket: {port: 8080}}
  - name: metrics
    image: example/exporter
    livenessProbe: {httpGet: {path: /m, port: 9100, scheme: HTTPS}}
    readinessProbe: {httpGet: {path: /ready, port: admin}}
"#;

pub(crate) const TRUST_ANCHORS: &str =
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// Parses a pod from YAML.
pub(crate) fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// A minimal pod with `annotations` (a YAML flow mapping such as `{a: b}`).
pub(crate) fn bare(annotations: &str) -> Pod {
    pod(&format!(
        "metadata: {{name: a, annotations: {annotations}}}\nspec: {{containers: [{{name: app, image: x}}]}}\n"
    ))
}

/// The default settings with the runtime fields the controller fills in.
pub(crate) fn config(cluster_has_native_sidecars: bool) -> InjectorConfig {
    InjectorConfig {
        trust_anchors_pem: TRUST_ANCHORS.into(),
        controller_identity: "spiffe://cluster.local/ns/vigil-system/sa/vigil-controller".into(),
        cluster_has_native_sidecars,
        ..InjectorConfig::default()
    }
}

pub(crate) fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

pub(crate) fn enabled_namespace() -> BTreeMap<String, String> {
    BTreeMap::from([("vigil.dev/inject".to_string(), "enabled".to_string())])
}

/// Applies `patch` to a JSON document.
pub(crate) fn apply(doc: &serde_json::Value, patch: &json_patch::Patch) -> serde_json::Value {
    let mut v = doc.clone();
    json_patch::patch(&mut v, patch).unwrap();
    v
}

/// Injects `p` in namespace `shop` and returns the patched pod.
pub(crate) fn injected(cfg: &InjectorConfig, p: &Pod) -> Pod {
    let Decision::Inject(patch) = inject(cfg, "shop", p, &none()).unwrap() else {
        panic!("not injected")
    };
    serde_json::from_value(apply(&serde_json::to_value(p).unwrap(), &patch)).unwrap()
}

pub(crate) fn names(cs: Option<&Vec<Container>>) -> Vec<&str> {
    cs.into_iter().flatten().map(|c| c.name.as_str()).collect()
}

pub(crate) fn init_names(p: &Pod) -> Vec<&str> {
    names(p.spec.as_ref().unwrap().init_containers.as_ref())
}

pub(crate) fn container_names(p: &Pod) -> Vec<&str> {
    names(Some(&p.spec.as_ref().unwrap().containers))
}

/// The container (or init container) named `name`.
pub(crate) fn container<'a>(p: &'a Pod, name: &str) -> &'a Container {
    let s = p.spec.as_ref().unwrap();
    s.containers
        .iter()
        .chain(s.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The literal env values of a container.
pub(crate) fn env_of(p: &Pod, name: &str) -> BTreeMap<String, String> {
    container(p, name)
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect()
}

/// Decides for a minimal pod with `yaml_annotations`.
pub(crate) fn decide(
    cfg: &InjectorConfig,
    ns: &str,
    yaml_annotations: &str,
    ns_ann: &BTreeMap<String, String>,
) -> Decision {
    inject(cfg, ns, &bare(yaml_annotations), ns_ann).unwrap()
}

/// The skip reason, if skipped.
pub(crate) fn skipped(d: &Decision) -> Option<&SkipReason> {
    match d {
        Decision::Skip(r) => Some(r),
        Decision::Inject(_) => None,
    }
}
