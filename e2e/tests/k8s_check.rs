//! `vigil check [--pre]` against a real kube-apiserver:
//!
//! - `--pre` on a bare server passes every check; a user without RBAC fails
//!   `install-permissions` with the missing permissions and the fix; after the CRDs are
//!   there it warns that Vigil is already (partly) installed; an unreachable server exits 2;
//! - after `helm install` (real Helm) with a real controller process running as the
//!   chart's ServiceAccount (CA Secret, Lease, caBundle are its own doing), every check
//!   passes once the Deployment reports its replica ready (no kubelet: the test sets the
//!   status the kubelet and the Deployment controller would), but `proxies-in-sync`
//!   warns that the controller's /status cannot be read through the API server (no pod
//!   runs it); then each broken part fails
//!   with its fix: the Deployment not ready, a pod enrolled but not injected, a rejected
//!   policy, a stale webhook caBundle (and a controller restart mends it, as the fix says),
//!   a missing CRD.

#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use k8s_openapi::{
    api::{
        admissionregistration::v1::MutatingWebhookConfiguration,
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Namespace, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery::ApiResource,
};
use serde_json::{Value, json};
use vigil_e2e::{
    k8s,
    kube_procs::{
        ControllerPorts, Proc, controller_env, free_port, lease_holder, policy_status, ready,
        spawn, wait_for, yaml,
    },
    mesh::bin,
};

/// `vigil --kubeconfig KC check ARGS...`.
fn check(kc: &Path, args: &[&str]) -> Output {
    Command::new(bin("vigil"))
        .args(["--kubeconfig", kc.to_str().unwrap(), "check"])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Asserts the exit code; returns stdout.
fn exits(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether the webhook injected the sidecar: `vigil-proxy` among the containers, or among
/// the init containers (a native sidecar).
fn injected(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == "vigil-proxy")
    })
}

/// Creates `pod`, until the webhook's answer is `want` (`injected` or not). The API
/// server learns of a changed webhook configuration or namespace through its informers,
/// a moment after the write: a pod created in that moment is deleted and created again.
async fn create_until(pods: &Api<Pod>, pod: &Pod, want: bool) {
    let name = pod.metadata.name.clone().unwrap();
    wait_for(
        &format!("pod {name} created with injected={want}"),
        Duration::from_secs(30),
        || async {
            let _ = pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            wait_for("the old pod gone", Duration::from_secs(30), || async {
                pods.get_opt(&name).await.unwrap().is_none().then_some(())
            })
            .await;
            let created = pods.create(&PostParams::default(), pod).await.unwrap();
            (injected(&created) == want).then_some(())
        },
    )
    .await;
}

/// Asserts `out` has the line `line`, followed by `    fix: <fix...>` when `fix` is given.
fn has(out: &str, line: &str, fix: Option<&str>) {
    let lines: Vec<&str> = out.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no line starting {line:?} in:\n{out}"));
    if let Some(fix) = fix {
        let next = lines.get(i + 1).copied().unwrap_or_default();
        assert!(
            next.starts_with("    fix: ") && next.contains(fix),
            "the fix under {line:?} should contain {fix:?}:\n{out}"
        );
    }
}

/// `check -o json`: the outcome of every check by id (the last one of an id wins).
fn outcomes(kc: &Path, args: &[&str]) -> (i32, Vec<(String, String)>) {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let o = check(kc, &all);
    let report: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let checks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (o.status.code().unwrap(), checks)
}

