//! `vigil demo --json` end to end: the binary a newcomer runs first, run as they would.
//! Every step must report ok, with the figures scripts rely on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Command;

#[test]
fn demo_json_reports_every_step_ok() {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["demo", "--json"])
        .output()
        .expect("run vigil demo");
    let narration = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}); stderr:\n{narration}"));
    assert_eq!(report["ok"], true, "{report:#}\n{narration}");
    assert!(out.status.success(), "exit code {:?}", out.status);

    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 8, "{report:#}");
    for s in steps {
        assert_eq!(s["ok"], true, "{s:#}");
        for key in ["name", "expected", "observed"] {
            assert!(
                !s[key].as_str().unwrap_or_default().is_empty(),
                "{key} missing: {s:#}"
            );
        }
        assert!(s["duration_ms"].is_u64(), "{s:#}");
    }
    let figure = |step: usize, key: &str| steps[step]["figures"][key].as_u64();
    // A live edit moved the generation forward.
    assert!(figure(3, "generation_after") > figure(3, "generation_before"));
    // The quarantine closed the open connection (its time is reported).
    assert!(figure(6, "contain_ms").is_some(), "{:#}", steps[6]);
    // Rotation: all four proxies renewed under traffic, none of it failed.
    assert_eq!(figure(7, "rotated"), Some(4));
    assert_eq!(figure(7, "failed"), Some(0));
    assert!(figure(7, "requests").unwrap() > 100, "{:#}", steps[7]);

    // The narration went to stderr, readable: each step, the explain, the summary.
    for needle in [
        "[1/8] Allowed calls succeed over mTLS",
        "$ vigil explain",
        "DENY: default deny",
        "would deny",
        "Summary",
        "All steps behaved as expected",
    ] {
        assert!(
            narration.contains(needle),
            "{needle:?} missing:\n{narration}"
        );
    }
}

#[test]
fn demo_rejects_unknown_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["demo", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}
