//! The inbound's connections to the app: HTTP/1.1 keep-alive connections are reused
//! (also after empty and bodiless responses), requests reach the app in origin form, an
//! app that closes its connections after each response costs no request, and a response
//! abandoned midway does not leave a half-read connection in the pool.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// What [`counting_app`] saw.
#[derive(Clone, Default)]
struct Seen {
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<String>>>,
    hosts: Arc<Mutex<Vec<Option<String>>>>,
}

/// An HTTP/1.1 app that counts the connections it accepts and sees closed, and records
/// each request's target: `/empty` answers 204, everything else 200 `ok`.
async fn counting_app() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Seen::default();
    let (a, c, t, h) = (
        seen.accepted.clone(),
        seen.closed.clone(),
        seen.targets.clone(),
        seen.hosts.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let (c, t, h) = (c.clone(), t.clone(), h.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    t.lock().unwrap().push(req.uri().to_string());
                    h.lock().unwrap().push(
                        req.headers()
                            .get(http::header::HOST)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                    );
                    let status = match req.uri().path() {
                        "/empty" => StatusCode::NO_CONTENT,
                        _ => StatusCode::OK,
                    };
                    let body = match status {
                        StatusCode::OK => Full::new(Bytes::from_static(b"ok")),
                        _ => Full::new(Bytes::new()),
                    };
                    async move {
                        Ok::<_, Infallible>(Response::builder().status(status).body(body).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), service)
                    .await;
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

fn request(method: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "orders.shop")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn keep_alive_connections_to_the_app_are_reused_and_sent_origin_form() {
    let mesh = Mesh::new();
    let (app, seen) = counting_app().await;
    let (b, _) = callee(&mesh, "orders", ALLOW_WEB, app, &[]).await;
    let mut web = h1_over_mtls(b.inbound, &mesh.client_creds("web"), &[&wid("orders")])
        .await
        .unwrap();
    for i in 0..30 {
        let (method, path, want) = match i % 3 {
            0 => ("GET", "/orders/1?x=1", StatusCode::OK),
            1 => ("HEAD", "/orders/1", StatusCode::OK),
            _ => ("GET", "/empty", StatusCode::NO_CONTENT),
        };
        let (status, _, _) = send(&mut web, request(method, path)).await.unwrap();
        assert_eq!(status, want, "request {i}: {method} {path}");
    }
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        1,
        "30 requests, after 200s, HEADs and 204s, on one app connection"
    );
    let targets = seen.targets.lock().unwrap().clone();
    assert_eq!(targets.len(), 30);
    assert!(
        targets.iter().all(|t| t.starts_with('/')),
        "origin form: {targets:?}"
    );
    assert_eq!(targets[0], "/orders/1?x=1");

    // A request that names no host (HTTP/1.0 may) reaches the app with one: the app's
    // address, as any client of the app would send it.
    let no_host = Request::builder()
        .version(http::Version::HTTP_10)
        .uri("/orders/2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut old = h1_over_mtls(b.inbound, &mesh.client_creds("web"), &[&wid("orders")])
        .await
        .unwrap();
    let (status, _, _) = send(&mut old, no_host).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        seen.hosts.lock().unwrap().last().cloned().flatten(),
        Some(app.to_string())
    );
}

#[tokio::test]
async fn an_app_that_closes_after_each_response_costs_no_request() {
    // Answers one request per connection, then closes it — without saying so
    // (`Connection: close`), as an app behind a short keep-alive timeout does.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let mesh = Mesh::new();
    let (b, _) = callee(&mesh, "orders", ALLOW_WEB, app, &[]).await;
    let mut web = h1_over_mtls(b.inbound, &mesh.client_creds("web"), &[&wid("orders")])
        .await
        .unwrap();
    for i in 0..20 {
        let (status, _, body) = send(&mut web, get("/orders/1")).await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "ok"),
            "request {i}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        20,
        "one app connection each"
    );
}

#[tokio::test]
async fn a_response_abandoned_midway_leaves_no_half_read_connection_behind() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (b, _) = callee(&mesh, "orders", ALLOW_WEB, app, &[]).await;
    for _ in 0..3 {
        let mut web = h1_over_mtls(b.inbound, &mesh.client_creds("web"), &[&wid("orders")])
            .await
            .unwrap();
        // 16 MiB, of which one frame is read before the caller goes away.
        let resp = web.send_request(get("/big")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        drop((body, web));
        // A new caller is served whole, whatever connection the inbound picks.
        let mut next = h1_over_mtls(b.inbound, &mesh.client_creds("web"), &[&wid("orders")])
            .await
            .unwrap();
        let (status, _, body) = send(&mut next, get("/orders/1")).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

#[tokio::test]
async fn idle_app_connections_close_after_the_pool_idle_timeout() {
    let mesh = Mesh::new();
    let (app, seen) = counting_app().await;
    let (b, _) = callee(
        &mesh,
        "orders",
        ALLOW_WEB,
        app,
        &["--pool-idle-timeout", "1s"],
    )
    .await;
    let mut web = h1_over_mtls(b.inbound, &mesh.client_creds("web"), &[&wid("orders")])
        .await
        .unwrap();
    let (status, _, _) = send(&mut web, get("/orders/1")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        seen.closed.load(Ordering::SeqCst),
        0,
        "kept for the next request"
    );
    wait_for(
        async || seen.closed.load(Ordering::SeqCst) == 1,
        "the idle app connection closed by the proxy",
    )
    .await;
    // And the next request opens a new one.
    let (status, _, _) = send(&mut web, get("/orders/1")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}
