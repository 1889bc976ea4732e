//! Two proxies back to back — app client -> proxy A (outbound) -> mTLS -> proxy B
//! (inbound) -> app — for every protocol: HTTP/1.1, HTTP/2, gRPC with trailers, opaque
//! TCP, and a server-first protocol.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[tokio::test]
async fn http1_round_trip_with_keep_alive() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (_a, _b, via) = pair(&mesh, app, &[]).await;
    let stream = TcpStream::connect(via).await.unwrap();
    let (mut c, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let (status, _, body) = send(&mut c, get(&format!("/orders/{i}?q={i}")))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["path"], format!("/orders/{i}"));
        assert_eq!(seen["query"], format!("q={i}"));
        assert_eq!(
            seen["version"], "HTTP/1.1",
            "the app gets the protocol the client spoke"
        );
        assert_eq!(seen["peer"], wid("web"));
        assert_eq!(seen["host"], "orders.shop");
        assert!(
            seen["orig_proto"].is_null(),
            "mesh-internal headers never reach the app"
        );
    }
    // A request body crosses intact.
    let body = "x".repeat(100_000);
    let req = Request::post("/count")
        .header("host", "o")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (status, _, count) = send(&mut c, req).await.unwrap();
    assert_eq!((status, count.as_str()), (StatusCode::OK, "100000"));
}

#[tokio::test]
async fn http2_and_grpc_trailers_round_trip() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (_a, _b, via) = pair(&mesh, app, &[]).await;
    let stream = TcpStream::connect(via).await.unwrap();
    let (mut c, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);

    let req = Request::get("http://orders.shop/orders/1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["peer"], wid("web"));

    let req = Request::post("http://orders.shop/grpc.Test/Echo")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x05hello")))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers cross the mesh");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "ok");
    assert_eq!(&collected.to_bytes()[..], b"\x00\x00\x00\x00\x05hello");
}

/// `--http1-app-ports`: an app that speaks HTTP/1.1 only gets an HTTP/2 client's requests
/// as HTTP/1.1 — with a `Host`, its cookies in one field, its body streamed — and each
/// of the client's concurrent streams on a connection of its own.
#[tokio::test]
async fn http2_requests_reach_an_http1_only_app_on_a_listed_port() {
    let mesh = Mesh::new();
    let app = http1_app().await;
    let port = app.port().to_string();
    let (_a, _b, via) = pair(&mesh, app, &["--http1-app-ports", &port]).await;
    let mut c = h2_client(via).await;

    let req = Request::get("http://orders.shop/orders/7?q=1")
        .header("cookie", "a=1")
        .header("cookie", "b=2; c=3")
        .body(empty())
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(seen["version"], "HTTP/1.1");
    // HTTP/2's `:authority` crosses the mesh as the caller's proxy names the destination
    // (here its route); it becomes the Host.
    assert_eq!(
        seen["host"], "r0.route.vigil",
        "the authority becomes the Host"
    );
    assert_eq!(
        (seen["path"].as_str(), seen["query"].as_str()),
        (Some("/orders/7"), Some("q=1"))
    );
    assert_eq!(seen["peer"], wid("web"));
    assert_eq!(seen["cookies"], serde_json::json!(["a=1; b=2; c=3"]));
    assert!(seen["orig_proto"].is_null());
    // The next bodyless requests cross the HTTP/1.1 mesh hop (the first opened the
    // HTTP/2 connection that tells the hop may carry them): the same Host each time.
    for n in 0..3 {
        let resp = c
            .send_request(
                Request::get("http://orders.shop/again")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let seen: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(
            (seen["version"].as_str(), seen["host"].as_str()),
            (Some("HTTP/1.1"), Some("r0.route.vigil")),
            "request {n}: {seen}"
        );
    }

    // A request body of unknown length goes chunked; a large answer streams back.
    let req = Request::post("http://orders.shop/count")
        .body(BodyExt::boxed(futures_chunks(
            Bytes::from(vec![b'x'; 64 * 1024]),
            5,
        )))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    let count = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&count[..], b"327680");
    let resp = c
        .send_request(
            Request::get("http://orders.shop/big?mb=1")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        1 << 20
    );

    // Streams at once: the app answers each (on HTTP/1.1 connections of their own).
    let slow = (0..4).map(|_| {
        let mut c = c.clone();
        async move {
            let req = Request::get("http://orders.shop/slow")
                .body(empty())
                .unwrap();
            let resp = c.send_request(req).await.unwrap();
            resp.into_body().collect().await.unwrap().to_bytes()
        }
    });
    for body in futures_util::future::join_all(slow).await {
        assert_eq!(&body[..], b"slow done");
    }
}

