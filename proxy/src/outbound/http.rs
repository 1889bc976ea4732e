//! Outbound HTTP: serve the app's connection with hyper and send each request to the
//! destination's proxy: over a pooled keep-alive HTTP/1.1 mesh connection, or as a
//! stream of the pooled HTTP/2 mesh connection — `--mesh-http1` and the destination's
//! load decide ([`super::pool`]) for every request the HTTP/1.1 hop can carry as it is.
//! Those are an HTTP/1 app's requests, and an HTTP/2 app's requests whose stream ended
//! with their headers (no body, no trailers) and that did not ask for trailers in the
//! answer (`te: trailers`, which gRPC sends): the HTTP/1.1 hop cannot promise an
//! answer's trailers (hyper sends only trailer fields the answer declares), which RFC
//! 9110 §6.5.1 lets a hop drop only where the client did not ask for them. Every other
//! HTTP/2 request (a body, possibly streamed both ways; `te: trailers`; `CONNECT`) keeps
//! its stream. A request that crosses in the other protocol than its app spoke is marked
//! (`vigil-orig-proto: HTTP/1.1` over HTTP/2, `HTTP/2` over HTTP/1.1) so the far side
//! hands it to its app in the app's protocol.
//!
//! An upgrade request (WebSocket …) takes a connection of its own instead, see
//! [`super::upgrade`].
//!
//! The outbound does not authorize mesh requests — the destination's proxy does. So its
//! access-log line says what it knows: `decision: "forward"` and the status the
//! destination answered (a 403 there is the destination's deny, whose log line carries
//! the request id quoted in the reason), or `deny` when it refused to send at all
//! (quarantined, or the destination could not be reached or verified).

use std::{convert::Infallible, sync::Arc, time::Instant};

use http::{
    HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
    uri::{Authority, PathAndQuery},
};
use hyper::body::Body as _;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{DIRECTION, OutCtx, pool::H1Out};
use crate::{
    access_log::{Answer, Entry, What},
    connections::Recheck,
    detect::Proto,
    http_util::{
        Body, ORIG_PROTO, PEER_ID, REQUEST_ID, RequestId, error_response, has_header, http_uri,
        join_cookies, remove_header, strip_hop_by_hop,
    },
    metrics::labels::{Closed, Decision, Rejected},
    req_body::ReqBody,
    request_log::RequestLog,
    serve,
};

pub(super) async fn serve<S>(io: S, ctx: Arc<OutCtx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = ctx.shared.clone();
    let svc_ctx = ctx.clone();
    let service = hyper::service::service_fn(move |req| handle(req, svc_ctx.clone()));
    let live = shared.conns.track_now(Recheck::Quarantine);
    let list = u32::try_from(shared.cfg.max_header_bytes).unwrap_or(u32::MAX);
    if let Some(reason) = serve::http(io, ctx.proto, list, &shared, service, live.closed()).await {
        closed(&ctx, reason);
    }
}

fn closed(ctx: &OutCtx, reason: Closed) {
    tracing::info!(dst = %ctx.dst, reason = reason.as_str(), "closing outbound connection");
    ctx.shared.metrics.close(DIRECTION, reason);
}

