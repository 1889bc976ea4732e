//! `-o table|json|yaml` means the same on every reporting command: json and yaml carry
//! the same value, the exit code does not depend on the format, and `--json` (the flag
//! before `-o`) still works but not together with `-o`.

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop")
}

fn vigil(args: &[&str]) -> Output {
    Command::new(VIGIL).args(args).output().unwrap()
}

/// Runs `args` with `-o json` and with `-o yaml`: both exit `code` and parse to one value.
fn json_and_yaml(args: &[&str], code: i32) -> serde_json::Value {
    let run = |format: &str| {
        let mut a = args.to_vec();
        a.extend(["-o", format]);
        let o = vigil(&a);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{format}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    let yaml: serde_json::Value = serde_saphyr::from_str(&run("yaml")).unwrap();
    assert_eq!(json, yaml);
    json
}

/// `vigil explain` of a GET that normalises to /admin (denied), as words.
fn explain_args(dir: &str) -> Vec<String> {
    format!("explain --dir {dir} --from {FRONTEND} --to shop/orders --port 18082 --method GET --path /orders/..//admin")
        .split(' ')
        .map(String::from)
        .collect()
}

#[test]
fn explain_json_and_yaml_carry_the_verdict_and_json_is_what_json_was() {
    let dir = shop();
    let words = explain_args(dir.to_str().unwrap());
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    let v = json_and_yaml(&args, 1);
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["policy"], "shop/no-admin");
    assert_eq!(v["normalized_path"], "/admin");
    let mut old = args.clone();
    old.push("--json");
    let o = vigil(&old);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap(),
        v
    );
    // Not both.
    old.extend(["-o", "yaml"]);
    let o = vigil(&old);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be used with"));
}

#[test]
fn policy_test_reports_every_case_and_the_totals() {
    let dir = shop();
    let cases = dir.join("../shop-tests.yaml");
    let v = json_and_yaml(
        &[
            "policy",
            "test",
            cases.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
        ],
        0,
    );
    let list = v["cases"].as_array().unwrap();
    assert!(list.len() >= 4, "{v}");
    assert_eq!(v["passed"], list.len());
    assert_eq!(v["failed"], 0);
    assert_eq!(list[0]["name"], "the frontend reads orders");
    assert_eq!(list[0]["passed"], true);
    assert_eq!(list[0]["expected"], "allow");
    assert_eq!(list[0]["got"], "allow");
    assert!(
        list[0]["reason"]
            .as_str()
            .unwrap()
            .contains("shop/frontend-reads-orders")
    );
}

#[test]
fn quarantine_and_unquarantine_report_what_they_did() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let q = vigil(&[
        "quarantine",
        "--dir",
        d,
        "-n",
        "shop",
        "--service-account",
        "web",
        "--reason",
        "x y",
        "-o",
        "json",
    ]);
    assert_eq!(q.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    let file = dir.path().join("quarantine-shop-web.yaml");
    assert_eq!(
        v,
        serde_json::json!({
            "quarantined": true, "namespace": "shop", "target": "web",
            "selects": "serviceAccount", "reason": "x y", "file": file,
        })
    );
    let u = vigil(&[
        "unquarantine",
        "--dir",
        d,
        "-n",
        "shop",
        "web",
        "-o",
        "yaml",
    ]);
    assert_eq!(u.status.code(), Some(0));
    let v: serde_json::Value = serde_saphyr::from_str(&String::from_utf8_lossy(&u.stdout)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "quarantined": false, "namespace": "shop", "target": "web", "file": file,
        })
    );
    assert!(!file.exists());
}
