//! The injector webhook's HTTPS server (`POST /inject`) and its certificate.
//!
//! The serving certificate is issued by the mesh CA for `--webhook-sans` (24 h, renewed
//! every 6 h), so the MutatingWebhookConfiguration's `caBundle` is simply the CA's root
//! bundle — the same on every replica. The controller keeps that `caBundle` current
//! (on start and whenever the bundle changes, e.g. after a root rotation).

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use anyhow::Context;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;
use vigil_injector::InjectorConfig;

use super::{Kube, reflectors::Stores};
use crate::state::State;

type Body = http_body_util::Full<hyper::body::Bytes>;

/// Lifetime of the webhook certificate.
const CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often it is reissued.
const CERT_RENEW: Duration = Duration::from_secs(6 * 3600);
/// Largest AdmissionReview accepted (a Pod is far smaller).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// A TLS server config with a fresh certificate from the CA.
fn tls_config(state: &State, sans: &[String]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (chain, key_pem) = state
        .ca()
        .issue_server_cert(sans, CERT_TTL, std::time::SystemTime::now())
        .context("issuing the webhook certificate")?;
    let cfg = vigil_cert_authority::tls::web_server_config(
        chain,
        &key_pem,
        vigil_cert_authority::tls::provider(),
    )?;
    Ok(Arc::new(cfg))
}

/// Serves `/inject` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    k: Kube,
    stores: Arc<Stores>,
    config: Arc<InjectorConfig>,
) -> anyhow::Result<()> {
    let (tls_tx, tls_rx) = watch::channel(tls_config(&state, &k.args.webhook_sans)?);
    let st = state.clone();
    let sans = k.args.webhook_sans.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CERT_RENEW).await;
            match tls_config(&st, &sans) {
                Ok(c) => {
                    tls_tx.send_replace(c);
                }
                Err(e) => tracing::error!(error = %e, "renewing the webhook certificate failed"),
            }
        }
    });
    // The injector needs the current trust anchors (they change with root rotation).
    let (cfg_tx, cfg_rx) = watch::channel(config);
    let mut bundle_rx = state.bundle.subscribe();
    tokio::spawn(async move {
        loop {
            let pem = bundle_rx.borrow_and_update().to_pem();
            cfg_tx.send_modify(|c| Arc::make_mut(c).trust_anchors_pem = pem);
            if bundle_rx.changed().await.is_err() {
                return;
            }
        }
    });
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = TlsAcceptor::from(tls_rx.borrow().clone());
        let (stores, cfg_rx) = (stores.clone(), cfg_rx.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                handle(req, stores.clone(), cfg_rx.borrow().clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    stores: Arc<Stores>,
    config: Arc<InjectorConfig>,
) -> Result<Response<Body>, Infallible> {
    if req.uri().path() != "/inject" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".into(),
        ));
    }
    if req.method() != Method::POST {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "POST an AdmissionReview\n".into(),
        ));
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("{e}\n").into(),
            ));
        }
    };
    let ns_annotations = |ns: &str| -> BTreeMap<String, String> {
        stores
            .namespaces
            .get(&kube::runtime::reflector::ObjectRef::new(ns))
            .map(|n| n.annotations().clone())
            .unwrap_or_default()
    };
    match vigil_injector::review(&config, &body, ns_annotations) {
        Ok(out) => Ok(reply(StatusCode::OK, "application/json", out)),
        Err(e) => {
            tracing::warn!(error = %e, "malformed AdmissionReview");
            Ok(reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("{e}\n").into(),
            ))
        }
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    resp
}

/// Keeps the webhook configuration's `caBundle` equal to the CA's root bundle.
pub async fn keep_ca_bundle(state: Arc<State>, k: Kube) {
    if k.args.webhook_config.is_empty() {
        return;
    }
    let api: Api<MutatingWebhookConfiguration> = Api::all(k.client.clone());
    let mut bundle_rx = state.bundle.subscribe();
    loop {
        let pem = bundle_rx.borrow_and_update().to_pem();
        match patch_ca_bundle(&api, &k.args.webhook_config, &pem).await {
            Ok(n) => {
                tracing::info!(config = %k.args.webhook_config, webhooks = n, "webhook caBundle is current")
            }
            Err(e) => {
                tracing::warn!(config = %k.args.webhook_config, error = %e, "updating the webhook caBundle failed; retrying");
                tokio::time::sleep(Duration::from_secs(10)).await;
                continue;
            }
        }
        if bundle_rx.changed().await.is_err() {
            return;
        }
    }
}

async fn patch_ca_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    pem: &str,
) -> anyhow::Result<usize> {
    use base64::Engine;
    let current = api.get(name).await?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
    let webhooks: Vec<serde_json::Value> = current
        .webhooks
        .iter()
        .flatten()
        .map(|w| {
            let mut v = serde_json::to_value(w).unwrap_or_default();
            v["clientConfig"]["caBundle"] = serde_json::Value::String(b64.clone());
            v
        })
        .collect();
    let n = webhooks.len();
    let patch = serde_json::json!({ "webhooks": webhooks });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(n)
}
