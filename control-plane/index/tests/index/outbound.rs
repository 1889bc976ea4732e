//! What a workload can reach: its outbound table, address resolution, Services.

use super::support::*;

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
