//! The path contract (docs/path-contract.md), end to end: every form in its table sent
//! through real proxies on three paths — HTTP/1.1 straight to the inbound over mesh mTLS,
//! HTTP/1.1 from the app through its outbound, and HTTP/2 from the app through its
//! outbound (mesh HTTP/2 to the inbound) — and what the app receives is checked: the
//! normalised path, or nothing at all (400), or a deny (403).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::{TcpListener, TcpStream};

/// `web` may do anything under `/public`, except what two deny rules take away: anything
/// under `/public/secret`, and DELETE under `/public/keep`.
const POLICY: &str = r#"
inbound:
  - policy: t/no-secret
    action: deny
    from: [authenticated]
    http: {paths: [{prefix: /public/secret}]}
  - policy: t/keep
    action: deny
    from: [authenticated]
    http: {methods: [DELETE], paths: [{prefix: /public/keep}]}
  - policy: t/public
    action: allow
    from: [{id: "spiffe://cluster.local/ns/shop/sa/web"}]
    http: {paths: [{prefix: /public}]}
"#;

/// What the contract says happens to a request.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Allowed; the app receives this path and query.
    Forward(&'static str),
    /// 400; the app receives nothing.
    Refuse,
    /// 403 (normalised to a path the policy does not allow, or one a deny rule covers).
    Deny,
    /// Not recognised as HTTP (HTTP/1.1 only: a method that is not an uppercase token),
    /// so judged as opaque TCP: L7 allows do not admit it and L7 denies cover it, the
    /// connection is closed without an answer and the app receives nothing.
    Opaque,
}
use Want::*;

/// `(method, request target, expected)`; one line per row of the contract table.
const CASES: &[(&str, &str, Want)] = &[
    // Canonical forms are forwarded as they are.
    ("GET", "/public/a", Forward("/public/a")),
    (
        "GET",
        "/public/a?x=1&y=/../admin",
        Forward("/public/a?x=1&y=/../admin"),
    ),
    ("GET", "/public/a%20b", Forward("/public/a%20b")),
    ("GET", "/public/v1:run", Forward("/public/v1:run")),
    ("GET", "/public/caf%c3%a9", Forward("/public/caf%C3%A9")),
    // Normalised, then forwarded in normal form.
    ("GET", "/public//a", Forward("/public/a")),
    ("GET", "/public/./a", Forward("/public/a")),
    ("GET", "/public/x/../a", Forward("/public/a")),
    ("GET", "/%70ublic/%61", Forward("/public/a")),
    // Dot segments leave the allowed prefix: judged where they lead.
    ("GET", "/public/../admin", Deny),
    ("GET", "/public/a/../../admin", Deny),
    // Separators, dot segments and delimiters in disguise.
    ("GET", "/public/..;/admin", Refuse),
    ("GET", "/public;x=1/a", Refuse),
    ("GET", "/public/a%3Bjsessionid=1", Refuse),
    ("GET", "/public%2F..%2Fadmin", Refuse),
    ("GET", "/public/..%5Cadmin", Refuse),
    ("GET", "/public/%2e%2e/admin", Refuse),
    ("GET", "/public/.%2E/admin", Refuse),
    ("GET", "/public/%252e%252e/admin", Refuse),
    ("GET", "/public/%c0%ae%c0%ae/admin", Refuse),
    ("GET", "/public/%ef%bc%8e%ef%bc%8e/admin", Refuse),
    ("GET", "/public/..%ef%bc%8fadmin", Refuse),
    ("GET", "/public/%u002e%u002e/admin", Refuse),
    ("GET", "/public/a%zz", Refuse),
    ("GET", "/public/a%3F.css", Refuse),
    ("GET", "/public/a%23.css", Refuse),
    ("GET", "/public/a%00.css", Refuse),
    ("GET", "/public/a%0d%0aX:%201", Refuse),
    ("GET", "/public\\..\\admin", Refuse),
    // Windows: trailing dots and spaces, data streams.
    ("GET", "/public/..%20/admin", Refuse),
    ("GET", "/public/secret.", Refuse),
    ("GET", "/public/secret%20", Refuse),
    ("GET", "/public/web.config::$DATA", Refuse),
    // Deny rules match conservatively: case and a trailing slash do not get around them.
    ("GET", "/public/secret", Deny),
    ("GET", "/public/SECRET", Deny),
    ("GET", "/public/Secret/x", Deny),
    ("GET", "/public/secret/", Deny),
    ("GET", "/public/secretive", Forward("/public/secretive")),
    ("DELETE", "/public/keep/1", Deny),
    ("GET", "/public/keep/1", Forward("/public/keep/1")),
];

