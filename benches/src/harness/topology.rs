//! Everything under test, started once per invocation and interleaved by the rounds:
//!
//! ```text
//! generator (CPU 1) ─► entry ─► [outbound sidecar ─mTLS─► inbound sidecar] ─► backend   (CPU 0)
//! ```
//!
//! | path | HTTP entry | h2c entry | opaque TCP entry | inbound (mTLS) |
//! |---|---|---|---|---|
//! | direct | nginx backend :8080 | :8081 | sink :5201 | — |
//! | relay | — | — | a pair of plain relays (no TLS), B5's floor | — |
//! | rustls | — | — | — | the smallest rustls server on sockets, B7's floor |
//! | vigil | route listener | HTTP/2 pair's route | TCP pair's route | vigil inbound |
//! | vigil-nometrics | as vigil, `--request-metrics false` | same | — | — |
//! | vigil-h1app | — | an HTTP/2 pair whose inbound speaks HTTP/1.1 to the backend (`--http1-app-ports`), the baselines' job | — | — |
//! | envoy | :21001 | :21001 | :21101 | :21006 |
//! | haproxy | :25001 | :25001 | :25101 | :25006 |
//! | nginx | :15001 | :15002 | — | :15006 |
//!
//! The baselines' configurations are the reference ones (`benches/baselines/`, from
//! BENCHMARKS.md) with `@DIR@` replaced by the work directory. Every proxy runs one
//! worker; every key exchange is X25519 (fixed so the comparison is like for like).

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

pub use super::binaries::Binaries;
use super::{certs::Certs, procs::Proc};

/// The key-exchange group every path uses.
pub const KX_GROUP: &str = "X25519";

/// The TLS 1.3 cipher suite every path uses: Envoy's (BoringSSL's TLS 1.3 suites are
/// fixed, AES-128-GCM first where the CPU has AES instructions), so vigil, nginx and
/// HAProxy are told to use it too (their defaults put AES-256-GCM first).
pub const CIPHER_SUITE: &str = "TLS_AES_128_GCM_SHA256";

/// Reference configurations (`@DIR@` is the work directory).
const CONFIGS: &[(&str, &str)] = &[
    (
        "envoy-in.yaml",
        include_str!("../../baselines/envoy-in.yaml"),
    ),
    (
        "envoy-out.yaml",
        include_str!("../../baselines/envoy-out.yaml"),
    ),
    (
        "envoy-tcp-in.yaml",
        include_str!("../../baselines/envoy-tcp-in.yaml"),
    ),
    (
        "envoy-tcp-out.yaml",
        include_str!("../../baselines/envoy-tcp-out.yaml"),
    ),
    (
        "haproxy-in.cfg",
        include_str!("../../baselines/haproxy-in.cfg"),
    ),
    (
        "haproxy-out.cfg",
        include_str!("../../baselines/haproxy-out.cfg"),
    ),
    (
        "haproxy-tcp.cfg",
        include_str!("../../baselines/haproxy-tcp.cfg"),
    ),
    (
        "nginx-backend.conf",
        include_str!("../../baselines/nginx-backend.conf"),
    ),
    (
        "nginx-in.conf",
        include_str!("../../baselines/nginx-in.conf"),
    ),
    (
        "nginx-out.conf",
        include_str!("../../baselines/nginx-out.conf"),
    ),
];

/// Ports the reference configurations listen on. All below the kernel's ephemeral range
/// (32768+), so a client connection's local port (or its TIME_WAIT) never holds one;
/// Envoy's moved from the reference's 35xxx to 21xxx for that reason.
const FIXED_PORTS: &[u16] = &[
    8080, 8081, 5201, 21001, 21006, 21101, 21106, 21901, 21906, 21911, 21916, 25001, 25006, 25101,
    25106, 15001, 15002, 15006,
];

/// What runs natively even when the proxies run under callgrind: the backend, the sink
/// and the floors (nothing counted crosses them).
const NATIVE_ALWAYS: &[&str] = &["backend", "sink", "relay-out", "relay-in", "rustls-in"];