async fn handle(req: Request<ReqBody>, ctx: Arc<OutCtx>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let head = req.method() == Method::HEAD;
    let shared = &ctx.shared;
    let request_id = shared.ids.next();
    let entry = if shared.log.enabled() {
        Entry {
            direction: DIRECTION,
            protocol: ctx.proto.as_str(),
            src_addr: Some(ctx.src_addr.to_string()),
            src_id: shared
                .tls()
                .map(|t| t.creds.info.id.to_string())
                .unwrap_or_default(),
            dst_addr: Some(ctx.dst.to_string()),
            dst_id: Some(
                ctx.target
                    .identities
                    .iter()
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            method: Some(req.method().to_string()),
            path: Some(req.uri().path().to_string()),
            request_id: Some(request_id.to_string()),
            decision: Decision::Forward,
            reason: What::Forwarded(None).into(),
            ..Entry::default()
        }
    } else {
        Entry {
            decision: Decision::Forward,
            ..Entry::default()
        }
    };
    // Logged and counted exactly once, also if the app goes away before the answer.
    let mut record = RequestLog::new(shared, DIRECTION, start, entry);
    let resp = if shared.policy().is_quarantined() {
        shared.metrics.reject(DIRECTION, Rejected::Quarantine);
        record.entry.decision = Decision::Deny;
        record.entry.reason = What::Quarantined.into();
        error_response(StatusCode::FORBIDDEN, request_id)
    } else {
        match upgrade_requested(&req, &ctx) {
            // Made ready without awaiting, so that this future (moved whole per request)
            // holds only the sending's state.
            Ok(None) => match prepare(req, &ctx, request_id) {
                Prepared::Send(out) => send(out, &ctx, &mut record.entry).await,
                Prepared::Refused(resp) => resp,
            },
            // Boxed: it holds a connect (TLS handshake) of its own, and this future is
            // moved with every request.
            Ok(Some(protocols)) => {
                Box::pin(super::upgrade::send(
                    req,
                    protocols,
                    &ctx,
                    request_id,
                    &mut record.entry,
                ))
                .await
            }
            Err(e) => {
                tracing::debug!(error = %e, "refusing upgrade request");
                shared.metrics.reject(DIRECTION, Rejected::MalformedUpgrade);
                record.entry.decision = Decision::Deny;
                record.entry.reason = What::Refused(e.to_string()).into();
                error_response(StatusCode::BAD_REQUEST, request_id)
            }
        }
    };
    record.finish(resp.status().as_u16(), 0);
    Ok(crate::http_util::without_body_for_head(resp, head))
}

/// The protocols an upgrade request asks for (HTTP/1.1 from the app only).
fn upgrade_requested(
    req: &Request<ReqBody>,
    ctx: &OutCtx,
) -> Result<Option<HeaderValue>, crate::upgrade::MalformedUpgrade> {
    match ctx.proto {
        Proto::Http1 => crate::upgrade::requested(req),
        _ => Ok(None),
    }
}

/// Header fields an HTTP/2 app's request crossing the HTTP/1.1 hop has room for: its
/// map is the one hyper's client then parses the answer into (nginx answers a static
/// file with 8 fields; 12 fit without growing the map, `HeaderMap` keeps a quarter free).
const H1_HOP_FIELDS: usize = 12;

/// A request made ready for the mesh hop.
struct Outgoing<'a> {
    req: Request<ReqBody>,
    /// The pool's key: the destination authority, or the chosen backend's.
    key: std::borrow::Cow<'a, str>,
    /// Over an HTTP/1.1 mesh connection, its place among them (else as an HTTP/2 stream).
    h1: Option<H1Out>,
    request_id: RequestId,
}

/// A request made ready, or the answer to one that cannot be sent.
enum Prepared<'a> {
    Send(Outgoing<'a>),
    Refused(Response<Body>),
}

