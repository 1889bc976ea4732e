//! A real Kubernetes API server for tests: etcd + kube-apiserver built from their Go
//! modules (`e2e/k8s/testbin/build.sh`), started on loopback with RBAC, a token file and
//! service-account signing keys — what controller-runtime's envtest does. No kubelet,
//! scheduler or controller-manager: Pods stay Pending, nothing becomes Ready. (The
//! real-node harness, [`crate::node`], starts the same server inside its node's network
//! namespace with [`ApiOptions`], and a kubelet next to it.)
//!
//! One server per test binary ([`cluster`]); each test takes a fresh namespace
//! ([`Cluster::namespace`]). The processes are started from a thread that lives as long
//! as the test process and carry `PR_SET_PDEATHSIG`, so they die with it even when a test
//! panics or the binary is killed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{OnceLock, atomic::AtomicU32},
    time::{Duration, Instant},
};

use kube::Client;

mod access;

pub use access::install_crds;

/// Tokens in the apiserver's `--token-auth-file`.
pub const ADMIN_TOKEN: &str = "vigil-e2e-admin-token";
/// Authenticates as `system:serviceaccount:vigil-system:vigil-controller` (the chart's
/// ServiceAccount), so the chart's RBAC applies exactly as in a cluster.
pub const CONTROLLER_TOKEN: &str = "vigil-e2e-controller-token";
/// The controller's service-account user name.
pub const CONTROLLER_USER: &str = "system:serviceaccount:vigil-system:vigil-controller";

/// Where and how the API server runs.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Run etcd and the apiserver inside this network namespace (`ip netns`), on fixed
    /// ports (the namespace is private); `None`: on loopback, on free ports.
    pub netns: Option<String>,
    /// The address the apiserver binds and advertises (the `kubernetes` Service's
    /// endpoint).
    pub address: std::net::Ipv4Addr,
    /// `--service-cluster-ip-range`.
    pub service_cidr: String,
    /// Extra subject alternative names of the serving certificate (IPs or DNS names).
    pub sans: Vec<String>,
    /// Extra lines of the token file: `(token, user, groups)`.
    pub tokens: Vec<(String, String, Vec<String>)>,
    /// `--authorization-mode`.
    pub authorization: String,
    /// More kube-apiserver flags.
    pub extra_args: Vec<String>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            netns: None,
            address: std::net::Ipv4Addr::LOCALHOST,
            service_cidr: "10.0.0.0/24".into(),
            sans: Vec::new(),
            tokens: Vec::new(),
            authorization: "RBAC".into(),
            extra_args: Vec::new(),
        }
    }
}

/// The running server.
pub struct Cluster {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// PEM of the CA that signed the serving certificate.
    pub ca_pem: String,
    /// Where the binaries are (kube-apiserver, etcd, helm).
    pub bin: PathBuf,
    /// Temp dir: certificates, keys, etcd data, logs, kubeconfig.
    pub dir: PathBuf,
    namespaces: AtomicU32,
    /// The apiserver's pid and arguments (for [`Cluster::restart_apiserver`]).
    apiserver: std::sync::Mutex<(u32, Vec<String>)>,
    etcd_pid: u32,
    netns: Option<String>,
}

/// Starts the cluster once per test binary; `None` (with a message) only when
/// `VIGIL_SKIP_K8S_TESTS` is set and the binaries are not built.
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let bin = match binaries() {
                Ok(b) => b,
                Err(e) if std::env::var_os("VIGIL_SKIP_K8S_TESTS").is_some() => {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("skipped: Kubernetes test binaries unavailable ({e}) and VIGIL_SKIP_K8S_TESTS is set");
                    }
                    return None;
                }
                Err(e) => panic!(
                    "{e}\nThe Kubernetes tests need kube-apiserver, etcd and helm: run e2e/k8s/testbin/build.sh (`.ci/run` does), or set VIGIL_SKIP_K8S_TESTS=1 to skip them knowingly"
                ),
            };
            Some(Cluster::start(bin, &ApiOptions::default()))
        })
        .as_ref()
}