/// A burst of concurrent streams to an HTTP/1.1 app takes a connection each, and the
/// next burst reuses them: the pool keeps that many idle (`--pool-max-idle`'s default,
/// 256), where a smaller cap opened and closed a connection per request past it.
#[tokio::test]
async fn a_burst_of_streams_to_an_http1_app_reuses_its_connections() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = l.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let slow = hyper::service::service_fn(|_req| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                    Bytes::from_static(b"ok"),
                )))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), slow),
            );
        }
    });
    let mesh = Mesh::new();
    let port = app.port().to_string();
    let (_a, _b, via) = pair(&mesh, app, &["--http1-app-ports", &port]).await;
    let c = h2_client(via).await;
    for burst in 1..=2 {
        let all = (0..40).map(|_| {
            let mut c = c.clone();
            async move {
                let req = Request::get("http://orders.shop/orders/1")
                    .body(empty())
                    .unwrap();
                let resp = c.send_request(req).await.unwrap();
                (
                    resp.status(),
                    resp.into_body().collect().await.unwrap().to_bytes(),
                )
            }
        });
        for (status, body) in futures_util::future::join_all(all).await {
            assert_eq!(
                (status, &body[..]),
                (StatusCode::OK, &b"ok"[..]),
                "burst {burst}"
            );
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            40,
            "after burst {burst}: one connection per concurrent request, reused"
        );
    }
}

/// A port not listed keeps the client's protocol: HTTP/2 to an app that speaks HTTP/1.1
/// only fails (a 502, which is what the flag is for), HTTP/1.1 still works.
#[tokio::test]
async fn unlisted_ports_keep_the_clients_protocol() {
    let mesh = Mesh::new();
    let app = http1_app().await;
    let other = if app.port() == 9 { "10" } else { "9" };
    let (_a, _b, via) = pair(&mesh, app, &["--http1-app-ports", other]).await;
    let mut c = h2_client(via).await;
    let req = Request::get("http://orders.shop/orders/1")
        .body(empty())
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let (status, body) = http_get(via, "/orders/1").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["version"], "HTTP/1.1");
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn empty() -> TestBody {
    BodyExt::boxed(Full::new(Bytes::new()))
}