#[tokio::test]
async fn pre_install_checks_on_a_bare_cluster() {
    let Some(_) = k8s::cluster() else {
        return;
    };
    // A server of its own: the shared one gets Vigil installed by the other test.
    let bare = k8s::Cluster::start(k8s::binaries().unwrap(), &k8s::ApiOptions::default());
    let kc = bare.kubeconfig();

    let out = exits(&check(&kc, &["--pre"]), 0);
    has(
        &out,
        "✔ API server reachable, Kubernetes version supported: Kubernetes v1.36",
        None,
    );
    has(
        &out,
        "✔ native sidecars (restartable init containers)",
        None,
    );
    has(
        &out,
        "✔ admission webhooks (admissionregistration.k8s.io/v1)",
        None,
    );
    has(&out, "✔ permission to install the chart", None);
    has(&out, "✔ Vigil not installed yet", None);
    assert!(out.ends_with("5 checks: 0 failed, 0 warnings\n"), "{out}");
    let (code, json) = outcomes(&kc, &["--pre"]);
    assert_eq!(code, 0);
    let ids: Vec<&str> = json.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "api-server",
            "native-sidecars",
            "admission-webhooks",
            "install-permissions",
            "not-installed"
        ]
    );
    assert!(json.iter().all(|(_, o)| o == "ok"), "{json:?}");
    // `--json`, as the other commands still accept it, is `-o json`.
    let legacy: Value = serde_json::from_slice(&check(&kc, &["--pre", "--json"]).stdout).unwrap();
    assert_eq!(legacy["checks"].as_array().unwrap().len(), 5, "{legacy}");
    assert_eq!(legacy["failed"], 0);

    // Without --pre on a cluster without Vigil: each part fails and says to install it.
    let out = exits(&check(&kc, &[]), 1);
    has(
        &out,
        "✘ CRD segments.policy.vigil.dev Established: not installed",
        Some("kubectl apply -f charts/vigil/crds/"),
    );
    has(
        &out,
        "✘ controller Deployment ready: no Deployment vigil-system/vigil-controller",
        Some("install Vigil: helm install vigil charts/vigil -n vigil-system --create-namespace"),
    );
    has(
        &out,
        "✘ CA Secret present: no Secret vigil-system/vigil-ca",
        None,
    );
    has(
        &out,
        "✘ injector webhook configured: no MutatingWebhookConfiguration vigil-injector",
        Some("install Vigil"),
    );

    // A user without any binding may not install anything.
    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("weak");
    bare.write_kubeconfig_for(k8s::CONTROLLER_TOKEN, &weak);
    let out = exits(&check(&weak, &["--pre"]), 1);
    has(
        &out,
        "✘ permission to install the chart: you may not create customresourcedefinitions.apiextensions.k8s.io, clusterroles.rbac.authorization.k8s.io,",
        Some("install as a cluster admin"),
    );
    assert!(out.contains("deployments.apps in vigil-system"), "{out}");
    // `-n` is the release namespace.
    let out = exits(&check(&weak, &["--pre", "-n", "mesh"]), 1);
    assert!(out.contains("deployments.apps in mesh"), "{out}");

    // The CRDs are there already: a warning (exit 0) that says to upgrade instead.
    k8s::install_crds(&bare.admin()).await;
    let out = exits(&check(&kc, &["--pre"]), 0);
    has(
        &out,
        "! Vigil not installed yet: already there: CRD segments.policy.vigil.dev",
        Some("helm upgrade vigil charts/vigil -n vigil-system"),
    );

    // A server that does not answer: exit 2, one error line.
    let dead = std::fs::read_to_string(&kc)
        .unwrap()
        .replace(&bare.url, &format!("https://127.0.0.1:{}", free_port()));
    let dead_kc = dir.path().join("dead");
    std::fs::write(&dead_kc, dead).unwrap();
    let o = check(&dead_kc, &["--pre"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .starts_with("error: cannot reach the API server at https://127.0.0.1:"),
        "{}",
        text(&o)
    );

    bare.stop();
}

/// The chart's controller process (as the chart's ServiceAccount), state in `state`.
fn controller(dir: &Path, ports: &ControllerPorts) -> Proc {
    let kc = dir.join("controller.kubeconfig");
    let env = controller_env("vigil-controller-check", &kc, &dir.join("state"), ports);
    spawn("controller", "vigil-controller", &[], &env, dir)
}

