//! The index without any server: apply resources, take receivers, assert what each workload
//! would enforce (through the real evaluator).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use http::HeaderMap;
use vigil_cert_authority::{SpiffeId, TrustDomain};
use vigil_index::{Index, Kind, NamespaceMeta, ObjectKey, Resource, Settings};
use vigil_policy::{HttpRequest, Peer, Policy, Request, model::DefaultPolicy};

const NOW: u64 = 1_800_000_000;

fn settings() -> Settings {
    Settings {
        trust_domain: TrustDomain::new("cluster.local").unwrap(),
        default_policy: DefaultPolicy::Deny,
        egress_passthrough: true,
    }
}

fn doc(yaml: &str) -> Resource {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    match v["kind"].as_str().unwrap() {
        "Workload" => Resource::Workload(serde_json::from_value(v).unwrap()),
        "Segment" => Resource::Segment(serde_json::from_value(v).unwrap()),
        "AccessPolicy" => Resource::AccessPolicy(serde_json::from_value(v).unwrap()),
        "Quarantine" => Resource::Quarantine(serde_json::from_value(v).unwrap()),
        k => panic!("kind {k}"),
    }
}

fn workload(ns: &str, name: &str, sa: &str, app: &str, addr: &str) -> Resource {
    doc(&format!(
        "apiVersion: local.vigil.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\nspec: {{serviceAccount: {sa}, addresses: ['{addr}']}}\n"
    ))
}

fn segment(ns: &str, name: &str, app: &str) -> Resource {
    doc(&format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Segment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{podSelector: {{matchLabels: {{app: {app}}}}}}}\n"
    ))
}

fn policy(ns: &str, name: &str, spec: &str) -> Resource {
    doc(&format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    ))
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::parse_relative(s, "shop")
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/shop/sa/{s}")).unwrap()
}

