//! The `vigil` CLI against a real kube-apiserver, as a Kubernetes user runs it (with a
//! kubeconfig, and as the kubectl plugin `kubectl vigil`):
//!
//! - `explain` and `policy test` read Segments, AccessPolicies, Quarantines and the
//!   enrolled pods from the cluster and decide as a proxy would; `policy test --overlay`
//!   lays a directory of changed YAML over them ("what would this PR change");
//! - `quarantine` / `unquarantine` create and delete the `Quarantine` resource, and
//!   `explain` sees its effect;
//! - the failures say what to check: an unknown context, an unreachable API server, a
//!   workload that is not there, a malformed overlay (exit 2), a name that is not
//!   quarantined, RBAC refusing a list or a write, and the CRDs not installed (on a
//!   second, bare server);
//! - `verify` and `status` where no pod runs: what needs no kubelet (a pod that does not
//!   exist, a callee outside the mesh, a proxy that cannot be read, the policy decision
//!   still explained, no controller installed); their live paths are in the real-node
//!   suite (tests/cluster/cli.rs).
//!
//! Pods never run (no kubelet): a pod is a workload once it is enrolled and carries the
//! `vigil-proxy` container, which is what the controller checks on the stored spec too.

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, PostParams},
    discovery::ApiResource,
};
use vigil_crds::Quarantine;
use vigil_e2e::{k8s, kube_procs::free_port, mesh::bin};

const PORT: &str = "8080";

/// Runs `vigil` with `args` (and `KUBECONFIG`, when given).
fn vigil_env(args: &[&str], kubeconfig_env: Option<&Path>) -> Output {
    let mut cmd = Command::new(bin("vigil"));
    cmd.args(args);
    if let Some(kc) = kubeconfig_env {
        cmd.env("KUBECONFIG", kc);
    }
    cmd.output().unwrap()
}

/// Runs `vigil --kubeconfig KC ARGS...`.
fn vigil(kc: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--kubeconfig", kc.to_str().unwrap()];
    all.extend_from_slice(args);
    vigil_env(&all, None)
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts the exit code; returns stderr.
fn exits(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn id(ns: &str, sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
}

/// An AccessPolicy `ns/name` protecting the orders segment with `spec` (YAML lines after
/// `target`).
fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  target: {{segment: orders, ports: [{PORT}]}}\n{spec}"
    )
}

/// The shop's one policy: the frontend may GET /orders* (`methods` widens it).
fn frontend_reads_orders(ns: &str, methods: &str) -> String {
    policy(
        ns,
        "frontend-reads-orders",
        &format!(
            "  action: Allow\n  from: [{{segment: frontend}}]\n  rules:\n    - methods: [{methods}]\n      paths: [{{prefix: /orders}}]\n"
        ),
    )
}

fn segment(ns: &str, app: &str) -> String {
    format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Segment\nmetadata: {{name: {app}, namespace: {ns}}}\nspec: {{podSelector: {{matchLabels: {{app: {app}}}}}}}\n"
    )
}

/// A namespace with enrolled pods `frontend`, `orders` and `batch` (each running as the
/// service account of its name), Segments `frontend` and `orders`, and one policy: the
/// frontend may GET /orders* on the orders pod.
async fn shop(cluster: &k8s::Cluster, prefix: &str) -> String {
    let client = cluster.admin();
    k8s::install_crds(&client).await;
    let ns = cluster.namespace(prefix).await;
    for app in ["frontend", "orders", "batch"] {
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": app}})).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": app,
                "labels": {"app": app},
                "annotations": {"vigil.dev/inject": "enabled"},
            },
            "spec": {
                "serviceAccountName": app,
                "containers": [
                    {"name": "app", "image": "example.invalid/app:1",
                     "ports": [{"containerPort": 8080}]},
                    {"name": "vigil-proxy", "image": "example.invalid/vigil-proxy:1"},
                ],
            },
        }))
        .unwrap();
        Api::<Pod>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
    }
    for doc in [
        segment(&ns, "frontend"),
        segment(&ns, "orders"),
        frontend_reads_orders(&ns, "GET"),
    ] {
        create(&client, &ns, &doc).await;
    }
    ns
}