/// The request as the mesh hop carries it (a `400` if it cannot be).
fn prepare(mut req: Request<ReqBody>, ctx: &OutCtx, request_id: RequestId) -> Prepared<'_> {
    // Changed in place: taking the request apart and putting it together again copied
    // it twice.
    let was_h1 = ctx.proto == Proto::Http1;
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // A Service's virtual address: this request goes to one of its ready backends (the
    // pool keeps a connection per backend), chosen from the policy in force now.
    let backend = ctx.mesh.connector.backend_for(&ctx.authority);
    let to_backend = backend.is_some();
    let (key, authority) = match backend {
        Some(b) => {
            let key = b.to_string();
            let authority = Authority::try_from(key.as_str()).ok();
            (std::borrow::Cow::Owned(key), authority)
        }
        None => (
            std::borrow::Cow::Borrowed(ctx.authority.as_str()),
            ctx.uri_authority.clone(),
        ),
    };
    let Some(authority) = authority else {
        return Prepared::Refused(error_response(StatusCode::BAD_REQUEST, request_id));
    };
    let ended = req.body().is_end_stream();
    let connect = req.method() == Method::CONNECT;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    remove_header(headers, &PEER_ID);
    remove_header(headers, &ORIG_PROTO);
    let h1 = if was_h1 {
        ctx.mesh.http1_out(&key, false)
    } else if ended && !connect && !has_header(headers, &header::TE) {
        ctx.mesh.http1_out(&key, true)
    } else {
        None
    };
    if h1.is_some() {
        if !was_h1 {
            // hyper's HTTP/1.1 client parses the answer's fields into this map (emptied
            // and kept by the connection), first making room for all of them: made here
            // with room for a typical answer's, it is the one allocation of fields this
            // request makes (an HTTP/2 request's map has room for only its own). Never
            // a panic: a map that cannot grow is left as it is.
            let _ = headers.try_reserve(H1_HOP_FIELDS);
        }
        // Over HTTP/1.1: origin form, and the app's Host — or, from an HTTP/1.0 app that
        // sent none or an HTTP/2 app (`:authority`), the destination's authority (what
        // `:authority` says below; the connection's own value unless a backend was chosen).
        if !has_header(headers, &header::HOST) {
            let host = if to_backend {
                HeaderValue::from_str(authority.as_str()).ok()
            } else {
                ctx.host.clone()
            };
            if let Some(host) = host {
                headers.insert(header::HOST, host);
            }
        }
        if !was_h1 {
            join_cookies(headers);
            headers.insert(ORIG_PROTO, HeaderValue::from_static("HTTP/2"));
        }
        *req.uri_mut() = Uri::from(path_and_query);
        *req.version_mut() = Version::HTTP_11;
    } else {
        let Ok(uri) = http_uri(authority, path_and_query) else {
            return Prepared::Refused(error_response(StatusCode::BAD_REQUEST, request_id));
        };
        // Keep the app's Host for the far side (HTTP/2 has no Host; `:authority` is ours).
        if was_h1 {
            headers.insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
        }
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
    }
    Prepared::Send(Outgoing {
        req,
        key,
        h1,
        request_id,
    })
}

/// Sends a request to the destination's proxy.
async fn send(out: Outgoing<'_>, ctx: &OutCtx, entry: &mut Entry) -> Response<Body> {
    let ids = &ctx.target.identities;
    // Fields moved out one by one: no second copy of the request in this future.
    let sent = if let Some(h1) = out.h1 {
        (ctx.mesh.send_h1(h1, &out.key, ids, out.req).await).map(|resp| resp.map(Body::mesh))
    } else {
        (ctx.mesh.send(&out.key, ids, out.req).await).map(|resp| resp.map(Body::http2))
    };
    match sent {
        Ok(mut resp) => {
            if ctx.shared.log.enabled() {
                entry.reason.what = answered(&resp);
            }
            strip_hop_by_hop(resp.headers_mut());
            resp
        }
        Err(e) => {
            tracing::info!(dst = %ctx.dst, error = %e, "mesh request failed");
            ctx.shared
                .metrics
                .reject(DIRECTION, Rejected::UpstreamUnavailable);
            entry.decision = Decision::Deny;
            entry.reason.what = What::UpstreamFailed(e.to_string());
            error_response(StatusCode::BAD_GATEWAY, out.request_id)
        }
    }
}

/// What the destination answered: its status and, when its proxy (not its app) produced
/// the answer, that proxy's request id.
pub(super) fn answered<B>(resp: &Response<B>) -> What {
    What::Forwarded(Some(Answer {
        status: resp.status().as_u16(),
        request_id: resp
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }))
}