/// A shop: web (frontend), orders, db, each with its own service account.
fn shop() -> Index {
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

fn decide(
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

const WEB_READS_ORDERS: &str = "  target: {segment: orders}\n  action: Allow\n  from: [{segment: frontend}]\n  rules: [{methods: [GET], paths: [{prefix: /orders}]}]\n";

#[test]
fn zero_trust_until_a_policy_allows() {
    let mut ix = shop();
    let rx = ix.watch(&key("orders"));
    let snap = rx.borrow().clone();
    assert_eq!(snap.identity, Some(id("orders")));
    assert_eq!(snap.policy.default_policy, DefaultPolicy::Deny);
    assert!(snap.policy.inbound.is_empty());
    assert!(!decide(&mut ix, "orders", &id("web"), "GET", "/orders", NOW).allowed);

    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    let d = decide(&mut ix, "orders", &id("web"), "GET", "/orders/1", NOW);
    assert!(d.allowed);
    assert!(!decide(&mut ix, "orders", &id("web"), "POST", "/orders/1", NOW).allowed);
    assert!(!decide(&mut ix, "orders", &id("db"), "GET", "/orders/1", NOW).allowed);
    let (v_key, verdict) = ix
        .verdicts()
        .iter()
        .find(|((k, _), _)| *k == Kind::AccessPolicy)
        .unwrap();
    assert_eq!(v_key.1, key("web-reads-orders"));
    assert_eq!(verdict.accepted, Ok(()));
    assert_eq!(
        verdict.targets.iter().cloned().collect::<Vec<_>>(),
        vec![key("orders")]
    );
}

#[test]
fn outbound_tables_hold_what_policy_lets_a_workload_reach() {
    let mut ix = shop();
    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    let web = ix.watch(&key("web")).borrow().policy.clone();
    assert_eq!(web.outbound.destinations.len(), 1);
    assert_eq!(
        web.outbound.destinations[0].address,
        "127.0.0.1:8082".parse().unwrap()
    );
    assert_eq!(
        web.outbound.destinations[0].identities,
        vec![id("orders").to_string()]
    );
    let db = ix.watch(&key("db")).borrow().policy.clone();
    assert!(db.outbound.destinations.is_empty(), "db may reach no one");
    assert!(db.outbound.passthrough, "settings default");
}

#[test]
fn every_source_kind_compiles() {
    let mut ix = shop();
    ix.apply(
        workload("ops", "admin", "admin", "admin", "127.0.0.1:9000"),
        NOW,
    );
    ix.apply(
        policy(
            "shop",
            "many",
            "  target: {podSelector: {matchLabels: {app: orders}}, ports: [8080]}\n  action: Allow\n  from:\n    - {namespace: ops}\n    - {serviceAccount: db}\n    - {spiffeId: 'spiffe://other.td/ns/x/sa/y'}\n    - {cidr: 10.0.0.0/8}\n    - {unauthenticated: true}\n",
        ),
        NOW,
    );
    let p = ix.watch(&key("orders")).borrow().policy.clone();
    let from: Vec<String> = p.inbound[0].from.iter().map(|s| format!("{s:?}")).collect();
    assert_eq!(
        from,
        [
            "Id(\"spiffe://cluster.local/ns/ops/sa/*\")",
            "Id(\"spiffe://cluster.local/ns/shop/sa/db\")",
            "Id(\"spiffe://other.td/ns/x/sa/y\")",
            "Cidr(10.0.0.0/8)",
            "Unauthenticated"
        ]
    );
    assert_eq!(p.inbound[0].ports, vec![8080]);
    let admin = SpiffeId::parse("spiffe://cluster.local/ns/ops/sa/admin").unwrap();
    assert!(decide(&mut ix, "orders", &admin, "DELETE", "/x", NOW).allowed);
}

#[test]
fn deny_wins_across_policies() {
    let mut ix = shop();
    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    ix.apply(
        policy(
            "shop",
            "no-exports",
            "  target: {segment: orders}\n  action: Deny\n  from: [{authenticated: true}]\n  rules: [{paths: [{prefix: /orders/export}]}]\n",
        ),
        NOW,
    );
    assert!(decide(&mut ix, "orders", &id("web"), "GET", "/orders/1", NOW).allowed);
    let d = decide(&mut ix, "orders", &id("web"), "GET", "/orders/export", NOW);
    assert!(!d.allowed);
}

#[test]
fn jit_access_expires_without_any_other_event() {
    let mut ix = shop();
    let until = NOW + 600;
    let t = |s: u64| {
        time::OffsetDateTime::from_unix_timestamp(s as i64)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    ix.apply(
        policy(
            "shop",
            "jit",
            &format!("  target: {{segment: orders}}\n  action: Allow\n  from: [{{segment: frontend}}]\n  validUntil: '{}'\n", t(until)),
        ),
        NOW,
    );
    assert_eq!(ix.next_change(), Some(until));
    let mut rx = ix.watch(&key("orders"));
    rx.borrow_and_update();
    assert!(decide(&mut ix, "orders", &id("web"), "GET", "/", until - 1).allowed);
    // The proxy's evaluator closes the window by itself...
    assert!(!decide(&mut ix, "orders", &id("web"), "GET", "/", until).allowed);
    // ...and the controller's scheduled recompile drops the rule.
    assert!(!ix.tick(until - 1));
    assert!(ix.tick(until));
    assert!(rx.has_changed().unwrap());
    assert!(rx.borrow_and_update().policy.inbound.is_empty());
    assert_eq!(ix.next_change(), None);
}

#[test]
fn quarantine_revokes_everywhere_and_lifts() {
    let mut ix = shop();
    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    let q = doc(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Quarantine\nmetadata: {name: q, namespace: shop}\nspec: {workload: web, reason: compromised}\n",
    );
    ix.apply(q, NOW);
    let web = ix.watch(&key("web")).borrow().policy.clone();
    assert!(web.quarantined);
    assert!(web.outbound.destinations.is_empty() && !web.outbound.passthrough);
    for other in ["orders", "db"] {
        let p = ix.watch(&key(other)).borrow().policy.clone();
        assert_eq!(p.revoked.ids, vec![id("web").to_string()], "{other}");
    }
    assert!(!decide(&mut ix, "orders", &id("web"), "GET", "/orders/1", NOW).allowed);
    ix.delete(Kind::Quarantine, &key("q"), NOW);
    assert!(!ix.watch(&key("web")).borrow().policy.quarantined);
    assert!(decide(&mut ix, "orders", &id("web"), "GET", "/orders/1", NOW).allowed);
}

#[test]
fn invalid_policies_are_rejected_and_fail_closed() {
    let mut ix = shop();
    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    // An allow with a bad regex is rejected; the rest of the policy set stays in force.
    ix.apply(
        policy(
            "shop",
            "bad-allow",
            "  target: {segment: orders}\n  action: Allow\n  from: [{segment: frontend}]\n  rules: [{headers: [{name: x, regex: '('}]}]\n",
        ),
        NOW,
    );
    let v = &ix.verdicts()[&(Kind::AccessPolicy, key("bad-allow"))];
    assert!(v.accepted.as_ref().unwrap_err().contains("regex"), "{v:?}");
    assert!(decide(&mut ix, "orders", &id("web"), "GET", "/orders/1", NOW).allowed);

    // A deny that cannot compile turns into deny-all on its targets.
    ix.apply(
        policy(
            "shop",
            "bad-deny",
            "  target: {segment: orders}\n  action: Deny\n  from: [{spiffeId: 'spiffe://cluster.local/ns/shop/sa/web-*'}]\n",
        ),
        NOW,
    );
    let v = &ix.verdicts()[&(Kind::AccessPolicy, key("bad-deny"))];
    assert!(v.accepted.is_err());
    assert!(
        !decide(&mut ix, "orders", &id("web"), "GET", "/orders/1", NOW).allowed,
        "fail closed"
    );
    // Policies failing their CEL rules are rejected too.
    ix.apply(
        policy(
            "shop",
            "empty-from",
            "  target: {segment: orders}\n  action: Allow\n  from: []\n",
        ),
        NOW,
    );
    let v = &ix.verdicts()[&(Kind::AccessPolicy, key("empty-from"))];
    assert!(
        v.accepted
            .as_ref()
            .unwrap_err()
            .contains("at least one source"),
        "{v:?}"
    );
}

#[test]
fn watchers_see_changes_that_concern_them_coalesced() {
    let mut ix = shop();
    let mut orders = ix.watch(&key("orders"));
    let mut db = ix.watch(&key("db"));
    orders.borrow_and_update();
    db.borrow_and_update();
    let before = ix.generation();
    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    assert!(orders.has_changed().unwrap());
    assert!(!db.has_changed().unwrap(), "db's policy did not change");
    assert_eq!(orders.borrow_and_update().generation, before + 1);
    // A burst of changes: the receiver sees only the latest.
    for i in 0..5 {
        ix.apply(policy("shop", &format!("extra-{i}"), WEB_READS_ORDERS), NOW);
    }
    assert!(orders.has_changed().unwrap());
    let latest = orders.borrow_and_update().clone();
    assert_eq!(latest.generation, ix.generation());
    assert_eq!(latest.policy.generation, ix.generation());
    assert_eq!(latest.policy.inbound.len(), 6);
    // Re-applying the same thing changes nothing.
    let g = ix.generation();
    ix.apply(policy("shop", "extra-0", WEB_READS_ORDERS), NOW);
    assert_eq!(ix.generation(), g);
    assert!(!orders.has_changed().unwrap());
}

#[test]
fn unknown_and_removed_workloads_get_deny_all() {
    let mut ix = shop();
    let ghost = ix.watch(&key("ghost"));
    assert_eq!(ghost.borrow().identity, None);
    assert!(ghost.borrow().policy.inbound.is_empty());
    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    let mut orders = ix.watch(&key("orders"));
    orders.borrow_and_update();
    ix.delete(Kind::Workload, &key("orders"), NOW);
    assert!(orders.has_changed().unwrap());
    let snap = orders.borrow_and_update().clone();
    assert_eq!(snap.identity, None);
    assert!(snap.policy.inbound.is_empty() && snap.policy.outbound.destinations.is_empty());
}

#[test]
fn default_policy_from_workload_namespace_or_settings() {
    let mut ix = shop();
    ix.apply(
        Resource::Namespace(
            "shop".into(),
            NamespaceMeta {
                labels: BTreeMap::new(),
                annotations: [("vigil.dev/default-policy".to_string(), "audit".to_string())].into(),
            },
        ),
        NOW,
    );
    assert_eq!(
        ix.watch(&key("orders")).borrow().policy.default_policy,
        DefaultPolicy::Audit
    );
    ix.apply(
        doc("apiVersion: local.vigil.dev/v1alpha1\nkind: Workload\nmetadata: {name: orders, namespace: shop, labels: {app: orders}}\nspec: {serviceAccount: orders, defaultPolicy: AllowAuthenticated}\n"),
        NOW,
    );
    assert_eq!(
        ix.watch(&key("orders")).borrow().policy.default_policy,
        DefaultPolicy::AllowAuthenticated
    );
    assert_eq!(
        ix.watch(&key("db")).borrow().policy.default_policy,
        DefaultPolicy::Audit
    );
}

#[test]
fn acks_and_status() {
    let mut ix = shop();
    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    let g = ix.watch(&key("orders")).borrow().generation;
    assert_eq!(
        ix.enforcing(Kind::AccessPolicy, &key("web-reads-orders")),
        0
    );
    assert!(ix.ack(&key("orders"), g).is_some());
    assert_eq!(
        ix.enforcing(Kind::AccessPolicy, &key("web-reads-orders")),
        1
    );
    let st = ix
        .status()
        .into_iter()
        .find(|s| s.workload == key("orders"))
        .unwrap();
    assert!(st.up_to_date);
    assert_eq!(st.acked, Some(g));
    // A newer generation makes it stale until acked again.
    ix.apply(policy("shop", "more", WEB_READS_ORDERS), NOW);
    assert!(
        !ix.status()
            .into_iter()
            .find(|s| s.workload == key("orders"))
            .unwrap()
            .up_to_date
    );
    assert!(
        ix.ack(&key("orders"), g).is_none(),
        "an old generation is not the current one"
    );
}

#[test]
fn every_workload_address_resolves_to_its_identity_and_collisions_are_reported() {
    let mut ix = shop();
    // No policy lets web reach db, so db is not in web's pushed table...
    let web = ix.watch(&key("web"));
    let table = &web.borrow().policy.outbound.destinations;
    assert!(!table.iter().any(|d| d.address.port() == 5432), "{table:?}");
    // ...but Resolve knows who serves db's address (so web's proxy still uses mTLS).
    let db = ix.resolve(&"127.0.0.1:5432".parse().unwrap()).unwrap();
    assert_eq!(db.identities, vec![id("db").to_string()]);
    assert_eq!(db.proxy, None);
    assert!(ix.resolve(&"127.0.0.1:9".parse().unwrap()).is_none());

    // A second workload claiming the same address: the first (by key) keeps it, and the
    // second's status says so.
    ix.apply(
        workload("shop", "zz-copy", "copy", "copy", "127.0.0.1:5432"),
        NOW,
    );
    assert_eq!(
        ix.resolve(&"127.0.0.1:5432".parse().unwrap())
            .unwrap()
            .identities,
        vec![id("db").to_string()]
    );
    let v = &ix.verdicts()[&(Kind::Workload, key("zz-copy"))];
    assert!(
        v.warnings.iter().any(|w| w.contains("also claimed")),
        "{v:?}"
    );
    // Removing the workload removes its address.
    ix.delete(Kind::Workload, &key("db"), NOW);
    assert_eq!(
        ix.resolve(&"127.0.0.1:5432".parse().unwrap())
            .unwrap()
            .identities,
        vec![id("copy").to_string()],
        "the other claimant now serves it"
    );
}

/// A Service is a mesh destination at its ClusterIP when all its backends are mesh
/// workloads; callers allowed to reach a backend get the service address pushed.
#[test]
fn services_resolve_to_their_backends_identities_only_when_fully_meshed() {
    use vigil_index::ServiceBackends;
    let mut ix = shop();
    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    let mut res = ix.resources().clone();
    let vip: std::net::SocketAddr = "10.0.0.10:80".parse().unwrap();
    res.services.insert(
        key("orders-svc"),
        ServiceBackends {
            addresses: vec![vip],
            backends: [key("orders")].into(),
            endpoints: [(vip, vec!["10.244.0.5:8080".parse().unwrap()])].into(),
        },
    );
    let mixed: std::net::SocketAddr = "10.0.0.11:80".parse().unwrap();
    res.services.insert(
        key("mixed-svc"),
        ServiceBackends {
            addresses: vec![mixed],
            backends: [key("orders"), key("not-in-mesh")].into(),
            endpoints: Default::default(),
        },
    );
    ix.replace(res, NOW);
    assert_eq!(
        ix.resolve(&vip).unwrap().identities,
        vec![id("orders").to_string()]
    );
    assert!(
        ix.resolve(&mixed).is_none(),
        "a backend without a proxy: not a mesh destination"
    );
    assert_eq!(
        ix.resolve(&vip).unwrap().endpoints,
        vec!["10.244.0.5:8080".parse::<std::net::SocketAddr>().unwrap()],
        "the ready backends travel with the service address"
    );
    let web = ix.watch(&key("web"));
    let table = web.borrow().policy.outbound.destinations.clone();
    assert!(
        table
            .iter()
            .any(|d| d.address == vip && d.endpoints.len() == 1),
        "{table:?}"
    );
    let db = ix.watch(&key("db"));
    assert!(
        !db.borrow()
            .policy
            .outbound
            .destinations
            .iter()
            .any(|d| d.address == vip),
        "db may not reach orders: the service address is not pushed to it"
    );
}
