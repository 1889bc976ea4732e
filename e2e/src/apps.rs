//! The pods' applications and clients — plain HTTP and TCP that know nothing of the mesh.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Serves HTTP on `0.0.0.0:port`: `/healthz` answers `ok`; every other path answers
/// JSON `{service, peer, method, path}` (`peer` from the `x-vigil-peer-id` header the
/// proxy sets after verifying the caller).
pub async fn http_app(service: &'static str, port: u16) {
    let l = TcpListener::bind(("::", port))
        .await
        .unwrap_or_else(|e| panic!("binding :{port}: {e}"));
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                let body = if req.uri().path() == "/healthz" {
                    "ok".to_string()
                } else {
                    serde_json::json!({
                        "service": service,
                        "peer": req.headers().get("x-vigil-peer-id").and_then(|v| v.to_str().ok()),
                        "method": req.method().as_str(),
                        "path": req.uri().path(),
                    })
                    .to_string()
                };
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

/// A TCP echo server on `[::]:port` (both families) (an opaque, non-HTTP protocol).
pub async fn echo_app(port: u16) {
    let l = TcpListener::bind(("::", port))
        .await
        .unwrap_or_else(|e| panic!("binding :{port}: {e}"));
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// A response: status and body.
pub type Reply = (StatusCode, String);

/// One HTTP/1.1 request on a new connection, with extra headers; 5 s timeout.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::new()))?)
            .await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    })
    .await
    .map_err(|_| anyhow::anyhow!("{method} {addr}{path}: no answer within 5s"))?
}

/// `GET` on a new connection.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Reply> {
    http(addr, "GET", path, &[]).await
}

/// Connects, sends `msg`, returns what comes back (None if refused or closed; 3 s).
pub async fn echo(addr: SocketAddr, msg: &str) -> Option<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(msg.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; msg.len()];
    match tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&buf).into_owned()),
        _ => None,
    }
}
