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
