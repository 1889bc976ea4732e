//! A single-node Kubernetes cluster for tests, on this machine, without Docker: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, containerd + runc, the kubelet,
//! kube-proxy and CoreDNS as real processes, pods on a CNI bridge, images imported from
//! OCI archives (no registry, nothing pulled).
//!
//! ```text
//!  network namespace "vn<pid>-<n>" (no uplink: nothing can leave it)
//!  ┌──────────────────────────────────────────────────────────────────────────────┐
//!  │ lo: 127.0.0.1, 10.200.0.1 (the node: apiserver :6443, kubelet :10250, DNS :53)│
//!  │     10.96.0.0/24 (Services) routed to lo, DNATed by kube-proxy               │
//!  │ vigil0 (CNI bridge, 10.244.0.1) ── veth ── pod netns (10.244.0.x) ...        │
//!  └──────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Every process runs in the node's network namespace (`nsenter --net`, so they share the
//! host's mounts: the kubelet's volumes must be visible to runc) and dies with the test
//! process. A test talks to the cluster from inside the namespace ([`Node::run`]): the
//! API server, pod IPs and Service IPs are reachable only there. [`Node`] removes
//! everything on drop — processes, containers, mounts, cgroups, the namespace with its
//! iptables chains, state — also when the test fails; see [`teardown`].

mod config;
mod error;
mod report;
mod start;
mod teardown;

pub use error::NodeError;
pub use report::tail;

pub use teardown::remove_leftovers;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use error::{check_tools, write};

use crate::k8s::Cluster;

/// The node's address (on its namespace's loopback device).
pub const NODE_IP: &str = "10.200.0.1";
/// Pod addresses (the CNI bridge's range).
pub const POD_CIDR: &str = "10.244.0.0/24";
/// Service addresses.
pub const SERVICE_CIDR: &str = "10.96.0.0/24";
/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The pod sandbox image (built locally from upstream's pause.c by build.sh).
pub const PAUSE_IMAGE: &str = "vigil.test/pause:1";
/// The CNI bridge inside the node's namespace (capture here to see pod-to-pod traffic).
pub const BRIDGE: &str = "vigil0";
/// Debian's reference CNI plugins (package containernetworking-plugins).
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
const DIR_PREFIX: &str = "vigil-node-";

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node's name.
    pub name: String,
    /// Image archives to import before the kubelet starts (pause is added).
    pub images: Vec<PathBuf>,
    /// How long the node may take to become Ready.
    pub ready_timeout: Duration,
    /// Write the CNI configuration (without it the node never becomes Ready: "network
    /// plugin not ready").
    pub cni: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            name: "node1".into(),
            images: Vec::new(),
            ready_timeout: Duration::from_secs(120),
            cni: true,
        }
    }
}

/// A running single-node cluster; removed on drop.
pub struct Node {
    cluster: Option<Cluster>,
    /// The node's network namespace (`ip netns`).
    pub netns: String,
    /// Its directory (configs, logs, state).
    pub dir: PathBuf,
    /// The node's name.
    pub name: String,
    footprint: teardown::Footprint,
    pids: std::sync::Mutex<Vec<(String, u32)>>,
}

