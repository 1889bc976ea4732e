//! Steps 6 and 7: a pod deleted under load, the controller lost; pod start times.

use std::{
    cell::RefCell,
    collections::BTreeSet,
    rc::Rc,
    time::{Duration, Instant},
};

use vigil_e2e::workloads;

use crate::{
    policy::orders_url,
    steps::{Ctx, SHOP, within},
};

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

/// One request of the steady stream: when it started (since the stream began), what came
/// back, who answered.
#[derive(Clone, Debug)]
struct Sample {
    started: Duration,
    status: Option<u16>,
    instance: Option<String>,
    error: Option<String>,
}

/// Step 6: with orders at two replicas, one pod is deleted under a steady request stream
/// from frontend: its in-flight requests finish, callers stop sending to it, the new pod
/// takes over, and not one request fails.
pub(crate) async fn pod_deletion_under_load(ctx: &Ctx<'_>) {
    ctx.kubectl(&["-n", SHOP, "scale", "deployment/orders", "--replicas=2"]);
    ctx.deployment_ready(SHOP, "orders", Duration::from_secs(120))
        .await;
    let before: BTreeSet<String> = ctx
        .ready_pods(SHOP, "orders")
        .await
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(before.len(), 2, "{before:?}");
    let (_, fe) = ctx.pod(SHOP, "frontend").await;
    // Requests are balanced per request over the Service's ready endpoints: both answer.
    within("both replicas answer", Duration::from_secs(15), || {
        let fe = fe.clone();
        async move {
            let mut seen = BTreeSet::new();
            for _ in 0..10 {
                let c = workloads::call(&fe, "GET", &orders_url("/orders/1")).await;
                seen.extend(c.instance());
            }
            (seen.len() == 2).then_some(())
        }
    })
    .await;

    let samples: Rc<RefCell<Vec<Sample>>> = Rc::default();
    let stop = Rc::new(std::cell::Cell::new(false));
    let t0 = Instant::now();
    let local = tokio::task::LocalSet::new();
    for _ in 0..4 {
        let (fe, samples, stop) = (fe.clone(), samples.clone(), stop.clone());
        local.spawn_local(async move {
            while !stop.get() {
                let started = t0.elapsed();
                // Slow requests, so some are in flight when the pod is deleted.
                let c = workloads::call(&fe, "GET", &orders_url("/orders/load?delay_ms=150")).await;
                samples.borrow_mut().push(Sample {
                    started,
                    status: c.status,
                    instance: c.instance(),
                    error: c.error.clone(),
                });
            }
        });
    }
    let victim = before.iter().next().cloned().unwrap();
    let deleted_at = local
        .run_until(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let at = t0.elapsed();
            ctx.kubectl(&["-n", SHOP, "delete", "pod", &victim, "--wait=false"]);
            // The replacement is Ready, and has had time to take traffic.
            within(
                "the Deployment replaces the pod",
                Duration::from_secs(60),
                || async {
                    let now: BTreeSet<String> = ctx
                        .ready_pods(SHOP, "orders")
                        .await
                        .into_iter()
                        .map(|p| p.0)
                        .collect();
                    (now.len() == 2 && !now.contains(&victim)).then_some(())
                },
            )
            .await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.set(true);
            // Let the workers finish their last request.
            tokio::time::sleep(Duration::from_millis(800)).await;
            at
        })
        .await;
    let samples = samples.borrow().clone();
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.status != Some(200)).collect();
    let why: Vec<String> = failed
        .iter()
        .map(|s| {
            format!(
                "started {:?}: {:?} {}",
                s.started,
                s.status,
                s.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the pod deletion (deleted at {deleted_at:?}): {why:#?}",
        failed.len(),
        samples.len()
    );
    let by_victim: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.instance.as_deref() == Some(victim.as_str()))
        .collect();
    let last_to_victim = by_victim
        .iter()
        .map(|s| s.started)
        .max()
        .unwrap_or_default();
    assert!(
        by_victim.iter().any(|s| s.started < deleted_at),
        "the victim served before it was deleted"
    );
    assert!(
        last_to_victim < deleted_at + Duration::from_secs(2),
        "callers stopped sending to the deleted pod: last request to it started {:?} after the delete",
        last_to_victim.saturating_sub(deleted_at)
    );
    let new_pods: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.instance.as_deref())
        .filter(|i| !before.contains(*i))
        .collect();
    assert_eq!(new_pods.len(), 1, "the new pod took over: {new_pods:?}");
    let first_new = samples
        .iter()
        .filter(|s| s.instance.as_deref().is_some_and(|i| !before.contains(i)))
        .map(|s| s.started)
        .min()
        .unwrap_or_default();
    println!(
        "6. pod deletion under load: {} requests (4 concurrent, 150 ms each), 0 failed; the deleted pod's last request started {:.0} ms after the delete (in-flight ones finished), the new pod answered from {:.1} s after the delete",
        samples.len(),
        last_to_victim.saturating_sub(deleted_at).as_secs_f64() * 1e3,
        first_new.saturating_sub(deleted_at).as_secs_f64()
    );
}

/// Step 7: the controller pod killed: the proxies keep enforcing the last policy; the new
/// controller pod takes over; a policy change after that reaches the proxies.
pub(crate) async fn controller_loss(ctx: &Ctx<'_>) {
    let selector = "app.kubernetes.io/name=vigil";
    let old = ctx.ready_pods_by("vigil-system", selector).await;
    assert_eq!(old.len(), 1, "{old:?}");
    let old = old[0].0.clone();
    let (_, fe) = ctx.pod(SHOP, "frontend").await;
    let t0 = Instant::now();
    ctx.kubectl(&[
        "-n",
        "vigil-system",
        "delete",
        "pod",
        &old,
        "--grace-period=0",
        "--force",
    ]);
    // Until a new controller is Ready, the last policy holds, both ways.
    let mut checks = 0;
    let replaced = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no new controller pod within 120 s"
        );
        let get = workloads::call(&fe, "GET", &orders_url("/orders/1")).await;
        assert_eq!(get.status, Some(200), "allowed during the outage: {get:?}");
        let post = workloads::call(&fe, "POST", &orders_url("/orders/1")).await;
        assert_eq!(post.status, Some(403), "denied during the outage: {post:?}");
        checks += 1;
        let now = ctx.ready_pods_by("vigil-system", selector).await;
        if now.iter().any(|(name, _)| *name != old) {
            break t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A change made now must reach the proxies through the new controller.
    ctx.apply(&crate::policy::access_policy("GET, POST"));
    let (_, propagated) = within(
        "a policy change after the restart reaches the proxies",
        Duration::from_secs(30),
        || {
            let fe = fe.clone();
            async move {
                let c = workloads::call(&fe, "POST", &orders_url("/orders/1")).await;
                (c.status == Some(200)).then_some(())
            }
        },
    )
    .await;
    println!(
        "7. controller pod killed: {checks} allow/deny checks held the last policy until the new controller was Ready {:.1} s later; a policy change then reached the proxies in {:.0} ms",
        replaced.as_secs_f64(),
        propagated.as_secs_f64() * 1e3
    );
}
