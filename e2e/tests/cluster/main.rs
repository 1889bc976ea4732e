//! The chart on a real node (`make test-cluster`): a kubelet starts the controller and
//! the injected pods, kube-proxy routes Services, CoreDNS resolves them, and everything
//! a user does — install, enroll, write policy, quarantine, verify an edge and read the
//! status with `vigil`, lose a pod, lose the controller, upgrade, uninstall — is driven through the public interfaces only
//! (kubectl, helm, the API, HTTP from inside the pods). Needs root; see e2e/README.md.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

mod cli;
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

#[test]
fn a_missing_image_archive_is_named_with_how_to_make_it() {
    let Some(bin) = k8s_bin() else { return };
    let missing = std::env::temp_dir().join("vigil-no-such-image.tar");
    let err = Node::start(
        &bin,
        &NodeOptions {
            images: vec![missing.clone()],
            ..NodeOptions::default()
        },
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("make images"),
        "{err}"
    );
}

#[test]
fn a_node_that_never_becomes_ready_shows_the_kubelets_last_words() {
    if !netns::root_or_skip("a_node_that_never_becomes_ready_shows_the_kubelets_last_words") {
        return;
    }
    let Some(bin) = k8s_bin() else { return };
    let _turn = NODE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // No CNI configuration: the runtime's network never becomes ready.
    let err = Node::start(
        &bin,
        &NodeOptions {
            name: "never-ready".into(),
            cni: false,
            ready_timeout: std::time::Duration::from_secs(20),
            ..NodeOptions::default()
        },
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("did not become Ready"), "{err}");
    assert!(
        err.contains("kubelet's last log lines") && err.lines().count() > 10,
        "the kubelet's log is in the error: {err}"
    );
    assert!(
        err.to_lowercase().contains("network") || err.to_lowercase().contains("cni"),
        "the reason (no pod network) is visible: {err}"
    );
}
