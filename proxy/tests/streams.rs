//! Streams that misbehave on a shared mesh connection: downloads whose clients stop
//! reading must not stall the other requests to the same destination, and requests
//! their clients abandon are still logged and counted, on both sides.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::TcpStream;

async fn h1(
    via: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(via).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

fn get_req(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "orders.shop")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn stalled_downloads_do_not_stall_other_requests_to_the_same_destination() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let ((a, _), (_b, _)) = pair_with_logs(&mesh, app, ALLOW_WEB, &[]).await;
    let via = a.routes[0];
    // Three clients start 32 MiB downloads and stop reading after the first bytes. They
    // share the one pooled HTTP/2 connection from A to B with everything else.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let (mut sender, task) = h1(via).await;
        let resp = sender.send_request(get_req("/big?mb=32")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        stalled.push((sender, task, body));
    }
    // Give the stalled streams time to fill every window and buffer they can.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Others keep being served, bodies and all.
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t = std::time::Instant::now();
        let done = tokio::time::timeout(Duration::from_secs(10), async {
            let (mut sender, _task) = h1(via).await;
            let resp = sender
                .send_request(get_req(&format!("/steady/{i}")))
                .await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
        .await;
        let (status, body) = done
            .unwrap_or_else(|_| panic!("request {i} stalled behind the stalled downloads"))
            .unwrap();
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains(&format!("/steady/{i}")));
        worst = worst.max(t.elapsed());
    }
    // A new download next to the stalled ones gets its whole body.
    let (mut sender, _task) = h1(via).await;
    let resp = tokio::time::timeout(Duration::from_secs(20), async {
        let resp = sender.send_request(get_req("/big?mb=4")).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes().len()
    })
    .await
    .expect("a download next to stalled ones completes");
    assert_eq!(resp, 4 * 1024 * 1024);
    println!(
        "20 requests next to 3 stalled 32 MiB downloads on the same mesh connection: slowest {worst:?}; a 4 MiB download completed"
    );
    drop(stalled);
}

async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(admin, "/metrics").await.unwrap();
    body.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_request_the_client_abandons_is_logged_and_counted_on_both_sides() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let ((a, a_log), (b, b_log)) = pair_with_logs(&mesh, app, ALLOW_WEB, &[]).await;
    let via = a.routes[0];
    // The app takes 500 ms; the client gives up after 150.
    let (mut sender, task) = h1(via).await;
    let pending = tokio::spawn(async move { sender.send_request(get_req("/slow")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    pending.abort();
    task.abort();
    let cancelled = |direction: &'static str| {
        move |l: &serde_json::Value| {
            l["direction"] == direction
                && l["path"] == "/slow"
                && l["status"].is_null()
                && l["reason"].as_str().unwrap_or("").contains("cancelled")
        }
    };
    let outbound = a_log.first(cancelled("outbound")).await;
    let inbound = b_log.first(cancelled("inbound")).await;
    assert_eq!(outbound["decision"], "forward");
    assert_eq!(
        inbound["decision"], "allow",
        "it was authorized, then abandoned"
    );
    assert_eq!(inbound["src_id"], wid("web"));
    assert_eq!(
        metric(b.admin, "vigil_proxy_requests_total{decision=\"allow\",direction=\"inbound\",status=\"cancelled\"}").await,
        1.0
    );
    assert_eq!(
        metric(a.admin, "vigil_proxy_requests_total{decision=\"forward\",direction=\"outbound\",status=\"cancelled\"}").await,
        1.0
    );
    // A request that completes is logged once, with its status — not also as cancelled.
    let (mut sender, _task) = h1(via).await;
    let resp = sender.send_request(get_req("/done")).await.unwrap();
    let _ = resp.into_body().collect().await.unwrap();
    b_log.first(|l| l["path"] == "/done").await;
    // A second line for it would be written right after the first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done: Vec<_> = b_log
        .lines()
        .into_iter()
        .filter(|l| l["path"] == "/done")
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["status"], 200);
}
