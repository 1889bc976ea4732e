//! The CRDs accept what users should write and refuse, with a clear message, what they
//! should not — through the same CEL rules the apiserver runs. And `crds/` is up to date.

#![allow(clippy::unwrap_used)]

use kube::CustomResourceExt;
use vigil_crds::{AccessPolicy, Quarantine, Segment, Workload, validate};

fn policy(spec: &str) -> AccessPolicy {
    let doc = format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n{spec}"
    );
    serde_saphyr::from_str(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

#[test]
fn a_full_policy_is_valid() {
    let p = policy(
        r#"
  target: {segment: orders, ports: [8080]}
  action: Allow
  mode: Audit
  from:
    - segment: frontend
    - spiffeId: "spiffe://cluster.local/ns/ops/sa/*"
    - namespace: monitoring
    - serviceAccount: shop/checkout
    - authenticated: true
    - unauthenticated: true
    - cidr: 10.0.0.0/8
  rules:
    - methods: [GET]
      paths: [{prefix: /orders}, {exact: /health}, {glob: "/v1/*/items"}]
      headers: [{name: x-tenant, exact: acme}, {name: x-debug, present: false}, {name: ua, regex: "curl.*"}]
    - ports: [9090]
      grpc: [{service: orders.v1.Orders, method: Get}]
  validFrom: "2026-01-01T00:00:00Z"
  validUntil: "2026-12-01T00:00:00Z"
  rateLimit: {requestsPerSecond: 50, burst: 100}
"#,
    );
    assert_eq!(validate(&p), Ok(()));
}

#[test]
fn invalid_policies_are_refused_with_the_rule_that_failed() {
    let cases = [
        (
            "  target: {segment: a}\n  action: Allow\n  from: []\n",
            "from must name at least one source",
        ),
        (
            "  target: {}\n  action: Allow\n  from: [{authenticated: true}]\n",
            "exactly one of segment or podSelector",
        ),
        (
            "  target: {segment: a, podSelector: {matchLabels: {app: x}}}\n  action: Allow\n  from: [{authenticated: true}]\n",
            "exactly one of segment or podSelector",
        ),
        (
            "  target: {segment: a}\n  action: Allow\n  from: [{segment: x, namespace: y}]\n",
            "exactly one of spiffeId",
        ),
        (
            "  target: {segment: a}\n  action: Allow\n  from: [{}]\n",
            "exactly one of spiffeId",
        ),
        (
            "  target: {segment: a}\n  action: Allow\n  from: [{unauthenticated: false}]\n",
            "unauthenticated can only be true",
        ),
        (
            "  target: {segment: a}\n  action: Allow\n  from: [{authenticated: true}]\n  validFrom: \"2026-02-01T00:00:00Z\"\n  validUntil: \"2026-01-01T00:00:00Z\"\n",
            "validUntil must be after validFrom",
        ),
        (
            "  target: {segment: a}\n  action: Allow\n  from: [{authenticated: true}]\n  rules: [{paths: [{exact: /a, prefix: /b}]}]\n",
            "exactly one of exact, prefix, glob",
        ),
        (
            "  target: {segment: a}\n  action: Allow\n  from: [{authenticated: true}]\n  rules: [{headers: [{name: x}]}]\n",
            "exactly one of exact, regex, present",
        ),
        (
            "  target: {segment: a}\n  action: Allow\n  from: [{authenticated: true}]\n  rateLimit: {requestsPerSecond: 0}\n",
            "requestsPerSecond must be at least 1",
        ),
        (
            "  target: {segment: a, ports: [0]}\n  action: Allow\n  from: [{authenticated: true}]\n",
            "ports must be 1-65535",
        ),
    ];
    for (spec, want) in cases {
        let errs = validate(&policy(spec))
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{spec}"));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{spec}\n=> {errs:?}\nwant {want:?}"
        );
    }
}