impl Node {
    /// Starts a node with the Kubernetes binaries in `bin` (from `build.sh`: the control
    /// plane, kubelet, kube-proxy, coredns and pause) and waits until it is Ready.
    pub fn start(bin: &Path, opts: &NodeOptions) -> Result<Self, NodeError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        check_tools()?;
        for archive in &opts.images {
            if !archive.is_file() {
                return Err(NodeError::MissingImage(archive.clone()));
            }
        }
        teardown::remove_stale();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|e| NodeError::Setup {
                command: "creating the node directory".into(),
                output: e.to_string(),
            })?
            .keep();
        let footprint = teardown::Footprint {
            owner: pid,
            dir: dir.clone(),
            netns: format!("vn{pid}-{n}"),
            cgroup_root: format!("{DIR_PREFIX}{pid}-{n}"),
        };
        write(
            &dir.join("node.json"),
            &serde_json::to_string(&footprint).unwrap_or_default(),
        )?;
        // From here on, a failure removes what was made (the Node's drop).
        let mut node = Self {
            cluster: None,
            netns: footprint.netns.clone(),
            dir: dir.clone(),
            name: opts.name.clone(),
            footprint,
            pids: std::sync::Mutex::new(Vec::new()),
        };
        node.network()?;
        node.cgroups()?;
        node.control_plane(bin)?;
        node.containerd()?;
        let pause = node.dir.join("pause.tar");
        let spec = vigil_images::images::pause(&bin.join("pause"), PAUSE_IMAGE).map_err(|e| {
            NodeError::Missing {
                what: "the pause image".into(),
                hint: format!("{e} (e2e/k8s/testbin/build.sh builds pause)"),
            }
        })?;
        vigil_images::archive::write(&spec, &pause).map_err(|e| NodeError::Setup {
            command: "writing the pause image".into(),
            output: e.to_string(),
        })?;
        node.import(&pause)?;
        for archive in &opts.images {
            node.import(archive)?;
        }
        node.kubelet(bin, opts.cni)?;
        node.wait_ready(opts.ready_timeout)?;
        Ok(node)
    }

    /// A component's log file.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// Imports an image archive into containerd's `k8s.io` namespace (where the kubelet
    /// finds it; pods use it with `imagePullPolicy: Never` or `IfNotPresent`).
    pub fn import(&self, archive: &Path) -> Result<(), NodeError> {
        if !archive.is_file() {
            return Err(NodeError::MissingImage(archive.to_owned()));
        }
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .map_err(|e| NodeError::Import {
                archive: archive.to_owned(),
                output: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(NodeError::Import {
                archive: archive.to_owned(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    /// The API server (inside the node's namespace: use it from [`Node::run`]).
    pub fn cluster(&self) -> &Cluster {
        self.cluster
            .as_ref()
            .unwrap_or_else(|| unreachable!("a started node has its API server"))
    }

    /// Runs `f` on a thread inside the node's network namespace, where the API server,
    /// pods and Services are reachable; `helm`/`kubectl` started from it run there too.
    pub fn run<T: Send + 'static, F: Future<Output = T> + 'static>(
        &self,
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        crate::netns::run_in(&self.netns, f)
    }

    /// Runs a kubectl command (admin) inside the node's namespace: success and output
    /// (stdout; with stderr when it failed).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(self.cluster().bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.cluster().kubeconfig())
            .args(args)
            .output();
        match out {
            // Success: stdout only (warnings on stderr would mix into `-o name` lists).
            Ok(o) if o.status.success() => (true, String::from_utf8_lossy(&o.stdout).into_owned()),
            Ok(o) => (
                false,
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            ),
            Err(e) => (false, e.to_string()),
        }
    }
}

impl Drop for Node {
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        if std::thread::panicking() && self.cluster.is_some() {
            self.report();
        }
        // Debugging: keep the node for that many seconds (its processes die with this
        // one, so it waits here), then tear down as usual.
        if let Some(secs) = std::env::var("VIGIL_E2E_KEEP_NODE")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            eprintln!(
                "VIGIL_E2E_KEEP_NODE={secs}: node {} kept for {secs} s in network namespace {} ({}); kubectl: nsenter --net=/run/netns/{} {} --kubeconfig {}",
                self.name,
                self.netns,
                self.dir.display(),
                self.netns,
                self.cluster().bin.join("kubectl").display(),
                self.cluster().kubeconfig().display()
            );
            std::thread::sleep(Duration::from_secs(secs));
        }
        let mut pids: Vec<(String, u32)> =
            self.pids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // The kubelet first: it must not restart what is being killed.
        pids.sort_by_key(|(name, _)| name != "kubelet");
        let mut own: Vec<u32> = pids.into_iter().map(|(_, p)| p).collect();
        if let Some(c) = &self.cluster {
            own.extend(c.server_pids());
        }
        teardown::remove(&self.footprint, &own);
    }
}

/// Where `make images` wrote the archives: `VIGIL_IMAGES_DIR`, or `<target dir>/images`
/// (found from the test binary's own path, `<target>/<profile>/deps/<test>`).
pub fn images_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VIGIL_IMAGES_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("images")))
        .unwrap_or_else(|| PathBuf::from("images"))
}

/// The archives of `make images`: vigil-controller, vigil-proxy, vigil-testapp.
pub fn vigil_archives() -> Vec<PathBuf> {
    let dir = images_dir();
    ["vigil-controller", "vigil-proxy", "vigil-testapp"]
        .iter()
        .map(|n| dir.join(format!("{n}.tar")))
        .collect()
}
