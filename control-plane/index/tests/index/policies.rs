//! What a workload enforces: zero trust until a policy allows, every source kind, deny
//! over allow, time-bound access, invalid policies failing closed, the default policy.

use super::support::*;

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
