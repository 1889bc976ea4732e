//! Descriptor exhaustion, tried as an attacker would: many connections that send a mesh
//! ClientHello and stall. The real binary runs under `prlimit` (util-linux) so the tests
//! control its open-files limit. What must hold: the soft limit is raised to the hard one;
//! stalled handshakes are bounded per listener and per source, so descriptors stay
//! available; and when descriptors do run out, the accept loop backs off instead of
//! spinning, logs sparingly, and a policy file it cannot read keeps the policy in force.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use support::*;
use tokio::{io::AsyncWriteExt, net::TcpStream};

struct Running {
    _child: ChildGuard,
    pid: u32,
    inbound: SocketAddr,
    admin: SocketAddr,
    stderr: std::path::PathBuf,
    policy: std::path::PathBuf,
}

/// The real proxy for `orders` (policy ALLOW_WEB, generation 1) under `prlimit
/// --nofile=soft:hard`, its log in a file.
async fn spawn_limited(
    mesh: &Mesh,
    app: SocketAddr,
    soft: u64,
    hard: u64,
    extra: &[&str],
) -> Running {
    let creds = mesh.write_creds("orders");
    let policy = mesh.write_policy("orders", ALLOW_WEB);
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (inbound, admin) = (free(), free());
    let stderr = mesh.dir.path().join("orders.stderr");
    let path = |f: &str| creds.join(f).display().to_string();
    let child = Command::new("prlimit")
        .arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_vigil-proxy"))
        .args([
            "run",
            "--inbound",
            &inbound.to_string(),
            "--outbound",
            "127.0.0.1:0",
        ])
        .args(["--admin", &admin.to_string(), "--app", &app.to_string()])
        .args(["--access-log", "off", "--handshake-timeout", "60s"])
        .args(["--svid", &path("svid.pem"), "--key", &path("key.pem")])
        .args(["--bundle", &path("bundle.pem")])
        .args(["--policy", &policy.display().to_string()])
        .args(extra)
        .env("VIGIL_PROXY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("prlimit (util-linux) runs the proxy");
    let pid = child.id();
    let guard = ChildGuard(Some(child));
    wait_ready(admin).await;
    Running {
        _child: guard,
        pid,
        inbound,
        admin,
        stderr,
        policy,
    }
}

/// A TCP connection from `source` (any 127.x address is loopback) that sends a mesh
/// ClientHello (ALPN vigil/1, no certificate to offer later) and then says nothing more.
async fn stalled_hello(source: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let mut stream = tokio::time::timeout(Duration::from_secs(2), socket.connect(to))
        .await
        .ok()?
        .ok()?;
    let mut cfg =
        rustls::ClientConfig::builder_with_provider(vigil_cert_authority::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"vigil/1".to_vec()];
    let name = rustls_pki_types::ServerName::try_from("mesh.invalid").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    stream.write_all(&hello).await.ok()?;
    Some(stream)
}

/// A keep-alive HTTP/1 client over mTLS as `web`, from `source`.
async fn web_client(
    mesh: &Mesh,
    source: IpAddr,
    to: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let creds = mesh.client_creds("web");
    let cfg = vigil_cert_authority::tls::client_config(
        &creds,
        [id(&wid("orders"))],
        vigil_cert_authority::tls::provider(),
        Arc::new(vigil_cert_authority::verify::NoRevocation),
        &[b"vigil/1"],
    )
    .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let tcp = socket.connect(to).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("mesh.invalid").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// CPU time (user + system) the process has used.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14, stime 15 (1-based overall).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(admin, "/metrics").await.unwrap();
    body.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn lines_containing(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[tokio::test]
async fn the_soft_open_files_limit_is_raised_to_the_hard_limit() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let p = spawn_limited(&mesh, app, 1024, 8192, &[]).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.pid)).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums, ["8192", "8192"], "{line}");
    assert_eq!(
        lines_containing(&p.stderr, "raised the open-files limit"),
        1
    );
}

#[tokio::test]
async fn stalled_handshakes_are_bounded_so_descriptors_stay_available() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let p = spawn_limited(
        &mesh,
        app,
        1024,
        1024,
        &[
            "--max-pending-handshakes",
            "200",
            "--max-pending-per-source",
            "50",
        ],
    )
    .await;
    let mut web = web_client(&mesh, ip("127.0.0.2"), p.inbound).await;
    let mut held = Vec::new();
    let attack = |hosts: std::ops::Range<u8>| {
        let inbound = p.inbound;
        async move {
            let mut out = Vec::new();
            for host in hosts {
                for _ in 0..80 {
                    if let Some(s) = stalled_hello(ip(&format!("127.0.0.{host}")), inbound).await {
                        out.push(s);
                    }
                }
            }
            out
        }
    };
    let rejected = |reason: &'static str| {
        let admin = p.admin;
        async move {
            metric(
                admin,
                &format!("vigil_proxy_rejected_total{{direction=\"inbound\",reason=\"{reason}\"}}"),
            )
            .await
        }
    };
    // Three attackers, 80 stalled handshakes each: 50 each are held, the rest refused —
    // and a new caller from elsewhere still gets in.
    held.extend(attack(10..13).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rejected("pending_per_source").await, 90.0);
    assert_eq!(rejected("pending_handshakes").await, 0.0);
    let mut newcomer = web_client(&mesh, ip("127.0.0.3"), p.inbound).await;
    let (status, _, _) = send(&mut newcomer, get("/orders/1")).await.unwrap();
    assert_eq!(
        status, 200,
        "a new caller is served next to three attackers"
    );
    // Three more: the listener's bound (200) fills; past it, everyone new is refused.
    // What is established keeps working, the admin port answers, descriptors stay few.
    held.extend(attack(13..16).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_source = rejected("pending_per_source").await;
    let total = rejected("pending_handshakes").await;
    assert_eq!(per_source + total, 480.0 - 200.0, "{per_source} {total}");
    let fds = open_fds(p.pid);
    assert!(fds < 400, "descriptors bounded under attack: {fds}");
    let (status, _, _) = send(&mut web, get("/orders/1")).await.unwrap();
    assert_eq!(status, 200, "an established caller is served under attack");
    println!(
        "480 stalled handshakes from 6 sources: {per_source} refused per source, {total} by the listener's bound, {fds} descriptors open; a new caller got in beside 3 attackers; established callers served throughout"
    );
    drop(held);
}

