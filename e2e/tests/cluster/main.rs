//! The chart on a real node (`make test-cluster`): a kubelet starts the controller and
//! the injected pods, kube-proxy routes Services, CoreDNS resolves them, and everything
//! a user does — install, enroll, write policy, quarantine, lose a pod, lose the
//! controller, upgrade, uninstall — is driven through the public interfaces only
//! (kubectl, helm, the API, HTTP from inside the pods). Needs root; see e2e/README.md.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

mod install;
mod lifecycle;
mod policy;
mod steps;

use std::{sync::Arc, time::Instant};

use vigil_e2e::{
    k8s, netns,
    node::{self, Node, NodeOptions},
};

/// One node per test; the tests that start one take turns (2 cores).
static NODE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The Kubernetes binaries, or `None` when the suite is skipped knowingly.
fn k8s_bin() -> Option<std::path::PathBuf> {
    match k8s::binaries() {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("VIGIL_SKIP_K8S_TESTS").is_some() => {
            eprintln!(
                "skipped: Kubernetes binaries unavailable ({e}) and VIGIL_SKIP_K8S_TESTS is set"
            );
            None
        }
        Err(e) => panic!(
            "{e}\nThe real-node tests need the Kubernetes binaries: run e2e/k8s/testbin/build.sh (`make test` does)"
        ),
    }
}

#[test]
fn the_user_path_on_a_real_node() {
    if !netns::root_or_skip("the_user_path_on_a_real_node") {
        return;
    }
    let Some(bin) = k8s_bin() else { return };
    let _turn = NODE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let t = Instant::now();
    let node = Node::start(
        &bin,
        &NodeOptions {
            images: node::vigil_archives(),
            ..NodeOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "node {} Ready in {:.1} s (etcd, apiserver, controller-manager, scheduler, containerd, kubelet, kube-proxy, CoreDNS; images imported)",
        node.name,
        t.elapsed().as_secs_f64()
    );
    let node = Arc::new(node);
    let n = node.clone();
    node.run(move || async move { steps::run(&n).await });
}
