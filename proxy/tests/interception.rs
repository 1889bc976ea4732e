//! Transparent interception on real kernel networking (needs root; CI runs as root).
//!
//! Two network namespaces joined by a veth pair ("pod A" 10.254.N.1, "pod B" 10.254.N.2),
//! each with `vigil-proxy init` rules and a `vigil-proxy run` process running as uid 1337.
//! The app in A calls B's IP:port knowing nothing of the mesh; the request is redirected
//! to A's outbound proxy (original destination preserved), crosses the veth as mTLS, is
//! redirected to B's inbound proxy, authorized, and reaches B's app with A's identity.
//! Everything (namespaces, links, rules, processes) is removed on drop, even on failure.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{
    fs::File,
    net::SocketAddr,
    os::unix::fs::{PermissionsExt, chown},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use http::StatusCode;
use support::*;

const PROXY_UID: u32 = 1337;

/// Namespaces and processes that must not outlive the test.
struct Pods {
    names: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Pods {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a fresh thread inside network namespace `ns` (sockets it creates live there).
fn in_netns<T: Send + 'static, F: Future<Output = T> + 'static>(
    ns: &str,
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f())
    })
    .join()
    .unwrap()
}

/// Starts a long-lived task inside `ns` on its own thread.
fn spawn_in_netns<F: Future<Output = ()> + 'static>(
    ns: &str,
    f: impl FnOnce() -> F + Send + 'static,
) {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f());
    });
}

fn make_readable_by_proxy(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        chown(entry.unwrap().path(), Some(PROXY_UID), Some(PROXY_UID)).unwrap();
    }
    chown(dir, Some(PROXY_UID), Some(PROXY_UID)).unwrap();
}

