//! Steps 1, 2 and 8: install, enroll, upgrade and uninstall.

use std::time::{Duration, Instant};

use vigil_e2e::{chart, workloads};

use crate::steps::{Ctx, SHOP};

/// Step 1: `helm install` with the images from the archives (`pullPolicy: Never`); the
/// controller becomes Ready through its real probes; the CRDs are Established.
pub(crate) async fn install(ctx: &Ctx<'_>) {
    // A value the schema refuses: a clear error naming it, and nothing installed.
    let (ok, refused) = ctx.node.cluster().helm(&[
        "install",
        "vigil",
        &chart::chart_dir().display().to_string(),
        "-n",
        "vigil-system",
        "--create-namespace",
        "--set",
        "image.pullPolicy=Sometimes",
    ]);
    assert!(
        !ok && refused.contains("schema") && refused.contains("pullPolicy"),
        "the schema refuses image.pullPolicy=Sometimes with its name: {refused}"
    );
    let (installed, _) = ctx
        .node
        .cluster()
        .helm(&["status", "vigil", "-n", "vigil-system"]);
    assert!(!installed, "a refused install leaves no release");
    let t = Instant::now();
    let out = ctx.node.cluster().helm_ok(&[
        "install",
        "vigil",
        &chart::chart_dir().display().to_string(),
        "-n",
        "vigil-system",
        "--create-namespace",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "injector.imagePullPolicy=Never",
    ]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    ctx.deployment_ready("vigil-system", "vigil-controller", Duration::from_secs(120))
        .await;
    for crd in ["segments", "accesspolicies", "quarantines"] {
        ctx.kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{crd}.policy.vigil.dev"),
            "--timeout=30s",
        ]);
    }
    println!(
        "1. helm install: a value the schema refuses is named and nothing installed; the controller Ready (its /ready probe) {:.1} s after install started; 3 CRDs Established",
        t.elapsed().as_secs_f64()
    );
}

/// Step 2: An enrolled namespace with frontend and orders: both injected (vigil-init and the
/// sidecar), Ready, each sidecar holding an SVID for its pod's service account.
pub(crate) async fn enroll(ctx: &Ctx<'_>) {
    ctx.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {SHOP}, annotations: {{vigil.dev/inject: enabled}}}}\n"
    ));
    let t = Instant::now();
    ctx.apply(&format!(
        "{}---\n{}---\n{}",
        workloads::deployment(SHOP, "orders", 1, &[]),
        workloads::deployment(SHOP, "frontend", 1, &[]),
        workloads::service(SHOP, "orders")
    ));
    ctx.deployment_ready(SHOP, "orders", Duration::from_secs(120))
        .await;
    ctx.deployment_ready(SHOP, "frontend", Duration::from_secs(120))
        .await;
    let both = t.elapsed();
    for app in ["frontend", "orders"] {
        let (name, ip) = ctx.pod(SHOP, app).await;
        let init = ctx.kubectl(&[
            "-n",
            SHOP,
            "get",
            "pod",
            &name,
            "-o",
            "jsonpath={range .spec.initContainers[*]}{.name}={.restartPolicy} {end}",
        ]);
        assert_eq!(
            init.trim(),
            "vigil-init= vigil-proxy=Always",
            "{app}: the iptables init container, then the proxy as a native sidecar"
        );
        let config = vigil_e2e::apps::get(format!("{ip}:4191").parse().unwrap(), "/config")
            .await
            .unwrap_or_else(|e| panic!("{app}'s proxy admin: {e}"));
        let doc: serde_json::Value = serde_json::from_str(&config.1).unwrap();
        assert_eq!(
            doc["identity"]["id"],
            format!("spiffe://cluster.local/ns/{SHOP}/sa/{app}"),
            "{app}'s SVID names its pod's service account"
        );
    }
    // Pod start time with and without the sidecar: one pod each, from create to Ready.
    let plain = crate::lifecycle::start_time(ctx, "plain-start", false).await;
    let meshed = crate::lifecycle::start_time(ctx, "meshed-start", true).await;
    println!(
        "2. frontend and orders injected and Ready {:.1} s after apply, SVIDs for shop/frontend and shop/orders; pod start (create -> Ready): {:.2} s without the sidecar, {:.2} s with it",
        both.as_secs_f64(),
        plain.as_secs_f64(),
        meshed.as_secs_f64()
    );
}

