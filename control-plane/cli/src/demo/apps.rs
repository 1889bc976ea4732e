//! The demo's services: tiny HTTP apps that answer with who they are and who called them
//! (the `x-vigil-peer-id` header their proxy sets after verifying the caller's certificate),
//! and count the requests that reach them.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, task::JoinHandle};

/// One running demo service.
pub(crate) struct App {
    pub(crate) addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl App {
    /// Serves HTTP/1.1 and HTTP/2 on a loopback port.
    pub(crate) async fn start(name: &'static str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        answer(name, req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self { addr, hits, task })
    }

    /// Requests received so far.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: &'static str,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let caller = req
        .headers()
        .get("x-vigil-peer-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unauthenticated");
    let body = serde_json::json!({
        "service": name,
        "caller": caller,
        "method": req.method().as_str(),
        "path": req.uri().path(),
    });
    let mut resp = http::Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