fn access_policy(ns: &str, name: &str, rules: &str) -> DynamicObject {
    let mut p: DynamicObject = yaml(&format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}}}\nspec:\n  target: {{podSelector: {{matchLabels: {{app: web}}}}}}\n  action: Allow\n  from: [{{namespace: {ns}}}]\n{rules}"
    ));
    p.metadata.namespace = Some(ns.to_string());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_vigil_is_healthy_and_each_broken_part_fails_with_its_fix() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let admin = cluster.admin();
    let kc = cluster.kubeconfig();
    k8s::install_crds(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    cluster.write_kubeconfig_for(
        k8s::CONTROLLER_TOKEN,
        &dir.path().join("controller.kubeconfig"),
    );
    let ports = ControllerPorts::free();
    cluster.install_chart(
        &format!("https://127.0.0.1:{}/inject", ports.webhook),
        "Fail",
    );
    let mut ctl = controller(dir.path(), &ports);
    ready("the controller", ports.admin_addr()).await;

    // The controller's own doing: the CA Secret (before ready), the Lease, the caBundle.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "vigil-system");
    wait_for("the Lease", Duration::from_secs(30), || {
        lease_holder(&leases, "vigil-controller")
    })
    .await;
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let bundle = || async {
        webhooks.get("vigil-injector").await.ok()?.webhooks?[0]
            .client_config
            .ca_bundle
            .clone()
    };
    let good_bundle = wait_for("the caBundle", Duration::from_secs(30), bundle).await;

    // Nothing runs the Deployment's pod here: not ready, and the fix says where to look.
    let out = exits(&check(&kc, &[]), 1);
    has(
        &out,
        "✘ controller Deployment ready: 0/1 replicas of vigil-system/vigil-controller ready",
        Some("kubectl -n vigil-system logs deploy/vigil-controller"),
    );
    has(
        &out,
        "✔ controller leader elected (Lease held and renewed): held by vigil-controller-check",
        None,
    );

    // What the kubelet and the Deployment controller would report for the running replica.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "vigil-system");
    deployments
        .patch_status(
            "vigil-controller",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1}})),
        )
        .await
        .unwrap();

    // Healthy: every check passes.
    let out = exits(&check(&kc, &[]), 0);
    for line in [
        "✔ CRD segments.policy.vigil.dev Established",
        "✔ CRD accesspolicies.policy.vigil.dev Established",
        "✔ CRD quarantines.policy.vigil.dev Established",
        "✔ controller Deployment ready: 1/1 replicas ready",
        "✔ controller leader elected",
        "✔ CA Secret present: 1 root(s)",
        "✔ CA root not expiring: expires at ",
        "✔ CA issuer not expiring: expires at ",
        "✔ injector webhook configured: vigil-injector, failurePolicy Fail",
        "✔ injector webhook reachable: https://127.0.0.1:",
        "✔ webhook caBundle holds the CA root",
        "✔ enrolled pods injected",
        "✔ policies accepted",
        "✔ accepted policies enforced by their proxies",
    ] {
        has(&out, line, None);
    }
    // The controller runs here as a local process, not as the Deployment's pod: its
    // /status cannot be read through the API server, which is a warning with the way to
    // ask it by hand, not a failure.
    has(
        &out,
        "! enrolled pods' proxies in sync: cannot read the controller's /status through the API server: no running pod of Deployment vigil-system/vigil-controller",
        Some("check by hand: vigil status --controller ADDR"),
    );
    assert!(out.ends_with("15 checks: 0 failed, 1 warnings\n"), "{out}");
    let (code, json) = outcomes(&kc, &[]);
    assert_eq!(code, 0);
    assert!(
        json.iter().all(|(id, o)| o
            == if id == "proxies-in-sync" {
                "warn"
            } else {
                "ok"
            }),
        "{json:?}"
    );

    // A pod created before its namespace was enrolled: enrolled, not injected. It belongs
    // to a Deployment (through its ReplicaSet), so the fix restarts the Deployment.
    let ns = cluster.namespace("check-pods").await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "web-5d4f8-abcde",
            "labels": {"app": "web", "pod-template-hash": "5d4f8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f8",
                                 "uid": "00000000-0000-0000-0000-000000000001", "controller": true}],
        },
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert!(!injected(&created), "not enrolled yet: not injected");
    Api::<Namespace>::all(admin.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"vigil.dev/inject": "enabled"}}})),
        )
        .await
        .unwrap();
    // A pod created now is injected by the real webhook, and is no finding.
    let mut after = pod.clone();
    after.metadata = yaml("name: web-after");
    create_until(&pods, &after, true).await;
    let out = exits(&check(&kc, &[]), 1);
    has(
        &out,
        &format!(
            "✘ enrolled pods injected: enrolled but without the vigil-proxy sidecar (outside the mesh): {ns}/web-5d4f8-abcde"
        ),
        Some(&format!(
            "restart it so the webhook injects it: kubectl -n {ns} rollout restart deployment/web"
        )),
    );
    assert!(!out.contains("web-after"), "{out}");
    assert!(out.ends_with("1 failed, 1 warnings\n"), "{out}");
    pods.delete("web-5d4f8-abcde", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();

    // The webhook does not see the namespace (its namespaceSelector wants a label this
    // one lacks): a restart alone would not inject, and the fix says what to change.
    let selector = |sel: Value| {
        let webhooks = webhooks.clone();
        async move {
            let mut config = webhooks.get("vigil-injector").await.unwrap();
            config.webhooks.as_mut().unwrap()[0].namespace_selector =
                Some(serde_json::from_value(sel).unwrap());
            webhooks
                .replace("vigil-injector", &PostParams::default(), &config)
                .await
                .unwrap();
        }
    };
    let default_selector = serde_json::to_value(
        webhooks
            .get("vigil-injector")
            .await
            .unwrap()
            .webhooks
            .unwrap()[0]
            .namespace_selector
            .clone(),
    )
    .unwrap();
    selector(json!({"matchLabels": {"mesh": "on"}})).await;
    let mut lonely = pod.clone();
    lonely.metadata = yaml("name: lonely");
    create_until(&pods, &lonely, false).await;
    let out = exits(&check(&kc, &[]), 1);
    has(
        &out,
        &format!(
            "✘ enrolled pods injected: enrolled but without the vigil-proxy sidecar (outside the mesh): {ns}/lonely"
        ),
        Some(&format!(
            "the webhook's namespaceSelector does not select namespace {ns}: label it to match (kubectl label namespace {ns} KEY=VALUE)"
        )),
    );
    selector(default_selector).await;
    pods.delete("lonely", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();

    // A policy the compiler rejects (a bad regex): its status says why, and so does check.
    let ap = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.vigil.dev", "v1alpha1", "AccessPolicy"),
        "accesspolicies",
    );
    let policies: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &ap);
    let broken = access_policy(
        &ns,
        "broken",
        "  rules: [{headers: [{name: x-tenant, regex: \"(unclosed\"}]}]\n",
    );
    policies
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    wait_for("the rejected status", Duration::from_secs(30), || {
        policy_status(&policies, "broken", "False")
    })
    .await;
    let out = exits(&check(&kc, &[]), 1);
    has(
        &out,
        &format!("✘ AccessPolicy {ns}/broken accepted: rejected (Invalid): "),
        Some(&format!("kubectl -n {ns} edit accesspolicy broken")),
    );
    policies
        .delete("broken", &DeleteParams::default())
        .await
        .unwrap();

    // A stale caBundle (another CA's certificate): the API server would reject the
    // webhook's certificate. The fix — restart the controller — writes it again.
    let stale = json!({"webhooks": [{"name": "inject.vigil.dev",
        "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"url": format!("https://127.0.0.1:{}/inject", ports.webhook),
                         "caBundle": base64(cluster.ca_pem.as_bytes())}}]});
    webhooks
        .patch(
            "vigil-injector",
            &PatchParams::default(),
            &Patch::Merge(&stale),
        )
        .await
        .unwrap();
    let out = exits(&check(&kc, &[]), 1);
    has(
        &out,
        "✘ webhook caBundle holds the CA root: stale: none of its 1 certificate(s) is the CA's active root",
        Some("kubectl -n vigil-system rollout restart deployment/vigil-controller"),
    );
    drop(ctl);
    ctl = controller(dir.path(), &ports);
    ready("the restarted controller", ports.admin_addr()).await;
    wait_for(
        "the caBundle rewritten",
        Duration::from_secs(30),
        || async { (bundle().await? == good_bundle).then_some(()) },
    )
    .await;
    let (_, json) = outcomes(&kc, &[]);
    assert!(
        json.contains(&("webhook-ca-bundle".into(), "ok".into())),
        "{json:?}"
    );

    // A CRD deleted: not installed, and how to put it back.
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    crds.delete("quarantines.policy.vigil.dev", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the CRD gone", Duration::from_secs(30), || async {
        crds.get_opt("quarantines.policy.vigil.dev")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let out = exits(&check(&kc, &[]), 1);
    has(
        &out,
        "✘ CRD quarantines.policy.vigil.dev Established: not installed",
        Some("kubectl apply -f charts/vigil/crds/"),
    );
    assert!(out.ends_with("1 failed, 1 warnings\n"), "{out}");
    k8s::install_crds(&admin).await;
    drop(ctl);
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