/// Creates a policy document through the API.
async fn create(client: &Client, ns: &str, doc: &str) {
    let obj: DynamicObject = serde_saphyr::from_str(doc).unwrap();
    let kind = obj.types.as_ref().unwrap().kind.clone();
    let plural = match kind.as_str() {
        "AccessPolicy" => "accesspolicies",
        "Segment" => "segments",
        _ => "quarantines",
    };
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.vigil.dev", "v1alpha1", &kind),
        plural,
    );
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{doc}"));
}

/// `explain` of `from` (a service account of `ns`) calling `method path` on orders.
fn explain(kc: &Path, ns: &str, from: &str, method: &str, path: &str) -> Output {
    let (from, to) = (id(ns, from), format!("{ns}/orders"));
    vigil(
        kc,
        &[
            "explain", "--from", &from, "--to", &to, "--port", PORT, "--method", method, "--path",
            path,
        ],
    )
}

/// `policy test CASES [--overlay DIR]` on the cluster of `kc`.
fn policy_test(kc: &Path, cases: &Path, overlay: Option<&Path>) -> Output {
    let mut args = vec!["policy", "test", cases.to_str().unwrap()];
    if let Some(o) = overlay {
        args.extend(["--overlay", o.to_str().unwrap()]);
    }
    vigil(kc, &args)
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn explain_decides_on_the_clusters_policies() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let ns = shop(cluster, "cli-explain").await;
    let kc = cluster.kubeconfig();
    let allow = explain(&kc, &ns, "frontend", "GET", "/orders/7");
    exits(&allow, 0);
    assert!(
        stdout(&allow).starts_with(&format!(
            "ALLOW: allowed by policy {ns}/frontend-reads-orders rule 0"
        )),
        "{}",
        text(&allow)
    );
    for (from, method) in [("frontend", "POST"), ("batch", "GET")] {
        let deny = explain(&kc, &ns, from, method, "/orders/7");
        exits(&deny, 1);
        assert!(stdout(&deny).starts_with("DENY: "), "{}", text(&deny));
    }
    // `--to NAME` is in `-n`'s namespace, as kubectl names objects.
    let from = id(&ns, "frontend");
    let short = vigil(
        &kc,
        &[
            "-n",
            &ns,
            "explain",
            "--from",
            &from,
            "--to",
            "orders",
            "--port",
            PORT,
            "--method",
            "GET",
            "--path",
            "/orders/7",
        ],
    );
    exits(&short, 0);
    assert_eq!(stdout(&short), stdout(&allow));
}

#[tokio::test]
async fn explain_fails_clearly_on_bad_context_unreachable_server_and_unknown_workload() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let ns = shop(cluster, "cli-explain-bad").await;
    let kc = cluster.kubeconfig();
    let ghost = format!("{ns}/ghost");
    let args = |to: &'static str| -> Vec<&str> {
        vec![
            "explain",
            "--from",
            "unauthenticated",
            "--port",
            PORT,
            "--method",
            "GET",
            "--path",
            "/",
            "--to",
            to,
        ]
    };

    // A context the kubeconfig does not have.
    let mut a = vec!["--context", "nope"];
    a.extend(args("x/y"));
    let err = exits(&vigil(&kc, &a), 2);
    assert!(
        err.starts_with("error: cannot load the cluster configuration") && err.contains("nope"),
        "{err}"
    );

    // A kubeconfig whose server does not answer.
    let dir = tempfile::tempdir().unwrap();
    let dead = std::fs::read_to_string(&kc)
        .unwrap()
        .replace(&cluster.url, &format!("https://127.0.0.1:{}", free_port()));
    let dead_kc = write(dir.path(), "dead", &dead);
    let err = exits(&vigil(&dead_kc, &args("x/y")), 2);
    assert!(
        err.starts_with("error: cannot reach the API server at https://127.0.0.1:"),
        "{err}"
    );

    // KUBECONFIG (as kubectl reads it) works, and names a workload that is not there.
    let mut a = args("x/y");
    *a.last_mut().unwrap() = &ghost;
    let err = exits(&vigil_env(&a, Some(&kc)), 2);
    assert!(
        err.starts_with(&format!(
            "error: no Workload {ns}/ghost in the cluster at {}",
            cluster.url
        )) && err.contains("vigil-proxy container"),
        "{err}"
    );
}

