//! Watchers and acknowledgements: who is told about a change, and who enforces what.

use super::support::*;

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
fn an_acker_records_like_the_index_and_keeps_working_across_changes() {
    let mut ix = shop();
    let status = |ix: &Index| {
        ix.status()
            .into_iter()
            .find(|s| s.workload == key("orders"))
            .unwrap()
    };
    let acker = ix.acker(&key("orders"));
    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    let g = ix.watch(&key("orders")).borrow().generation;
    assert!(!status(&ix).up_to_date);
    assert!(
        acker.ack(g).is_some(),
        "the current generation has a latency"
    );
    assert_eq!(status(&ix).acked, Some(g));
    assert!(status(&ix).up_to_date);
    assert_eq!(
        ix.enforcing(Kind::AccessPolicy, &key("web-reads-orders")),
        1
    );
    // A change the acker's workload is in: stale until acked, through the same acker.
    ix.apply(policy("shop", "more", WEB_READS_ORDERS), NOW);
    let g2 = ix.watch(&key("orders")).borrow().generation;
    assert!(g2 > g);
    assert!(!status(&ix).up_to_date);
    assert!(
        acker.ack(g).is_none(),
        "an old generation is not the current one"
    );
    assert_eq!(
        status(&ix).acked,
        Some(g),
        "but it is what the proxy enforces"
    );
    assert_eq!(
        ix.enforcing(Kind::AccessPolicy, &key("web-reads-orders")),
        0
    );
    assert!(acker.ack(g2).is_some());
    assert!(status(&ix).up_to_date);
    // An acker and the index's own ack record into the same place.
    assert!(ix.ack(&key("orders"), g).is_none());
    assert!(!status(&ix).up_to_date);
    // A change that does not concern it leaves its current generation (and latency) be.
    let db_only = "  target: {podSelector: {matchLabels: {app: db}}}\n  action: Deny\n  from: [{authenticated: true}]\n  rules: [{paths: [{prefix: /admin}]}]\n";
    ix.apply(policy("shop", "db-only", db_only), NOW);
    assert!(ix.generation() > g2, "db's policy changed");
    assert_eq!(ix.watch(&key("orders")).borrow().generation, g2);
    assert!(acker.ack(g2).is_some());
    assert!(status(&ix).up_to_date);
    // An acker for a workload not known yet: an entry, as a watch makes one.
    let ghost = ix.acker(&key("ghost"));
    let gg = ix.watch(&key("ghost")).borrow().generation;
    assert!(ghost.ack(gg).is_some());
    assert!(
        ix.status()
            .iter()
            .any(|s| s.workload == key("ghost") && s.up_to_date)
    );
}
