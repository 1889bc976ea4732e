//! `Resources::overlay`: a proposed change laid over what is deployed (`vigil policy test
//! --overlay`): same kind, namespace and name replaces; anything new is added; the rest
//! stays.

use vigil_index::Resources;

use super::support::*;

const GET: &str = "  target: {segment: orders}\n  action: Allow\n  from: [{segment: frontend}]\n  rules: [{methods: [GET]}]\n";
const POST: &str = "  target: {segment: orders}\n  action: Allow\n  from: [{segment: frontend}]\n  rules: [{methods: [POST]}]\n";

fn resources(list: Vec<Resource>) -> Resources {
    let mut r = Resources::default();
    for x in list {
        r.apply(x);
    }
    r
}

#[test]
fn same_name_replaces_new_adds_the_rest_stays() {
    let mut deployed = resources(vec![
        segment("shop", "orders", "orders"),
        policy("shop", "reads", GET),
        policy("other", "reads", GET),
    ]);
    let change = resources(vec![
        policy("shop", "reads", POST),
        policy("shop", "writes", POST),
    ]);
    assert_eq!(deployed.overlay(change), 2);

    assert_eq!(deployed.segments.len(), 1);
    assert_eq!(deployed.policies.len(), 3);
    let methods = |ns: &str, name: &str| {
        deployed.policies[&ObjectKey::new(ns, name)].spec.rules[0]
            .methods
            .clone()
    };
    assert_eq!(methods("shop", "reads"), ["POST"]);
    assert_eq!(methods("shop", "writes"), ["POST"]);
    // Another namespace's policy of the same name is another object.
    assert_eq!(methods("other", "reads"), ["GET"]);
}