#[tokio::test]
async fn policy_test_on_the_cluster_with_and_without_an_overlay() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let ns = shop(cluster, "cli-ptest").await;
    let kc = cluster.kubeconfig();
    let dir = tempfile::tempdir().unwrap();
    let case = |name: &str, from: &str, method: &str, expect: &str| {
        format!(
            "- name: {name}\n  from: {}\n  to: {ns}/orders\n  port: {PORT}\n  method: {method}\n  path: /orders/1\n  expect: {expect}\n",
            id(&ns, from)
        )
    };
    // What is deployed.
    let cases = write(
        dir.path(),
        "today.yaml",
        &[
            case("frontend reads", "frontend", "GET", "allow"),
            case("frontend cannot write", "frontend", "POST", "deny"),
            case("batch cannot read", "batch", "GET", "deny"),
        ]
        .concat(),
    );
    let o = policy_test(&kc, &cases, None);
    exits(&o, 0);
    assert!(stdout(&o).ends_with("3 passed, 0 failed\n"), "{}", text(&o));

    // The PR: the existing policy now also allows POST (same name replaces), and a new
    // policy lets batch read (a new object adds; without a namespace, it goes where `-n`
    // says, as with `kubectl apply -n`).
    let pr = dir.path().join("pr");
    let batch = policy(
        &ns,
        "batch-reads-orders",
        &format!("  action: Allow\n  from: [{{serviceAccount: {ns}/batch}}]\n"),
    )
    .replace(&format!(", namespace: {ns}}}"), "}");
    assert!(!batch.contains("namespace:"), "{batch}");
    write(
        &pr,
        "policies.yaml",
        &format!("{}---\n{batch}", frontend_reads_orders(&ns, "GET, POST")),
    );
    let mut args = vec!["-n", &ns, "policy", "test", cases.to_str().unwrap()];
    args.extend(["--overlay", pr.to_str().unwrap()]);
    let o = vigil(&kc, &args);
    exits(&o, 1);
    let out = stdout(&o);
    assert!(out.contains("ok   frontend reads\n"), "{out}");
    assert!(
        out.contains("FAIL frontend cannot write: expected Deny, got allow"),
        "{out}"
    );
    assert!(
        out.contains("FAIL batch cannot read: expected Deny, got allow"),
        "{out}"
    );
    assert!(out.ends_with("1 passed, 2 failed\n"), "{out}");

    // The cluster itself is unchanged by the overlay.
    exits(&policy_test(&kc, &cases, None), 0);
}

