//! The control port: the test makes this pod call others, and reads what it has seen.
//!
//! ```text
//! POST /call         {"url": "http://10.96.0.12:8080/x", "method": "GET", "timeout_ms": 5000}
//!                 -> {"status": 200, "body": "...", "error": null, "elapsed_ms": 3.1}
//! POST /stream/open  {"url": "http://10.96.0.12:8080/x?stream=1"}  -> {"id": 1}
//! GET  /stream/status?id=1 -> {"open": true, "chunks": 12, "error": null, "open_ms": 1210}
//! GET  /stats        -> {"instance": "...", "requests": 7, "by_path": {"/healthz": 5}}
//! POST /grpc         {"url": "http://10.96.0.12:8080", "message": "hi"}
//!                 -> {"http_status": 200, "grpc_status": 0, "message": "hi", "error": null}
//! ```
//!
//! Calls share one pooled HTTP/1.1 client, as an ordinary app's would: keep-alive
//! connections to the pod's outbound proxy stay open between calls. gRPC calls use an
//! HTTP/2 (prior knowledge, h2c) client, as gRPC apps do.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::app::Stats;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

#[derive(Debug, Default)]
struct Streams {
    next: u64,
    by_id: BTreeMap<u64, Arc<Mutex<StreamState>>>,
}

#[derive(Debug)]
struct StreamState {
    opened: Instant,
    open: bool,
    chunks: u64,
    error: Option<String>,
    closed_ms: Option<f64>,
}

struct Ctx {
    client: HttpClient,
    grpc: Client<HttpConnector, Full<Bytes>>,
    stats: Arc<Stats>,
    streams: Mutex<Streams>,
}

#[derive(Debug, Deserialize)]
struct GrpcReq {
    /// `http://host:port` of the server.
    url: String,
    message: String,
}

#[derive(Debug, Deserialize)]
struct CallReq {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Serves the control API until the process exits.
pub(crate) async fn serve(listener: TcpListener, stats: Arc<Stats>) {
    let ctx = Arc::new(Ctx {
        client: Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(300))
            .build_http(),
        grpc: Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http(),
        stats,
        streams: Mutex::default(),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, ctx.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = (req.method().clone(), req.uri().path().to_string());
    let query = req.uri().query().unwrap_or_default().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let out = match (route.0, route.1.as_str()) {
        (Method::POST, "/call") => match serde_json::from_slice::<CallReq>(&body) {
            Ok(c) => call(&ctx, c).await,
            Err(e) => {
                return Ok(json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": e.to_string()}),
                ));
            }
        },
        (Method::POST, "/stream/open") => match serde_json::from_slice::<CallReq>(&body) {
            Ok(c) => open_stream(&ctx, c),
            Err(e) => {
                return Ok(json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": e.to_string()}),
                ));
            }
        },
        (Method::GET, "/stream/status") => stream_status(&ctx, &query),
        (Method::POST, "/grpc") => match serde_json::from_slice::<GrpcReq>(&body) {
            Ok(g) => grpc_call(&ctx, g).await,
            Err(e) => {
                return Ok(json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": e.to_string()}),
                ));
            }
        },
        (Method::GET, "/stats") => {
            let by_path = ctx
                .stats
                .by_path
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            serde_json::json!({
                "instance": crate::instance(),
                "requests": ctx.stats.requests.load(Ordering::Relaxed),
                "by_path": by_path,
            })
        }
        _ => {
            return Ok(json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "no such route"}),
            ));
        }
    };
    Ok(json(StatusCode::OK, &out))
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r
}

fn request(c: &CallReq) -> Result<Request<Empty<Bytes>>, String> {
    let method = Method::from_bytes(c.method.as_deref().unwrap_or("GET").as_bytes())
        .map_err(|e| e.to_string())?;
    Request::builder()
        .method(method)
        .uri(&c.url)
        .body(Empty::new())
        .map_err(|e| e.to_string())
}

