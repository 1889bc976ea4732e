//! The demo's HTTP client: what an app does when it calls another service through its
//! proxy's route listener (plain HTTP/1.1 to the local proxy, which adds mTLS).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, task::JoinHandle};

/// Give up on a call after this long.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A response, reduced to what the demo shows.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    /// `x-vigil-request-id`, on responses a proxy generated (denials).
    pub(crate) request_id: Option<String>,
}

impl Reply {
    /// The `caller` field of a demo app's JSON answer.
    pub(crate) fn caller(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()?
            .get("caller")?
            .as_str()
            .map(str::to_string)
    }
}

/// The request for `method path` (POSTs carry a small JSON body).
pub(crate) fn request(method: &str, path: &str) -> Result<Request<Full<Bytes>>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "demo");
    let body = if method == "POST" {
        b = b.header(http::header::CONTENT_TYPE, "application/json");
        Bytes::from_static(br#"{"order":42,"amount_cents":1999}"#)
    } else {
        Bytes::new()
    };
    Ok(b.body(Full::new(body))?)
}

/// One request on a new connection.
pub(crate) async fn call(addr: SocketAddr, method: &str, path: &str) -> Result<Reply> {
    tokio::time::timeout(TIMEOUT, async {
        let (mut sender, conn) = open(addr).await?;
        let reply = send(&mut sender, method, path).await;
        conn.abort();
        reply
    })
    .await
    .with_context(|| format!("{method} {path} via {addr}: no answer within {TIMEOUT:?}"))?
}

/// A keep-alive connection; the task ends when the connection closes.
pub(crate) async fn open(addr: SocketAddr) -> Result<(SendRequest<Full<Bytes>>, JoinHandle<()>)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, task))
}

/// One request on an open connection.
pub(crate) async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
) -> Result<Reply> {
    let resp = sender.send_request(request(method, path)?).await?;
    let status = resp.status();
    let request_id = resp
        .headers()
        .get("x-vigil-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).trim().to_string(),
        request_id,
    })
}

/// `200`, `403`, or `refused (why)`, for narration.
pub(crate) fn outcome(r: &Result<Reply>) -> String {
    match r {
        Ok(r) => r.status.as_u16().to_string(),
        // The innermost cause: "Connection reset by peer (os error 104)".
        Err(e) => format!("refused ({})", e.root_cause()),
    }
}