#[tokio::test]
async fn policy_test_refuses_a_malformed_overlay_a_non_directory_and_a_forbidden_list() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let ns = shop(cluster, "cli-ptest-bad").await;
    let kc = cluster.kubeconfig();
    let dir = tempfile::tempdir().unwrap();
    let cases = write(
        dir.path(),
        "cases.yaml",
        &format!(
            "- from: {}\n  to: {ns}/orders\n  port: {PORT}\n  method: GET\n  path: /orders\n  expect: allow\n",
            id(&ns, "frontend")
        ),
    );
    // `action: Permit` (line 6) is not an action.
    let pr = dir.path().join("pr");
    write(
        &pr,
        "bad.yaml",
        &policy(
            &ns,
            "broken",
            "  action: Permit\n  from: [{segment: frontend}]\n",
        ),
    );
    let o = policy_test(&kc, &cases, Some(&pr));
    let err = exits(&o, 2);
    assert!(
        err.starts_with("error: the overlay is invalid: ")
            && err.contains("bad.yaml:6:")
            && err.contains("Permit"),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "no case ran: {}", text(&o));

    let err = exits(&policy_test(&kc, &cases, Some(&cases)), 2);
    assert!(err.contains("is not a directory"), "{err}");

    // A user who may not list the cluster's pods learns which permission is missing.
    let weak = dir.path().join("weak");
    cluster.write_kubeconfig_for(k8s::CONTROLLER_TOKEN, &weak);
    let o = policy_test(&weak, &cases, None);
    let err = exits(&o, 2);
    assert!(
        err.starts_with("error: forbidden: you may not list pods in all namespaces")
            && err.contains("RBAC"),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "no case ran: {}", text(&o));
}

#[tokio::test]
async fn quarantine_and_unquarantine_in_the_cluster() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let ns = shop(cluster, "cli-qt").await;
    let kc = cluster.kubeconfig();
    exits(&explain(&kc, &ns, "frontend", "GET", "/orders/7"), 0);

    let quarantine = |reason: &str| {
        vigil(
            &kc,
            &[
                "-n",
                &ns,
                "quarantine",
                "--workload",
                "frontend",
                "--reason",
                reason,
            ],
        )
    };
    let q = quarantine("beacons to 203.0.113.9");
    exits(&q, 0);
    assert_eq!(
        stdout(&q),
        format!("quarantined {ns}/frontend (workload): Quarantine {ns}/frontend created\n")
    );
    let api = Api::<Quarantine>::namespaced(cluster.admin(), &ns);
    let stored = api.get("frontend").await.unwrap();
    assert_eq!(stored.spec.workload.as_deref(), Some("frontend"));
    assert_eq!(stored.spec.reason, "beacons to 203.0.113.9");
    exits(&explain(&kc, &ns, "frontend", "GET", "/orders/7"), 1);

    // A second quarantine of the same target is refused, not silently replaced.
    let err = exits(&quarantine("again"), 1);
    assert!(err.contains("already exists"), "{err}");

    let u = vigil(&kc, &["unquarantine", "-n", &ns, "frontend", "-o", "json"]);
    exits(&u, 0);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&u.stdout).unwrap(),
        serde_json::json!({"quarantined": false, "namespace": ns, "target": "frontend"})
    );
    assert!(api.get_opt("frontend").await.unwrap().is_none());
    exits(&explain(&kc, &ns, "frontend", "GET", "/orders/7"), 0);
}

#[tokio::test]
async fn unquarantine_of_an_unknown_name_and_quarantine_without_rbac_fail() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let ns = shop(cluster, "cli-qt-bad").await;
    let err = exits(
        &vigil(&cluster.kubeconfig(), &["unquarantine", "-n", &ns, "ghost"]),
        1,
    );
    assert_eq!(
        err,
        format!(
            "error: no Quarantine {ns}/ghost in the cluster (`kubectl get quarantines -n {ns}` lists them)\n"
        )
    );

    // The controller's ServiceAccount without the chart's RBAC may not create anything.
    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("weak");
    cluster.write_kubeconfig_for(k8s::CONTROLLER_TOKEN, &weak);
    let q = [
        "quarantine",
        "-n",
        &ns,
        "--service-account",
        "batch",
        "--reason",
        "x",
    ];
    let err = exits(&vigil(&weak, &q), 1);
    assert!(
        err.starts_with(&format!(
            "error: forbidden: you may not create quarantines in namespace {ns}"
        )) && err.contains("RBAC"),
        "{err}"
    );
    let err = exits(&vigil(&weak, &["unquarantine", "-n", &ns, "batch"]), 1);
    assert!(
        err.starts_with("error: forbidden: you may not delete"),
        "{err}"
    );
}

