//! Quarantine: a workload cut off from everything, everywhere, until it is lifted.

use super::support::*;

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