/// Request-target forms only HTTP/1.1 has: the absolute form and the asterisk form (an
/// HTTP/2 `:path` is always origin-form or `*`, and hyper refuses `*` for non-OPTIONS).
const H1_ONLY: &[(&str, &str, Want)] = &[
    ("GET", "http://orders.shop/public/a", Forward("/public/a")),
    ("GET", "http://orders.shop/public/../admin", Deny),
    ("OPTIONS", "*", Refuse),
    ("delete", "/public/keep/1", Opaque),
];

/// HTTP/2 carries any method token as HTTP: a deny rule on `DELETE` covers `delete`
/// (Werkzeug upper-cases methods).
const H2_ONLY: &[(&str, &str, Want)] = &[
    ("delete", "/public/keep/1", Deny),
    ("Delete", "/public/keep/1", Deny),
];

/// An app that records the path and query of every request it receives.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    async fn serve(&self) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = self.0.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let target = req.uri().path_and_query().unwrap().to_string();
                        seen.lock().unwrap().push(target.clone());
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(target)))) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// The status line's code of a raw HTTP/1.1 answer.
fn status_of(raw: &str) -> Option<StatusCode> {
    let code = raw.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    StatusCode::from_bytes(code.as_bytes()).ok()
}

fn h1_request(method: &str, target: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: orders.shop\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

fn check(
    how: &str,
    method: &str,
    target: &str,
    want: Want,
    status: Option<StatusCode>,
    app: &Recorder,
) {
    let seen = app.take();
    let what = format!("{how}: {method} {target}");
    match want {
        Forward(path) => {
            assert_eq!(status, Some(StatusCode::OK), "{what}");
            assert_eq!(seen, [path], "{what}: the app gets the normal form");
        }
        Refuse => {
            assert_eq!(status, Some(StatusCode::BAD_REQUEST), "{what}");
            assert!(seen.is_empty(), "{what}: reached the app as {seen:?}");
        }
        Deny => {
            assert_eq!(status, Some(StatusCode::FORBIDDEN), "{what}");
            assert!(seen.is_empty(), "{what}: reached the app as {seen:?}");
        }
        Opaque => {
            assert_eq!(status, None, "{what}: closed without an answer");
            assert!(seen.is_empty(), "{what}: reached the app as {seen:?}");
        }
    }
}

#[tokio::test]
async fn every_form_over_http1_to_the_inbound() {
    let mesh = Mesh::new();
    let app = Recorder::default();
    let addr = app.serve().await;
    let (orders, _) = callee(&mesh, "orders", POLICY, addr, &[]).await;
    for &(method, target, want) in CASES.iter().chain(H1_ONLY) {
        let s = mtls(
            orders.inbound,
            &mesh.client_creds("web"),
            &[&wid("orders")],
            b"vigil/1",
        )
        .await
        .unwrap();
        let raw = raw_exchange(s, &h1_request(method, target), Duration::from_secs(5)).await;
        assert!(
            raw.is_empty() || status_of(&raw).is_some(),
            "{target}: {raw:?}"
        );
        check(
            "HTTP/1.1 inbound",
            method,
            target,
            want,
            status_of(&raw),
            &app,
        );
    }
}

#[tokio::test]
async fn every_form_over_http1_through_the_outbound() {
    let mesh = Mesh::new();
    let app = Recorder::default();
    let addr = app.serve().await;
    let ((web, _), _orders) = pair_with_logs(&mesh, addr, POLICY, &[]).await;
    for &(method, target, want) in CASES.iter().chain(H1_ONLY) {
        let s = TcpStream::connect(web.routes[0]).await.unwrap();
        let raw = raw_exchange(s, &h1_request(method, target), Duration::from_secs(5)).await;
        assert!(
            raw.is_empty() || status_of(&raw).is_some(),
            "{target}: {raw:?}"
        );
        check(
            "HTTP/1.1 outbound",
            method,
            target,
            want,
            status_of(&raw),
            &app,
        );
    }
}

#[tokio::test]
async fn every_form_over_http2_through_the_outbound() {
    let mesh = Mesh::new();
    let app = Recorder::default();
    let addr = app.serve().await;
    let ((web, _), _orders) = pair_with_logs(&mesh, addr, POLICY, &[]).await;
    let stream = TcpStream::connect(web.routes[0]).await.unwrap();
    let (mut c, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for &(method, target, want) in CASES.iter().chain(H2_ONLY) {
        let uri: Uri = format!("http://orders.shop{target}").parse().unwrap();
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        check("HTTP/2 outbound", method, target, want, Some(status), &app);
    }
}

/// HEAD answered by a proxy itself (a deny, a refused path) carries no body: over HTTP/2
/// a DATA frame after a HEAD is a protocol error, and the client would see a reset
/// instead of the status (h2spec generic/4/2). Straight to the inbound over mesh HTTP/2,
/// and from the app over h2c through the outbound.
#[tokio::test]
async fn head_answered_by_the_proxy_has_no_body_over_http2() {
    let mesh = Mesh::new();
    let app = Recorder::default();
    let addr = app.serve().await;
    let ((web, _), (orders, _)) = pair_with_logs(&mesh, addr, POLICY, &[]).await;
    let inbound = mtls(
        orders.inbound,
        &mesh.client_creds("web"),
        &[&wid("orders")],
        b"vigil/1",
    )
    .await
    .unwrap();
    let outbound = TcpStream::connect(web.routes[0]).await.unwrap();
    for (how, io) in [
        ("inbound", TokioIo::new(Box::new(inbound) as Box<dyn Io>)),
        ("outbound", TokioIo::new(Box::new(outbound) as Box<dyn Io>)),
    ] {
        let (mut c, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        for (path, want) in [
            ("/admin", StatusCode::FORBIDDEN),
            ("/public/secret", StatusCode::FORBIDDEN),
            ("/public/a%2Fb", StatusCode::BAD_REQUEST),
            ("/public/a", StatusCode::OK),
        ] {
            let req = Request::head(format!("http://orders.shop{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = c
                .send_request(req)
                .await
                .unwrap_or_else(|e| panic!("{how}: HEAD {path}: {e}"));
            assert_eq!(resp.status(), want, "{how}: HEAD {path}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(body.is_empty(), "{how}: HEAD {path}: {body:?}");
        }
        // The connection is still good for a GET with a body.
        let req = Request::get("http://orders.shop/admin")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{how}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(!body.is_empty(), "{how}: a GET's deny explains itself");
    }
}

/// The same over HTTP/1.1: no body bytes after the head, and the connection carries on.
#[tokio::test]
async fn head_answered_by_the_proxy_has_no_body_over_http1() {
    let mesh = Mesh::new();
    let app = Recorder::default();
    let addr = app.serve().await;
    let (orders, _) = callee(&mesh, "orders", POLICY, addr, &[]).await;
    let s = mtls(
        orders.inbound,
        &mesh.client_creds("web"),
        &[&wid("orders")],
        b"vigil/1",
    )
    .await
    .unwrap();
    let out = raw_exchange(
        s,
        b"HEAD /admin HTTP/1.1\r\nHost: o\r\n\r\nHEAD /public/a%2Fb HTTP/1.1\r\nHost: o\r\n\r\nGET /public/a HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let statuses: Vec<&str> = out.matches("HTTP/1.1 ").collect();
    assert_eq!(statuses.len(), 3, "{out}");
    let (i403, i400, i200) = (
        out.find("HTTP/1.1 403").unwrap(),
        out.find("HTTP/1.1 400").unwrap(),
        out.find("HTTP/1.1 200").unwrap(),
    );
    assert!(i403 < i400 && i400 < i200, "{out}");
    assert!(
        !out[..i200].contains("request id"),
        "no body after a HEAD: {out}"
    );
    assert!(out.ends_with("/public/a"), "{out}");
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