#[tokio::test]
async fn out_of_descriptors_the_proxy_backs_off_logs_sparingly_and_keeps_its_policy() {
    let mesh = Mesh::new();
    let app = http_app().await;
    // 96 descriptors, hard: the proxy cannot raise them, and the attack exhausts them.
    let p = spawn_limited(&mesh, app, 96, 96, &[]).await;
    let mut web = web_client(&mesh, ip("127.0.0.2"), p.inbound).await;
    // Warm: the connection to the app is pooled now (no descriptor needed later).
    let (status, _, _) = send(&mut web, get("/orders/1")).await.unwrap();
    assert_eq!(status, 200);

    let mut held = Vec::new();
    for host in 10..14 {
        for _ in 0..40 {
            if let Some(s) = stalled_hello(ip(&format!("127.0.0.{host}")), p.inbound).await {
                held.push(s);
            }
        }
    }
    // Out of descriptors now: accept fails. Over 3 s, the proxy must not spin or flood.
    let cpu_before = cpu(p.pid);
    let log_before = lines_containing(&p.stderr, "accept failed");
    // A policy change it cannot read now (the file is replaced: rename).
    let v2 = ALLOW_WEB.replace("generation: 1", "generation: 2");
    write_atomic(&p.policy, v2.as_bytes());
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, _, _) = send(&mut web, get("/orders/1")).await.unwrap();
        assert_eq!(
            status, 200,
            "the policy in force stays while the file cannot be read"
        );
    }
    let spent = cpu(p.pid).saturating_sub(cpu_before);
    let logged = lines_containing(&p.stderr, "accept failed") - log_before;
    assert!(
        lines_containing(&p.stderr, "accept failed") > 0,
        "descriptors did run out (the test must exhaust them)"
    );
    assert!(
        spent < Duration::from_millis(1500),
        "accept loop spun: {spent:?} of CPU in 3 s"
    );
    assert!(
        logged <= 8,
        "accept errors flooded the log: {logged} lines in 3 s"
    );
    assert_eq!(
        lines_containing(&p.stderr, "INVALID POLICY"),
        0,
        "an unreadable policy file is not an invalid policy"
    );
    // Descriptors come back: the change is picked up without another event.
    drop(held);
    let t = Instant::now();
    loop {
        if let Ok((_, body)) = http_get(p.admin, "/config").await
            && serde_json::from_str::<serde_json::Value>(&body).unwrap()["policy"]["generation"]
                == 2
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "generation 2 never applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, _) = send(&mut web, get("/orders/1")).await.unwrap();
    assert_eq!(status, 200);
    println!(
        "out of descriptors for 3 s: {spent:?} of CPU, {logged} accept-error lines, requests on an open connection kept their 200; the policy change applied {:?} after descriptors came back",
        t.elapsed()
    );
}

/// Every listener's accept queue is `--listen-backlog` (default 1024, not the standard
/// library's 128), as the kernel reports it (`ss`: Send-Q of a listening socket).
#[tokio::test]
async fn listeners_have_the_configured_backlog() {
    let backlog = |port: u16| {
        let out = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2) is needed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert!(fields.len() >= 3, "ss said {text:?}");
        fields[2].parse::<u32>().unwrap()
    };
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mesh = Mesh::new();
    let app = http_app().await;
    let (p, _) = callee(&mesh, "orders", "inbound: []\n", app, &[]).await;
    for port in [p.inbound.port(), p.outbound.port(), p.admin.port()] {
        assert_eq!(backlog(port), 1024.min(somaxconn), "port {port}");
    }
    let route = format!("127.0.0.1:0={},{}", p.inbound, wid("orders"));
    let (q, _) = proxy(
        &mesh,
        "web",
        "inbound: []\n",
        &[
            "--listen-backlog".into(),
            "77".into(),
            "--outbound-route".into(),
            route,
        ],
    )
    .await;
    for port in [q.inbound.port(), q.admin.port(), q.routes[0].port()] {
        assert_eq!(backlog(port), 77, "port {port}");
    }
}