#[tokio::test]
async fn without_the_crds_every_command_says_to_install_them() {
    let Some(_) = k8s::cluster() else {
        return;
    };
    // A server of its own: the shared one gets the CRDs from the other tests.
    let bare = k8s::Cluster::start(k8s::binaries().unwrap(), &k8s::ApiOptions::default());
    let kc = bare.kubeconfig();
    let missing = |o: &Output, code: i32, plural: &str| {
        let err = exits(o, code);
        assert!(
            err.starts_with(&format!(
                "error: the {plural}.policy.vigil.dev CRD is not installed in the cluster at {}",
                bare.url
            )),
            "{err}"
        );
    };
    let q = [
        "quarantine",
        "-n",
        "default",
        "--workload",
        "web",
        "--reason",
        "x",
    ];
    missing(&vigil(&kc, &q), 1, "quarantines");
    missing(
        &vigil(&kc, &["unquarantine", "-n", "default", "web"]),
        1,
        "quarantines",
    );
    let e = [
        "explain",
        "--from",
        "unauthenticated",
        "--to",
        "default/web",
        "--port",
        PORT,
    ];
    missing(&vigil(&kc, &e), 2, "segments");
    // `verify` finds the pods, then needs the policies.
    let web: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }))
    .unwrap();
    // No controller-manager: the namespace's default ServiceAccount is made here.
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
    Api::<ServiceAccount>::namespaced(bare.admin(), "default")
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    Api::<Pod>::namespaced(bare.admin(), "default")
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    missing(
        &vigil(
            &kc,
            &["-n", "default", "verify", "web", "web", "--port", PORT],
        ),
        2,
        "segments",
    );
    bare.stop();
}

#[tokio::test]
async fn verify_says_what_is_wrong_with_an_edge() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let ns = shop(cluster, "cli-verify").await;
    let kc = cluster.kubeconfig();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "outsider", "labels": {"app": "outsider"}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1",
                                 "ports": [{"containerPort": 8080}]}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(cluster.admin(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let verify = |from: &str, to: &str, extra: &[&str]| {
        let mut args = vec!["-n", ns.as_str(), "verify", from, to];
        args.extend_from_slice(extra);
        vigil(&kc, &args)
    };
    let get = ["--method", "GET", "--path", "/orders/1"];

    // FROM names a pod (or a Deployment) that does not exist: exit 2, and where it looked.
    let err = exits(&verify("ghost", "pod/orders", &get), 2);
    assert!(
        err.starts_with(&format!(
            "error: no pod {ns}/ghost (kubectl -n {ns} get pods)"
        )),
        "{err}"
    );
    let err = exits(&verify("deploy/ghost", "orders", &get), 2);
    assert!(err.contains(&format!("no deployment {ns}/ghost")), "{err}");
    let err = exits(&verify("a/b/c/d", "orders", &get), 2);
    assert!(err.contains("expected NAME (a pod), TYPE/NAME"), "{err}");

    // TO outside the mesh: not enrolled, the fix says how; no proxy enforces a policy.
    let o = verify("frontend", "outsider", &get);
    exits(&o, 1);
    let t = stdout(&o);
    for needle in [
        &format!("✘ TO {ns}/outsider is in the mesh: no vigil-proxy sidecar") as &str,
        &format!("fix: enroll it: kubectl annotate namespace {ns} vigil.dev/inject=enabled"),
        &format!("kubectl -n {ns} get pod outsider -o yaml | kubectl replace --force -f -"),
        "TO's policy for GET /orders/1 on port 8080",
        "TO is outside the mesh: no proxy enforces any policy for it",
    ] {
        assert!(
            t.contains(needle),
            "{needle:?} in:
{t}"
        );
    }

    // Both enrolled, no kubelet: the proxies cannot be read (and say why), the decision is
    // still made for FROM's service account by the one evaluator, with the rule.
    let o = verify("pod/frontend", &format!("{ns}/orders"), &get);
    exits(&o, 1);
    let t = stdout(&o);
    for needle in [
        &format!(
            "✘ FROM {ns}/frontend is in the mesh: its vigil-proxy could not be read: the pod is not running"
        ) as &str,
        "✘ FROM → TO is mTLS (the proxies' own record): cannot tell",
        &format!(
            "✔ TO's policy for GET /orders/1 on port 8080 from {}: allow: allowed by policy {ns}/frontend-reads-orders rule 0",
            id(&ns, "frontend")
        ),
    ] {
        assert!(
            t.contains(needle),
            "{needle:?} in:
{t}"
        );
    }
    let json = verify("frontend", "orders", &["--port", PORT, "-o", "json"]);
    exits(&json, 1);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["caller"], id(&ns, "frontend"), "{doc}");
    assert_eq!(
        doc["decision"]["decision"], "deny",
        "opaque TCP is not GET /orders: {doc}"
    );
    assert!(doc["failed"].as_u64().unwrap() >= 3, "{doc}");
    assert!(
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "mtls" && c["outcome"] == "fail"),
        "{doc}"
    );
}

