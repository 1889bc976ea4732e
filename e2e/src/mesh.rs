//! The mesh on the test network: the CA made with `vigil ca init`, `vigil-controller`
//! (local mode) in its own namespace, and in each enrolled pod the rules of
//! `vigil-proxy init` and a `vigil-proxy run` process (uid 1337) in controller mode —
//! the same binaries and flags as the Kubernetes sidecar, started the way its init
//! container and sidecar are.

use std::{
    os::unix::fs::{PermissionsExt, chown},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    apps,
    netns::{Net, PROXY_UID, Pod, ProcId, sh},
};

/// Trust domain.
pub const TD: &str = "cluster.local";
/// Namespace of the test workloads.
pub const NS: &str = "shop";
/// The controller's ports (on its pod address).
pub const GRPC_PORT: u16 = 8443;
/// Admin port of the controller.
pub const ADMIN_PORT: u16 = 9191;
/// The proxy's admin address inside its pod.
pub const PROXY_ADMIN: &str = "127.0.0.1:4191";

/// `spiffe://cluster.local/ns/shop/sa/<sa>`.
pub fn id(sa: &str) -> String {
    format!("spiffe://{TD}/ns/{NS}/sa/{sa}")
}

/// Where the workspace's binaries are: `$VIGIL_BIN_DIR`, else the target directory this
/// test was built into (`make test` builds every binary first).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("VIGIL_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
            // <target>/<profile>/deps/<test> -> <target>/<profile>
            exe.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_default()
        }
    };
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`; `make test` does), or set VIGIL_BIN_DIR",
        p.display()
    );
    p
}

/// The network, the controller and the files they share.
pub struct Mesh {
    /// The network (dropped last: processes and namespaces go with it).
    pub net: Net,
    /// The controller's pod.
    pub ctl_pod: Pod,
    /// Files: state/ (CA), policy/ (watched), tokens/, logs/, bundle.pem.
    pub dir: tempfile::TempDir,
    ctl: Option<ProcId>,
}

impl Mesh {
    /// A network with a controller pod and a new CA (not started yet).
    pub fn new(tag: u8) -> Self {
        let mut net = Net::new(tag);
        let ctl_pod = net.pod("ctl", 2);
        let dir = tempfile::Builder::new()
            .prefix("vigil-e2e-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        // The proxies (uid 1337) read the bundle and their token from here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod: {e}"));
        for d in ["policy", "logs", "tokens"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap_or_else(|e| panic!("{d}: {e}"));
        }
        let mesh = Self {
            net,
            ctl_pod,
            dir,
            ctl: None,
        };
        mesh.vigil(&["ca", "init", "--state-dir", &mesh.path("state")]);
        let bundle = mesh.vigil(&["ca", "bundle", "--state-dir", &mesh.path("state")]);
        std::fs::write(mesh.dir.path().join("bundle.pem"), bundle)
            .unwrap_or_else(|e| panic!("bundle: {e}"));
        mesh
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// Runs the `vigil` CLI; returns its stdout.
    pub fn vigil(&self, args: &[&str]) -> String {
        let bin = bin("vigil");
        let mut argv = vec![bin.to_str().unwrap_or_default()];
        argv.extend_from_slice(args);
        sh(&argv)
    }

    /// The policy directory the controller watches.
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policy")
    }

    /// Writes a policy file (atomically, as an editor or `kubectl apply` would).
    pub fn write(&self, file: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
        std::fs::rename(&tmp, self.policy_dir().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }

    /// Removes a policy file.
    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.policy_dir().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }

    /// The controller's gRPC address.
    pub fn controller(&self) -> String {
        self.ctl_pod.addr(GRPC_PORT).to_string()
    }

    /// Starts `vigil-controller` (certificates live one minute) and waits until it is ready.
    pub fn start_controller(&mut self) {
        let argv: Vec<String> = vec![
            bin("vigil-controller").display().to_string(),
            "--local".into(),
            self.path("policy"),
            "--state-dir".into(),
            self.path("state"),
            "--listen".into(),
            // Both families: IPv6-only pods reach it at its IPv6 address.
            format!("[::]:{GRPC_PORT}"),
            "--admin".into(),
            self.ctl_pod.addr(ADMIN_PORT).to_string(),
            "--svid-ttl".into(),
            "1m".into(),
            "--allow-short-ttl".into(),
        ];
        let n = self
            .dir
            .path()
            .join("logs")
            .read_dir()
            .map_or(0, Iterator::count);
        let log = self.dir.path().join(format!("logs/controller-{n}"));
        let pod = self.ctl_pod.clone();
        let p = self.net.start(&pod, &argv, false, &log);
        self.ctl = Some(p);
        let admin = self.ctl_pod.addr(ADMIN_PORT);
        let ok = self.net.node.run(move || async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if matches!(apps::get(admin, "/ready").await, Ok((s, _)) if s.is_success()) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        });
        assert!(
            ok,
            "the controller did not become ready; see {}.err",
            log.display()
        );
    }

    /// Kills the controller (as a crash would).
    pub fn stop_controller(&mut self) {
        if let Some(p) = self.ctl.take() {
            self.net.kill(p);
        }
    }

    /// The controller's `/status` (queried from the node).
    pub fn status(&self) -> serde_json::Value {
        let admin = self.ctl_pod.addr(ADMIN_PORT);
        let (_, body) = self
            .net
            .node
            .run(move || async move { apps::get(admin, "/status").await })
            .unwrap_or_else(|e| panic!("controller /status: {e:#}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status: {e}: {body}"))
    }

    /// Enrolls `pod` as workload `shop/<name>`: `vigil-proxy init` (iptables), a bootstrap
    /// token, and `vigil-proxy run` in controller mode. Waits until the proxy is ready.
    pub fn enroll(&mut self, pod: &Pod, name: &str, extra: &[&str]) -> ProcId {
        let controller = self.controller();
        self.enroll_via(pod, name, &controller, extra)
    }

    /// [`Mesh::enroll`] with the controller at `controller` (an IPv6-only pod reaches it at
    /// its IPv6 address).
    pub fn enroll_via(
        &mut self,
        pod: &Pod,
        name: &str,
        controller: &str,
        extra: &[&str],
    ) -> ProcId {
        let proxy = bin("vigil-proxy").display().to_string();
        sh(&[
            "ip",
            "netns",
            "exec",
            &pod.ns,
            &proxy,
            "init",
            "--proxy-uid",
            &PROXY_UID.to_string(),
        ]);
        let token = self.vigil(&[
            "ca",
            "token",
            "--state-dir",
            &self.path("state"),
            "--id",
            &id(name),
        ]);
        let token_file = self.dir.path().join("tokens").join(name);
        std::fs::write(&token_file, token.trim()).unwrap_or_else(|e| panic!("token: {e}"));
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod: {e}"));
        chown(&token_file, Some(PROXY_UID), Some(PROXY_UID))
            .unwrap_or_else(|e| panic!("chown: {e}"));
        let mut argv: Vec<String> = [
            proxy.as_str(),
            "run",
            "--inbound",
            "[::]:4143",
            "--outbound",
            "127.0.0.1:4140",
            "--admin",
            PROXY_ADMIN,
            "--controller",
            controller,
            "--workload",
            &format!("{NS}/{name}"),
            "--bundle",
            &self.path("bundle.pem"),
            "--bootstrap-token-file",
            &token_file.display().to_string(),
            "--detect-timeout",
            "200ms",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        argv.extend(extra.iter().map(ToString::to_string));
        let log = self.dir.path().join("logs").join(name);
        let p = self.net.start(pod, &argv, true, &log);
        let ready = pod.run(|| async {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let admin = PROXY_ADMIN.parse().unwrap_or_else(|e| panic!("{e}"));
                if matches!(apps::get(admin, "/ready").await, Ok((s, _)) if s.is_success()) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        });
        assert!(
            ready,
            "the proxy of {name} did not become ready; see {}.err",
            log.display()
        );
        p
    }

    /// A proxy's `/config` (identity, serial, policy generation).
    pub fn proxy_config(pod: &Pod) -> serde_json::Value {
        let (_, body) = pod
            .run(|| async {
                apps::get(
                    PROXY_ADMIN.parse().unwrap_or_else(|e| panic!("{e}")),
                    "/config",
                )
                .await
            })
            .unwrap_or_else(|e| panic!("proxy /config: {e:#}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/config: {e}"))
    }

    /// The serial of the proxy's current certificate.
    pub fn serial(pod: &Pod) -> String {
        Self::proxy_config(pod)["identity"]["serial"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A proxy's access log so far (JSON lines on its stdout).
    pub fn access_log(&self, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("logs").join(format!("{name}.out")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The access log of `name` once `done` holds for it (the proxies write their logs on
    /// a thread of their own, so a line can land a moment after the response), or as it
    /// is after `limit`.
    pub fn access_log_when(
        &self,
        name: &str,
        limit: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let log = self.access_log(name);
            if done(&log) || start.elapsed() > limit {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The controller's generation now.
    pub fn generation(&self) -> u64 {
        self.status()["generation"].as_u64().unwrap_or(0)
    }

    /// Waits until the controller is past generation `after` and every proxy is connected
    /// and has acknowledged its current snapshot; returns the time taken.
    pub fn wait_all_applied(&self, after: u64, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let s = self.status();
            let generation = s["generation"].as_u64().unwrap_or(0);
            let workloads = s["workloads"].as_array().cloned().unwrap_or_default();
            let enrolled: Vec<_> = workloads
                .iter()
                .filter(|w| w["connected"].as_u64().unwrap_or(0) > 0 || w["applied"].is_u64())
                .collect();
            let done = generation > after
                && !enrolled.is_empty()
                && enrolled
                    .iter()
                    .all(|w| w["up_to_date"] == true && w["connected"].as_u64() == Some(1));
            if done {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "after {limit:?} not every proxy applied the change: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `Segment` documents, one per app: segment `<app>` selects the pods labelled
/// `app: <app>`.
pub fn app_segments(apps: &[&str]) -> String {
    apps.iter()
        .map(|app| {
            format!(
                "apiVersion: policy.vigil.dev/v1alpha1\nkind: Segment\nmetadata: {{name: {app}, namespace: {NS}}}\nspec: {{podSelector: {{matchLabels: {{app: {app}}}}}}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `Workload` documents: (name, labels, addresses).
pub fn workloads(list: &[(&str, &str, &[std::net::SocketAddr])]) -> String {
    list.iter()
        .map(|(name, labels, addrs)| {
            let addrs: Vec<String> = addrs.iter().map(|a| format!("'{a}'")).collect();
            format!(
                "apiVersion: local.vigil.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: {NS}, labels: {{{labels}}}}}\nspec: {{serviceAccount: {name}, addresses: [{}]}}\n",
                addrs.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Whether `cmd` is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
