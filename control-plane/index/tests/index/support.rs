//! Builders for the index's tests: one function per resource kind (a workload, a segment,
//! an access policy; any document with [`doc`]), the `shop` every test starts from, and
//! [`decide`], which asks the real evaluator what a workload would do.

#![allow(dead_code, unreachable_pub)]

pub use std::collections::BTreeMap;

pub use http::HeaderMap;
pub use vigil_cert_authority::{SpiffeId, TrustDomain};
pub use vigil_index::{Index, Kind, NamespaceMeta, ObjectKey, Resource, Settings};
pub use vigil_policy::{HttpRequest, Peer, Policy, Request, model::DefaultPolicy};

pub const NOW: u64 = 1_800_000_000;

pub fn settings() -> Settings {
    Settings {
        trust_domain: TrustDomain::new("cluster.local").unwrap(),
        default_policy: DefaultPolicy::Deny,
        egress_passthrough: true,
    }
}

pub fn doc(yaml: &str) -> Resource {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    match v["kind"].as_str().unwrap() {
        "Workload" => Resource::Workload(serde_json::from_value(v).unwrap()),
        "Segment" => Resource::Segment(serde_json::from_value(v).unwrap()),
        "AccessPolicy" => Resource::AccessPolicy(serde_json::from_value(v).unwrap()),
        "Quarantine" => Resource::Quarantine(serde_json::from_value(v).unwrap()),
        k => panic!("kind {k}"),
    }
}

pub fn workload(ns: &str, name: &str, sa: &str, app: &str, addr: &str) -> Resource {
    doc(&format!(
        "apiVersion: local.vigil.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\nspec: {{serviceAccount: {sa}, addresses: ['{addr}']}}\n"
    ))
}

pub fn segment(ns: &str, name: &str, app: &str) -> Resource {
    doc(&format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Segment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{podSelector: {{matchLabels: {{app: {app}}}}}}}\n"
    ))
}

pub fn policy(ns: &str, name: &str, spec: &str) -> Resource {
    doc(&format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    ))
}

pub fn key(s: &str) -> ObjectKey {
    ObjectKey::parse_relative(s, "shop")
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/shop/sa/{s}")).unwrap()
}

/// A shop: web (frontend), orders, db, each with its own service account.
pub fn shop() -> Index {
    let mut ix = Index::new(settings());
    for r in [
        workload("shop", "web", "web", "web", "127.0.0.1:8081"),
        workload("shop", "orders", "orders", "orders", "127.0.0.1:8082"),
        workload("shop", "db", "db", "db", "127.0.0.1:5432"),
        segment("shop", "frontend", "web"),
        segment("shop", "orders", "orders"),
    ] {
        ix.apply(r, NOW);
    }
    ix
}

pub fn decide(
    ix: &mut Index,
    to: &str,
    from: &SpiffeId,
    method: &str,
    path: &str,
    now: u64,
) -> vigil_policy::Decision {
    let rx = ix.watch(&key(to));
    let policy = Policy::compile(rx.borrow().policy.clone()).unwrap();
    let headers = HeaderMap::new();
    policy.evaluate(
        &Request {
            peer: Peer::Authenticated(from),
            source_ip: None,
            port: 8080,
            http: Some(HttpRequest {
                method,
                path,
                headers: &headers,
            }),
        },
        now,
    )
}

pub const WEB_READS_ORDERS: &str = "  target: {segment: orders}\n  action: Allow\n  from: [{segment: frontend}]\n  rules: [{methods: [GET], paths: [{prefix: /orders}]}]\n";
