//! Behaviour under change: certificate rotation and policy reloads under load lose
//! nothing; revocation and quarantine close live connections; invalid policy fails
//! closed; SIGTERM-style drain finishes in-flight requests.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use http::StatusCode;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Counts successes and failures of a request loop until stopped.
#[derive(Clone, Default)]
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// `workers` loops of GETs through `via`, each on a fresh connection every `fresh`-th
    /// request (to force new handshakes), otherwise keep-alive.
    fn run(&self, via: SocketAddr, workers: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..workers)
            .map(|w| {
                let me = self.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !me.stop.load(Ordering::Relaxed) {
                        // Alternate: a fresh connection, then a few keep-alive requests.
                        match keep_alive_burst(via, 3).await {
                            Ok(k) => me.ok.fetch_add(k, Ordering::Relaxed),
                            Err(e) => {
                                eprintln!("worker {w} request {n} failed: {e}");
                                me.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        n += 1;
                    }
                })
            })
            .collect()
    }
}

async fn keep_alive_burst(via: SocketAddr, n: u64) -> anyhow::Result<u64> {
    let stream = TcpStream::connect(via).await?;
    let (mut c, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    for _ in 0..n {
        let (status, _, body) = send(&mut c, get("/orders/1")).await?;
        anyhow::ensure!(status == StatusCode::OK, "status {status}: {body}");
    }
    Ok(n)
}

async fn serial(admin: SocketAddr) -> String {
    let cfg: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/config").await.unwrap().1).unwrap();
    cfg["identity"]["serial"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_nothing() {
    let mesh = Mesh::new();
    let app = http_app().await;
    // orders (admitting web) in front of the app; web with a route to it.
    let (a, b, _) = pair(&mesh, app, &[]).await;
    let load = Load::default();
    let workers = load.run(a.routes[0], 4);

    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (b_before, a_before) = (serial(b.admin).await, serial(a.admin).await);
        mesh.write_creds("orders");
        mesh.write_creds("web");
        wait_for(
            async || serial(b.admin).await != b_before && serial(a.admin).await != a_before,
            "rotation",
        )
        .await;
        eprintln!(
            "rotation {round} applied; ok so far {}",
            load.ok.load(Ordering::Relaxed)
        );
    }
    // New handshakes now use the new certificates: a fresh direct connection sees B's
    // current serial.
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (
        load.ok.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
    );
    eprintln!("requests during rotation: ok={ok} failed={failed}");
    assert_eq!(failed, 0, "no request may fail during certificate rotation");
    assert!(ok > 50, "the load actually ran ({ok} requests)");
    let tls = mtls(
        b.inbound,
        &mesh.client_creds("web"),
        &[&wid("orders")],
        b"vigil/1",
    )
    .await
    .unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let info = vigil_cert_authority::svid::inspect_leaf(&presented).unwrap();
    let hex: String = info.serial.iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(
        hex,
        serial(b.admin).await,
        "new handshakes present the rotated certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_under_load_fails_no_allowed_request() {
    let mesh = Mesh::new();
    let app = http_app().await;
    // orders (admitting web) in front of the app; web with a route to it.
    let (a, b, _) = pair(&mesh, app, &[]).await;
    let load = Load::default();
    let workers = load.run(a.routes[0], 4);
    for generation in 2..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Every version keeps web allowed; unrelated rules come and go.
        let extra = if generation % 2 == 0 {
            "  - {policy: shop/db, action: allow, from: [{id: \"spiffe://cluster.local/ns/shop/sa/db\"}]}\n"
        } else {
            ""
        };
        mesh.write_policy(
            "orders",
            &format!(
                "{}{extra}",
                ALLOW_WEB.replace("generation: 1", &format!("generation: {generation}"))
            ),
        );
        wait_for(
            async || {
                http_get(b.admin, "/metrics")
                    .await
                    .unwrap()
                    .1
                    .contains(&format!("vigil_proxy_policy_generation {generation}"))
            },
            "reload",
        )
        .await;
    }
    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (
        load.ok.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
    );
    eprintln!("requests during policy reloads: ok={ok} failed={failed}");
    assert_eq!(failed, 0);
    assert!(ok > 50, "{ok}");

    // Enforcement follows the file: allowed becomes 403, and back.
    mesh.write_policy("orders", "generation: 20\ninbound: []\n");
    wait_for(
        async || http_get(a.routes[0], "/orders/1").await.unwrap().0 == StatusCode::FORBIDDEN,
        "deny",
    )
    .await;
    mesh.write_policy(
        "orders",
        &ALLOW_WEB.replace("generation: 1", "generation: 21"),
    );
    wait_for(
        async || http_get(a.routes[0], "/orders/1").await.unwrap().0 == StatusCode::OK,
        "allow again",
    )
    .await;
}

#[tokio::test]
async fn revocation_closes_live_connections() {
    let mesh = Mesh::new();
    let echo = tcp_echo().await;
    let app = http_app().await;
    let (tcp_b, _) = callee(&mesh, "orders", ALLOW_WEB, echo, &[]).await;
    let (a, _) = caller(&mesh, "web", tcp_b.inbound, "orders", &[]).await;
    let (http_b, _) = callee(&mesh, "orders2", ALLOW_WEB, app, &[]).await;

    // A live opaque tunnel web -> orders, and a live HTTP keep-alive connection web -> orders2.
    let mut tunnel = TcpStream::connect(a.routes[0]).await.unwrap();
    tunnel.write_all(b"\x00hello").await.unwrap();
    let mut buf = [0u8; 6];
    tunnel.read_exact(&mut buf).await.unwrap();
    let mut h = h1_over_mtls(
        http_b.inbound,
        &mesh.client_creds("web"),
        &[&wid("orders2")],
    )
    .await
    .unwrap();
    assert_eq!(send(&mut h, get("/x")).await.unwrap().0, StatusCode::OK);

    let start = std::time::Instant::now();
    let revoked = format!("{ALLOW_WEB}revoked:\n  ids: [\"{}\"]\n", wid("web"))
        .replace("generation: 1", "generation: 2");
    mesh.write_policy("orders", &revoked);
    mesh.write_policy("orders2", &revoked);

    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest)).await;
    assert!(
        matches!(r, Ok(Ok(_)) | Ok(Err(_))),
        "the tunnel is closed by the server"
    );
    eprintln!("revocation closed the live tunnel in {:?}", start.elapsed());
    wait_for(
        async || send(&mut h, get("/x")).await.is_err(),
        "HTTP connection closed",
    )
    .await;
    // And new connections are refused at the handshake.
    let again = h1_over_mtls(
        http_b.inbound,
        &mesh.client_creds("web"),
        &[&wid("orders2")],
    )
    .await;
    let refused = match again {
        Ok(mut c) => send(&mut c, get("/x")).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a revoked identity cannot reconnect");
    let m = http_get(tcp_b.admin, "/metrics").await.unwrap().1;
    assert!(
        m.contains(
            "vigil_proxy_connections_closed_total{direction=\"inbound\",reason=\"revoked\"} 1"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn quarantine_cuts_the_workload_off_both_ways() {
    let mesh = Mesh::new();
    let app = http_app().await;
    // orders (admitting web) in front of the app; web with a route to it.
    let (a, b, _) = pair(&mesh, app, &[]).await;
    assert_eq!(http_get(a.routes[0], "/x").await.unwrap().0, StatusCode::OK);
    let mut live = h1_over_mtls(b.inbound, &mesh.client_creds("web"), &[&wid("orders")])
        .await
        .unwrap();
    assert_eq!(send(&mut live, get("/x")).await.unwrap().0, StatusCode::OK);

    // Quarantine `web` (its own proxy) and `orders` (inbound side).
    mesh.write_policy("web", "generation: 2\nquarantined: true\n");
    wait_for(
        async || http_get(a.routes[0], "/x").await.map(|r| r.0).ok() != Some(StatusCode::OK),
        "web cut off",
    )
    .await;
    mesh.write_policy(
        "orders",
        &format!("{ALLOW_WEB}quarantined: true\n").replace("generation: 1", "generation: 2"),
    );
    wait_for(
        async || send(&mut live, get("/x")).await.is_err(),
        "live connection to orders closed",
    )
    .await;
}

#[tokio::test]
async fn invalid_policy_fails_closed_until_fixed() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (b, _) = callee(&mesh, "orders", ALLOW_WEB, app, &[]).await;
    let web = mesh.client_creds("web");
    let mut c = h1_over_mtls(b.inbound, &web, &[&wid("orders")])
        .await
        .unwrap();
    assert_eq!(send(&mut c, get("/x")).await.unwrap().0, StatusCode::OK);

    for broken in [
        "inbound: [{policy: x, action: allow, from: []}]\n",
        "inbound: [ not yaml\n",
    ] {
        mesh.write_policy("orders", broken);
        wait_for(
            async || send(&mut c, get("/x")).await.map(|r| r.0).ok() == Some(StatusCode::FORBIDDEN),
            "deny-all",
        )
        .await;
        let cfg: serde_json::Value =
            serde_json::from_str(&http_get(b.admin, "/config").await.unwrap().1).unwrap();
        assert!(cfg["policy"]["invalid"].is_string(), "{cfg}");
        assert_eq!(
            http_get(b.admin, "/ready").await.unwrap().0,
            StatusCode::OK,
            "still ready: it enforces deny-all"
        );
    }
    mesh.write_policy(
        "orders",
        &ALLOW_WEB.replace("generation: 1", "generation: 3"),
    );
    wait_for(
        async || send(&mut c, get("/x")).await.map(|r| r.0).ok() == Some(StatusCode::OK),
        "fixed",
    )
    .await;
}

#[tokio::test]
async fn drain_finishes_in_flight_requests() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (b, _) = callee(&mesh, "orders", ALLOW_WEB, app, &[]).await;
    let inbound = b.inbound;
    let admin = b.admin;
    let web = mesh.client_creds("web");
    let mut c = h1_over_mtls(inbound, &web, &[&wid("orders")])
        .await
        .unwrap();
    let slow = tokio::spawn(async move { send(&mut c, get("/slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = tokio::spawn(b.drain());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        http_get(admin, "/ready").await.unwrap().0,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while draining"
    );
    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "slow done"),
        "the in-flight request completes"
    );
    assert_eq!(drained.await.unwrap(), 0, "nothing left at the deadline");
    assert!(
        h1_over_mtls(inbound, &web, &[&wid("orders")])
            .await
            .is_err(),
        "no new connections after the drain"
    );
}

#[tokio::test]
async fn opaque_connections_are_reauthorized_on_policy_change() {
    let mesh = Mesh::new();
    let echo = tcp_echo().await;
    // orders (admitting web) in front of the app; web with a route to it.
    let (a, b, _) = pair(&mesh, echo, &[]).await;
    let mut tunnel = TcpStream::connect(a.routes[0]).await.unwrap();
    tunnel.write_all(b"\x00ping").await.unwrap();
    let mut buf = [0u8; 5];
    tunnel.read_exact(&mut buf).await.unwrap();
    // An unrelated change keeps the connection...
    mesh.write_policy(
        "orders",
        &ALLOW_WEB.replace("generation: 1", "generation: 2"),
    );
    wait_for(
        async || {
            http_get(b.admin, "/metrics")
                .await
                .unwrap()
                .1
                .contains("vigil_proxy_policy_generation 2")
        },
        "gen 2",
    )
    .await;
    tunnel.write_all(b"\x00pong").await.unwrap();
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"\x00pong");
    // ...removing the allow closes it.
    mesh.write_policy("orders", "generation: 3\ninbound: []\n");
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest)).await;
    assert!(
        r.is_ok(),
        "the tunnel is closed once policy no longer allows it"
    );
    let m = http_get(b.admin, "/metrics").await.unwrap().1;
    assert!(
        m.contains(
            "vigil_proxy_connections_closed_total{direction=\"inbound\",reason=\"policy\"} 1"
        ),
        "{m}"
    );
}

/// The real binary: SIGTERM drains an in-flight request, then exits 0.
#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (mut guard, inbound, _admin) = spawn_proxy_binary(&mesh, "orders", ALLOW_WEB, app).await;
    let web = mesh.client_creds("web");
    let mut c = h1_over_mtls(inbound, &web, &[&wid("orders")])
        .await
        .unwrap();
    let slow = tokio::spawn(async move { send(&mut c, get("/slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(guard.0.as_ref().unwrap().id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "slow done"));
    let mut child = guard.0.take().unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