#[test]
fn structural_errors_fail_to_parse() {
    for bad in [
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec: {target: {segment: a}, action: Permit, from: [{authenticated: true}]}\n",
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec: {target: {segment: a}, from: [{authenticated: true}]}\n",
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec: {target: {segment: a, ports: [70000]}, action: Allow, from: [{authenticated: true}]}\n",
    ] {
        assert!(
            serde_saphyr::from_str::<AccessPolicy>(bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn quarantines_segments_and_workloads() {
    let q: Quarantine = serde_saphyr::from_str(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Quarantine\nmetadata: {name: q, namespace: shop}\nspec: {serviceAccount: web, reason: suspected compromise}\n",
    )
    .unwrap();
    assert_eq!(validate(&q), Ok(()));
    for (spec, want) in [
        (
            "{reason: x}",
            "exactly one of podSelector, serviceAccount, workload",
        ),
        (
            "{serviceAccount: a, workload: b, reason: x}",
            "exactly one of podSelector, serviceAccount, workload",
        ),
        ("{workload: b, reason: ''}", "reason must not be empty"),
    ] {
        let q: Quarantine = serde_saphyr::from_str(&format!(
            "apiVersion: policy.vigil.dev/v1alpha1\nkind: Quarantine\nmetadata: {{name: q}}\nspec: {spec}\n"
        ))
        .unwrap();
        let errs = validate(&q).unwrap_err();
        assert!(errs.iter().any(|e| e.contains(want)), "{spec}: {errs:?}");
    }
    let s: Segment = serde_saphyr::from_str(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Segment\nmetadata: {name: s, namespace: shop}\nspec: {podSelector: {matchLabels: {app: web}}}\n",
    )
    .unwrap();
    assert_eq!(validate(&s), Ok(()));
    let w: Workload = serde_saphyr::from_str(
        "apiVersion: local.vigil.dev/v1alpha1\nkind: Workload\nmetadata: {name: web, namespace: shop, labels: {app: web}}\nspec: {serviceAccount: web, addresses: ['127.0.0.1:8080']}\n",
    )
    .unwrap();
    assert_eq!(w.spec.service_account, "web");
    assert_eq!(validate(&w), Ok(()));
}

/// `crds/` must be exactly what `crdgen` writes (also checked by `make check-generated`).
#[test]
fn committed_crds_are_up_to_date() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    for (plural, crd) in [
        ("segments", Segment::crd()),
        ("accesspolicies", AccessPolicy::crd()),
        ("quarantines", Quarantine::crd()),
    ] {
        let path = dir.join(format!("policy.vigil.dev_{plural}.yaml"));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `make generate`)", path.display()));
        let generated = serde_saphyr::to_string(&crd).unwrap();
        assert!(
            committed.ends_with(&generated),
            "{} is stale: run `make generate`",
            path.display()
        );
    }
}

#[test]
fn unknown_fields_are_found_where_the_apiserver_would_prune_them() {
    let doc: serde_json::Value = serde_saphyr::from_str(
        r#"
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p, namespace: shop, labels: {anything: goes}}
spec:
  target: {segmnt: orders}
  action: Allow
  from: [{segment: web, namspace: x}]
  rules: [{paths: [{prefix: /a}], headers: [{name: x, exact: y, regexx: z}]}]
  validUnti: "2026-01-01T00:00:00Z"
extra: 1
"#,
    )
    .unwrap();
    let mut unknown = vigil_crds::unknown_fields::<AccessPolicy>(&doc);
    unknown.sort();
    assert_eq!(
        unknown,
        [
            "extra",
            "spec.from[0].namspace",
            "spec.rules[0].headers[0].regexx",
            "spec.target.segmnt",
            "spec.validUnti"
        ]
    );
    let ok: serde_json::Value = serde_saphyr::from_str(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Segment\nmetadata: {name: s}\nspec: {podSelector: {matchLabels: {app: web}, matchExpressions: [{key: a, operator: In, values: [b]}]}}\n",
    )
    .unwrap();
    assert!(vigil_crds::unknown_fields::<Segment>(&ok).is_empty());
}
