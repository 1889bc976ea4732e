//! What a failed test prints about its node: the pods, the events, the end of every
//! container's and component's log.

use std::path::{Path, PathBuf};

use super::Node;

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    last_lines(&std::fs::read_to_string(path).unwrap_or_default(), n)
}

impl Node {
    /// On failure: what the cluster looked like, and the end of every container's log
    /// and every component's log.
    #[allow(clippy::print_stderr)]
    pub(super) fn report(&self) {
        let (_, pods) = self.kubectl(&["get", "pods", "-A", "-o", "wide"]);
        eprintln!("--- node {}: pods\n{pods}", self.name);
        let (_, events) = self.kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"]);
        eprintln!("--- events (last 40)\n{}", last_lines(&events, 40));
        let mut logs = Vec::new();
        collect_files(&self.dir.join("pod-logs"), &mut logs);
        collect_files(&self.dir.join("logs"), &mut logs);
        logs.sort();
        for f in logs {
            eprintln!("--- {} (last 15 lines)\n{}", f.display(), tail(&f, 15));
        }
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}
