#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, time::Duration};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::*;
use crate::outbound::connect::tests::connector;

fn ids(names: &[&str]) -> BTreeSet<SpiffeId> {
    names
        .iter()
        .map(|n| SpiffeId::parse(&format!("spiffe://td/ns/shop/sa/{n}")).unwrap())
        .collect()
}

/// The client end of an in-memory pipe whose other end a real hyper server (HTTP/2 or
/// HTTP/1.1) serves; the server task ends (and the connection closes) when `stop` is
/// dropped.
fn served(
    h2: bool,
) -> (
    TokioIo<tokio::io::DuplexStream>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
        });
        let server = TokioIo::new(server);
        tokio::select! {
            _ = async {
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(server, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(server, svc)
                        .await;
                }
            } => {}
            _ = stopped => {}
        }
    });
    (TokioIo::new(client), stop)
}

/// A real HTTP/2 client connection to a real hyper server (see [`served`]).
async fn h2_sender() -> (h2_client::SendRequest, tokio::sync::oneshot::Sender<()>) {
    let (client, stop) = served(true);
    let settings = h2_client::Settings {
        max_send_streams: 100,
        stream_window: 65_535,
        connection_window: 65_535,
    };
    let (sender, conn) = h2_client::handshake(client.into_inner(), settings)
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, stop)
}

fn pool(idle: Duration) -> MeshPool {
    MeshPool::new(connector("{}"), idle, 16, 100)
}

fn pooled(pool: &MeshPool, authority: &str, sender: &h2_client::SendRequest, server: &str) {
    pool.dests
        .lock()
        .unwrap()
        .entry(authority.into())
        .or_default()
        .conn = Some(Conn {
        sender: sender.clone(),
        server: ids(&[server]).into_iter().next().unwrap(),
        used: Instant::now(),
        marked_h1: false,
    });
}

#[tokio::test]
async fn an_http2_apps_request_takes_the_http1_hop_only_to_a_proxy_that_knows_it() {
    let p = pool(Duration::from_secs(60)).http1_hop(Duration::from_secs(60), 4);
    let dest = "10.0.0.1:80";
    assert!(
        p.http1_out(dest, true).is_none(),
        "no HTTP/2 connection to learn from yet: a stream (which opens one)"
    );
    let (sender, _stop) = h2_sender().await;
    pooled(&p, dest, &sender, "orders");
    assert!(
        p.http1_out(dest, true).is_none(),
        "its server chose the plain HTTP/2 ALPN: a proxy of an earlier version"
    );
    assert!(
        p.http1_out(dest, false).is_some(),
        "HTTP/1.1 apps' requests as before"
    );
    // Its server chose `vigil/1+h2+h1h2`.
    let mut dests = p.dests.lock().unwrap();
    dests
        .get_mut(dest)
        .unwrap()
        .conn
        .as_mut()
        .unwrap()
        .marked_h1 = true;
    drop(dests);
    let out = p.http1_out(dest, true).expect("a proxy that knows the hop");
    drop(out);
    p.dests.lock().unwrap().get_mut(dest).unwrap().conn = None;
    assert!(
        p.http1_out(dest, true).is_none(),
        "what was learnt goes with the connection"
    );
}

#[tokio::test]
async fn a_pooled_connection_serves_only_destinations_that_expect_its_server() {
    let p = pool(Duration::from_secs(60));
    let (sender, _stop) = h2_sender().await;
    pooled(&p, "10.0.0.1:80", &sender, "orders");
    assert!(p.shared("10.0.0.1:80", &ids(&["orders"])).is_some());
    assert!(
        p.shared("10.0.0.1:80", &ids(&["pay", "orders"])).is_some(),
        "any expected identity"
    );
    assert!(
        p.shared("10.0.0.2:80", &ids(&["orders"])).is_none(),
        "other authority"
    );
    // The destination now expects someone else: not used, and forgotten.
    assert!(p.shared("10.0.0.1:80", &ids(&["pay"])).is_none());
    assert!(
        p.shared("10.0.0.1:80", &ids(&["orders"])).is_none(),
        "a connection refused once is not pooled any more"
    );
}

