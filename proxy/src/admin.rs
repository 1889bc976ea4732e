//! The admin server: `/live`, `/ready`, `/metrics`, `/config`, `/peers`.
//!
//! `/ready` answers 200 only once credentials and a valid policy are loaded (and 503
//! while draining). `/config` shows the effective configuration, the identity, the
//! certificate expiry and the policy in force — never key material. `/peers` lists the
//! SPIFFE IDs this proxy had verified mTLS connections with, per direction, with first
//! and last handshake and a count ([`crate::peers`]): identities and counters only.

use std::{convert::Infallible, sync::Arc, time::SystemTime};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::{
    http_util::{Body, full},
    policy_store::PolicyStore,
    shared::Shared,
};

/// Readiness inputs.
#[derive(Debug)]
pub struct Admin {
    /// Shared proxy state.
    pub shared: Arc<Shared>,
    /// The policy store (for "loaded").
    pub policy_store: Arc<PolicyStore>,
}

impl Admin {
    /// True when the proxy can serve: credentials and a valid policy loaded, not draining.
    pub fn ready(&self) -> bool {
        self.shared.tls().is_some()
            && self.policy_store.is_loaded()
            && !self.shared.shutdown.is_cancelled()
    }
}

/// Serves the admin endpoints until the process ends (the admin port stays up during the
/// drain so `/ready` can report 503).
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, admin.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, admin: Arc<Admin>) -> Result<Response<Body>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
    }
    let resp = match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => {
            if admin.ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let mut r = Response::new(full(admin.shared.metrics.encode()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/config" => json(config_json(&admin)),
        "/peers" => {
            json(serde_json::to_string_pretty(&admin.shared.peers.report()).unwrap_or_default())
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}

fn config_json(admin: &Admin) -> String {
    let shared = &admin.shared;
    let policy = shared.policy();
    let tls = shared.tls();
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let doc = json!({
        "config": &*shared.cfg,
        "ready": admin.ready(),
        "identity": tls.as_ref().map(|t| json!({
            "id": t.creds.info.id.as_str(),
            "not_before": secs(t.creds.info.not_before),
            "not_after": secs(t.creds.info.not_after),
            "serial": t.creds.info.serial.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "trust_bundle_roots": t.creds.bundle.roots().len(),
        })),
        "policy": {
            "generation": policy.generation(),
            "loaded": admin.policy_store.is_loaded(),
            "invalid": policy.invalid_reason(),
            "quarantined": policy.is_quarantined(),
            "document": policy.model(),
        },
        "access_log_dropped": shared.log.dropped(),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn json(body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r
}
