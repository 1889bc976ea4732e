//! The CRDs in `crds/` against the real kube-apiserver: they install and become
//! Established, the examples are accepted, and invalid objects are refused with 422 and
//! the path of the offending field — the apiserver's own structural-schema and CEL
//! validation, not our client-side copy of it.

#![allow(clippy::unwrap_used)]

use kube::{
    Api,
    api::{DynamicObject, GroupVersionKind, PostParams},
    discovery::ApiResource,
};
use vigil_e2e::k8s;

fn resource(kind: &str) -> ApiResource {
    let plural = match kind {
        "AccessPolicy" => "accesspolicies",
        "Segment" => "segments",
        "Quarantine" => "quarantines",
        other => panic!("unknown kind {other}"),
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.vigil.dev", "v1alpha1", kind),
        plural,
    )
}

/// Creates `doc` (YAML) in `ns` through the API.
async fn create(client: &kube::Client, ns: &str, doc: &str) -> Result<DynamicObject, kube::Error> {
    let mut obj: DynamicObject =
        serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    obj.metadata.namespace = Some(ns.to_string());
    let kind = obj
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource(&kind))
        .create(&PostParams::default(), &obj)
        .await
}

#[tokio::test]
async fn crds_install_and_examples_are_accepted() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let client = cluster.admin();
    let names = k8s::install_crds(&client).await;
    assert_eq!(
        names,
        [
            "accesspolicies.policy.vigil.dev",
            "quarantines.policy.vigil.dev",
            "segments.policy.vigil.dev"
        ]
    );
    let ns = cluster.namespace("crds-ok").await;
    let mut created = 0;
    for file in ["segments.yaml", "policies.yaml"] {
        let text =
            std::fs::read_to_string(k8s::repo_root().join("examples/shop").join(file)).unwrap();
        for doc in text.split("\n---\n") {
            let obj = create(&client, &ns, doc)
                .await
                .unwrap_or_else(|e| panic!("example refused: {e}\n{doc}"));
            assert!(obj.metadata.uid.is_some());
            created += 1;
        }
    }
    assert_eq!(created, 6, "3 segments + 3 policies");
    // A quarantine and a time-bound policy, as in the README.
    create(&client, &ns, "apiVersion: policy.vigil.dev/v1alpha1\nkind: Quarantine\nmetadata: {name: q}\nspec: {serviceAccount: web, reason: suspected compromise}\n").await.unwrap();
    create(&client, &ns, "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: oncall}\nspec:\n  target: {segment: orders}\n  action: Allow\n  from: [{serviceAccount: ops/oncall}]\n  validFrom: \"2026-01-01T00:00:00Z\"\n  validUntil: \"2026-01-01T04:00:00Z\"\n").await.unwrap();
}

#[tokio::test]
async fn invalid_objects_are_refused_with_422_and_the_field_path() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let client = cluster.admin();
    k8s::install_crds(&client).await;
    let ns = cluster.namespace("crds-bad").await;
    let ap = |spec: &str| {
        format!(
            "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: bad}}\nspec:\n{spec}"
        )
    };
    let q = |spec: &str| {
        format!(
            "apiVersion: policy.vigil.dev/v1alpha1\nkind: Quarantine\nmetadata: {{name: bad}}\nspec: {spec}\n"
        )
    };
    let seg = |spec: &str| {
        format!(
            "apiVersion: policy.vigil.dev/v1alpha1\nkind: Segment\nmetadata: {{name: bad}}\nspec: {spec}\n"
        )
    };
    // (document, field path the apiserver must name, words of the message)
    let cases: Vec<(String, &str, &str)> = vec![
        (
            ap("  target: {segment: a}\n  action: Permit\n  from: [{authenticated: true}]\n"),
            "spec.action",
            "Unsupported value",
        ),
        (
            ap("  target: {segment: a}\n  from: [{authenticated: true}]\n"),
            "spec.action",
            "Required value",
        ),
        (
            ap("  target: {segment: a}\n  action: Allow\n  from: []\n"),
            "spec.from",
            "at least one source",
        ),
        (
            ap("  target: {}\n  action: Allow\n  from: [{authenticated: true}]\n"),
            "spec.target",
            "exactly one of segment or podSelector",
        ),
        (
            ap("  target: {segment: a}\n  action: Allow\n  from: [{segment: x, namespace: ops}]\n"),
            "spec.from[0]",
            "exactly one of spiffeId",
        ),
        (
            ap("  target: {segment: a}\n  action: Allow\n  from: [{unauthenticated: false}]\n"),
            "spec.from[0].unauthenticated",
            "can only be true",
        ),
        (
            ap(
                "  target: {segment: a, ports: [0]}\n  action: Allow\n  from: [{authenticated: true}]\n",
            ),
            "spec.target.ports",
            "1-65535",
        ),
        (
            ap(
                "  target: {segment: a}\n  action: Allow\n  from: [{authenticated: true}]\n  validFrom: \"2026-02-01T00:00:00Z\"\n  validUntil: \"2026-01-01T00:00:00Z\"\n",
            ),
            "spec",
            "validUntil must be after validFrom",
        ),
        (
            ap(
                "  target: {segment: a}\n  action: Allow\n  from: [{authenticated: true}]\n  rules: [{paths: [{exact: /a, prefix: /b}]}]\n",
            ),
            "spec.rules[0].paths[0]",
            "exactly one of exact, prefix, glob",
        ),
        (
            ap(
                "  target: {segment: a}\n  action: Allow\n  from: [{authenticated: true}]\n  rules: [{headers: [{name: x}]}]\n",
            ),
            "spec.rules[0].headers[0]",
            "exactly one of exact, regex, present",
        ),
        (
            ap(
                "  target: {segment: a}\n  action: Allow\n  from: [{authenticated: true}]\n  rateLimit: {requestsPerSecond: 0}\n",
            ),
            "spec.rateLimit.requestsPerSecond",
            "at least 1",
        ),
        (
            ap(
                "  target: {segment: a}\n  action: Allow\n  from: [{authenticated: true}]\n  validUntil: \"not a time\"\n",
            ),
            "spec.validUntil",
            "validUntil must be an RFC 3339 time",
        ),
        (
            q("{reason: x}"),
            "spec",
            "exactly one of podSelector, serviceAccount, workload",
        ),
        (
            q("{workload: b, reason: ''}"),
            "spec.reason",
            "must not be empty",
        ),
        (seg("{}"), "spec.podSelector", "Required value"),
    ];
    assert!(cases.len() >= 10);
    for (doc, path, words) in &cases {
        let err = create(&client, &ns, doc)
            .await
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{doc}"));
        let kube::Error::Api(status) = &err else {
            panic!("{doc}\n=> not an API error: {err}")
        };
        assert_eq!(status.code, 422, "{doc}\n=> {status:?}");
        assert!(
            status.message.contains(&format!("{path}:"))
                || status.message.contains(&format!("{path} ")),
            "{doc}\n=> {}\nwant the field path {path}",
            status.message
        );
        assert!(
            status.message.contains(words),
            "{doc}\n=> {}\nwant {words:?}",
            status.message
        );
    }
    // Nothing invalid was stored.
    for kind in ["AccessPolicy", "Quarantine", "Segment"] {
        let list = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource(kind))
            .list(&Default::default())
            .await
            .unwrap();
        assert!(list.items.is_empty(), "{kind}: {:?}", list.items);
    }
}
