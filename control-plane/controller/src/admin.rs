//! The controller's admin server: `/live`, `/ready`, `/metrics`, `/status` (JSON).

use std::{convert::Infallible, sync::Arc};

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::{state::State, status::StatusReport};

type Body = http_body_util::Full<hyper::body::Bytes>;

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Body>, Infallible> {
    let (status, ctype, body) = match req.uri().path() {
        "/live" | "/ready" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.metrics.encode(),
        ),
        "/status" => (
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&StatusReport::collect(&state)).unwrap_or_default(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(Body::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}
