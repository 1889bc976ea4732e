//! Helpers for the Kubernetes tests: the controller and proxies as real processes on
//! loopback (there is no kubelet), polling, and small conveniences.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::{apps, mesh};

/// A free loopback port for a process to listen on, below the kernel's ephemeral range.
///
/// A port from `bind(":0")` is released before the process binds it, and meanwhile any
/// outgoing connection on the machine (the apiserver to etcd, a test's client) may take
/// it as its local port — seen as "Address already in use" when a replica starts. Ports
/// under 32768 (the default ephemeral range starts there) are never handed out for
/// outgoing connections; each test process walks its own sequence (seeded by its pid)
/// and keeps the first one it can bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000; // 10000..32000
    let seed = std::process::id().wrapping_mul(7_919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (seed.wrapping_add(n.wrapping_mul(13)) % SPAN);
        let port = u16::try_from(port).unwrap_or_else(|_| unreachable!("port below 32000"));
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below 32000")
}

/// Spawns `program args` (inside the network namespace `netns`, if given) from a thread
/// that lives as long as the process, with SIGKILL as the parent-death signal (util-linux
/// `setpriv --pdeathsig`, so no `unsafe` pre-exec hook): the process dies with the test
/// process, even when it is killed. The signal follows the thread that forked, hence the
/// long-lived keeper thread. `nsenter --net` switches only the network namespace, so
/// every process shares the host's mounts (kubelet's volume mounts must be visible to
/// containerd and runc). Returns the pid.
pub fn spawn_for_life(
    netns: Option<&str>,
    program: &Path,
    args: &[String],
    stdout: std::fs::File,
    stderr: std::fs::File,
) -> u32 {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg("setpriv");
            c
        }
        None => Command::new("setpriv"),
    };
    cmd.arg("--pdeathsig")
        .arg("KILL")
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    type Job = (Command, std::sync::mpsc::Sender<Result<u32, String>>);
    static KEEPER: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || {
            let mut children: Vec<Child> = Vec::new();
            loop {
                match rx.recv_timeout(std::time::Duration::from_millis(500)) {
                    Ok((mut cmd, reply)) => {
                        let r = cmd.spawn().map_err(|e| format!("starting {cmd:?}: {e}"));
                        let _ = reply.send(r.as_ref().map(Child::id).map_err(Clone::clone));
                        if let Ok(child) = r {
                            children.push(child);
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    // Not reached while the process lives: the sender is in a static.
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::park(),
                }
                // Reap the ones that exited or were killed (no zombies while the test runs).
                children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            }
        });
        std::sync::Mutex::new(tx)
    });
    let (tx, rx) = std::sync::mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, tx))
        .unwrap_or_else(|e| panic!("process keeper: {e}"));
    rx.recv()
        .unwrap_or_else(|e| panic!("process keeper: {e}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A child process, killed on drop; its log is printed if the test is failing.
pub struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("--- {} log ({}):", self.name, self.log.display());
                eprintln!("{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
        }
    }
}

/// Starts the workspace binary `bin` with `env`, logging to `<dir>/<name>.log`.
pub fn spawn(name: &str, bin: &str, args: &[&str], env: &[(&str, String)], dir: &Path) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let out = f.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(mesh::bin(bin))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    Proc {
        child,
        name: name.to_string(),
        log,
    }
}

/// Parses YAML (panics with the document on error).
pub fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_saphyr::from_str(s).unwrap_or_else(|e| panic!("{e}\n{s}"))
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The holder of the Lease `name` (in `leases`' namespace), if it exists and has one.
pub async fn lease_holder(
    leases: &kube::Api<k8s_openapi::api::coordination::v1::Lease>,
    name: &str,
) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

/// The `status` of the Segment, AccessPolicy or Quarantine `name` once its first
/// condition's status is `condition` (`"True"`, `"False"`), else `None`.
pub async fn policy_status(
    api: &kube::Api<kube::api::DynamicObject>,
    name: &str,
    condition: &str,
) -> Option<serde_json::Value> {
    let s = api.get(name).await.ok()?.data.get("status")?.clone();
    (s["conditions"][0]["status"] == condition).then_some(s)
}

/// Waits until `addr` answers `/ready` with 2xx.
pub async fn ready(what: &str, addr: SocketAddr) {
    wait_for(what, Duration::from_secs(60), || async {
        apps::get(addr, "/ready")
            .await
            .ok()
            .filter(|(s, _)| s.is_success())
    })
    .await;
}

/// The sum of a Prometheus metric's samples whose line starts with `name`.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = apps::get(addr, "/metrics").await.unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Addresses of one controller replica.
#[derive(Clone, Debug)]
pub struct ControllerPorts {
    /// gRPC (proxies).
    pub grpc: u16,
    /// Admin (/ready, /metrics, /status).
    pub admin: u16,
    /// Injector webhook.
    pub webhook: u16,
}

impl ControllerPorts {
    /// Three free ports.
    pub fn free() -> Self {
        Self {
            grpc: free_port(),
            admin: free_port(),
            webhook: free_port(),
        }
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin))
    }
}

/// The environment of a Kubernetes-mode controller replica `name` running as the chart's
/// ServiceAccount (`kubeconfig` from [`crate::k8s::Cluster::write_kubeconfig_for`] with
/// [`crate::k8s::CONTROLLER_TOKEN`]) in `vigil-system`.
pub fn controller_env(
    name: &str,
    kubeconfig: &Path,
    state: &Path,
    ports: &ControllerPorts,
) -> Vec<(&'static str, String)> {
    vec![
        ("VIGIL_CONTROLLER_KUBERNETES", "true".into()),
        (
            "VIGIL_CONTROLLER_KUBECONFIG",
            kubeconfig.display().to_string(),
        ),
        ("VIGIL_CONTROLLER_NAMESPACE", "vigil-system".into()),
        ("VIGIL_CONTROLLER_POD_NAME", name.into()),
        ("VIGIL_CONTROLLER_STATE_DIR", state.display().to_string()),
        (
            "VIGIL_CONTROLLER_LISTEN",
            format!("127.0.0.1:{}", ports.grpc),
        ),
        (
            "VIGIL_CONTROLLER_ADMIN",
            format!("127.0.0.1:{}", ports.admin),
        ),
        (
            "VIGIL_CONTROLLER_WEBHOOK_LISTEN",
            format!("127.0.0.1:{}", ports.webhook),
        ),
        ("VIGIL_CONTROLLER_WEBHOOK_SANS", "127.0.0.1".into()),
        ("VIGIL_CONTROLLER_LOG", "info,vigil_controller=debug".into()),
    ]
}