fn run_proxy(ns: &str, creds: &Path, policy: &Path, log: &Path) -> Child {
    let bin = env!("CARGO_BIN_EXE_vigil-proxy");
    let log = File::create(log).unwrap();
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "setpriv",
            "--reuid=1337",
            "--regid=1337",
            "--clear-groups",
            bin,
            "run",
        ])
        .args([
            "--inbound",
            "0.0.0.0:4143",
            "--outbound",
            "127.0.0.1:4140",
            "--admin",
            "127.0.0.1:4191",
        ])
        .args(["--svid", &creds.join("svid.pem").display().to_string()])
        .args(["--key", &creds.join("key.pem").display().to_string()])
        .args(["--bundle", &creds.join("bundle.pem").display().to_string()])
        .args([
            "--policy",
            &policy.display().to_string(),
            "--detect-timeout",
            "200ms",
        ])
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn init(ns: &str, extra: &[&str]) {
    let bin = env!("CARGO_BIN_EXE_vigil-proxy");
    let mut cmd = vec![
        "ip",
        "netns",
        "exec",
        ns,
        bin,
        "init",
        "--proxy-uid",
        "1337",
    ];
    cmd.extend_from_slice(extra);
    sh(&cmd);
    // Idempotent: a second run leaves the same rules.
    let before = Command::new("ip")
        .args(["netns", "exec", ns, "iptables-save", "-t", "nat"])
        .output()
        .unwrap();
    sh(&cmd);
    let after = Command::new("ip")
        .args(["netns", "exec", ns, "iptables-save", "-t", "nat"])
        .output()
        .unwrap();
    let rules = |o: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(o)
            .lines()
            .filter(|l| l.starts_with('-'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        rules(&before.stdout),
        rules(&after.stdout),
        "init is idempotent"
    );
    assert!(
        rules(&after.stdout)
            .iter()
            .any(|r| r.contains("VIGIL_OUTBOUND") && r.contains("--uid-owner 1337"))
    );
}

#[test]
fn transparent_interception_both_directions_with_original_destination() {
    if !nix_is_root() {
        assert!(
            std::env::var_os("VIGIL_SKIP_ROOT_TESTS").is_some(),
            "this test needs root (CI runs as root); set VIGIL_SKIP_ROOT_TESTS=1 to skip it knowingly"
        );
        eprintln!("skipped: not root and VIGIL_SKIP_ROOT_TESTS is set");
        return;
    }
    let n = std::process::id() % 250;
    let (a, b, c) = (format!("vp{n}a"), format!("vp{n}b"), format!("vp{n}c"));
    let (ip_a, ip_b) = (format!("10.254.{n}.1"), format!("10.254.{n}.2"));
    let mut pods = Pods {
        names: vec![a.clone(), b.clone(), c.clone()],
        children: vec![],
    };
    for ns in [&a, &b, &c] {
        // A leftover from an aborted run with the same pid is removed first.
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
        sh(&["ip", "netns", "add", ns]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    let (va, vb) = (format!("vp{n}va"), format!("vp{n}vb"));
    sh(&[
        "ip", "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
    ]);
    sh(&[
        "ip",
        "-n",
        &a,
        "addr",
        "add",
        &format!("{ip_a}/24"),
        "dev",
        &va,
    ]);
    sh(&[
        "ip",
        "-n",
        &b,
        "addr",
        "add",
        &format!("{ip_b}/24"),
        "dev",
        &vb,
    ]);
    sh(&["ip", "-n", &a, "link", "set", &va, "up"]);
    sh(&["ip", "-n", &b, "link", "set", &vb, "up"]);
    // Pod C is outside the mesh (no proxy), on a second link to B.
    let (vc, vd) = (format!("vp{n}vc"), format!("vp{n}vd"));
    let (ip_c, ip_b2) = (format!("10.253.{n}.1"), format!("10.253.{n}.2"));
    sh(&[
        "ip", "link", "add", &vc, "netns", &c, "type", "veth", "peer", "name", &vd, "netns", &b,
    ]);
    sh(&[
        "ip",
        "-n",
        &c,
        "addr",
        "add",
        &format!("{ip_c}/24"),
        "dev",
        &vc,
    ]);
    sh(&[
        "ip",
        "-n",
        &b,
        "addr",
        "add",
        &format!("{ip_b2}/24"),
        "dev",
        &vd,
    ]);
    sh(&["ip", "-n", &c, "link", "set", &vc, "up"]);
    sh(&["ip", "-n", &b, "link", "set", &vd, "up"]);

    let mesh = Mesh::new();
    std::fs::set_permissions(mesh.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let creds_a = mesh.write_creds("web");
    let creds_b = mesh.write_creds("orders");
    let dest: SocketAddr = format!("{ip_b}:8080").parse().unwrap();
    let policy_a = mesh.write_policy(
        "web",
        &format!("outbound:\n  passthrough: false\n  destinations:\n    - {{address: \"{dest}\", identities: [\"{}\"]}}\n", wid("orders")),
    );
    let policy_b = mesh.write_policy(
        "orders",
        &format!("inbound:\n  - {{policy: shop/web, action: allow, ports: [8080], from: [{{id: \"{}\"}}]}}\n", wid("web")),
    );
    for p in [&creds_a, &creds_b] {
        make_readable_by_proxy(p);
    }
    for p in [&policy_a, &policy_b] {
        chown(p, Some(PROXY_UID), Some(PROXY_UID)).unwrap();
    }

    // B's app listens on its pod port; A's and B's proxies and rules.
    spawn_in_netns(&b, || async {
        let l = tokio::net::TcpListener::bind("0.0.0.0:8080").await.unwrap();
        serve_http_app(l).await;
    });
    // Port 9090 in B is outside the mesh (a plain TCP echo, skipped by B's rules).
    spawn_in_netns(&b, || async {
        let l = tokio::net::TcpListener::bind("0.0.0.0:9090").await.unwrap();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    init(&a, &[]);
    init(&b, &["--skip-inbound-ports", "9090"]);
    let (log_a, log_b) = (mesh.dir.path().join("a.log"), mesh.dir.path().join("b.log"));
    pods.children
        .push(run_proxy(&a, &creds_a, &policy_a, &log_a));
    pods.children
        .push(run_proxy(&b, &creds_b, &policy_b, &log_b));
    for ns in [&a, &b] {
        in_netns(ns, || wait_ready("127.0.0.1:4191".parse().unwrap()));
    }

    // The app in A calls B's address; it knows nothing of the mesh.
    let url_path = "/orders/7";
    let (status, body) = in_netns(&a, move || async move {
        http_get(dest, url_path).await.unwrap()
    });
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["peer"],
        wid("web"),
        "B's app sees A's verified identity"
    );
    assert_eq!(seen["path"], url_path);

    // Original destination preserved on both sides (from the proxies' access logs).
    std::thread::sleep(Duration::from_millis(300));
    let lines = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let out = lines(&log_a);
    assert!(
        out.iter().any(|l| l["direction"] == "outbound"
            && l["dst_addr"] == dest.to_string()
            && l["status"] == 200),
        "A's outbound proxy saw the original destination: {out:?}"
    );
    let inb = lines(&log_b);
    assert!(
        inb.iter().any(|l| l["direction"] == "inbound"
            && l["src_id"] == wid("web")
            && l["dst_addr"] == "127.0.0.1:8080"),
        "B's inbound proxy got the original port 8080: {inb:?}"
    );

    // Pod C, outside the mesh, reaches B's inbound proxy in plaintext and is refused
    // under default deny; the app never sees it.
    let outside: SocketAddr = format!("{ip_b2}:8080").parse().unwrap();
    let (status, body) = in_netns(&c, move || async move {
        http_get(outside, "/orders/7").await.unwrap()
    });
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    std::thread::sleep(Duration::from_millis(300));
    let inb = lines(&log_b);
    assert!(
        inb.iter().any(|l| l["src_id"] == "unauthenticated"
            && l["decision"] == "deny"
            && l["src_addr"].as_str().unwrap_or("").starts_with(&ip_c)),
        "B logged the refused plaintext call: {inb:?}"
    );
    // Egress to a destination outside the mesh: refused while passthrough is off...
    let plain: SocketAddr = format!("{ip_b}:9090").parse().unwrap();
    assert_eq!(
        in_netns(&a, move || echo_once(plain)),
        None,
        "strict egress refuses non-mesh destinations"
    );
    // ...and passed through in plaintext once the policy allows it.
    let open = std::fs::read_to_string(&policy_a)
        .unwrap()
        .replace("passthrough: false", "passthrough: true");
    write_atomic(&policy_a, open.as_bytes());
    chown(&policy_a, Some(PROXY_UID), Some(PROXY_UID)).unwrap();
    let mut passed = None;
    for _ in 0..100 {
        passed = in_netns(&a, move || echo_once(plain));
        if passed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        passed.as_deref(),
        Some("ping"),
        "passthrough reaches the non-mesh server"
    );
    drop(pods);
}

/// Connects, sends "ping", returns what comes back (None if refused or closed).
async fn echo_once(addr: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"ping").await.ok()?;
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&buf).into_owned()),
        _ => None,
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