#[tokio::test]
async fn status_through_the_api_server_says_where_it_looked() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let ns = cluster.namespace("cli-status").await;
    let kc = cluster.kubeconfig();
    // No controller installed in the namespace.
    let err = exits(&vigil(&kc, &["-n", &ns, "status"]), 1);
    assert!(
        err.contains(&format!(
            "no Deployment {ns}/vigil-controller in the cluster at {}",
            cluster.url
        )) && err.contains("--controller ADDR"),
        "{err}"
    );
    // The Deployment, but no pod runs (no kubelet here).
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vigil-controller"},
        "spec": {
            "selector": {"matchLabels": {"app": "vigil"}},
            "template": {
                "metadata": {"labels": {"app": "vigil"}},
                "spec": {"containers": [{"name": "controller", "image": "example.invalid/c:1"}]},
            },
        },
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(cluster.admin(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let err = exits(&vigil(&kc, &["-n", &ns, "status"]), 1);
    assert!(
        err.contains(&format!(
            "no running pod of Deployment {ns}/vigil-controller"
        )),
        "{err}"
    );
    // An address given is asked directly, as before.
    let err = exits(
        &vigil(
            &kc,
            &[
                "status",
                "--controller",
                &format!("127.0.0.1:{}", free_port()),
            ],
        ),
        1,
    );
    assert!(
        err.starts_with("error: querying the controller at 127.0.0.1:"),
        "{err}"
    );
}

#[tokio::test]
async fn kubectl_runs_it_as_the_vigil_plugin() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let ns = shop(cluster, "cli-plugin").await;
    // What the README says: a link named kubectl-vigil on the PATH.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(bin("vigil"), dir.path().join("kubectl-vigil")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        Command::new(cluster.bin.join("kubectl"))
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", cluster.kubeconfig())
            .output()
            .unwrap()
    };
    let list = kubectl(&["plugin", "list"]);
    assert!(stdout(&list).contains("kubectl-vigil"), "{}", text(&list));
    let help = kubectl(&["vigil", "--help"]);
    exits(&help, 0);
    assert!(
        stdout(&help).contains("Usage: kubectl vigil [OPTIONS] <COMMAND>"),
        "{}",
        text(&help)
    );
    let (from, to) = (id(&ns, "frontend"), format!("{ns}/orders"));
    let o = kubectl(&[
        "vigil", "-n", &ns, "explain", "--from", &from, "--to", &to, "--port", PORT, "--method",
        "GET", "--path", "/orders",
    ]);
    exits(&o, 0);
    assert!(stdout(&o).starts_with("ALLOW: "), "{}", text(&o));
}