/// How the proxies are run.
#[derive(Clone, Debug)]
pub enum Launch {
    /// Natively: the timed rounds.
    Native,
    /// Each under callgrind, its dumps in this directory: the counted figures
    /// ([`super::count`]). The backend and the TCP sink still run natively.
    Callgrind(PathBuf),
    /// The vigil sidecars under callgrind with symbol names as linked (`--demangle=no`),
    /// their dumps in this directory, everything else natively: the profile
    /// [`super::layout`] lists the functions that run from.
    Layout(PathBuf),
}

/// How long a proxy under callgrind may take to open its port (Envoy takes about 20 s).
pub(super) const CALLGRIND_START: std::time::Duration = std::time::Duration::from_secs(180);

/// One path through the topology.
#[derive(Clone, Debug)]
pub struct PathDef {
    /// `direct`, `relay`, `rustls`, `vigil`, `vigil-nometrics`, `vigil-h1app`, `envoy`,
    /// `haproxy`, `nginx`.
    pub name: &'static str,
    /// HTTP/1.1 entry (plaintext).
    pub http: SocketAddr,
    /// HTTP/2 prior-knowledge entry (plaintext).
    pub h2: SocketAddr,
    /// Opaque TCP entry.
    pub tcp: Option<SocketAddr>,
    /// The inbound sidecar's mTLS listener, and how a client connects to it.
    pub inbound: Option<(SocketAddr, InboundTls)>,
    /// Indexes (into [`Topology::procs`]) of the HTTP sidecars (none: the path has no
    /// HTTP/1.1 workload of its own).
    pub sidecars: Vec<usize>,
    /// Indexes of the sidecars behind the h2c entry (vigil keeps the client's protocol up
    /// to the app, so its HTTP/2 pair forwards to the backend's h2c port).
    pub h2_sidecars: Vec<usize>,
    /// Index of the inbound HTTP sidecar.
    pub inbound_proc: Option<usize>,
    /// Indexes of the TCP sidecars.
    pub tcp_sidecars: Vec<usize>,
}

/// What a direct mTLS client must do to reach an inbound sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundTls {
    /// Present the client SVID, require the server SVID, offer ALPN `vigil/1` (how a
    /// vigil inbound tells mesh TLS from an app's own TLS).
    Vigil,
    /// Present the client SVID, require the server SVID, no ALPN (Envoy).
    Spiffe,
    /// Present the client SVID, verify `localhost` (HAProxy, nginx).
    Dns,
}

/// Everything started, and where it listens.
pub struct Topology {
    /// The work directory (certificates, configurations, logs).
    pub dir: PathBuf,
    /// Identities.
    pub certs: Certs,
    /// Every process (killed on drop).
    pub procs: Vec<Proc>,
    /// The paths, in round order.
    pub paths: Vec<PathDef>,
    /// The admin listener of each vigil sidecar, by index into [`Self::procs`].
    pub admins: Vec<(usize, SocketAddr)>,
}

impl Topology {
    /// The path called `name`.
    pub fn path(&self, name: &str) -> Option<&PathDef> {
        self.paths.iter().find(|p| p.name == name)
    }

    /// The processes at `indexes`.
    pub fn procs_at(&self, indexes: &[usize]) -> Vec<&Proc> {
        indexes.iter().filter_map(|&i| self.procs.get(i)).collect()
    }

