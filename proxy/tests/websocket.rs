//! HTTP/1.1 Upgrade through the mesh: a real WebSocket client (tungstenite) → `web`'s
//! outbound → mesh mTLS → `orders`' inbound → a real WebSocket server, and a raw upgrade
//! app for other protocols. The upgrade request is authorized like any request (method,
//! path, headers; a deny is a 403 and the app sees nothing), then tunnelled; quarantine
//! on either side, revocation of the rule, and a policy that no longer allows the request
//! close the tunnel. Nothing sent after a refused upgrade request is parsed as a request.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{self, Message},
};

/// `web` may open WebSockets on `/ws` (GET, with the header `x-tenant: acme`) and use
/// the `echo/1` protocol on `/raw`; nothing else.
const POLICY: &str = r#"
generation: 1
inbound:
  - policy: shop/ws
    action: allow
    from: [{id: "spiffe://cluster.local/ns/shop/sa/web"}]
    http:
      methods: [GET]
      paths: [{exact: /ws}, {prefix: /raw}, {exact: /decline}, {exact: /plain}]
      headers: [{name: x-tenant, exact: acme}]
"#;

/// What an app saw: `(path, x-vigil-peer-id)` per upgrade request it received.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>);

impl Seen {
    fn paths(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|s| s.0.clone()).collect()
    }
}

/// A WebSocket echo server (tungstenite) recording what each handshake asked for.
async fn ws_app() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let cb = |req: &tungstenite::handshake::server::Request,
                          resp: tungstenite::handshake::server::Response| {
                    let peer = req
                        .headers()
                        .get("x-vigil-peer-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    record.0.lock().unwrap().push((req.uri().to_string(), peer));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, cb).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A WebSocket client through `web`'s outbound route `via`.
async fn ws_connect(
    via: SocketAddr,
    path: &str,
    tenant: &str,
) -> Result<WebSocketStream<TcpStream>, tungstenite::Error> {
    let tcp = TcpStream::connect(via).await.unwrap();
    client_async(ws_request(path, tenant), tcp)
        .await
        .map(|(ws, _)| ws)
}

/// A WebSocket upgrade request for `path`, with `x-tenant: tenant`.
fn ws_request(path: &str, tenant: &str) -> Request<()> {
    Request::get(format!("ws://orders.shop{path}"))
        .header("host", "orders.shop")
        .header("x-tenant", tenant)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap()
}

async fn echo<S>(ws: &mut WebSocketStream<S>, m: Message)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(m.clone()).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("echo in time")
        .expect("stream open")
        .unwrap();
    assert_eq!(back, m);
}

/// The tunnel ends (close, EOF or error) within 10 s.
async fn assert_closes(ws: &mut WebSocketStream<TcpStream>, what: &str) {
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "{what}: the tunnel is still open");
}

