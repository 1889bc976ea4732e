//! Steps 6 and 7: a pod deleted under load, the controller lost; pod start times.

use std::time::Duration;

use vigil_e2e::workloads;

use crate::steps::{Ctx, SHOP};

/// Creates a one-replica Deployment `name` (in the enrolled namespace when `meshed`, in
/// a plain one otherwise), returns how long its pod took from create to Ready, and
/// deletes it.
pub(crate) async fn start_time(ctx: &Ctx<'_>, name: &str, meshed: bool) -> Duration {
    let ns = if meshed { SHOP } else { "plain" };
    if !meshed {
        ctx.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
        ));
    }
    ctx.apply(&workloads::deployment(ns, name, 1, &[]));
    let took = ctx
        .deployment_ready(ns, name, Duration::from_secs(120))
        .await;
    let (pod, _) = ctx.pod(ns, name).await;
    let sidecars = ctx.kubectl(&[
        "-n",
        ns,
        "get",
        "pod",
        &pod,
        "-o",
        "jsonpath={.spec.initContainers[*].name}",
    ]);
    assert_eq!(
        sidecars.contains("vigil-proxy"),
        meshed,
        "{ns}/{pod} injected: {sidecars:?}"
    );
    ctx.kubectl(&["-n", ns, "delete", "deployment", name, "--wait=false"]);
    took
}

/// Step 6: A pod deleted under a steady request stream.
pub(crate) async fn pod_deletion_under_load(ctx: &Ctx<'_>) {
    let _ = ctx;
}

/// Step 7: The controller pod killed.
pub(crate) async fn controller_loss(ctx: &Ctx<'_>) {
    let _ = ctx;
}
