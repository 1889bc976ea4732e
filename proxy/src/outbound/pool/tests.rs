#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, time::Duration};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::*;
use crate::outbound::connect::tests::connector;

fn ids(names: &[&str]) -> BTreeSet<SpiffeId> {
    names
        .iter()
        .map(|n| SpiffeId::parse(&format!("spiffe://td/ns/shop/sa/{n}")).unwrap())
        .collect()
}

/// A real HTTP/2 client connection to a real hyper server, over an in-memory pipe; the
/// server task ends (and the connection closes) when `stop` is dropped.
async fn h2_sender() -> (
    http2::SendRequest<Incoming>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
        });
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(server), svc);
        tokio::select! {
            _ = conn => {}
            _ = stopped => {}
        }
    });
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Incoming>(TokioIo::new(client))
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, stop)
}

fn pool(idle: Duration) -> MeshPool {
    MeshPool::new(connector("{}"), idle, 16, 100)
}

fn pooled(pool: &MeshPool, authority: &str, sender: &http2::SendRequest<Incoming>, server: &str) {
    pool.dests
        .lock()
        .unwrap()
        .entry(authority.into())
        .or_default()
        .conn = Some(Conn {
        sender: sender.clone(),
        server: ids(&[server]).into_iter().next().unwrap(),
        used: Instant::now(),
    });
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