fn status_of(e: tungstenite::Error) -> StatusCode {
    match e {
        tungstenite::Error::Http(resp) => resp.status(),
        other => panic!("expected an HTTP answer, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_is_authorized_at_the_upgrade_then_tunnelled() {
    let mesh = Mesh::new();
    let (app, seen) = ws_app().await;
    let ((web, web_log), (_orders, orders_log)) = pair_with_logs(&mesh, app, POLICY, &[]).await;
    let via = web.routes[0];

    let mut ws = ws_connect(via, "/ws", "acme").await.unwrap();
    echo(&mut ws, Message::text("hello")).await;
    echo(&mut ws, Message::binary(vec![7u8; 1 << 20])).await;
    for i in 0..50 {
        echo(&mut ws, Message::text(format!("m{i}"))).await;
    }
    ws.close(None).await.unwrap();
    assert_eq!(
        seen.0.lock().unwrap().clone(),
        [("/ws".to_string(), wid("web"))],
        "the app saw the upgrade once, with the verified caller"
    );

    // The path judged and forwarded is the normalised one.
    let mut ws = ws_connect(via, "/raw/../ws", "acme").await.unwrap();
    echo(&mut ws, Message::text("normalised")).await;
    assert_eq!(seen.paths().last().unwrap(), "/ws");

    // Denied (path, header, a path that normalises outside the rule): 403, and the app
    // sees nothing.
    let before = seen.paths().len();
    for (path, tenant) in [
        ("/admin", "acme"),
        ("/ws", "other"),
        ("/ws/../admin", "acme"),
    ] {
        let e = ws_connect(via, path, tenant).await.expect_err("refused");
        assert_eq!(status_of(e), StatusCode::FORBIDDEN, "{path} as {tenant}");
    }
    assert_eq!(
        seen.paths().len(),
        before,
        "denied upgrades never reach the app"
    );

    // Both sides log the upgrade with its answer.
    let lines = orders_log
        .when(|ls| {
            ls.iter().filter(|l| l["status"] == 101).count() >= 2
                && ls.iter().filter(|l| l["status"] == 403).count() >= 3
        })
        .await;
    let switched: Vec<_> = lines
        .iter()
        .filter(|l| l["status"] == 101 && l["path"] == "/ws")
        .collect();
    assert_eq!(switched.len(), 2, "{lines:#?}");
    assert!(switched.iter().all(|l| l["decision"] == "allow"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["status"] == 403 && l["decision"] == "deny")
            .count(),
        3,
        "{lines:#?}"
    );
    let out = web_log
        .first(|l| l["status"] == 101 && l["direction"] == "outbound")
        .await;
    assert_eq!(out["decision"], "forward", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_and_quarantine_close_the_tunnel() {
    let mesh = Mesh::new();
    let (app, _) = ws_app().await;
    let ((web, _), (orders, _)) = pair_with_logs(&mesh, app, POLICY, &[]).await;
    let via = web.routes[0];

    // The rule that allowed the upgrade goes: the tunnel closes, the next upgrade is 403.
    let mut ws = ws_connect(via, "/ws", "acme").await.unwrap();
    echo(&mut ws, Message::text("before")).await;
    let narrowed = POLICY
        .replace("generation: 1", "generation: 2")
        .replace("{exact: /ws}, ", "");
    mesh.write_policy("orders", &narrowed);
    assert_closes(&mut ws, "rule removed").await;
    let e = ws_connect(via, "/ws", "acme").await.expect_err("refused");
    assert_eq!(status_of(e), StatusCode::FORBIDDEN);

    // Allowed again; then `orders` is quarantined.
    mesh.write_policy("orders", &POLICY.replace("generation: 1", "generation: 3"));
    let mut ws = reconnect(via).await;
    echo(&mut ws, Message::text("again")).await;
    mesh.write_policy(
        "orders",
        &format!("{POLICY}quarantined: true\n").replace("generation: 1", "generation: 4"),
    );
    assert_closes(&mut ws, "orders quarantined").await;

    // Allowed again; then `web` (the caller) is quarantined: its outbound closes it.
    mesh.write_policy("orders", &POLICY.replace("generation: 1", "generation: 5"));
    let mut ws = reconnect(via).await;
    echo(&mut ws, Message::text("once more")).await;
    mesh.write_policy("web", "generation: 2\nquarantined: true\ninbound: []\n");
    assert_closes(&mut ws, "web quarantined").await;

    let metrics = http_get(orders.admin, "/metrics").await.unwrap().1;
    for reason in ["policy", "quarantine"] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!(
                "vigil_proxy_connections_closed_total{{direction=\"inbound\",reason=\"{reason}\"}}"
            ))),
            "{reason}:\n{metrics}"
        );
    }
}

/// Retries the upgrade until the new policy is in force.
async fn reconnect(via: SocketAddr) -> WebSocketStream<TcpStream> {
    for _ in 0..400 {
        if let Ok(ws) = ws_connect(via, "/ws", "acme").await {
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the upgrade was never allowed again");
}

// === other protocols, and what a refused upgrade does to the connection ===

/// A hyper app: `Upgrade: echo/1` on `/raw…` switches and echoes raw bytes; `/decline`
/// answers 200 to an upgrade request; anything else answers 200 saying whether an
/// `Upgrade` header reached it. Records every path.
async fn raw_app() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let record = record.clone();
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let record = record.clone();
                async move {
                    record
                        .0
                        .lock()
                        .unwrap()
                        .push((req.uri().to_string(), String::new()));
                    let wants = req.headers().get("upgrade").is_some_and(|v| v == "echo/1");
                    if wants && req.uri().path().starts_with("/raw") {
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(on.await.unwrap());
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        });
                        return Ok::<_, Infallible>(
                            Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header("upgrade", "echo/1")
                                .header("connection", "upgrade")
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        );
                    }
                    let text = if req.uri().path() == "/decline" {
                        "declined".to_string()
                    } else {
                        format!("upgrade header: {}", req.headers().contains_key("upgrade"))
                    };
                    Ok(Response::new(Full::new(Bytes::from(text))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades(),
            );
        }
    });
    (addr, seen)
}

fn upgrade_head(path: &str, upgrade: &str, tenant: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: orders.shop\r\nx-tenant: {tenant}\r\n\
         Connection: Upgrade\r\nUpgrade: {upgrade}\r\n\r\n"
    )
}

