//! Two controller replicas against a real kube-apiserver: they start together and end up
//! with one CA (whoever stores the Secret first wins; the other loads it — never two
//! CAs), exactly one leads (Lease), and when the leader dies the other takes over and
//! keeps CRD status current. Then the apiserver itself crashes and comes back: the
//! surviving replica's watches reconnect and new objects still get their status.
//!
//! Its own test binary (so its own apiserver): it kills things.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{
    Api,
    api::{DynamicObject, GroupVersionKind, PostParams},
    discovery::ApiResource,
};
use vigil_e2e::{
    k8s,
    kube_procs::{
        ControllerPorts, controller_env, lease_holder, policy_status, ready, spawn, wait_for, yaml,
    },
};

fn policy(ns: &str, name: &str) -> DynamicObject {
    let mut p: DynamicObject = yaml(&format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}}}\nspec: {{target: {{segment: web}}, action: Allow, from: [{{namespace: {ns}}}]}}\n"
    ));
    p.metadata.namespace = Some(ns.to_string());
    p
}

async fn accepted(api: &Api<DynamicObject>, name: &str, limit: Duration) {
    wait_for(&format!("{name} to get status Accepted"), limit, || {
        policy_status(api, name, "True")
    })
    .await;
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    lease_holder(leases, "vigil-controller").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_ca_fail_over_and_survive_an_apiserver_crash() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let admin = cluster.admin();
    k8s::install_crds(&admin).await;
    cluster.install_chart("https://127.0.0.1:1/inject", "Ignore");
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("controller.kubeconfig");
    cluster.write_kubeconfig_for(k8s::CONTROLLER_TOKEN, &kc);

    // Two replicas at once, each with an empty state directory (as two new pods).
    let (pa, pb) = (ControllerPorts::free(), ControllerPorts::free());
    let (sa, sb) = (dir.path().join("state-a"), dir.path().join("state-b"));
    let a = spawn(
        "replica-a",
        "vigil-controller",
        &[],
        &controller_env("replica-a", &kc, &sa, &pa),
        dir.path(),
    );
    let b = spawn(
        "replica-b",
        "vigil-controller",
        &[],
        &controller_env("replica-b", &kc, &sb, &pb),
        dir.path(),
    );
    ready("replica a", pa.admin_addr()).await;
    ready("replica b", pb.admin_addr()).await;

    // One CA: both state directories hold exactly the Secret's files.
    let secret = Api::<Secret>::namespaced(admin.clone(), "vigil-system")
        .get("vigil-ca")
        .await
        .unwrap();
    let stored = secret.data.unwrap();
    for state in [&sa, &sb] {
        for (name, bytes) in &stored {
            let local = std::fs::read(state.join(name)).unwrap_or_default();
            assert_eq!(
                &local,
                &bytes.0,
                "{} differs from the Secret in {}",
                name,
                state.display()
            );
        }
    }

    // One leader.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "vigil-system");
    let leader = wait_for("a leader", Duration::from_secs(20), || holder(&leases)).await;
    assert!(leader == "replica-a" || leader == "replica-b", "{leader}");
    let ns = cluster.namespace("ha").await;
    let ap = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.vigil.dev", "v1alpha1", "AccessPolicy"),
        "accesspolicies",
    );
    let policies: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &ap);
    policies
        .create(&PostParams::default(), &policy(&ns, "before"))
        .await
        .unwrap();
    accepted(&policies, "before", Duration::from_secs(20)).await;

    // The leader dies; the other takes over within the lease duration and writes status.
    let (survivor, survivor_ports) = if leader == "replica-a" {
        drop(a);
        (b, pb)
    } else {
        drop(b);
        (a, pa)
    };
    let killed = Instant::now();
    let next = wait_for(
        "the other replica to take the lease",
        Duration::from_secs(40),
        || async { holder(&leases).await.filter(|h| *h != leader) },
    )
    .await;
    eprintln!(
        "leader {leader} killed; {next} leads after {:?}",
        killed.elapsed()
    );
    policies
        .create(&PostParams::default(), &policy(&ns, "after-failover"))
        .await
        .unwrap();
    accepted(&policies, "after-failover", Duration::from_secs(20)).await;

    // The apiserver crashes and restarts: watches break; the survivor re-lists and goes on.
    cluster.restart_apiserver();
    let admin = cluster.admin();
    let policies: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &ap);
    policies
        .create(&PostParams::default(), &policy(&ns, "after-restart"))
        .await
        .unwrap();
    accepted(&policies, "after-restart", Duration::from_secs(60)).await;
    ready(
        "the survivor after the apiserver restart",
        survivor_ports.admin_addr(),
    )
    .await;
    // The index holds each policy once (no duplicates from the re-list).
    let (_, status) = vigil_e2e::apps::get(survivor_ports.admin_addr(), "/status")
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let text = status.to_string();
    for name in ["before", "after-failover", "after-restart"] {
        assert_eq!(
            text.matches(&format!("{ns}/{name}\"")).count(),
            1,
            "{name} once in {status:#}"
        );
    }
    drop(survivor);
}