#[tokio::test]
async fn closed_and_idle_connections_are_not_used() {
    let p = pool(Duration::from_secs(60));
    let (sender, stop) = h2_sender().await;
    pooled(&p, "10.0.0.1:80", &sender, "orders");
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), async {
        while !sender.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert!(
        p.shared("10.0.0.1:80", &ids(&["orders"])).is_none(),
        "closed"
    );

    let p = pool(Duration::from_millis(50));
    let (sender, _stop) = h2_sender().await;
    pooled(&p, "10.0.0.1:80", &sender, "orders");
    assert!(
        p.shared("10.0.0.1:80", &ids(&["orders"])).is_some(),
        "fresh"
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(
        p.shared("10.0.0.1:80", &ids(&["orders"])).is_none(),
        "unused for the idle timeout"
    );
}

/// A real HTTP/1.1 client connection to a real hyper server (see [`served`]).
async fn h1_sender() -> (
    http1::SendRequest<ReqBody>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (client, stop) = served(false);
    let (sender, conn) = http1::Builder::new()
        .handshake::<_, ReqBody>(client)
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, stop)
}

fn server(name: &str) -> SpiffeId {
    ids(&[name]).into_iter().next().unwrap()
}

#[tokio::test]
async fn an_idle_http1_connection_serves_only_destinations_that_expect_its_server() {
    let p = pool(Duration::from_secs(60)).http1_hop(Duration::from_secs(60), usize::MAX);
    let (sender, _stop) = h1_sender().await;
    p.h1_put("10.0.0.1:80".into(), sender, server("orders"));
    assert!(
        p.h1_idle("10.0.0.2:80", &ids(&["orders"])).is_none(),
        "other authority"
    );
    // The destination now expects someone else: not used, and forgotten.
    assert!(p.h1_idle("10.0.0.1:80", &ids(&["pay"])).is_none());
    assert!(
        p.h1_idle("10.0.0.1:80", &ids(&["orders"])).is_none(),
        "a connection refused once is not kept any more"
    );

    let (sender, _stop) = h1_sender().await;
    p.h1_put("10.0.0.1:80".into(), sender, server("orders"));
    let (sender, id) = p
        .h1_idle("10.0.0.1:80", &ids(&["pay", "orders"]))
        .expect("any expected identity");
    assert_eq!(id, server("orders"));
    assert!(
        p.h1_idle("10.0.0.1:80", &ids(&["orders"])).is_none(),
        "out on a request: not handed out twice"
    );
    p.h1_put("10.0.0.1:80".into(), sender, id);
    assert!(
        p.h1_idle("10.0.0.1:80", &ids(&["orders"])).is_some(),
        "back"
    );
}

