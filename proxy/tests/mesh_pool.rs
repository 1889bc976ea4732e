//! The outbound's mesh connections for HTTP (`outbound/pool.rs`, `outbound/pool/h1.rs`),
//! seen from the wire: a relay of this test's own sits between the caller's outbound and
//! the callee's inbound, counts the mTLS connections the outbound makes and sees closed,
//! and can cut them.
//!
//! Over HTTP/2 (`--mesh-http1 http2`) requests share one connection (concurrent first
//! requests too). Over HTTP/1.1 (`http1`) sequential requests share one keep-alive
//! connection, concurrent ones take a connection each and the idle ones are reused, up
//! to `--pool-max-idle` of them, and never past half the `--header-read-timeout` (when
//! the far side closes them). Both: a connection the far side closed is replaced without
//! failing a request, idle connections are closed after `--pool-idle-timeout`, and
//! `--pool-max-idle 0` keeps none. The default, `auto`, takes HTTP/1.1 connections while
//! fewer than 4 requests to the destination are in flight and streams of the HTTP/2
//! connection beyond.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use http::StatusCode;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A TCP relay to `to`.
struct Relay {
    addr: SocketAddr,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Connections that ended (the outbound closed its side, or after a cut).
    closed: Arc<AtomicUsize>,
    cut: watch::Sender<u32>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (accepted, closed) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
        let (cut, cuts) = watch::channel(0);
        let (a, c) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = l.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let (c, mut cuts) = (c.clone(), cuts.clone());
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let mut up = TcpStream::connect(to).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut up) => {}
                        _ = cuts.changed() => {
                            // The far side goes away: FIN to the outbound, then wait until
                            // it has closed its side too.
                            drop(up);
                            let _ = client.shutdown().await;
                            let mut buf = [0u8; 4096];
                            while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
                        }
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            closed,
            cut,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn closed_reaches(&self, n: usize, what: &str) {
        let closed = self.closed.clone();
        wait_for(async || closed.load(Ordering::SeqCst) >= n, what).await;
    }
}

/// `orders` behind its proxy, and `web`'s proxy whose route 0 reaches it through a relay.
async fn through_relay(
    mesh: &Mesh,
    extra: &[&str],
) -> (vigil_proxy::Proxy, Relay, vigil_proxy::Proxy) {
    let app = http_app().await;
    let (orders, _) = callee(mesh, "orders", ALLOW_WEB, app, &[]).await;
    let relay = Relay::start(orders.inbound).await;
    let (web, _) = caller(mesh, "web", relay.addr, "orders", extra).await;
    (web, relay, orders)
}