/// One request; the outcome, never an error status of our own.
async fn call(ctx: &Ctx, c: CallReq) -> serde_json::Value {
    let start = Instant::now();
    let timeout = Duration::from_millis(c.timeout_ms.unwrap_or(5_000));
    let outcome = match request(&c) {
        Err(e) => Err(e),
        Ok(req) => match tokio::time::timeout(timeout, async {
            let resp = ctx.client.request(req).await.map_err(|e| describe(&e))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| describe(&e))?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {timeout:?}")),
        },
    };
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    match outcome {
        Ok((status, body)) => serde_json::json!({
            "status": status,
            "body": String::from_utf8_lossy(&body[..body.len().min(4096)]),
            "error": null,
            "elapsed_ms": elapsed_ms,
        }),
        Err(e) => {
            serde_json::json!({"status": null, "body": null, "error": e, "elapsed_ms": elapsed_ms})
        }
    }
}

/// An error with its sources (hyper's top-level message alone says little).
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Opens a long-lived GET and counts its chunks in the background.
fn open_stream(ctx: &Arc<Ctx>, c: CallReq) -> serde_json::Value {
    let req = match request(&c) {
        Ok(r) => r,
        Err(e) => return serde_json::json!({"error": e}),
    };
    let state = Arc::new(Mutex::new(StreamState {
        opened: Instant::now(),
        open: true,
        chunks: 0,
        error: None,
        closed_ms: None,
    }));
    let id = {
        let mut s = ctx.streams.lock().unwrap_or_else(|p| p.into_inner());
        s.next += 1;
        let id = s.next;
        s.by_id.insert(id, state.clone());
        id
    };
    let client = ctx.client.clone();
    tokio::spawn(async move {
        let end = match client.request(req).await {
            Err(e) => Some(describe(&e)),
            Ok(resp) if !resp.status().is_success() => Some(format!("status {}", resp.status())),
            Ok(resp) => {
                let mut body = resp.into_body();
                loop {
                    match body.frame().await {
                        Some(Ok(f)) if f.is_data() => {
                            state.lock().unwrap_or_else(|p| p.into_inner()).chunks += 1;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break Some(describe(&e)),
                        None => break Some("ended by the server".into()),
                    }
                }
            }
        };
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.open = false;
        s.error = end;
        s.closed_ms = Some(s.opened.elapsed().as_secs_f64() * 1e3);
    });
    serde_json::json!({"id": id})
}

fn stream_status(ctx: &Ctx, query: &str) -> serde_json::Value {
    let id: u64 = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("id="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let streams = ctx.streams.lock().unwrap_or_else(|p| p.into_inner());
    let Some(state) = streams.by_id.get(&id) else {
        return serde_json::json!({"error": format!("no stream {id}")});
    };
    let s = state.lock().unwrap_or_else(|p| p.into_inner());
    serde_json::json!({
        "open": s.open,
        "chunks": s.chunks,
        "error": s.error,
        "open_ms": s.opened.elapsed().as_secs_f64() * 1e3,
        "closed_ms": s.closed_ms,
    })
}

/// One unary call of the echo method (`crate::app::GRPC_ECHO`): a length-prefixed message
/// out, the reply's message, HTTP status and `grpc-status` (trailers, or headers for a
/// trailers-only answer) back.
async fn grpc_call(ctx: &Ctx, g: GrpcReq) -> serde_json::Value {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(g.message.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(g.message.as_bytes());
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "{}{}",
            g.url.trim_end_matches('/'),
            crate::app::GRPC_ECHO
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)));
    let req = match req {
        Ok(r) => r,
        Err(e) => return serde_json::json!({"error": e.to_string()}),
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        let resp = ctx.grpc.request(req).await.map_err(|e| describe(&e))?;
        let http_status = resp.status().as_u16();
        let head_status = resp.headers().get("grpc-status").cloned();
        let collected = resp.into_body().collect().await.map_err(|e| describe(&e))?;
        let grpc_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status").cloned())
            .or(head_status)
            .and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
        let bytes = collected.to_bytes();
        let message = (bytes.len() >= 5).then(|| String::from_utf8_lossy(&bytes[5..]).into_owned());
        Ok::<_, String>((http_status, grpc_status, message))
    })
    .await;
    match outcome {
        Ok(Ok((http_status, grpc_status, message))) => serde_json::json!({
            "http_status": http_status,
            "grpc_status": grpc_status,
            "message": message,
            "error": null,
        }),
        Ok(Err(e)) => serde_json::json!({"error": e}),
        Err(_) => serde_json::json!({"error": "timed out after 5 s"}),
    }
}
