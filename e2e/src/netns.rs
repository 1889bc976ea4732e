//! Network namespaces as pods on a bridge, and the processes that run in them.
//!
//! ```text
//!            bridge namespace "<id>-br": br0 (10.A.B.1, the "node")
//!               │            │              │
//!             veth         veth           veth  ...
//!               │            │              │
//!   "<id>-ctl" 10.A.B.2   "<id>-web" .10   "<id>-orders" .11 ...
//! ```
//!
//! Every address is inside namespaces created here; nothing is assigned in the host's
//! namespace and no traffic leaves these namespaces. [`Net`] removes every namespace (and
//! with them the links and iptables rules) and kills every process it started when it is
//! dropped — also when a test panics. A leftover from an aborted run with the same id is
//! removed before it is recreated.

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    process::{Child, Command, Stdio},
};

/// UID the proxies run as (their own traffic is not intercepted).
pub const PROXY_UID: u32 = 1337;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when the test should run.
#[allow(clippy::print_stderr)]
// the skip must be visible in the test output Not root: fails, unless `VIGIL_SKIP_ROOT_TESTS` is set
/// (then the test is skipped, knowingly, with a message).
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("VIGIL_SKIP_ROOT_TESTS").is_some(),
        "{test} needs root (network namespaces, iptables; CI runs as root). Set VIGIL_SKIP_ROOT_TESTS=1 to skip it knowingly"
    );
    eprintln!("skipped {test}: not root and VIGIL_SKIP_ROOT_TESTS is set");
    false
}

/// Runs a command to completion; panics with its stderr if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pod: a network namespace with one address on the bridge.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Namespace name (`ip netns`).
    pub ns: String,
    /// Its IPv4 address (removed by [`Net::ipv6_only`]).
    pub ip: Ipv4Addr,
    /// Its link to the bridge.
    pub dev: String,
}

impl Pod {
    /// `ip:port` of this pod.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// Its IPv6 address once [`Net::add_ipv6`] gave it one: `fd00:<a>:<b>:<c>::<host>`
    /// on the network's `/64`, the IPv4 address's octets in the prefix.
    pub fn ip6(&self) -> Ipv6Addr {
        let [a, b, c, host] = self.ip.octets();
        Ipv6Addr::new(0xfd00, a.into(), b.into(), c.into(), 0, 0, 0, host.into())
    }

    /// `[ip6]:port` of this pod.
    pub fn addr6(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip6(), port))
    }

    /// Runs `f` to completion on a thread inside this pod's namespace.
    pub fn run<T: Send + 'static, F: Future<Output = T> + 'static>(
        &self,
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        let ns = self.ns.clone();
        std::thread::spawn(move || {
            enter(&ns);
            runtime().block_on(f())
        })
        .join()
        .unwrap_or_else(|_| panic!("a task in {} panicked", self.ns))
    }

    /// Starts a long-lived task inside this pod's namespace (it ends with the process).
    pub fn spawn<F: Future<Output = ()> + 'static>(&self, f: impl FnOnce() -> F + Send + 'static) {
        let ns = self.ns.clone();
        std::thread::spawn(move || {
            enter(&ns);
            runtime().block_on(f());
        });
    }
}

/// Runs `f` to completion on a new thread inside the network namespace `ns` (a
/// current-thread runtime; sockets it opens and processes it starts are in `ns`).
pub fn run_in<T: Send + 'static, F: Future<Output = T> + 'static>(
    ns: &str,
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    blocking_in(ns, move || runtime().block_on(f()))
}

