//! What crosses the wire: `tcpdump` captures on the bridge, `tshark` (Wireshark's
//! dissectors, an implementation independent of ours) reads the capture.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Pod;

/// A running capture.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Captures every TCP packet on `iface` in `pod`'s namespace into `file`; returns once
    /// tcpdump reports that it is listening.
    pub fn start(pod: &Pod, iface: &str, file: &Path) -> Self {
        Self::start_in(&pod.ns, iface, file)
    }

    /// [`Self::start`] in the network namespace named `netns` (`ip netns`).
    pub fn start_in(netns: &str, iface: &str, file: &Path) -> Self {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "tcpdump",
                "--immediate-mode",
                // 16 MiB of kernel buffer (the default 2 MiB dropped a handshake's packets
                // on a loaded 2-core machine: "previous segment not captured").
                "-B",
                "16384",
                "-i",
                iface,
                "-U",
                "-s",
                "0",
                "-n",
            ])
            .arg("-w")
            .arg(file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting tcpdump: {e}"));
        let stderr = child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("tcpdump stderr"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            while let Some(Ok(l)) = lines.next() {
                if l.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(
            rx.recv_timeout(deadline - Instant::now()).is_ok(),
            "tcpdump did not start listening on {iface} in {netns}"
        );
        Self {
            child,
            file: file.to_path_buf(),
        }
    }

    /// Stops the capture (SIGTERM, so tcpdump flushes) and returns the file.
    pub fn stop(mut self) -> PathBuf {
        // Give the last packets a moment to be written (-U writes per packet).
        std::thread::sleep(Duration::from_millis(300));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tshark -r file <args>`; returns stdout lines.
pub fn tshark(file: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running tshark: {e}"));
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Frames whose bytes contain `needle` anywhere (headers or payload, any protocol).
pub fn frames_containing(file: &Path, needle: &str) -> usize {
    tshark(file, &["-Y", &format!("frame contains \"{needle}\"")]).len()
}