/// Writes `bytes`, reads until EOF or `wait`.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    wait: Duration,
) -> (String, bool) {
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let eof = tokio::time::timeout(wait, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), eof)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_protocols_are_tunnelled_with_bytes_sent_early() {
    let mesh = Mesh::new();
    let (app, seen) = raw_app().await;
    let ((web, _), _orders) = pair_with_logs(&mesh, app, POLICY, &[]).await;
    let mut s = TcpStream::connect(web.routes[0]).await.unwrap();
    // The first tunnel bytes go in the same write as the head: held until the switch,
    // then delivered to the app's protocol, not parsed as HTTP.
    let early = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = upgrade_head("/raw", "echo/1", "acme").into_bytes();
    first.extend_from_slice(early);
    s.write_all(&first).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(early) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("upgrade: echo/1"),
        "{text}"
    );
    // Bulk both ways.
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.into_split();
    let send = payload.clone();
    let writer = tokio::spawn(async move { w.write_all(&send).await.unwrap() });
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert!(back == payload, "tunnelled bytes differ");
    assert_eq!(
        seen.paths(),
        ["/raw"],
        "the early bytes were never a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_declined_upgrade_closes_the_connection() {
    let mesh = Mesh::new();
    let (app, seen) = raw_app().await;
    let ((web, _), (orders, _)) = pair_with_logs(&mesh, app, POLICY, &[]).await;
    let wait = Duration::from_secs(10);
    let pipelined = upgrade_head("/raw", "echo/1", "acme");

    // Denied (path not allowed), with an allowed request pipelined behind it: one 403,
    // then the connection closes; the app sees nothing.
    for target in ["outbound", "inbound"] {
        let mut bytes = upgrade_head("/admin", "echo/1", "acme").into_bytes();
        bytes.extend_from_slice(pipelined.as_bytes());
        let (text, eof) = if target == "outbound" {
            let mut s = TcpStream::connect(web.routes[0]).await.unwrap();
            exchange(&mut s, &bytes, wait).await
        } else {
            let creds = mesh.client_creds("web");
            let mut s = mtls(orders.inbound, &creds, &[&wid("orders")], b"vigil/1")
                .await
                .unwrap();
            exchange(&mut s, &bytes, wait).await
        };
        assert!(eof, "{target}: connection left open:\n{text}");
        assert!(text.starts_with("HTTP/1.1 403 "), "{target}: {text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{target}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{target}: {text}"
        );
    }
    assert!(seen.paths().is_empty(), "{:?}", seen.paths());

    // Declined by the app: its answer, then the connection closes.
    let mut s = TcpStream::connect(web.routes[0]).await.unwrap();
    let (text, eof) = exchange(
        &mut s,
        upgrade_head("/decline", "echo/1", "acme").as_bytes(),
        wait,
    )
    .await;
    assert!(eof, "{text}");
    assert!(
        text.starts_with("HTTP/1.1 200 ") && text.ends_with("declined"),
        "{text}"
    );

    // `h2c` is not tunnelled: served as the HTTP/1.1 request it also is, no Upgrade
    // reaches the app.
    let mut s = TcpStream::connect(web.routes[0]).await.unwrap();
    let (text, _) = exchange(
        &mut s,
        upgrade_head("/plain", "h2c", "acme").as_bytes(),
        wait,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.ends_with("upgrade header: false"), "{text}");

    // A malformed Upgrade is refused, not guessed at.
    for bad in ["web socket", "echo/1/2", "\"echo\""] {
        let mut s = TcpStream::connect(web.routes[0]).await.unwrap();
        let (text, _) = exchange(&mut s, upgrade_head("/raw", bad, "acme").as_bytes(), wait).await;
        assert!(text.starts_with("HTTP/1.1 400 "), "{bad}: {text}");
    }
    assert_eq!(seen.paths(), ["/decline", "/plain"]);
}

/// The marker that brings an HTTP/2 app's request across the HTTP/1.1 hop
/// (`vigil-orig-proto: HTTP/2`) only chooses how the app is spoken to, and never for an
/// upgrade: a caller that sends it on an upgrade request still gets its tunnel (an
/// HTTP/1.1 exchange with the app: HTTP/2 has no `Upgrade`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_marked_as_http2_is_still_tunnelled_over_http1() {
    let mesh = Mesh::new();
    let (app, seen) = ws_app().await;
    let (orders, _) = callee(&mesh, "orders", POLICY, app, &[]).await;
    let creds = mesh.client_creds("web");
    let tls = mtls(orders.inbound, &creds, &[&wid("orders")], b"vigil/1")
        .await
        .unwrap();
    let mut req = ws_request("/ws", "acme");
    req.headers_mut()
        .insert("vigil-orig-proto", http::HeaderValue::from_static("HTTP/2"));
    let (mut ws, _) = client_async(req, tls).await.expect("upgraded");
    echo(&mut ws, Message::text("over http/1.1")).await;
    assert_eq!(seen.paths(), ["/ws"]);
}