/// The bin directory from `build.sh` (which builds what is missing; quick when cached).
pub fn binaries() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("VIGIL_K8S_BIN")
        && Path::new(&d).join("kube-apiserver").is_file()
    {
        return Ok(PathBuf::from(d));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/testbin/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed", script.display()));
    }
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(PathBuf::from(dir))
}

/// The cluster's directory outlives its test binary (the server is static); a later run
/// removes the directories of runs whose process is gone (etcd data is ~100 MB).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with("vigil-k8s-") {
            continue;
        }
        let owner = std::fs::read_to_string(path.join("owner.pid")).unwrap_or_default();
        let alive = owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

use crate::kube_procs::{free_port, spawn_for_life};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

impl Cluster {
    /// Starts etcd and kube-apiserver (from `bin`) as `opts` says, in a new temporary
    /// directory; returns once `/readyz` answers.
    pub fn start(bin: PathBuf, opts: &ApiOptions) -> Self {
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix("vigil-k8s-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"))
            .keep();
        write(&dir.join("owner.pid"), &std::process::id().to_string());
        Self::start_in(bin, dir, opts)
    }

    /// [`Self::start`] in the directory `dir` (which the caller owns and removes).
    pub fn start_in(bin: PathBuf, dir: PathBuf, opts: &ApiOptions) -> Self {
        // Serving certificate (127.0.0.1, localhost) from a throwaway CA.
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vigil e2e apiserver CA");
        let ca = ca_params
            .self_signed(&ca_key)
            .unwrap_or_else(|e| panic!("{e}"));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut sans = vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            opts.address.to_string(),
        ];
        sans.extend(opts.sans.iter().cloned());
        sans.dedup();
        let params = rcgen::CertificateParams::new(sans).unwrap_or_else(|e| panic!("{e}"));
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let cert = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        write(&dir.join("serving.crt"), &cert.pem());
        write(&dir.join("serving.key"), &key.serialize_pem());
        // Service-account token signing key (ES256).
        let sa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|e| panic!("{e}"));
        write(&dir.join("sa.key"), &sa.serialize_pem());
        write(&dir.join("sa.pub"), &sa.public_key_pem());
        let mut tokens = format!(
            "{ADMIN_TOKEN},vigil-e2e-admin,admin,\"system:masters\"\n{CONTROLLER_TOKEN},{CONTROLLER_USER},controller,\"system:serviceaccounts,system:serviceaccounts:vigil-system\"\n"
        );
        for (token, user, groups) in &opts.tokens {
            tokens.push_str(&format!("{token},{user},{user},\"{}\"\n", groups.join(",")));
        }
        write(&dir.join("tokens.csv"), &tokens);

        // In a namespace of its own, the well-known ports are free.
        let (client_port, peer_port, api_port) = if opts.netns.is_some() {
            (2379, 2380, 6443)
        } else {
            (free_port(), free_port(), free_port())
        };
        let netns = opts.netns.as_deref();
        let log = |name: &str| {
            std::fs::File::create(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let etcd_args: Vec<String> = vec![
            "--data-dir".into(),
            dir.join("etcd").display().to_string(),
            "--listen-client-urls".into(),
            format!("http://127.0.0.1:{client_port}"),
            "--advertise-client-urls".into(),
            format!("http://127.0.0.1:{client_port}"),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{peer_port}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{peer_port}"),
            "--initial-cluster".into(),
            format!("default=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        let etcd_pid = spawn_for_life(
            netns,
            &bin.join("etcd"),
            &etcd_args,
            log("etcd.log"),
            log("etcd.err"),
        );

        let p = |f: &str| dir.join(f).display().to_string();
        let api_args: Vec<String> = vec![
            format!("--etcd-servers=http://127.0.0.1:{client_port}"),
            format!("--bind-address={}", opts.address),
            format!("--advertise-address={}", opts.address),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", p("serving.crt")),
            format!("--tls-private-key-file={}", p("serving.key")),
            format!("--token-auth-file={}", p("tokens.csv")),
            format!("--authorization-mode={}", opts.authorization),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--service-cluster-ip-range={}", opts.service_cidr),
            "--allow-privileged=true".into(),
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ]
        .into_iter()
        .chain(opts.extra_args.iter().cloned())
        .collect();
        let api_pid = spawn_for_life(
            netns,
            &bin.join("kube-apiserver"),
            &api_args,
            log("kube-apiserver.log"),
            log("kube-apiserver.err"),
        );

        let cluster = Self {
            url: format!("https://{}:{api_port}", opts.address),
            ca_pem: ca.pem(),
            bin,
            dir,
            namespaces: AtomicU32::new(0),
            apiserver: std::sync::Mutex::new((api_pid, api_args)),
            etcd_pid,
            netns: opts.netns.clone(),
        };
        cluster.write_kubeconfig();
        cluster.wait_ready();
        cluster
    }

    /// The pids of etcd and kube-apiserver.
    pub fn server_pids(&self) -> Vec<u32> {
        let api = self.apiserver.lock().unwrap_or_else(|p| p.into_inner()).0;
        vec![api, self.etcd_pid]
    }

    /// Kills etcd and kube-apiserver and removes the directory: for a server a test
    /// started for itself ([`Self::start`]); the shared one ([`cluster`]) lives as long
    /// as its test binary.
    pub fn stop(self) {
        for pid in self.server_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The serving certificate's CA, as a file (for kubeconfigs of node components).
    pub fn ca_file(&self) -> PathBuf {
        let p = self.dir.join("ca.crt");
        if !p.exists() {
            write(&p, &self.ca_pem);
        }
        p
    }

    /// Kills kube-apiserver (SIGKILL, as a crash) and starts it again on the same port with
    /// the same etcd: every watch breaks and must be re-established by its client.
    pub fn restart_apiserver(&self) {
        let mut guard = self.apiserver.lock().unwrap_or_else(|p| p.into_inner());
        let pid = nix::unistd::Pid::from_raw(i32::try_from(guard.0).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        // Wait until it is gone and its port is free again. Not until it is a zombie: a
        // killed multi-threaded process's leader shows `Z` while its other threads are
        // still exiting, and the listening socket closes only with the last of them — a
        // restart in that window failed with "bind: address already in use" (seen in
        // CI). The process keeper reaps it once every thread is gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{}", guard.0)).exists() {
            assert!(Instant::now() < deadline, "kube-apiserver did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.netns.is_none()
            && let Some(addr) = self
                .url
                .strip_prefix("https://")
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        {
            // std's listener sets SO_REUSEADDR, as Go's does: if this binds, so will it.
            while std::net::TcpListener::bind(addr).is_err() {
                assert!(Instant::now() < deadline, "{addr} still in use");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        guard.0 = spawn_for_life(
            self.netns.as_deref(),
            &self.bin.join("kube-apiserver"),
            &guard.1,
            log("kube-apiserver.log"),
            log("kube-apiserver.err"),
        );
        drop(guard);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let cfg = self.client_config(ADMIN_TOKEN);
        // Its own thread and runtime: callers may be inside a runtime already.
        let ready = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("{e}"));
                rt.block_on(async {
                    while Instant::now() < deadline {
                        if let Ok(client) = Client::try_from(cfg.clone()) {
                            let req = http::Request::get("/readyz")
                                .body(Vec::new())
                                .unwrap_or_else(|e| panic!("{e}"));
                            if let Ok(body) = client.request_text(req).await
                                && body.trim() == "ok"
                            {
                                return true;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    false
                })
            })
            .join()
            .unwrap_or(false)
        });
        if !ready {
            // The cluster's directory is removed when the test ends: keep the
            // evidence in the failure itself — whether the process still runs (a log
            // that stops mid-way reads the same for a hung and a dead one) and etcd's end.
            let pid = self.apiserver.lock().unwrap_or_else(|p| p.into_inner()).0;
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| rest.to_string()))
                .and_then(|rest| rest.chars().next())
                .map_or_else(|| "gone".to_string(), |c| format!("state {c}"));
            let err = self.dir.join("kube-apiserver.err");
            panic!(
                "kube-apiserver (pid {pid}, {state}) did not become ready in 120 s; last lines of {}:\n{}\nlast lines of etcd.err:\n{}",
                err.display(),
                crate::node::tail(&err, 40),
                crate::node::tail(&self.dir.join("etcd.err"), 15)
            );
        }
    }
}

/// The repository root (for `crds/`, `charts/`, `examples/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .to_path_buf()
}