/// Runs the blocking `f` on a new thread inside the network namespace `ns`.
pub fn blocking_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let owned = ns.to_string();
    std::thread::spawn(move || {
        enter(&owned);
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn enter(ns: &str) {
    let fd = File::open(format!("/var/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("entering {ns}: {e}"));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

/// A process started in a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcId(usize);

/// The test network: a bridge namespace, pods, processes.
pub struct Net {
    /// Prefix of every namespace and link name.
    pub id: String,
    /// The /24 (first three octets).
    pub subnet: [u8; 3],
    /// The bridge namespace, which also holds the "node" address .1 on br0.
    pub node: Pod,
    namespaces: Vec<String>,
    procs: Vec<Option<Child>>,
    links: u32,
}

impl Net {
    /// A fresh network `10.<tag>.<pid % 250>.0/24` with namespaces named
    /// `v<pid % 10000><tag % 100>-...`. Different `tag`s are independent (tests run in
    /// parallel).
    pub fn new(tag: u8) -> Self {
        let pid = std::process::id();
        let id = format!("v{}{}", pid % 10_000, tag % 100);
        let third = u8::try_from(pid % 250).unwrap_or(0);
        let subnet = [10, tag, third];
        let node = Pod {
            ns: format!("{id}-br"),
            ip: Ipv4Addr::new(10, tag, third, 1),
            dev: "br0".into(),
        };
        let mut net = Self {
            id,
            subnet,
            node: node.clone(),
            namespaces: Vec::new(),
            procs: Vec::new(),
            links: 0,
        };
        net.add_namespace(&node.ns);
        sh(&["ip", "-n", &node.ns, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &node.ns, "link", "set", "br0", "up"]);
        sh(&[
            "ip",
            "-n",
            &node.ns,
            "addr",
            "add",
            &format!("{}/24", node.ip),
            "dev",
            "br0",
        ]);
        net
    }

    fn add_namespace(&mut self, ns: &str) {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
        sh(&["ip", "netns", "add", ns]);
        self.namespaces.push(ns.to_string());
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }

    /// A pod `name` at `.host`, linked to the bridge by a veth pair.
    pub fn pod(&mut self, name: &str, host: u8) -> Pod {
        let [a, b, c] = self.subnet;
        self.links += 1;
        // Link names are at most 15 bytes.
        let (inner, outer) = (
            format!("{}e{}", self.id, self.links),
            format!("{}b{}", self.id, self.links),
        );
        let pod = Pod {
            ns: format!("{}-{name}", self.id),
            ip: Ipv4Addr::new(a, b, c, host),
            dev: inner.clone(),
        };
        self.add_namespace(&pod.ns);
        sh(&[
            "ip",
            "link",
            "add",
            &inner,
            "netns",
            &pod.ns,
            "type",
            "veth",
            "peer",
            "name",
            &outer,
            "netns",
            &self.node.ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &self.node.ns,
            "link",
            "set",
            &outer,
            "master",
            "br0",
            "up",
        ]);
        sh(&[
            "ip",
            "-n",
            &pod.ns,
            "addr",
            "add",
            &format!("{}/24", pod.ip),
            "dev",
            &inner,
        ]);
        sh(&["ip", "-n", &pod.ns, "link", "set", &inner, "up"]);
        pod
    }

    /// Gives `pod` its IPv6 address ([`Pod::ip6`], `/64`, usable at once: no duplicate
    /// address detection) besides its IPv4 one: a dual-stack pod.
    pub fn add_ipv6(&self, pod: &Pod) -> Ipv6Addr {
        let cidr = format!("{}/64", pod.ip6());
        sh(&[
            "ip", "-n", &pod.ns, "addr", "add", &cidr, "dev", &pod.dev, "nodad",
        ]);
        pod.ip6()
    }

    /// Removes `pod`'s IPv4 address: with [`Net::add_ipv6`], an IPv6-only pod (loopback
    /// keeps 127.0.0.1, as in a real IPv6-only pod).
    pub fn ipv6_only(&self, pod: &Pod) {
        let cidr = format!("{}/24", pod.ip);
        sh(&["ip", "-n", &pod.ns, "addr", "del", &cidr, "dev", &pod.dev]);
    }

    /// Starts `argv` inside `pod` (as [`PROXY_UID`] if `as_proxy`), standard output to
    /// `<log>.out` and standard error to `<log>.err`.
    pub fn start(&mut self, pod: &Pod, argv: &[String], as_proxy: bool, log: &Path) -> ProcId {
        let open = |ext: &str| {
            let p = log.with_extension(ext);
            File::create(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let (out, err) = (open("out"), open("err"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &pod.ns]);
        if as_proxy {
            // setpriv execs the proxy: the pid we hold is the proxy's.
            cmd.args([
                "setpriv",
                &format!("--reuid={PROXY_UID}"),
                &format!("--regid={PROXY_UID}"),
                "--clear-groups",
            ]);
        }
        let child = cmd
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {argv:?} in {}: {e}", pod.ns));
        self.procs.push(Some(child));
        ProcId(self.procs.len() - 1)
    }

    /// Stops a process (SIGKILL: a crash, or a node losing power) and reaps it.
    pub fn kill(&mut self, id: ProcId) {
        if let Some(Some(mut c)) = self.procs.get_mut(id.0).map(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id of a running process.
    pub fn pid(&self, id: ProcId) -> Option<u32> {
        self.procs.get(id.0)?.as_ref().map(Child::id)
    }

    /// Whether a process is still running.
    pub fn running(&mut self, id: ProcId) -> bool {
        match self.procs.get_mut(id.0) {
            Some(Some(c)) => matches!(c.try_wait(), Ok(None)),
            _ => false,
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting a namespace removes its links (and their peers) and its iptables rules.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