/// Step 8: `helm upgrade` with a changed value rolls the controller; `helm uninstall`
/// leaves nothing the chart made. What stays is what the README says stays: the CA
/// Secret (so a reinstall keeps every workload's trust), the Lease the controller made
/// for leader election, the CRDs (and with them the policies), and the namespace.
pub(crate) async fn upgrade_and_uninstall(ctx: &Ctx<'_>) {
    let t = Instant::now();
    let out = ctx.node.cluster().helm_ok(&[
        "upgrade",
        "vigil",
        &chart::chart_dir().display().to_string(),
        "-n",
        "vigil-system",
        "--reuse-values",
        "--set",
        "logLevel=debug",
    ]);
    assert!(out.contains("REVISION: 2"), "{out}");
    ctx.deployment_ready("vigil-system", "vigil-controller", Duration::from_secs(120))
        .await;
    let env = ctx.kubectl(&[
        "-n",
        "vigil-system",
        "get",
        "deployment",
        "vigil-controller",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"VIGIL_CONTROLLER_LOG\")].value}",
    ]);
    assert_eq!(
        env.trim(),
        "debug",
        "the changed value reached the Deployment"
    );
    let (_, fe) = ctx.pod(SHOP, "frontend").await;
    let c = workloads::call(&fe, "GET", &crate::policy::orders_url("/orders/1")).await;
    assert_eq!(
        c.status,
        Some(200),
        "the mesh works after the upgrade: {c:?}"
    );
    let upgraded = t.elapsed();

    ctx.node.cluster().helm_ok(&[
        "uninstall",
        "vigil",
        "-n",
        "vigil-system",
        "--wait",
        "--timeout",
        "120s",
    ]);
    let namespaced = ctx.kubectl(&[
        "api-resources",
        "--verbs=list",
        "--namespaced",
        "-o",
        "name",
    ]);
    let kinds: Vec<&str> = namespaced
        .lines()
        .map(str::trim)
        // Events record what happened; v1 Endpoints mirror EndpointSlices (deprecated).
        .filter(|k| !k.is_empty() && !k.starts_with("events") && *k != "endpoints")
        .collect();
    let kinds = kinds.join(",");
    let want = [
        "lease.coordination.k8s.io/vigil-controller",
        "secret/vigil-ca",
    ];
    // The controller's pods, ReplicaSets and EndpointSlices go by garbage collection.
    let deadline = Instant::now() + Duration::from_secs(60);
    let left = loop {
        let out = ctx.kubectl(&["-n", "vigil-system", "get", &kinds, "-o", "name"]);
        let mut left: Vec<String> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            // Made by Kubernetes itself in every namespace: not Vigil's.
            .filter(|o| *o != "configmap/kube-root-ca.crt" && *o != "serviceaccount/default")
            .map(String::from)
            .collect();
        left.sort_unstable();
        if left == want || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(left, want, "what helm uninstall leaves in vigil-system");
    let cluster_scoped = ctx.kubectl(&[
        "get",
        "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations",
        "-o",
        "name",
    ]);
    let stray: Vec<&str> = cluster_scoped
        .lines()
        .filter(|l| l.contains("vigil"))
        .collect();
    assert!(stray.is_empty(), "cluster-scoped objects left: {stray:?}");
    let crds = ctx.kubectl(&["get", "crds", "-o", "name"]);
    assert_eq!(
        crds.lines()
            .filter(|l| l.contains("policy.vigil.dev"))
            .count(),
        3,
        "the CRDs stay (helm never deletes CRDs): {crds}"
    );
    println!(
        "8. helm upgrade (logLevel=debug) rolled the controller in {:.1} s, traffic still allowed; helm uninstall left only the CA Secret, the leader Lease and the 3 CRDs",
        upgraded.as_secs_f64()
    );
}
