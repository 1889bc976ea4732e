//! `vigil explain`, `vigil policy test`, `vigil quarantine` and `vigil status`, run as the
//! real binary against the example policy directory and a real controller.

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn vigil(args: &[&str]) -> Output {
    Command::new(VIGIL).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// A copy of examples/shop in a temp dir (tests that write must not touch the repo).
fn shop_copy() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(examples().join("shop")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
    }
    d
}

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

#[test]
fn explain_says_what_decides_with_exit_codes() {
    let dir = examples().join("shop");
    let d = dir.to_str().unwrap();
    let allow = vigil(&[
        "explain",
        "--dir",
        d,
        "--from",
        FRONTEND,
        "--to",
        "shop/orders",
        "--port",
        "18082",
        "--method",
        "GET",
        "--path",
        "/orders//x/../%31",
    ]);
    assert_eq!(allow.status.code(), Some(0), "{}", text(&allow));
    assert!(
        text(&allow).starts_with("ALLOW: allowed by policy shop/frontend-reads-orders rule 0"),
        "{}",
        text(&allow)
    );
    // It judged, and shows, the path the proxy would forward.
    assert!(
        text(&allow).contains("path (normalised): /orders/1\n"),
        "{}",
        text(&allow)
    );

    let deny = vigil(&[
        "explain",
        "--dir",
        d,
        "--from",
        FRONTEND,
        "--to",
        "shop/orders",
        "--port",
        "18082",
        "--method",
        "DELETE",
        "--path",
        "/orders/1",
    ]);
    assert_eq!(deny.status.code(), Some(1));
    assert!(
        text(&deny).contains("DENY: default deny"),
        "{}",
        text(&deny)
    );

    // Opaque TCP: the L7 allow does not admit it, the L7 deny applies conservatively.
    let tcp = vigil(&[
        "explain",
        "--dir",
        d,
        "--from",
        FRONTEND,
        "--to",
        "shop/orders",
        "--port",
        "18082",
        "--json",
    ]);
    assert_eq!(tcp.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&tcp.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["policy"], "shop/no-admin");

    // Errors exit 2 with one clear line.
    for (args, want) in [
        (
            vec!["--from", FRONTEND, "--to", "shop/ghost", "--port", "1"],
            "no Workload shop/ghost",
        ),
        (
            vec!["--from", "nope", "--to", "shop/orders", "--port", "1"],
            "--from",
        ),
        (
            vec![
                "--from",
                FRONTEND,
                "--to",
                "shop/orders",
                "--port",
                "1",
                "--method",
                "GET",
                "--path",
                "/a%2Fb",
            ],
            "400",
        ),
        // The rest of docs/path-contract.md's refusals, as the proxy refuses them.
        (
            vec![
                "--from",
                FRONTEND,
                "--to",
                "shop/orders",
                "--port",
                "1",
                "--method",
                "GET",
                "--path",
                "/orders/..;/admin",
            ],
            "path parameters",
        ),
        (
            vec![
                "--from",
                FRONTEND,
                "--to",
                "shop/orders",
                "--port",
                "1",
                "--method",
                "GET",
                "--path",
                "/orders/..%20/admin",
            ],
            "ends in a dot or a space",
        ),
        (
            vec![
                "--from",
                FRONTEND,
                "--to",
                "shop/orders",
                "--port",
                "1",
                "--method",
                "GET",
                "--path",
                "/orders/%ef%bc%8e%ef%bc%8e/admin",
            ],
            "fold to ASCII",
        ),
    ] {
        let mut a = vec!["explain", "--dir", d];
        a.extend(args);
        let o = vigil(&a);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("error: ") && err.contains(want), "{err}");
    }
}