#[tokio::test]
async fn closed_and_stale_http1_connections_are_not_used() {
    let p = pool(Duration::from_secs(60)).http1_hop(Duration::from_millis(50), usize::MAX);
    let (sender, stop) = h1_sender().await;
    p.h1_put("10.0.0.1:80".into(), sender, server("orders"));
    drop(stop);
    let closed = || {
        p.h1.lock().unwrap()["10.0.0.1:80"].idle[0]
            .sender
            .is_closed()
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        while !closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert!(
        p.h1_idle("10.0.0.1:80", &ids(&["orders"])).is_none(),
        "closed"
    );

    let (sender, _stop) = h1_sender().await;
    p.h1_put("10.0.0.1:80".into(), sender, server("orders"));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(
        p.h1_idle("10.0.0.1:80", &ids(&["orders"])).is_none(),
        "idle for longer than the keep-alive"
    );
    p.forget_idle(Instant::now());
    assert!(p.h1.lock().unwrap().is_empty(), "the sweep forgets them");
}

#[tokio::test]
async fn at_most_max_idle_http1_connections_are_kept_the_oldest_go_first() {
    let p = MeshPool::new(connector("{}"), Duration::from_secs(60), 2, 100)
        .http1_hop(Duration::from_secs(60), usize::MAX);
    let mut stops = Vec::new();
    for name in ["a", "b", "c"] {
        let (sender, stop) = h1_sender().await;
        stops.push(stop);
        p.h1_put("10.0.0.1:80".into(), sender, server(name));
    }
    let kept: Vec<_> = p.h1.lock().unwrap()["10.0.0.1:80"]
        .idle
        .iter()
        .map(|i| i.server.as_str().to_owned())
        .collect();
    assert_eq!(kept, [server("b").as_str(), server("c").as_str()]);

    let p = MeshPool::new(connector("{}"), Duration::from_secs(60), 0, 100)
        .http1_hop(Duration::from_secs(60), usize::MAX);
    let (sender, _stop) = h1_sender().await;
    p.h1_put("10.0.0.1:80".into(), sender, server("a"));
    assert!(
        p.h1.lock().unwrap().is_empty(),
        "--pool-max-idle 0 keeps none"
    );
}

#[tokio::test]
async fn at_most_max_connecting_handshakes_and_a_waiter_takes_a_connection_that_came_back() {
    let p = Arc::new(pool(Duration::from_secs(60)).http1_hop(Duration::from_secs(60), usize::MAX));
    // Every handshake slot of the destination taken, as by 32 connects under way.
    let slots = p.h1_slots("10.0.0.1:80");
    let taken = slots
        .acquire_many_owned(h1::MAX_CONNECTING as u32)
        .await
        .unwrap();
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move { p.h1_connect("10.0.0.1:80", &ids(&["orders"])).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The destination is unknown to this pool's connector: a connect would have failed.
    assert!(
        !waiter.is_finished(),
        "waits for a slot instead of connecting"
    );
    // A connection comes back, then a slot frees: the waiter takes the connection.
    let (sender, _stop) = h1_sender().await;
    p.h1_put("10.0.0.1:80".into(), sender, server("orders"));
    drop(taken);
    let (_, id) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .expect("the connection that came back");
    assert_eq!(id, server("orders"));
}

#[tokio::test]
async fn http1_out_counts_a_destinations_requests_out_and_the_sweep_keeps_the_count() {
    let p = pool(Duration::from_secs(60)).http1_hop(Duration::from_secs(60), 2);
    let a = p.http1_out("10.0.0.1:80", false).expect("none out");
    let b = p.http1_out("10.0.0.1:80", false).expect("one out");
    assert!(
        p.http1_out("10.0.0.1:80", false).is_none(),
        "two out: the next is a stream"
    );
    assert!(
        p.http1_out("10.0.0.2:80", false).is_some(),
        "counted per destination"
    );
    let hold_over = || {
        let mut dests = p.h1.lock().unwrap();
        dests.get_mut("10.0.0.1:80").unwrap().busy_until = Some(Instant::now());
    };
    p.forget_idle(Instant::now());
    hold_over();
    assert!(
        p.http1_out("10.0.0.1:80", false).is_none(),
        "a destination with requests out outlives the sweep, and its count with it"
    );
    drop(a);
    assert!(
        p.http1_out("10.0.0.1:80", false).is_none(),
        "one out, but busy within the hold: a stream"
    );
    hold_over();
    let c = p
        .http1_out("10.0.0.1:80", false)
        .expect("one out, and the hold over");
    drop((b, c));
    p.forget_idle(Instant::now());
    assert!(
        p.h1.lock().unwrap().is_empty(),
        "nothing out and nothing idle: forgotten"
    );

    let never = pool(Duration::from_secs(60));
    assert!(
        never.http1_out("10.0.0.1:80", false).is_none(),
        "--mesh-http1 http2"
    );
    let always = pool(Duration::from_secs(60)).http1_hop(Duration::from_secs(60), usize::MAX);
    let outs: Vec<_> = (0..100)
        .map_while(|_| always.http1_out("10.0.0.1:80", false))
        .collect();
    assert_eq!(outs.len(), 100, "--mesh-http1 http1");
}

/// A destination busy for a moment (as a scheduling stall at a modest rate makes it)
/// goes back to HTTP/1.1 connections once `AUTO_QUIET` requests in a row found fewer in
/// flight, within the hold; finding the threshold again starts the count afresh.
#[tokio::test]
async fn http1_out_ends_a_hold_after_enough_quiet_requests_in_a_row() {
    const DEST: &str = "10.0.0.1:80";
    let p = pool(Duration::from_secs(60)).http1_hop(Duration::from_secs(60), 2);
    let a = p.http1_out(DEST, false).expect("none out");
    // A second request out (the count is the key's strong count).
    let busy = || p.h1.lock().unwrap()[DEST].key.clone();
    let second = busy();
    assert!(
        p.http1_out(DEST, false).is_none(),
        "two out: a stream, the hold on"
    );
    drop(second);
    for i in 1..=10 {
        assert!(
            p.http1_out(DEST, false).is_none(),
            "quiet request {i} in the hold"
        );
    }
    let second = busy();
    assert!(p.http1_out(DEST, false).is_none(), "two out again");
    drop(second);
    // Counted afresh: 15 more quiet requests are streams, the 16th an HTTP/1.1 connection.
    for i in 1..AUTO_QUIET {
        assert!(
            p.http1_out(DEST, false).is_none(),
            "quiet request {i} since the last busy one"
        );
    }
    let c = p
        .http1_out(DEST, false)
        .expect("AUTO_QUIET quiet requests in a row end the hold before its time");
    drop(c);
    assert!(p.http1_out(DEST, false).is_some(), "the hold stays over");
    drop(a);
}
