//! The README's shell walkthroughs, run as written, so the README cannot drift from what
//! the binaries do.
//!
//! - Every shell block in README.md is marked: `<!-- walkthrough: NAME -->` (run here) or
//!   `<!-- not-run: REASON -->` (`every_shell_block_is_run_here_or_says_why_not`).
//! - Each walkthrough runs with bash from the repository root, on loopback (a private
//!   network namespace where possible, see `run.rs`), with the binaries of this build:
//!   the README's `cargo build --release ...` and `export PATH=...` lines are dropped and
//!   the directory holding this build's `vigil`, `vigil-proxy` and `vigil-controller`
//!   (the debug ones `make test` builds first, or `$VIGIL_BIN_DIR`) goes first on PATH.
//!   `/tmp/` in the text becomes the test's own temporary directory. Nothing else changes.
//! - Every promised outcome (`# 200`, `# 403`, `# refused`) is checked, every other
//!   command must succeed, and the diagnostic logs the walkthrough's processes wrote into
//!   the (non-terminal) output must be free of colour codes.
//!
//! Needs `curl` and `python3` (the README's demo app), like the README. No root.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::panic)]

mod blocks;
mod run;

use std::path::{Path, PathBuf};

use blocks::{Marker, shell_blocks};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

fn walkthrough_text(name: &str) -> String {
    shell_blocks(&readme())
        .into_iter()
        .find(|b| b.marker == Marker::Walkthrough(name.into()))
        .unwrap_or_else(|| panic!("README.md has no block marked <!-- walkthrough: {name} -->"))
        .text
}

/// Runs a walkthrough and asserts everything it promises.
fn check(name: &str) {
    let bin = vigil_e2e::mesh::bin("vigil-controller");
    vigil_e2e::mesh::bin("vigil");
    vigil_e2e::mesh::bin("vigil-proxy");
    let bin_dir = bin.parent().unwrap();
    let out = run::walkthrough(&walkthrough_text(name), bin_dir, &repo());
    let report = || {
        format!(
            "walkthrough {name:?} on {}\n--- script ---\n{}\n--- output ---\n{}",
            out.network, out.script, out.output
        )
    };
    eprintln!("walkthrough {name:?} ran on {}", out.network);
    assert!(!out.results.is_empty(), "no checks: {}", report());
    for (check, got) in &out.results {
        assert_eq!(
            got.as_deref(),
            Some(check.want.as_str()),
            "`{}`: the README promises {}, got {} ({})\n{}",
            check.command,
            check.want,
            got.as_deref()
                .unwrap_or("nothing: the walkthrough stopped before it"),
            if check.settles {
                "retried for ~20 s after the README's sleep"
            } else {
                "one attempt"
            },
            report()
        );
    }
    assert!(
        out.errors.is_empty(),
        "commands failed:\n{}\n{}",
        out.errors.join("\n"),
        report()
    );
    assert_eq!(
        out.exit,
        Some(0),
        "bash did not finish cleanly\n{}",
        report()
    );
    assert!(
        !out.output.contains('\u{1b}'),
        "colour codes in logs written to a file\n{}",
        report()
    );
}

#[test]
fn every_shell_block_is_run_here_or_says_why_not() {
    let blocks = shell_blocks(&readme());
    let unmarked: Vec<String> = blocks
        .iter()
        .filter(|b| b.marker == Marker::None)
        .map(|b| {
            format!(
                "README.md:{}: {}",
                b.line,
                b.text.lines().next().unwrap_or("")
            )
        })
        .collect();
    assert!(
        unmarked.is_empty(),
        "shell blocks without a marker: put `<!-- walkthrough: NAME -->` (and a #[test] in \
         e2e/tests/readme/main.rs) or `<!-- not-run: REASON -->` on the line before each:\n{}",
        unmarked.join("\n")
    );
    let mut names: Vec<&str> = blocks
        .iter()
        .filter_map(|b| match &b.marker {
            Marker::Walkthrough(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["local-mode", "two-proxies"],
        "each walkthrough has a test below"
    );
}

#[test]
fn walkthrough_local_mode() {
    check("local-mode");
}

#[test]
fn walkthrough_two_proxies() {
    check("two-proxies");
}