#[test]
fn policy_tests_pass_and_fail_for_real() {
    let shop = examples().join("shop");
    let ok = vigil(&[
        "policy",
        "test",
        examples().join("shop-tests.yaml").to_str().unwrap(),
        "--dir",
        shop.to_str().unwrap(),
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("6 passed, 0 failed"));

    let d = tempfile::tempdir().unwrap();
    let cases = d.path().join("cases.yaml");
    std::fs::write(
        &cases,
        format!("- {{name: wrong on purpose, from: {FRONTEND}, to: shop/payments, port: 18083, method: POST, path: /charge, expect: allow}}\n- {{from: {FRONTEND}, to: shop/orders, port: 18082, method: GET, path: /orders, expect: allow}}\n"),
    )
    .unwrap();
    let bad = vigil(&[
        "policy",
        "test",
        cases.to_str().unwrap(),
        "--dir",
        shop.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let out = text(&bad);
    assert!(
        out.contains("FAIL wrong on purpose: expected Allow, got deny"),
        "{out}"
    );
    assert!(
        out.contains("ok   case 2") && out.contains("1 passed, 1 failed"),
        "{out}"
    );

    std::fs::write(&cases, "- {from: x, to: y, expect: maybe}\n").unwrap();
    let broken = vigil(&[
        "policy",
        "test",
        cases.to_str().unwrap(),
        "--dir",
        shop.to_str().unwrap(),
    ]);
    assert_eq!(broken.status.code(), Some(2), "{}", text(&broken));
}

#[test]
fn quarantine_writes_a_document_the_controller_accepts() {
    let shop = shop_copy();
    let d = shop.path().to_str().unwrap();
    let q = vigil(&[
        "quarantine",
        "--dir",
        d,
        "-n",
        "shop",
        "--workload",
        "frontend",
        "--reason",
        "suspicious: beacons to 203.0.113.9",
    ]);
    assert_eq!(q.status.code(), Some(0), "{}", text(&q));
    assert!(shop.path().join("quarantine-shop-frontend.yaml").exists());
    // The same loader the controller uses accepts it, and the frontend is now revoked.
    let e = vigil(&[
        "explain",
        "--dir",
        d,
        "--from",
        FRONTEND,
        "--to",
        "shop/orders",
        "--port",
        "18082",
        "--method",
        "GET",
        "--path",
        "/orders/1",
    ]);
    assert_eq!(e.status.code(), Some(1), "{}", text(&e));
    assert!(text(&e).contains("revoked"), "{}", text(&e));
    assert!(
        !text(&e).contains("warning"),
        "the document is valid: {}",
        text(&e)
    );

    let u = vigil(&["unquarantine", "--dir", d, "-n", "shop", "frontend"]);
    assert_eq!(u.status.code(), Some(0), "{}", text(&u));
    let e = vigil(&[
        "explain",
        "--dir",
        d,
        "--from",
        FRONTEND,
        "--to",
        "shop/orders",
        "--port",
        "18082",
        "--method",
        "GET",
        "--path",
        "/orders/1",
    ]);
    assert_eq!(e.status.code(), Some(0));

    let again = vigil(&["unquarantine", "--dir", d, "-n", "shop", "frontend"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("no quarantine"));
    let bad = vigil(&[
        "quarantine",
        "--dir",
        d,
        "-n",
        "shop",
        "--workload",
        "../etc",
        "--reason",
        "x",
    ]);
    assert_eq!(bad.status.code(), Some(1));
}

#[derive(clap::Parser)]
struct Ctl {
    #[command(flatten)]
    args: vigil_controller::ControllerArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_controllers_view() {
    use clap::Parser;
    let shop = shop_copy();
    let state = tempfile::tempdir().unwrap();
    let args = Ctl::parse_from([
        "x",
        "--local",
        shop.path().to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ])
    .args;
    let ctl = vigil_controller::Controller::start(args).await.unwrap();
    let admin = ctl.admin.to_string();
    let out = tokio::task::spawn_blocking(move || vigil(&["status", "--controller", &admin]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("shop/orders") && t.contains("spiffe://cluster.local/ns/shop/sa/orders"),
        "{t}"
    );
    assert!(t.contains("offline"), "no proxy is connected: {t}");
    assert!(
        t.contains("AccessPolicy") && t.contains("shop/frontend-reads-orders"),
        "{t}"
    );
    let admin = ctl.admin.to_string();
    let json =
        tokio::task::spawn_blocking(move || vigil(&["status", "--controller", &admin, "--json"]))
            .await
            .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["workloads"].as_array().unwrap().len(), 3);
    // `-o yaml`: the same report.
    let admin = ctl.admin.to_string();
    let yaml = tokio::task::spawn_blocking(move || {
        vigil(&["status", "--controller", &admin, "-o", "yaml"])
    })
    .await
    .unwrap();
    assert_eq!(yaml.status.code(), Some(0), "{}", text(&yaml));
    let y: serde_json::Value =
        serde_saphyr::from_str(&String::from_utf8_lossy(&yaml.stdout)).unwrap();
    assert_eq!(y["workloads"], v["workloads"]);
    assert_eq!(y["trust_domain"], v["trust_domain"]);
    ctl.stop().await;
    let down = vigil(&["status", "--controller", "127.0.0.1:1"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        text(&down).starts_with("error: querying the controller"),
        "{}",
        text(&down)
    );
}
