//! The app port: what other pods call.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The gRPC method this app answers (its messages come back unchanged).
pub(crate) const GRPC_ECHO: &str = "/vigil.testapp.v1.Echo/Echo";

/// What the app has served, for `GET /stats` on the control port.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Requests answered, probes included.
    pub(crate) requests: AtomicU64,
    /// Requests per path (probes show up as `/healthz`).
    pub(crate) by_path: Mutex<BTreeMap<String, u64>>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Serves until `stop`, then lets open connections finish their requests.
pub(crate) async fn serve(listener: TcpListener, stats: Arc<Stats>, stop: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => break,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let stats = stats.clone();
        let svc = hyper::service::service_fn(move |req| handle(req, stats.clone()));
        let conn = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn handle(req: Request<Incoming>, stats: Arc<Stats>) -> Result<Response<Body>, Infallible> {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    {
        let mut by_path = stats.by_path.lock().unwrap_or_else(|p| p.into_inner());
        *by_path.entry(req.uri().path().to_string()).or_default() += 1;
    }
    if let Some(ms) = query_param(req.uri().query(), "delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let resp = match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok"),
        GRPC_ECHO => grpc_echo(req).await,
        _ if query_param(req.uri().query(), "stream").is_some() => stream(),
        _ => echo(&req),
    };
    Ok(resp)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync());
    *r.status_mut() = status;
    r
}

/// The request as JSON, with who this instance is and who called (the proxy's verified
/// `x-vigil-peer-id`).
fn echo(req: &Request<Incoming>) -> Response<Body> {
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let body = serde_json::json!({
        "instance": crate::instance(),
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "host": h("host").or_else(|| req.uri().authority().map(|a| a.as_str())),
        "peer": h("x-vigil-peer-id"),
        "version": format!("{:?}", req.version()),
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A line every 100 ms, until the client goes away.
fn stream() -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        let mut n: u64 = 0;
        loop {
            let line = format!("{} {n}\n", crate::instance());
            if tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() {
                return;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::new(StreamBody::new(frames).boxed_unsync())
}

/// gRPC unary echo: the request's length-prefixed messages come back as the response,
/// with `grpc-status: 0` in the trailers.
async fn grpc_echo(req: Request<Incoming>) -> Response<Body> {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if !is_grpc {
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not gRPC\n");
    }
    let messages = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "request body failed\n"),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = Full::new(messages)
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed_unsync();
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}