async fn get_ok(route: SocketAddr, path: &str) -> String {
    let (status, body) = http_get(route, path).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// `n` requests to `path` at once, each on an app connection of its own.
async fn at_once(route: SocketAddr, path: &'static str, n: usize) {
    let all: Vec<_> = (0..n)
        .map(|_| tokio::spawn(async move { get_ok(route, path).await }))
        .collect();
    for r in all {
        r.await.unwrap();
    }
}

/// The hop's two fixed settings: every test of both pools runs with each (`auto` is one
/// or the other per request, see its own tests).
const HOPS: [&str; 2] = [H1_HOP, H2_HOP];
const H1_HOP: &str = "--mesh-http1=http1";
const H2_HOP: &str = "--mesh-http1=http2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_one_mesh_connection_and_concurrent_first_ones_one_handshake() {
    let mesh = Mesh::new();
    let (web, relay, _orders) = through_relay(&mesh, &[H2_HOP]).await;
    let route = web.routes[0];
    // 16 app connections at once, each with a first request: one handshake between them.
    let first: Vec<_> = (0..16)
        .map(|i| tokio::spawn(async move { get_ok(route, &format!("/first/{i}")).await }))
        .collect();
    for f in first {
        f.await.unwrap();
    }
    assert_eq!(
        relay.accepted(),
        1,
        "16 concurrent first requests, one mesh connection"
    );
    for i in 0..20 {
        get_ok(route, &format!("/then/{i}")).await;
    }
    assert_eq!(relay.accepted(), 1, "36 requests, one mesh connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_far_side_closed_is_replaced_without_failing_a_request() {
    for hop in HOPS {
        let mesh = Mesh::new();
        let (web, relay, _orders) = through_relay(&mesh, &[hop]).await;
        let route = web.routes[0];
        get_ok(route, "/one").await;
        relay.cut.send_modify(|n| *n += 1);
        relay
            .closed_reaches(
                1,
                "the outbound to close the connection the far side closed",
            )
            .await;
        get_ok(route, "/two").await;
        assert_eq!(
            relay.accepted(),
            2,
            "{hop}: a new connection for the request after the close"
        );
        get_ok(route, "/three").await;
        assert_eq!(relay.accepted(), 2, "{hop}: and it is pooled in turn");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_mesh_connections_are_closed_after_the_idle_timeout() {
    for hop in HOPS {
        let mesh = Mesh::new();
        let (web, relay, _orders) = through_relay(&mesh, &[hop, "--pool-idle-timeout=1s"]).await;
        let route = web.routes[0];
        get_ok(route, "/one").await;
        get_ok(route, "/two").await;
        assert_eq!(relay.accepted(), 1, "{hop}");
        // The sweeper runs every second: closed within about two.
        relay
            .closed_reaches(1, "the idle mesh connection to be closed")
            .await;
        get_ok(route, "/three").await;
        assert_eq!(
            relay.accepted(),
            2,
            "{hop}: a new connection after the idle one closed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_max_idle_zero_keeps_no_mesh_connection() {
    for hop in HOPS {
        let mesh = Mesh::new();
        let (web, relay, _orders) = through_relay(&mesh, &[hop, "--pool-max-idle=0"]).await;
        let route = web.routes[0];
        for i in 0..3 {
            get_ok(route, &format!("/{i}")).await;
        }
        assert_eq!(relay.accepted(), 3, "{hop}: one connection per request");
        relay
            .closed_reaches(3, "each connection to close after its request")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_share_one_keep_alive_http1_mesh_connection() {
    let mesh = Mesh::new();
    let (web, relay, orders) = through_relay(&mesh, &[]).await;
    let route = web.routes[0];
    for i in 0..20 {
        let body = get_ok(route, &format!("/seq/{i}")).await;
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["version"], "HTTP/1.1", "{body}");
        assert_eq!(
            seen["peer"],
            wid("web"),
            "the app learns the caller's verified identity: {body}"
        );
        assert!(seen["orig_proto"].is_null(), "no marker to strip: {body}");
        assert!(seen["host"].is_string(), "the app's Host arrives: {body}");
    }
    assert_eq!(relay.accepted(), 1, "20 requests, one mesh connection");
    // The far side saw HTTP/1.1 from the start: the ALPN said so, nothing was detected.
    let m = http_get(orders.admin, "/metrics").await.unwrap().1;
    assert!(
        m.contains(r#"vigil_proxy_connections_total{direction="inbound",protocol="http1"} 1"#),
        "{m}"
    );
    assert!(
        !m.contains(r#"direction="inbound",protocol="http2""#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http2_hop_carries_http1_requests_as_streams() {
    let mesh = Mesh::new();
    let (web, relay, orders) = through_relay(&mesh, &[H2_HOP]).await;
    let body = get_ok(web.routes[0], "/one").await;
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["version"], "HTTP/1.1",
        "the app still gets HTTP/1.1: {body}"
    );
    assert_eq!(relay.accepted(), 1);
    let m = http_get(orders.admin, "/metrics").await.unwrap().1;
    assert!(
        m.contains(r#"vigil_proxy_connections_total{direction="inbound",protocol="http2"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_http1_requests_take_a_connection_each_and_idle_ones_are_reused() {
    let mesh = Mesh::new();
    let (web, relay, _orders) = through_relay(&mesh, &[H1_HOP]).await;
    let route = web.routes[0];
    // Each `/slow` takes 500 ms at the app: eight in flight at once need eight.
    at_once(route, "/slow", 8).await;
    assert_eq!(relay.accepted(), 8, "one connection per request in flight");
    at_once(route, "/slow", 8).await;
    at_once(route, "/fast", 3).await;
    assert_eq!(relay.accepted(), 8, "the idle ones are taken again");
    assert_eq!(relay.closed.load(Ordering::SeqCst), 0, "none closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_max_idle_caps_the_idle_http1_connections_per_destination() {
    let mesh = Mesh::new();
    let (web, relay, _orders) = through_relay(&mesh, &[H1_HOP, "--pool-max-idle=2"]).await;
    let route = web.routes[0];
    at_once(route, "/slow", 6).await;
    assert_eq!(relay.accepted(), 6);
    relay
        .closed_reaches(4, "the connections beyond the two kept idle to close")
        .await;
    at_once(route, "/slow", 2).await;
    assert_eq!(relay.accepted(), 6, "the two kept are taken again");
    at_once(route, "/slow", 3).await;
    assert_eq!(relay.accepted(), 7, "and only those two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_connection_is_not_reused_past_half_the_header_read_timeout() {
    // The far side closes a keep-alive connection idle for its header read timeout (2 s
    // here); a request written onto one it is closing would fail, so the outbound stops
    // reusing it after half that — although the pool keeps connections for 90 s.
    let mesh = Mesh::new();
    let (web, relay, _orders) = through_relay(&mesh, &["--header-read-timeout=2s"]).await;
    let route = web.routes[0];
    get_ok(route, "/one").await;
    get_ok(route, "/two").await;
    assert_eq!(relay.accepted(), 1, "reused while fresh");
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    get_ok(route, "/three").await;
    assert_eq!(relay.accepted(), 2, "not reused after 1.2 s idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_hop_to_a_proxy_that_knows_only_plain_vigil_1_falls_back_to_it() {
    // A rolling upgrade: the caller's proxy is new, the callee's older.
    let mesh = Mesh::new();
    // It knows only the plain `vigil/1` ALPN (and detects the protocol).
    let old = earlier_proxy(&mesh, &[b"vigil/1"]).await;
    let (web, _) = caller(&mesh, "web", old, "orders", &[]).await;
    let route = web.routes[0];
    assert_eq!(get_ok(route, "/one").await, "HTTP/1.1 vigil/1");
    assert_eq!(get_ok(route, "/two").await, "HTTP/1.1 vigil/1");
}

/// `name`'s HTTP/1.1 client over mTLS to `orders`' inbound, offering what an outbound
/// offers for HTTP/1.1; and the ALPN the server chose.
async fn h1_hint_client(
    mesh: &Mesh,
    name: &str,
    inbound: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
    Vec<u8>,
) {
    let cfg = vigil_cert_authority::tls::client_config(
        &mesh.client_creds(name),
        [id(&wid("orders"))],
        vigil_cert_authority::tls::provider(),
        Arc::new(vigil_cert_authority::verify::NoRevocation),
        vigil_proxy::detect::OFFER_H1,
    )
    .unwrap();
    let tcp = TcpStream::connect(inbound).await.unwrap();
    let server_name = rustls_pki_types::ServerName::try_from("mesh.invalid").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(server_name, tcp)
        .await
        .unwrap();
    let alpn = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, alpn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_offering_the_http1_hint_gets_it_and_is_authorized_per_request() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (orders, _) = callee(&mesh, "orders", ALLOW_WEB, app, &[]).await;
    let (mut web, alpn) = h1_hint_client(&mesh, "web", orders.inbound).await;
    assert_eq!(alpn, b"vigil/1+h1", "the hint wins over plain vigil/1");
    for path in ["/a", "/b"] {
        web.ready().await.unwrap();
        let resp = web.send_request(get(path)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
    }
    // Denied is denied on this hop too.
    let (mut intruder, _) = h1_hint_client(&mesh, "intruder", orders.inbound).await;
    let resp = intruder.send_request(get("/a")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let m = http_get(orders.admin, "/metrics").await.unwrap().1;
    assert!(
        m.contains(r#"vigil_proxy_connections_total{direction="inbound",protocol="http1"} 2"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_the_callers_proxy_accepts_crosses_either_hop() {
    // 80 fields of 180 bytes: 15.1 KB of HTTP/1.1 head, under `--max-header-bytes`
    // (16 KiB); as an HTTP/2 header list (32 bytes more per field) 17.4 KB.
    for hop in HOPS {
        let mesh = Mesh::new();
        let (web, _relay, _orders) = through_relay(&mesh, &[hop]).await;
        let tcp = TcpStream::connect(web.routes[0]).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = get("/big-head");
        for i in 0..80 {
            let name = http::HeaderName::try_from(format!("x-f{i:02}")).unwrap();
            let value = http::HeaderValue::try_from("v".repeat(180)).unwrap();
            req.headers_mut().insert(name, value);
        }
        let (status, _, body) = send(&mut sender, req).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{hop}: {body}");
    }
}

#[path = "mesh_pool/auto.rs"]
mod auto;
