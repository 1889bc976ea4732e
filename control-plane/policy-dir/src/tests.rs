use super::*;

const GOOD: &str = r#"# the shop
apiVersion: local.vigil.dev/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {serviceAccount: web, addresses: ["127.0.0.1:8081"]}
---
apiVersion: policy.vigil.dev/v1alpha1
kind: Segment
metadata: {name: frontend, namespace: shop}
spec: {podSelector: {matchLabels: {app: web}}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {vigil.dev/default-policy: deny}}
"#;

#[test]
fn reads_every_document_and_keeps_the_last_good_version_of_a_bad_file() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("shop.yaml");
    std::fs::write(&f, GOOD).unwrap();
    std::fs::write(d.path().join("notes.txt"), "ignored").unwrap();
    let mut src = PolicyDir::new(d.path());
    let (res, errs) = src.load();
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(res.workloads.len(), 1);
    assert_eq!(res.segments.len(), 1);
    assert_eq!(
        res.namespaces["shop"].annotations["vigil.dev/default-policy"],
        "deny"
    );

    // Break the second document (it starts on line 7): a misspelt field.
    std::fs::write(
        &f,
        GOOD.replace("podSelector: {matchLabels", "podSelectr: {matchLabels"),
    )
    .unwrap();
    let (res, errs) = src.load();
    assert_eq!(res.segments.len(), 1, "last good version kept");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.starts_with("7:"), "{}", errs[0]);
    assert!(
        errs[0]
            .to_string()
            .contains("shop.yaml:7:1: unknown field(s) spec.podSelectr"),
        "{}",
        errs[0]
    );

    // A broken file next to it does not affect a good one, even when new.
    std::fs::write(d.path().join("new.yaml"), "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p, namespace: shop}\nspec: {target: {segment: frontend}, action: Allow, from: []}\n").unwrap();
    let (res, errs) = src.load();
    assert_eq!(errs.len(), 2);
    let cel = errs.iter().find(|e| e.file.ends_with("new.yaml")).unwrap();
    assert!(cel.message.contains("at least one source"), "{cel}");
    assert!(res.policies.is_empty());
    assert_eq!(res.workloads.len(), 1);

    // Fix and delete.
    std::fs::write(&f, GOOD).unwrap();
    std::fs::remove_file(d.path().join("new.yaml")).unwrap();
    let (res, errs) = src.load();
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(res.segments.len(), 1);
}

#[test]
fn bad_input_is_reported_never_fatal() {
    let cases: &[(&str, &str)] = &[
        (
            "kind: Workload\napiVersion: local.vigil.dev/v1alpha1\nmetadata: {name: [\n",
            "unclosed bracket",
        ),
        (
            "apiVersion: policy.vigil.dev/v1alpha1\nkind: Gizmo\nmetadata: {name: x}\n",
            "unknown kind",
        ),
        (
            "apiVersion: policy.vigil.dev/v1alpha1\nkind: Segment\nmetadata: {namespace: x}\nspec: {podSelector: {}}\n",
            "metadata.name",
        ),
        (
            "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec: {target: {segment: a}, action: Maybe, from: [{authenticated: true}]}\n",
            "4:38: unknown variant `Maybe`, expected one of Allow, Deny",
        ),
        ("\u{0}\u{1}binary", "1:1:"),
    ];
    for (text, want) in cases {
        let err = parse_file(text.as_bytes()).unwrap_err();
        assert!(err.contains(want), "{text:?} => {err}");
    }
    assert!(parse_file(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
    // Typos are errors, not silently ignored fields.
    let typo = "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec: {target: {segment: a}, action: Allow, from: [{authenticated: true}], validUnti: '2026-01-01T00:00:00Z'}\n";
    assert!(
        parse_file(typo.as_bytes())
            .unwrap_err()
            .contains("spec.validUnti")
    );
    // Empty and comment-only documents are fine.
    assert!(parse_file(b"# nothing\n---\n\n").unwrap().is_empty());
}

#[test]
fn document_positions_are_file_relative() {
    let docs = split_documents("a: 1\n---\nb: 2\nc: 3\n--- \nd: 4\n");
    let lines: Vec<u64> = docs.iter().map(|d| d.0).collect();
    assert_eq!(lines, [1, 3, 6]);
}
