//! Step 5b (after the policy steps): the `vigil` CLI on the live mesh, as a Kubernetes user runs it (the built
//! binary, a kubeconfig for the node's API server, nothing port-forwarded): `vigil verify`
//! on an allowed mTLS edge, a denied one and one from a pod outside the mesh, `vigil
//! status` finding the controller through the API server, and `vigil check` saying every
//! enrolled pod's proxy is in sync (its `proxies-in-sync` line, with the count).

use std::{
    path::Path,
    process::{Command, Output},
    time::Instant,
};

use vigil_e2e::{mesh::bin, workloads};

use crate::{
    policy::orders_url,
    steps::{Ctx, SHOP},
};

const FRONTEND_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const ORDERS_ID: &str = "spiffe://cluster.local/ns/shop/sa/orders";

/// `vigil --kubeconfig KC ARGS...`, run on this thread (inside the node's namespace).
fn vigil(kc: &Path, args: &[&str]) -> Output {
    Command::new(bin("vigil"))
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Asserts the exit code and that every `needle` is in the output; the output.
fn expect(o: &Output, code: i32, needles: &[&str]) -> String {
    let text = out(o);
    assert_eq!(o.status.code(), Some(code), "{text}");
    for n in needles {
        assert!(text.contains(n), "{n:?} missing:\n{text}");
    }
    text
}

pub(crate) async fn verify_and_status(ctx: &Ctx<'_>) {
    let kc = ctx.node.cluster().kubeconfig();
    let (_, fe) = ctx.pod(SHOP, "frontend").await;
    // The edge in use (the steps before made connections too; this one is certain).
    let c = workloads::call(&fe, "GET", &orders_url("/orders/1")).await;
    assert_eq!(c.status, Some(200), "{c:?}");

    // An allowed mTLS edge: every check passes.
    let t = Instant::now();
    let get = [
        "-n",
        SHOP,
        "verify",
        "deploy/frontend",
        "deploy/orders",
        "--method",
        "GET",
        "--path",
        "/orders/1",
    ];
    let ok = vigil(&kc, &get);
    let took = t.elapsed();
    let ok_text = expect(
        &ok,
        0,
        &[
            "✔ FROM shop/frontend-",
            "✔ TO shop/orders-",
            "✔ FROM's proxy enforces the current policy: generation ",
            &format!("✔ FROM's SVID: {FRONTEND_ID}, serial "),
            &format!("✔ TO's SVID: {ORDERS_ID}, serial "),
            "✔ FROM → TO is mTLS (the proxies' own record)",
            &format!("FROM's proxy: outbound to {ORDERS_ID}"),
            &format!("TO's proxy: inbound from {FRONTEND_ID}"),
            "allow: allowed by policy shop/frontend-reads-orders rule 0",
            "0 failed",
        ],
    );
    assert!(!ok_text.contains('✘'), "{ok_text}");
    println!("{ok_text}");
    let json = vigil(&kc, &[&get[..], &["-o", "json"]].concat());
    assert_eq!(json.status.code(), Some(0), "{}", out(&json));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["from"]["proxy"]["identity"]["id"], FRONTEND_ID, "{doc}");
    assert_eq!(
        doc["decision"]["policy"], "shop/frontend-reads-orders",
        "{doc}"
    );
    assert_eq!(doc["failed"], 0, "{doc}");
    assert!(
        !serde_json::to_string(&doc).unwrap().contains("PRIVATE KEY"),
        "no key material: {doc}"
    );

    // A denied edge: still mTLS, the deny explained, exit 1.
    let post = vigil(
        &kc,
        &[
            "-n",
            SHOP,
            "verify",
            "deploy/frontend",
            "deploy/orders",
            "--method",
            "POST",
            "--path",
            "/orders/1",
        ],
    );
    expect(
        &post,
        1,
        &[
            "✔ FROM → TO is mTLS",
            &format!("✘ TO's policy for POST /orders/1 on port 8080 from {FRONTEND_ID}: deny: "),
            "fix: if FROM should reach TO, add an AccessPolicy",
            "1 failed",
        ],
    );

    // A caller outside the mesh (step 4's unannotated namespace): not enrolled, its edge
    // is plaintext, and the policy sees it as unauthenticated.
    let outsider = vigil(
        &kc,
        &[
            "verify",
            "outside/deploy/outsider",
            "shop/deploy/orders",
            "--method",
            "GET",
            "--path",
            "/orders/1",
        ],
    );
    expect(
        &outsider,
        1,
        &[
            "✘ FROM outside/outsider-",
            "no vigil-proxy sidecar",
            "fix: enroll it: kubectl annotate namespace outside vigil.dev/inject=enabled",
            "its connections to TO leave in plaintext",
            "✘ TO's policy for GET /orders/1 on port 8080 from unauthenticated: deny: ",
        ],
    );

    // `vigil status` without an address: the controller through the API server.
    let t = Instant::now();
    let status = vigil(&kc, &["status"]);
    let status_took = t.elapsed();
    let status_text = expect(
        &status,
        0,
        &[
            "controller vigil-system/vigil-controller-",
            "through the API server at https://",
            "shop/orders",
            "in sync",
        ],
    );
    let json = vigil(&kc, &["status", "-o", "json"]);
    assert_eq!(json.status.code(), Some(0), "{}", out(&json));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let orders = doc["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| {
            w["workload"]
                .as_str()
                .is_some_and(|w| w.starts_with("shop/orders-"))
        })
        .unwrap_or_else(|| panic!("{doc}"))
        .clone();
    assert_eq!(orders["up_to_date"], true, "{orders}");
    // A namespace without Vigil: the error says where it looked and what to do.
    let none = vigil(&kc, &["-n", "outside", "status"]);
    expect(
        &none,
        1,
        &["no Deployment outside/vigil-controller", "vigil check"],
    );
    // `vigil check`: every enrolled pod's proxy in sync, from the controller's /status
    // read through the API server; the count is the injected pods that run.
    let proxies = injected_running(ctx).await;
    assert!(proxies >= 2, "frontend and orders at least: {proxies}");
    let t = Instant::now();
    let check = vigil(&kc, &["check"]);
    let check_took = t.elapsed();
    let check_text = expect(
        &check,
        0,
        &[&format!(
            "✔ enrolled pods' proxies in sync: {proxies} proxy(ies) at the controller's current generation\n"
        )],
    );
    println!("{check_text}");
    assert!(!check_text.contains('✘'), "{check_text}");
    println!(
        "5b. vigil check: {proxies} proxies in sync, {} checks in {:.0} ms",
        check_text
            .lines()
            .filter(|l| l.starts_with(['✔', '!', '✘']))
            .count(),
        check_took.as_secs_f64() * 1e3
    );
    println!(
        "5b. vigil verify deploy/frontend deploy/orders: {} checks passed in {:.0} ms (mTLS from both proxies' records, both SVIDs, allow by shop/frontend-reads-orders rule 0); POST: deny explained (exit 1); from outside the mesh: not enrolled, plaintext, unauthenticated (exit 1); vigil status through the API server in {:.0} ms ({} lines)",
        doc_checks(&ok),
        took.as_secs_f64() * 1e3,
        status_took.as_secs_f64() * 1e3,
        status_text.lines().count()
    );
}

/// How many pods carry the injected proxy and run (what `proxies-in-sync` counts).
async fn injected_running(ctx: &Ctx<'_>) -> usize {
    let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::all(ctx.client.clone())
        .list(&Default::default())
        .await
        .unwrap();
    pods.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.phase.as_deref() == Some("Running"))
        })
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .any(|c| c.name == "vigil-proxy")
            })
        })
        .count()
}

/// How many ✔ lines a run printed.
fn doc_checks(o: &Output) -> usize {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with('✔'))
        .count()
}