/// An HTTP/2 client (prior knowledge) of `via`.
async fn h2_client(via: SocketAddr) -> hyper::client::conn::http2::SendRequest<TestBody> {
    let stream = TcpStream::connect(via).await.unwrap();
    let (c, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    c
}

#[tokio::test]
async fn opaque_tcp_round_trips() {
    let mesh = Mesh::new();
    let echo = tcp_echo().await;
    let (_a, b, via) = pair(&mesh, echo, &[]).await;
    let mut s = TcpStream::connect(via).await.unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let read = r.read_to_end(&mut back);
    let (_, n) = tokio::join!(write, read);
    n.unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "1 MiB of binary data echoed intact");
    let m = http_get(b.admin, "/metrics").await.unwrap().1;
    assert!(
        m.contains("vigil_proxy_connections_total{direction=\"inbound\",protocol=\"tcp\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn server_first_protocols_do_not_stall() {
    let mesh = Mesh::new();
    let banner = banner_server().await;
    // Declared opaque: no detection wait at all.
    let port = banner.port().to_string();
    let (_a, _b, via) = pair(&mesh, banner, &["--opaque-ports", &port]).await;
    expect_banner(via).await;

    // Not declared: the client side waits one detection timeout (200 ms here), then the
    // ALPN tells the server side it is opaque, so it does not wait again.
    let (_a2, _b2, via2) = pair(&mesh, banner, &[]).await;
    expect_banner(via2).await;
}

async fn expect_banner(via: SocketAddr) {
    let mut s = TcpStream::connect(via).await.unwrap();
    let mut buf = [0u8; 18];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"220 banner ready\r\n");
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}

#[tokio::test]
async fn unauthorized_callers_are_refused_through_the_mesh_too() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (b, _) = callee(&mesh, "orders", ALLOW_WEB, app, &[]).await;
    // `db` has a route to orders, but orders only admits web.
    let (a, _) = caller(&mesh, "db", b.inbound, "orders", &[]).await;
    assert_eq!(
        http_get(a.routes[0], "/orders/1").await.unwrap().0,
        StatusCode::FORBIDDEN
    );
    // And a route expecting the wrong identity never reaches the app: 502 from A, which
    // logs that it refused (it did not forward).
    let (a2, a2_log) = caller(&mesh, "web", b.inbound, "payments", &[]).await;
    assert_eq!(
        http_get(a2.routes[0], "/orders/1").await.unwrap().0,
        StatusCode::BAD_GATEWAY
    );
    let out = a2_log.first(|l| l["path"] == "/orders/1").await;
    assert_eq!(
        (&out["direction"], &out["decision"], &out["status"]),
        (&"outbound".into(), &"deny".into(), &502.into()),
        "{out}"
    );
}

#[tokio::test]
async fn the_outbound_log_says_it_forwarded_and_what_the_destination_answered() {
    let mesh = Mesh::new();
    let app = http_app().await;
    // orders admits web for GET only.
    let policy = r#"
generation: 1
inbound:
  - {policy: shop/web-reads, action: allow, from: [{id: "spiffe://cluster.local/ns/shop/sa/web"}], http: {methods: [GET]}}
"#;
    let ((a, a_log), (_b, b_log)) = pair_with_logs(&mesh, app, policy, &[]).await;
    let via = a.routes[0];

    // Allowed: forwarded, 200, no request id from the destination's proxy (its app answered).
    assert_eq!(http_get(via, "/ok").await.unwrap().0, StatusCode::OK);
    let out = a_log.first(|l| l["path"] == "/ok").await;
    assert_eq!(out["direction"], "outbound");
    assert_eq!(out["decision"], "forward");
    assert_eq!(out["status"], 200);
    assert_eq!(out["dst_id"], wid("orders"));
    assert_eq!(
        out["reason"],
        "forwarded over mTLS; the destination answered 200"
    );

    // Denied by the destination: the outbound does not claim "allow"; it says it forwarded
    // the request and got the destination proxy's 403, whose request id leads to the deny.
    let stream = TcpStream::connect(via).await.unwrap();
    let (mut c, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let post = Request::post("/denied")
        .header("host", "orders")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, _) = send(&mut c, post).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let out = a_log.first(|l| l["path"] == "/denied").await;
    let inb = b_log.first(|l| l["path"] == "/denied").await;
    assert_eq!(out["direction"], "outbound");
    assert_eq!(out["decision"], "forward", "{out}");
    assert_eq!(out["status"], 403);
    assert_eq!(inb["direction"], "inbound");
    assert_eq!(inb["decision"], "deny");
    assert_eq!(inb["status"], 403);
    let deny_id = inb["request_id"].as_str().unwrap();
    assert_eq!(
        out["reason"],
        format!("forwarded over mTLS; the destination answered 403 (its request id {deny_id})")
    );
    assert_ne!(
        out["request_id"], inb["request_id"],
        "each proxy numbers its own"
    );

    // The metrics use the same words.
    let (_, metrics) = http_get(a.admin, "/metrics").await.unwrap();
    for series in [
        r#"vigil_proxy_requests_total{decision="forward",direction="outbound",status="2xx"} 1"#,
        r#"vigil_proxy_requests_total{decision="forward",direction="outbound",status="4xx"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

#[path = "mesh/http2_hop.rs"]
mod http2_hop;
