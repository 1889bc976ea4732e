//! The local policy directory is reloaded once per change, and never because someone
//! (the reload itself included) merely read it.
//!
//! Before the fix, the watcher passed inotify's open events through, so each reload's own
//! reads scheduled the next one: ~17 reloads a second, forever, after the first edit.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use support::*;

/// Reads every file of `dir`, as an editor, a backup or `cat` would, for `period`, and
/// checks after each pass that the reload counter stays at `expected`.
async fn read_for(plane: &Plane, dir: &Path, period: Duration, expected: u64) {
    let start = Instant::now();
    let mut passes = 0u32;
    while start.elapsed() < period {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let _ = std::fs::read(&path).unwrap();
            }
        }
        passes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            reloads(plane),
            expected,
            "a reload without a change, after {passes} reads of the directory in {:?}",
            start.elapsed()
        );
    }
}

fn reloads(plane: &Plane) -> u64 {
    plane.ctl().state.metrics.source_reloads.get()
}

fn generation(plane: &Plane) -> u64 {
    plane.ctl().state.index().generation()
}

async fn workloads(plane: &Plane) -> Vec<String> {
    plane.status().await["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workload"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_edit_is_one_reload_and_reading_the_directory_is_none() {
    let plane = Plane::start().await;
    let dir = plane.policy_dir();
    assert_eq!(reloads(&plane), 0, "nothing changed since the start");

    // A new file, written the way editors and kubectl do (temporary file + rename).
    plane.write(
        "shop.yaml",
        &workload("orders", "127.0.0.1:1".parse().unwrap()),
    );
    eventually(20, "the first reload", async || reloads(&plane) >= 1).await;
    assert_eq!(reloads(&plane), 1, "one change, one reload");
    assert_eq!(workloads(&plane).await, ["shop/orders"]);
    let g1 = generation(&plane);
    read_for(&plane, &dir, Duration::from_secs(3), 1).await;
    assert_eq!(generation(&plane), g1);

    // The same file edited in place (open, truncate, write, close).
    let two = format!(
        "{}---\n{}",
        workload("orders", "127.0.0.1:1".parse().unwrap()),
        workload("web", "127.0.0.1:2".parse().unwrap())
    );
    std::fs::write(dir.join("shop.yaml"), two).unwrap();
    eventually(20, "the second reload", async || reloads(&plane) >= 2).await;
    assert_eq!(reloads(&plane), 2, "one change, one reload");
    assert_eq!(workloads(&plane).await, ["shop/orders", "shop/web"]);
    read_for(&plane, &dir, Duration::from_secs(3), 2).await;

    // The metric is what an operator sees.
    let (_, metrics) = http_get(plane.admin, "/metrics").await.unwrap();
    assert!(
        metrics.contains("vigil_controller_source_reloads_total 2"),
        "{metrics}"
    );
}
