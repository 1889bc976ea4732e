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
mod teardown;

pub use teardown::remove_leftovers;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::Api;

use crate::{
    k8s::{ApiOptions, Cluster},
    kube_procs::spawn_for_life,
};

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

/// Why a node could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A program or package the node needs is not installed.
    #[error("{what} is missing: {hint}")]
    Missing {
        /// What.
        what: String,
        /// How to get it.
        hint: String,
    },
    /// An image archive does not exist.
    #[error(
        "image archive {0} does not exist: run `make images` (it writes vigil-controller.tar, vigil-proxy.tar and vigil-testapp.tar)"
    )]
    MissingImage(PathBuf),
    /// An image archive could not be imported.
    #[error("importing {archive} into containerd failed: {output}")]
    Import {
        /// The archive.
        archive: PathBuf,
        /// What ctr said.
        output: String,
    },
    /// A setup command failed.
    #[error("{command} failed: {output}")]
    Setup {
        /// The command.
        command: String,
        /// Its output.
        output: String,
    },
    /// The node did not become Ready in time.
    #[error(
        "node {name} did not become Ready in {waited:?} (its last condition: {condition}). The kubelet's last log lines ({log}):\n{kubelet_tail}"
    )]
    NotReady {
        /// The node.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// The Ready condition's message, if any.
        condition: String,
        /// The kubelet's log file.
        log: PathBuf,
        /// Its last lines.
        kubelet_tail: String,
    },
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

