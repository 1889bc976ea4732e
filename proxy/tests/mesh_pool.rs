//! The outbound's mesh connections for HTTP (`outbound/pool.rs`), seen from the wire: a
//! relay of this test's own sits between the caller's outbound and the callee's inbound,
//! counts the mTLS connections the outbound makes and sees closed, and can cut them.
//! Requests share one connection (concurrent first requests too), a connection the far
//! side closed is replaced without failing a request, idle connections are closed after
//! `--pool-idle-timeout`, and `--pool-max-idle 0` keeps none.

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

async fn get_ok(route: SocketAddr, path: &str) {
    let (status, body) = http_get(route, path).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_one_mesh_connection_and_concurrent_first_ones_one_handshake() {
    let mesh = Mesh::new();
    let (web, relay, _orders) = through_relay(&mesh, &[]).await;
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
    let mesh = Mesh::new();
    let (web, relay, _orders) = through_relay(&mesh, &[]).await;
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
        "a new connection for the request after the close"
    );
    get_ok(route, "/three").await;
    assert_eq!(relay.accepted(), 2, "and it is pooled in turn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_mesh_connections_are_closed_after_the_idle_timeout() {
    let mesh = Mesh::new();
    let (web, relay, _orders) = through_relay(&mesh, &["--pool-idle-timeout=1s"]).await;
    let route = web.routes[0];
    get_ok(route, "/one").await;
    get_ok(route, "/two").await;
    assert_eq!(relay.accepted(), 1);
    // The sweeper runs every second: closed within about two.
    relay
        .closed_reaches(1, "the idle mesh connection to be closed")
        .await;
    get_ok(route, "/three").await;
    assert_eq!(
        relay.accepted(),
        2,
        "a new connection after the idle one closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_max_idle_zero_keeps_no_mesh_connection() {
    let mesh = Mesh::new();
    let (web, relay, _orders) = through_relay(&mesh, &["--pool-max-idle=0"]).await;
    let route = web.routes[0];
    for i in 0..3 {
        get_ok(route, &format!("/{i}")).await;
    }
    assert_eq!(relay.accepted(), 3, "one connection per request");
    relay
        .closed_reaches(3, "each connection to close after its request")
        .await;
}
