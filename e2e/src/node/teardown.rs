//! Removing a node completely: every process (including the containers, whose shims
//! containerd daemonizes and which the parent-death signal does not reach), every mount
//! under its directory (overlay snapshots, kubelet's volumes, the pods' network
//! namespaces), its cgroups, its network namespace (and with it the bridge, the veths and
//! every iptables chain kube-proxy and the CNI plugins wrote), containerd's and the
//! kubelet's state, and the CNI result cache entries of its pods.
//!
//! Runs on drop (also when a test panics) and, for the directories of test processes that
//! were killed before they could clean up, at the next start ([`remove_stale`]).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

/// What a node left on the machine; written to `<dir>/node.json` before anything is made.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Footprint {
    /// The test process.
    pub(super) owner: u32,
    /// Its directory.
    pub(super) dir: PathBuf,
    /// Its network namespace (`ip netns`).
    pub(super) netns: String,
    /// Its cgroup root (in every hierarchy).
    pub(super) cgroup_root: String,
}

/// The cgroup hierarchies the kubelet uses here (v1, plus the v2 mount of the hybrid
/// layout).
pub(super) fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    out.sort();
    out
}

fn kill(pid: u32) {
    // Never 0 (the process group) or 1.
    if let Ok(p) = i32::try_from(pid)
        && p > 1
    {
        let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// Pids of processes whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (pid != std::process::id() && text.contains(needle)).then_some(pid)
        })
        .collect()
}

/// Every pid in the cgroup subtree `root` of every hierarchy.
fn pids_in_cgroups(root: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for h in cgroup_hierarchies() {
        walk(&h.join(root), &mut |dir| {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        });
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Calls `f` on `dir` and every directory below it, deepest first.
fn walk(dir: &Path, f: &mut impl FnMut(&Path)) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), f);
            }
        }
    }
    if dir.is_dir() {
        f(dir);
    }
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Removes everything the node left, in an order where each step can succeed: processes
/// first (they hold mounts and cgroups), then mounts, cgroups, the network namespace and
/// the files. Never fails; what could not be removed is reported on stderr.
#[allow(clippy::print_stderr)]
pub(super) fn remove(fp: &Footprint, own_pids: &[u32]) {
    // Sandbox IDs, for the CNI cache entries below.
    let sandboxes: Vec<String> = std::fs::read_dir(
        fp.dir
            .join("containerd/state/io.containerd.runtime.v2.task/k8s.io"),
    )
    .map(|d| {
        d.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    })
    .unwrap_or_default();
    // 1. The processes we started (kubelet first, so nothing is restarted), any other
    //    process that names our directory (the shims, daemonized by containerd, name our
    //    socket; a node component of a crashed run) and every process in our cgroups.
    let dir = fp.dir.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut pids: Vec<u32> = own_pids.to_vec();
        pids.extend(pids_mentioning(&dir));
        pids.extend(pids_in_cgroups(&fp.cgroup_root));
        pids.retain(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p));
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                eprintln!("node teardown: processes still alive after 15 s: {pids:?}");
            }
            break;
        }
        for p in pids {
            kill(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // 2. Mounts: overlay snapshots, kubelet volumes, shm, the pods' netns files.
    for m in mounts_under(&fp.dir) {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("node teardown: unmounting {}: {e}", m.display());
        }
    }
    // 3. Cgroups, deepest first (empty now).
    for h in cgroup_hierarchies() {
        walk(&h.join(&fp.cgroup_root), &mut |dir| {
            let _ = std::fs::remove_dir(dir);
        });
    }
    // 4. The network namespace: its links, routes and iptables rules go with it.
    let _ = Command::new("ip")
        .args(["netns", "del", &fp.netns])
        .stderr(Stdio::null())
        .status();
    // 5. CNI's result cache keeps one file per sandbox and interface outside our directory.
    if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if sandboxes.iter().any(|id| name.contains(id.as_str())) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // 6. The files.
    if let Err(e) = std::fs::remove_dir_all(&fp.dir)
        && fp.dir.exists()
    {
        eprintln!("node teardown: removing {}: {e}", fp.dir.display());
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// Removes what nodes of test processes that no longer run left behind.
pub(super) fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with(super::DIR_PREFIX)
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path().join("node.json")) else {
            continue;
        };
        let Ok(fp) = serde_json::from_str::<Footprint>(&text) else {
            continue;
        };
        if !Path::new(&format!("/proc/{}", fp.owner)).exists() {
            remove(&fp, &[]);
        }
    }
}

/// Kills every process that names `dir`, unmounts everything below it and removes it:
/// for other daemons a test runs under a directory of its own (dockerd).
#[allow(clippy::print_stderr)]
pub fn remove_leftovers(dir: &Path) {
    let needle = dir.display().to_string();
    for _ in 0..50 {
        let pids = pids_mentioning(&needle);
        if pids.is_empty() {
            break;
        }
        for p in pids {
            kill(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && dir.exists()
    {
        eprintln!("removing {}: {e}", dir.display());
    }
}
