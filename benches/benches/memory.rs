//! B8: the proxy's memory — idle, per idle plaintext connection, per idle mTLS connection.
//!
//! Release `vigil-proxy`s (file mode, one worker thread) in front of an app that holds
//! connections; their
//! proportional set size (`Pss` in /proc/<pid>/smaps_rollup) is read idle, then after
//! opening N idle plaintext connections to one (allowed `unauthenticated`, so they stay
//! open as opaque TCP to the app), and N idle mTLS connections from a client with an SVID
//! to the other. Each connection's cost includes the proxy's connection to the app.
//! Targets (BENCHMARKS.md, issue 15): ≤ 6 MB idle; ≤ 4 KB per plaintext and ≤ 13 KB per mTLS
//! connection. N = 2,000 in the quick tier, 10,000 with VIGIL_BENCH_FULL=1. And after
//! the mTLS burst: every connection closed, what the proxy still holds over its idle
//! figure (memory the allocator should have given back; target ≤ 2 MB).
//! Build the proxy first: `cargo build --release -p vigil-proxy` (`make bench` does).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::{io::AsyncReadExt, net::TcpStream};
use vigil_benches::{Goal, Ratio, harness::procs};
use vigil_cert_authority::{
    CertificateAuthority, InitOptions, SpiffeId, TrustDomain, pemfile, tls, ttl::TtlPolicy,
};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        if std::env::var_os("VIGIL_B8_HEAPTRACK").is_some() {
            // A clean exit, so that heaptrack's library writes everything.
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        } else {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn proxy_bin() -> PathBuf {
    let release = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../release/vigil-proxy");
    assert!(
        release.is_file(),
        "{} missing: run `cargo build --release -p vigil-proxy` first (`make bench` does)",
        release.display()
    );
    release
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lets PSS settle (allocator trims, lazy pages) before reading it.
async fn settled_pss(pid: u32) -> u64 {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    procs::pss(pid).unwrap()
}

fn issue(ca: &CertificateAuthority, dir: &Path, who: &str) -> (PathBuf, PathBuf) {
    let id = SpiffeId::parse(&format!("spiffe://cluster.local/ns/bench/sa/{who}")).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let svid = ca.issue(csr.der(), &id, None).unwrap();
    let (c, k) = (
        dir.join(format!("{who}.pem")),
        dir.join(format!("{who}.key")),
    );
    std::fs::write(&c, svid.to_pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn raise_fd_limit() {
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

fn main() {
    raise_fd_limit();
    let n: usize = match std::env::var("VIGIL_B8_N")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(n) => n,
        None if std::env::var_os("VIGIL_BENCH_FULL").is_some() => 10_000,
        None => 2_000,
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(
        &dir.path().join("ca"),
        InitOptions::new(TrustDomain::default()),
        TtlPolicy::default(),
        SystemTime::now(),
    )
    .unwrap();
    let (svid, key) = issue(&ca, dir.path(), "server");
    let (csvid, ckey) = issue(&ca, dir.path(), "client");
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, ca.bundle().to_pem()).unwrap();
    let policy = dir.path().join("policy.yaml");
    // The policy `make proxy-layout` profiles a plain startup with.
    std::fs::write(&policy, vigil_benches::harness::layout::PLAIN_POLICY).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // The app: accepts and holds connections.
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_addr = app.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = app.accept().await {
                held.push(s);
            }
        });
        // Two proxies: plaintext connections go to one, mTLS to the other, so freed memory
        // the allocator keeps from one phase cannot hide the cost of the next.
        // VIGIL_B8_HEAPTRACK=<file prefix>: both proxies run with heaptrack's preload
        // library (Debian's path), writing raw data to <prefix>-<port>.raw; read it with
        // `/usr/lib/heaptrack/libexec/heaptrack_interpret < F.raw | zstd > F.zst` and
        // `heaptrack_print --print-peaks F.zst`. The PSS figures of such a run include
        // heaptrack's own. VIGIL_B8_N sets N.
        let heaptrack = std::env::var_os("VIGIL_B8_HEAPTRACK");
        let start = |inbound: u16, admin: u16| {
            let mut cmd = Command::new(proxy_bin());
            if let Some(prefix) = &heaptrack {
                let mut raw = prefix.clone();
                raw.push(format!("-{inbound}.raw"));
                cmd.env("LD_PRELOAD", "/usr/lib/heaptrack/libheaptrack_preload.so")
                    .env("DUMP_HEAPTRACK_OUTPUT", raw);
            }
            Kill(
                cmd.args(["run", "--access-log", "off", "--detect-timeout", "100ms"])
                    .arg("--inbound").arg(format!("127.0.0.1:{inbound}"))
                    .arg("--outbound").arg("127.0.0.1:0")
                    .arg("--admin").arg(format!("127.0.0.1:{admin}"))
                    .arg("--app").arg(app_addr.to_string())
                    .arg("--svid").arg(&svid).arg("--key").arg(&key).arg("--bundle").arg(&bundle)
                    .arg("--policy").arg(&policy)
                    .arg("--max-connections").arg((3 * n).to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        };
        let (inbound, admin) = (free_port(), free_port());
        let (inbound_m, admin_m) = (free_port(), free_port());
        let wait = |admin: u16| async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(("127.0.0.1", admin)).await.is_err() {
                assert!(Instant::now() < deadline, "proxy did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let proxy = start(inbound, admin);
        let pid = proxy.0.id();
        wait(admin).await;
        // Idle, alone (a second process would share, and so halve, the binary's pages).
        let idle = settled_pss(pid).await;
        let proxy_m = start(inbound_m, admin_m);
        let pid_m = proxy_m.0.id();
        wait(admin_m).await;
        // With the second proxy running, the binary's pages count half: the per-connection
        // figure is measured from this baseline, not from the idle one above.
        let baseline_plain = settled_pss(pid).await;

        // N idle plaintext connections (each becomes opaque TCP to the app after detection).
        let mut plain = Vec::with_capacity(n);
        for _ in 0..n {
            plain.push(TcpStream::connect(("127.0.0.1", inbound)).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let with_plain = settled_pss(pid).await;
        // Still open? (A denied connection would have been closed: reading would end.)
        let mut probe = [0u8; 1];
        let open = tokio::time::timeout(Duration::from_millis(200), plain[0].read(&mut probe)).await.is_err();
        assert!(open, "the plaintext connections must stay open for the measurement");
        let baseline_mtls = settled_pss(pid_m).await;
        let idle_split = procs::pss_split(pid_m);

        // N idle mTLS connections.
        let creds = vigil_cert_authority::creds::Credentials::new(
            pemfile::decode_certs(&std::fs::read_to_string(&csvid).unwrap()).unwrap(),
            pemfile::decode_private_key(&std::fs::read_to_string(&ckey).unwrap()).unwrap(),
            ca.bundle(),
            &SpiffeId::parse("spiffe://cluster.local/ns/bench/sa/client").unwrap(),
            &tls::provider(),
            SystemTime::now(),
        )
        .unwrap();
        // ALPN vigil/1+tcp: the mesh's opaque-TCP hint, so no detection wait.
        let client = Arc::new(
            tls::client_config(
                &creds,
                [SpiffeId::parse("spiffe://cluster.local/ns/bench/sa/server").unwrap()],
                tls::provider(),
                Arc::new(vigil_cert_authority::verify::NoRevocation),
                &[b"vigil/1+tcp"],
            )
            .unwrap(),
        );
        let mut conns = Vec::with_capacity(n);
        let started = Instant::now();
        for _ in 0..n {
            let tcp = TcpStream::connect(("127.0.0.1", inbound_m)).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("server.bench").unwrap();
            conns.push(tokio_rustls::TlsConnector::from(client.clone()).connect(name, tcp).await.unwrap());
        }
        eprintln!("{n} mTLS handshakes in {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let with_mtls = settled_pss(pid_m).await;

        // After the burst: every connection closed. Memory should go back to the system
        // rather than stay with the allocator (was 150–200 MB RSS after 10,000).
        drop(conns);
        drop(std::mem::take(&mut plain));
        // The proxy looks every 5 s (proxy/src/memory.rs).
        tokio::time::sleep(Duration::from_secs(7)).await;
        let after_burst = settled_pss(pid_m).await;
        let split = |(anon, file): (u64, u64)| {
            format!("heap and stacks {} KB, mapped files {} KB", anon / 1024, file / 1024)
        };
        if let (Some(before), Some(after)) = (idle_split, procs::pss_split(pid_m)) {
            eprintln!("second proxy idle: {}; after the burst: {}", split(before), split(after));
        }
        eprintln!(
            "after closing the {n} mTLS connections: {:.0} KB (idle was {:.0} KB)",
            after_burst as f64 / 1024.0,
            baseline_mtls as f64 / 1024.0
        );

        let kb = |b: u64| b as f64 / 1024.0;
        let per_plain = (with_plain.saturating_sub(baseline_plain)) as f64 / n as f64;
        let per_mtls = (with_mtls.saturating_sub(baseline_mtls)) as f64 / n as f64;
        eprintln!(
            "idle {:.0} KB; +{n} plaintext {:.0} KB; second proxy idle {:.0} KB, +{n} mTLS {:.0} KB",
            kb(idle),
            kb(with_plain),
            kb(baseline_mtls),
            kb(with_mtls)
        );
        let results_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../bench-results");
        for (name, value, target, unit) in [
            ("proxy-idle-pss", idle as f64 / 1_048_576.0, 6.0, "MB"),
            ("per-idle-plaintext-conn", per_plain / 1024.0, 4.0, "KB"),
            ("per-idle-mtls-conn", per_mtls / 1024.0, 13.0, "KB"),
            // What a burst leaves behind once its connections are gone.
            (
                "pss-after-mtls-burst-over-idle",
                after_burst.saturating_sub(baseline_mtls) as f64 / 1_048_576.0,
                2.0,
                "MB",
            ),
        ] {
            let r = Ratio {
                id: "B8".into(),
                name: format!("{name} (N={n})"),
                ratio: value,
                min: value,
                max: value,
                target,
                goal: Goal::AtMost,
                unit,
            };
            println!("{}", r.line());
            r.record(&results_dir).unwrap();
        }
        drop((plain, proxy, proxy_m));
    });
}