    /// Fails if any process has died (a crash mid-run must not pass as a slow path).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if !p.running() {
                bail!(
                    "{} exited during the run; its log:\n{}",
                    p.name,
                    p.log_tail()
                );
            }
        }
        Ok(())
    }

    /// Starts everything in `dir`, pinning it to `cpu`.
    pub fn start(
        bins: &Binaries,
        dir: &Path,
        cpu: Option<usize>,
        launch: &Launch,
    ) -> anyhow::Result<Self> {
        for &port in FIXED_PORTS {
            // A previous run's sockets may linger in TIME_WAIT for up to a minute.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(70);
            while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                if std::time::Instant::now() >= deadline {
                    bail!(
                        "port {port} is in use: the reference configurations need it (stop what listens there)"
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
        for sub in ["run", "logs", "www", "conf"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("www/index.html"), vec![b'x'; 1024])?;
        let certs = Certs::create(dir)?;
        let dir_str = dir.to_str().context("work directory is not UTF-8")?;
        for (name, text) in CONFIGS {
            fs::write(dir.join("conf").join(name), text.replace("@DIR@", dir_str))?;
        }
        let conf = |n: &str| dir.join("conf").join(n).display().to_string();
        let logs = dir.join("logs");
        let mut procs = Vec::new();
        let mut start = |name: &str, prog: &Path, mut args: Vec<String>, port: u16| {
            let p = match launch {
                Launch::Callgrind(out) if !NATIVE_ALWAYS.contains(&name) => {
                    if name.starts_with("nginx") && nix::unistd::geteuid().is_root() {
                        // Its worker would drop to `nobody` and could no longer open
                        // the control pipes valgrind created as root.
                        args.extend(["-g".into(), "user root;".into()]);
                    }
                    let (prog, args) = super::callgrind::wrap(out, name, prog, &args);
                    let mut p = Proc::start(name, &prog, &args, cpu, &logs)?;
                    p.wait_listening_within(port, CALLGRIND_START)?;
                    p
                }
                Launch::Layout(out) if name.starts_with("vigil") => {
                    let (prog, args) =
                        super::callgrind::wrap_with(out, name, prog, &args, &["--demangle=no"]);
                    let mut p = Proc::start(name, &prog, &args, cpu, &logs)?;
                    p.wait_listening_within(port, CALLGRIND_START)?;
                    p
                }
                _ => {
                    let mut p = Proc::start(name, prog, &args, cpu, &logs)?;
                    p.wait_listening(port)?;
                    p
                }
            };
            procs.push(p);
            anyhow::Ok(procs.len() - 1)
        };
        let nginx = |c: &str| {
            vec![
                "-p".into(),
                dir_str.into(),
                "-e".into(),
                "stderr".into(),
                "-c".into(),
                conf(c),
            ]
        };
        start("backend", &bins.nginx, nginx("nginx-backend.conf"), 8080)?;
        start(
            "sink",
            &bins.me,
            vec!["sink".into(), "127.0.0.1:5201".into()],
            5201,
        )?;
        // B5's floor: two plain relays in front of the sink, where a TCP sidecar pair is.
        let relay = |listen: u16, up: u16| {
            let (listen, up) = (addr(listen).to_string(), addr(up).to_string());
            vec!["relay".into(), listen, up]
        };
        let (r_in_port, r_out_port) = (free_port(), free_port());
        let r_in = start("relay-in", &bins.me, relay(r_in_port, 5201), r_in_port)?;
        let r_out = start(
            "relay-out",
            &bins.me,
            relay(r_out_port, r_in_port),
            r_out_port,
        )?;
        // B7's floor: the smallest rustls server on sockets, the server SVID's files.
        let tls_port = free_port();
        let tls_args = vec![
            "tls-server".into(),
            dir_str.into(),
            addr(tls_port).to_string(),
        ];
        let tls_in = start("rustls-in", &bins.me, tls_args, tls_port)?;

        // vigil: an HTTP pair, the same without per-request metrics, an HTTP/2 pair (its
        // inbound forwards h2 to the backend's h2c port), a TCP pair.
        let policy_http = dir.join("conf/vigil-inbound-http.yaml");
        fs::write(
            &policy_http,
            format!(
                "generation: 1\ninbound:\n  - policy: bench/client-reads\n    action: allow\n    from: [{{id: \"{}\"}}]\n    http: {{methods: [GET], paths: [{{prefix: /}}]}}\n",
                super::certs::client_id()
            ),
        )?;
        let policy_tcp = dir.join("conf/vigil-inbound-tcp.yaml");
        fs::write(
            &policy_tcp,
            format!(
                "generation: 1\ninbound:\n  - policy: bench/client-tcp\n    action: allow\n    from: [{{id: \"{}\"}}]\n",
                super::certs::client_id()
            ),
        )?;
        let policy_out = dir.join("conf/vigil-outbound.yaml");
        fs::write(&policy_out, "generation: 1\ninbound: []\n")?;
        let vigil = |who: &str, inbound: u16, policy: &Path, extra: Vec<String>| {
            let mut a: Vec<String> = [
                "run",
                "--access-log",
                "off",
                "--tls-groups",
                "x25519",
                "--tls-cipher-suites",
                CIPHER_SUITE,
                "--outbound",
                "127.0.0.1:0",
            ]
            .map(String::from)
            .to_vec();
            a.extend(["--inbound".into(), format!("127.0.0.1:{inbound}")]);
            a.extend(["--admin".into(), format!("127.0.0.1:{}", free_port())]);
            a.extend([
                "--svid".into(),
                dir.join(format!("{who}.crt")).display().to_string(),
            ]);
            a.extend([
                "--key".into(),
                dir.join(format!("{who}.key")).display().to_string(),
            ]);
            a.extend(["--bundle".into(), dir.join("ca.crt").display().to_string()]);
            a.extend(["--policy".into(), policy.display().to_string()]);
            a.extend(extra);
            a
        };
        let server = super::certs::server_id();
        let mut admins = Vec::new();
        let mut vigil_pair = |name: &'static str,
                              app: u16,
                              policy: &Path,
                              extra: &[&str]|
         -> anyhow::Result<(SocketAddr, SocketAddr, usize, usize)> {
            let (inb, entry) = (free_port(), free_port());
            let mut in_args = vigil(
                "server",
                inb,
                policy,
                vec!["--app".into(), format!("127.0.0.1:{app}")],
            );
            in_args.extend(extra.iter().map(|s| s.to_string()));
            let admin_in = admin_of(&in_args);
            let i = start(&format!("{name}-in"), &bins.vigil_proxy, in_args, inb)?;
            admins.extend(admin_in.map(|a| (i, a)));
            let mut out_args = vigil(
                "client",
                free_port(),
                &policy_out,
                vec![
                    "--outbound-route".into(),
                    format!("127.0.0.1:{entry}=127.0.0.1:{inb},{server}"),
                ],
            );
            out_args.extend(extra.iter().map(|s| s.to_string()));
            let admin_out = admin_of(&out_args);
            let o = start(&format!("{name}-out"), &bins.vigil_proxy, out_args, entry)?;
            admins.extend(admin_out.map(|a| (o, a)));
            Ok((addr(entry), addr(inb), o, i))
        };
        let (v_entry, v_in, v_out_i, v_in_i) = vigil_pair("vigil", 8080, &policy_http, &[])?;
        let (nm_entry, _, nm_out_i, nm_in_i) = vigil_pair(
            "vigil-nometrics",
            8080,
            &policy_http,
            &["--request-metrics", "false"],
        )?;
        let (v2_entry, _, v2_out_i, v2_in_i) = vigil_pair("vigil-h2", 8081, &policy_http, &[])?;
        // Like for like on the HTTP/2 path: every baseline's inbound forwards to the
        // backend over HTTP/1.1; this pair's does too (counted only, RESULTS change 35).
        let (h1a_entry, _, h1a_out_i, h1a_in_i) = vigil_pair(
            "vigil-h1app",
            8080,
            &policy_http,
            &["--http1-app-ports", "8080"],
        )?;
        let (vt_entry, _, vt_out_i, vt_in_i) = vigil_pair("vigil-tcp", 5201, &policy_tcp, &[])?;

        let envoy = |c: &str| {
            vec![
                "-c".into(),
                conf(c),
                "--concurrency".into(),
                "1".into(),
                "--disable-hot-restart".into(),
                "--log-level".into(),
                "warn".into(),
            ]
        };
        let e_in = start("envoy-in", &bins.envoy, envoy("envoy-in.yaml"), 21006)?;
        let e_out = start("envoy-out", &bins.envoy, envoy("envoy-out.yaml"), 21001)?;
        let et_in = start(
            "envoy-tcp-in",
            &bins.envoy,
            envoy("envoy-tcp-in.yaml"),
            21106,
        )?;
        let et_out = start(
            "envoy-tcp-out",
            &bins.envoy,
            envoy("envoy-tcp-out.yaml"),
            21101,
        )?;
        let haproxy = |c: &str| vec!["-db".into(), "-f".into(), conf(c)];
        let h_in = start(
            "haproxy-in",
            &bins.haproxy,
            haproxy("haproxy-in.cfg"),
            25006,
        )?;
        let h_out = start(
            "haproxy-out",
            &bins.haproxy,
            haproxy("haproxy-out.cfg"),
            25001,
        )?;
        let h_tcp = start(
            "haproxy-tcp",
            &bins.haproxy,
            haproxy("haproxy-tcp.cfg"),
            25101,
        )?;
        let n_in = start("nginx-in", &bins.nginx, nginx("nginx-in.conf"), 15006)?;
        let n_out = start("nginx-out", &bins.nginx, nginx("nginx-out.conf"), 15001)?;

        let paths = vec![
            PathDef {
                name: "direct",
                http: addr(8080),
                h2: addr(8081),
                tcp: Some(addr(5201)),
                inbound: None,
                sidecars: vec![],
                h2_sidecars: vec![],
                inbound_proc: None,
                tcp_sidecars: vec![],
            },
            PathDef {
                name: "relay",
                // Opaque TCP only (`suite::paths_for`).
                http: addr(8080),
                h2: addr(8081),
                tcp: Some(addr(r_out_port)),
                inbound: None,
                sidecars: vec![],
                h2_sidecars: vec![],
                inbound_proc: None,
                tcp_sidecars: vec![r_out, r_in],
            },
            PathDef {
                name: "rustls",
                // Handshakes only (`suite::paths_for`).
                http: addr(8080),
                h2: addr(8081),
                tcp: None,
                inbound: Some((addr(tls_port), InboundTls::Vigil)),
                sidecars: vec![],
                h2_sidecars: vec![],
                inbound_proc: Some(tls_in),
                tcp_sidecars: vec![],
            },
            PathDef {
                name: "vigil",
                http: v_entry,
                h2: v2_entry,
                tcp: Some(vt_entry),
                inbound: Some((v_in, InboundTls::Vigil)),
                sidecars: vec![v_out_i, v_in_i],
                h2_sidecars: vec![v2_out_i, v2_in_i],
                inbound_proc: Some(v_in_i),
                tcp_sidecars: vec![vt_out_i, vt_in_i],
            },
            PathDef {
                name: "vigil-nometrics",
                http: nm_entry,
                h2: nm_entry,
                tcp: None,
                inbound: None,
                sidecars: vec![nm_out_i, nm_in_i],
                h2_sidecars: vec![],
                inbound_proc: Some(nm_in_i),
                tcp_sidecars: vec![],
            },
            PathDef {
                name: "vigil-h1app",
                http: h1a_entry,
                h2: h1a_entry,
                tcp: None,
                inbound: None,
                sidecars: vec![],
                h2_sidecars: vec![h1a_out_i, h1a_in_i],
                inbound_proc: None,
                tcp_sidecars: vec![],
            },
            PathDef {
                name: "envoy",
                http: addr(21001),
                h2: addr(21001),
                tcp: Some(addr(21101)),
                inbound: Some((addr(21006), InboundTls::Spiffe)),
                sidecars: vec![e_out, e_in],
                h2_sidecars: vec![e_out, e_in],
                inbound_proc: Some(e_in),
                tcp_sidecars: vec![et_out, et_in],
            },
            PathDef {
                name: "haproxy",
                http: addr(25001),
                h2: addr(25001),
                tcp: Some(addr(25101)),
                inbound: Some((addr(25006), InboundTls::Dns)),
                sidecars: vec![h_out, h_in],
                h2_sidecars: vec![h_out, h_in],
                inbound_proc: Some(h_in),
                tcp_sidecars: vec![h_tcp],
            },
            PathDef {
                name: "nginx",
                http: addr(15001),
                h2: addr(15002),
                tcp: None,
                inbound: Some((addr(15006), InboundTls::Dns)),
                sidecars: vec![n_out, n_in],
                h2_sidecars: vec![n_out, n_in],
                inbound_proc: Some(n_in),
                tcp_sidecars: vec![],
            },
        ];
        Ok(Self {
            dir: dir.to_owned(),
            certs,
            procs,
            paths,
            admins,
        })
    }
}

/// The address a vigil sidecar's arguments give `--admin`.
fn admin_of(args: &[String]) -> Option<SocketAddr> {
    let i = args.iter().position(|a| a == "--admin")?;
    args.get(i + 1)?.parse().ok()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