fn sh(args: &[&str]) -> Result<String, NodeError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| NodeError::Setup {
            command: args.join(" "),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NodeError::Setup {
            command: args.join(" "),
            output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write(path: &Path, text: &str) -> Result<(), NodeError> {
    std::fs::write(path, text).map_err(|e| NodeError::Setup {
        command: format!("writing {}", path.display()),
        output: e.to_string(),
    })
}

/// Checks that every program the node runs is installed, naming the package if not.
fn check_tools() -> Result<(), NodeError> {
    let tools = [
        ("containerd", "apt-get install containerd"),
        ("ctr", "apt-get install containerd"),
        ("runc", "apt-get install runc"),
        ("nsenter", "apt-get install util-linux"),
        ("setpriv", "apt-get install util-linux"),
        ("ip", "apt-get install iproute2"),
        ("iptables", "apt-get install iptables"),
        ("conntrack", "apt-get install conntrack"),
    ];
    for (tool, hint) in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(NodeError::Missing {
                what: tool.into(),
                hint: hint.into(),
            });
        }
    }
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
            return Err(NodeError::Missing {
                what: format!("the CNI plugin {CNI_BIN_DIR}/{plugin}"),
                hint: "apt-get install containernetworking-plugins".into(),
            });
        }
    }
    Ok(())
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    last_lines(&std::fs::read_to_string(path).unwrap_or_default(), n)
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

    fn network(&self) -> Result<(), NodeError> {
        let ns = self.netns.as_str();
        let _ = sh(&["ip", "netns", "del", ns]);
        sh(&["ip", "netns", "add", ns])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{NODE_IP}/32"),
            "dev",
            "lo",
        ])?;
        // Service IPs: to lo, where kube-proxy's OUTPUT rules DNAT them (with no route at
        // all, connect() fails before iptables sees the packet).
        sh(&["ip", "-n", ns, "route", "add", SERVICE_CIDR, "dev", "lo"])?;
        let nsenter = format!("--net=/run/netns/{ns}");
        sh(&[
            "nsenter",
            &nsenter,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        // Bridged pod-to-pod traffic must pass iptables, or replies from a Service's
        // backend on the same bridge bypass kube-proxy's NAT.
        sh(&[
            "nsenter",
            &nsenter,
            "sysctl",
            "-qw",
            "net.bridge.bridge-nf-call-iptables=1",
        ])?;
        Ok(())
    }

    fn cgroups(&self) -> Result<(), NodeError> {
        for h in teardown::cgroup_hierarchies() {
            let dir = h.join(&self.footprint.cgroup_root);
            std::fs::create_dir_all(&dir).map_err(|e| NodeError::Setup {
                command: format!("mkdir {}", dir.display()),
                output: e.to_string(),
            })?;
            // A new cpuset cgroup has no CPUs or memory nodes until told.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(h.join(f)) {
                    write(&dir.join(f), v.trim())?;
                }
            }
        }
        Ok(())
    }

    fn spawn(&self, name: &str, program: &Path, args: &[String]) -> Result<u32, NodeError> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| NodeError::Setup {
                    command: format!("opening {}", log.display()),
                    output: e.to_string(),
                })
        };
        let pid = spawn_for_life(Some(&self.netns), program, args, open()?, open()?);
        self.pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), pid));
        Ok(pid)
    }

    /// A component's log file.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn control_plane(&mut self, bin: &Path) -> Result<(), NodeError> {
        std::fs::create_dir_all(self.dir.join("logs")).map_err(|e| NodeError::Setup {
            command: "mkdir logs".into(),
            output: e.to_string(),
        })?;
        let api = self.dir.join("api");
        std::fs::create_dir_all(&api).map_err(|e| NodeError::Setup {
            command: "mkdir api".into(),
            output: e.to_string(),
        })?;
        let user = |token: &str, user: &str, groups: &[&str]| {
            (
                token.to_string(),
                user.to_string(),
                groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            )
        };
        let node_user = format!("system:node:{}", self.name);
        let opts = ApiOptions {
            netns: Some(self.netns.clone()),
            address: NODE_IP.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST),
            service_cidr: SERVICE_CIDR.into(),
            sans: [
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            tokens: vec![
                user("node-kcm-token", "system:kube-controller-manager", &[]),
                user("node-scheduler-token", "system:kube-scheduler", &[]),
                user("node-proxy-token", "system:kube-proxy", &[]),
                user("node-kubelet-token", &node_user, &["system:nodes"]),
                // CoreDNS reads Services, EndpointSlices and Namespaces cluster-wide.
                user("node-coredns-token", "coredns", &["system:masters"]),
            ],
            authorization: "Node,RBAC".into(),
            // Logs and exec go to the kubelet at the node's address, never by host name
            // (which would ask the host's DNS, outside the namespace).
            extra_args: vec!["--kubelet-preferred-address-types=InternalIP".into()],
        };
        let bin_dir = bin.to_path_buf();
        self.cluster = Some(crate::netns::blocking_in(&self.netns, move || {
            Cluster::start_in(bin_dir, api, &opts)
        }));
        let cluster = self.cluster();
        let kubeconfig = |name: &str, token: &str| -> PathBuf {
            let p = self.dir.join(format!("{name}.kubeconfig"));
            cluster.write_kubeconfig_for(token, &p);
            p
        };
        let kcm = kubeconfig("kcm", "node-kcm-token");
        let sched = kubeconfig("scheduler", "node-scheduler-token");
        let ca = cluster.ca_file();
        let sa_key = cluster.dir.join("sa.key");
        self.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", kcm.display()),
                "--leader-elect=false".into(),
                format!("--service-account-private-key-file={}", sa_key.display()),
                format!("--root-ca-file={}", ca.display()),
                "--use-service-account-credentials=true".into(),
                "--controllers=*".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=10257".into(),
                "--v=1".into(),
            ],
        )?;
        self.spawn(
            "kube-scheduler",
            &bin.join("kube-scheduler"),
            &[
                format!("--kubeconfig={}", sched.display()),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=10259".into(),
                "--v=1".into(),
            ],
        )?;
        Ok(())
    }

    fn containerd(&self) -> Result<(), NodeError> {
        let cfg = self.dir.join("containerd.toml");
        write(&cfg, &config::containerd(&self.dir))?;
        self.spawn(
            "containerd",
            Path::new("containerd"),
            &["--config".into(), cfg.display().to_string()],
        )?;
        let sock = self.dir.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err(NodeError::Setup {
                    command: "containerd".into(),
                    output: format!(
                        "no socket after 30 s:\n{}",
                        tail(&self.log("containerd"), 20)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
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

    fn kubelet(&self, bin: &Path, cni: bool) -> Result<(), NodeError> {
        let d = &self.dir;
        for sub in ["cni", "kubelet", "pod-logs"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| NodeError::Setup {
                command: format!("mkdir {sub}"),
                output: e.to_string(),
            })?;
        }
        if cni {
            write(&d.join("cni/10-vigil-node.conflist"), &config::cni(d))?;
        }
        write(&d.join("resolv.conf"), &config::resolv_conf())?;
        let cfg = d.join("kubelet.yaml");
        write(&cfg, &config::kubelet(d, &self.footprint.cgroup_root))?;
        let kubelet_kc = d.join("kubelet.kubeconfig");
        self.cluster()
            .write_kubeconfig_for("node-kubelet-token", &kubelet_kc);
        self.spawn(
            "kubelet",
            &bin.join("kubelet"),
            &[
                format!("--config={}", cfg.display()),
                format!("--kubeconfig={}", kubelet_kc.display()),
                format!("--root-dir={}", d.join("kubelet").display()),
                format!("--cert-dir={}", d.join("kubelet/pki").display()),
                format!("--hostname-override={}", self.name),
                format!("--node-ip={NODE_IP}"),
                "--v=1".into(),
            ],
        )?;
        let proxy_kc = d.join("kube-proxy.kubeconfig");
        self.cluster()
            .write_kubeconfig_for("node-proxy-token", &proxy_kc);
        let proxy_cfg = d.join("kube-proxy.yaml");
        write(&proxy_cfg, &config::kube_proxy(&proxy_kc, &self.name))?;
        self.spawn(
            "kube-proxy",
            &bin.join("kube-proxy"),
            &[format!("--config={}", proxy_cfg.display()), "--v=1".into()],
        )?;
        let dns_kc = d.join("coredns.kubeconfig");
        self.cluster()
            .write_kubeconfig_for("node-coredns-token", &dns_kc);
        let corefile = d.join("Corefile");
        write(&corefile, &config::corefile(&dns_kc))?;
        self.spawn(
            "coredns",
            &bin.join("coredns"),
            &["-conf".into(), corefile.display().to_string()],
        )?;
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

    fn wait_ready(&self, timeout: Duration) -> Result<(), NodeError> {
        let cfg = self.cluster().client_config(crate::k8s::ADMIN_TOKEN);
        let name = self.name.clone();
        let start = Instant::now();
        let condition = self.run(move || async move {
            let mut last = String::from("the node has not registered");
            while start.elapsed() < timeout {
                if let Ok(client) = kube::Client::try_from(cfg.clone())
                    && let Ok(Some(n)) = Api::<NodeObject>::all(client).get_opt(&name).await
                {
                    let ready = n
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .into_iter()
                        .find(|c| c.type_ == "Ready");
                    match ready {
                        Some(c) if c.status == "True" => return None,
                        Some(c) => {
                            last = format!(
                                "{}: {}",
                                c.reason.unwrap_or_default(),
                                c.message.unwrap_or_default()
                            );
                        }
                        None => last = "no Ready condition yet".into(),
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Some(last)
        });
        match condition {
            None => Ok(()),
            Some(condition) => Err(NodeError::NotReady {
                name: self.name.clone(),
                waited: timeout,
                condition,
                log: self.log("kubelet"),
                kubelet_tail: tail(&self.log("kubelet"), 25),
            }),
        }
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

impl Node {
    /// On failure: what the cluster looked like, and the end of every container's log
    /// and every component's log.
    #[allow(clippy::print_stderr)]
    fn report(&self) {
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
