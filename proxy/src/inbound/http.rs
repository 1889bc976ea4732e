//! Inbound HTTP: serve the connection with hyper, authorize every request, forward
//! allowed ones to the app. An allowed upgrade (WebSocket …) the app accepts becomes a
//! tunnel, judged again on every policy change (see [`crate::upgrade`]).

use std::{borrow::Cow, convert::Infallible, sync::Arc, time::Instant};

use http::{
    HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
    uri::{Authority, PathAndQuery},
};
use hyper::upgrade::OnUpgrade;
use tokio::io::{AsyncRead, AsyncWrite};
use vigil_policy::{HttpRequest, Policy};

use super::{ConnCtx, DIRECTION};
use crate::{
    access_log::{Entry, What},
    authz::{self, Judged, JudgedHttp, Rate},
    connections::Recheck,
    detect::Proto,
    http_util::{
        Body, ORIG_PROTO, PEER_ID, RequestId, error_response, has_header, http_uri, join_cookies,
        remove_header, strip_hop_by_hop,
    },
    metrics::labels::{Closed, Decision, Rejected},
    req_body::ReqBody,
    request_log::RequestLog,
    serve,
    shared::Source,
    upgrade,
};

/// Serves one HTTP connection until it ends, the proxy drains, or policy closes it (this
/// workload quarantined, the peer revoked: each request is judged on its own).
pub(super) async fn serve<S>(io: S, ctx: Arc<ConnCtx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = ctx.shared.clone();
    let svc_ctx = ctx.clone();
    // Every request of the connection goes to the same app address: made once, shared.
    let app = Authority::try_from(ctx.app.to_string()).ok();
    let service = hyper::service::service_fn(move |req| handle(req, svc_ctx.clone(), app.clone()));
    let live = shared.conns.track_now(Recheck::Peer(ctx.source.clone()));
    // A request that crossed the HTTP/2 hop from an HTTP/1.1 app may be that much longer.
    let list = shared.cfg.max_header_bytes + crate::http_util::H2_LIST_SLACK;
    let list = u32::try_from(list).unwrap_or(u32::MAX);
    if let Some(reason) = serve::http(io, ctx.proto, list, &shared, service, live.closed()).await {
        closed(&ctx, reason);
    }
}

fn closed(ctx: &ConnCtx, reason: Closed) {
    tracing::info!(src = %ctx.src_addr, peer = %ctx.source.id_string(), reason = reason.as_str(), "closing inbound connection");
    ctx.shared.metrics.close(DIRECTION, reason);
}

async fn handle(
    req: Request<ReqBody>,
    ctx: Arc<ConnCtx>,
    app: Option<Authority>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let head = req.method() == Method::HEAD;
    let shared = &ctx.shared;
    let request_id = shared.ids.next();
    let entry = if shared.log.enabled() {
        Entry {
            direction: DIRECTION,
            protocol: ctx.proto.as_str(),
            src_addr: Some(ctx.src_addr.to_string()),
            src_id: ctx.source.id_string(),
            dst_addr: Some(ctx.app.to_string()),
            dst_id: shared.tls().map(|t| t.creds.info.id.to_string()),
            method: Some(req.method().to_string()),
            path: Some(req.uri().path().to_string()),
            request_id: Some(request_id.to_string()),
            bytes_rx: req.body_size_hint_exact(),
            ..Entry::default()
        }
    } else {
        Entry::default()
    };
    // Logged and counted exactly once, also if the client goes away first.
    let mut record = RequestLog::new(shared, DIRECTION, start, entry);
    // Judged without awaiting, so that this future — moved whole into hyper's slot for it,
    // per request — holds only the forwarding's state (measured: each `async fn` level
    // between here and the app's client added a few hundred bytes to copy).
    let (resp, decision) = match authorize(req, &ctx, app, request_id, &mut record.entry) {
        Judgement::Forward(allowed) => (forward(allowed, &ctx, request_id).await, Decision::Allow),
        Judgement::Answer(resp, decision) => (resp, decision),
    };
    record.entry.decision = decision;
    record.finish(resp.status().as_u16(), resp.body_size_hint_exact());
    Ok(crate::http_util::without_body_for_head(resp, head))
}

/// What judging a request leads to.
enum Judgement {
    /// Allowed: this goes to the app.
    Forward(Allowed),
    /// Answered here (denied, refused, or not forwardable), and the decision.
    Answer(Response<Body>, Decision),
}

/// Judges the request: the request to send the app if it is allowed, else the answer
/// and the decision.
fn authorize(
    req: Request<ReqBody>,
    ctx: &Arc<ConnCtx>,
    app: Option<Authority>,
    request_id: RequestId,
    entry: &mut Entry,
) -> Judgement {
    let shared = &ctx.shared;
    let reject = |reason: Rejected, status: StatusCode, entry: &mut Entry| {
        shared.metrics.reject(DIRECTION, reason);
        entry.reason.what = What::Rejected(reason);
        Judgement::Answer(error_response(status, request_id), Decision::Deny)
    };
    if req.method() == Method::CONNECT {
        return reject(
            Rejected::ConnectMethod,
            StatusCode::METHOD_NOT_ALLOWED,
            entry,
        );
    }
    // Upgrades (WebSocket …) arrive over HTTP/1.1 only, mesh peers included.
    let protocols = match ctx.proto {
        Proto::Http1 => match upgrade::requested(&req) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "refusing upgrade request");
                return reject(Rejected::MalformedUpgrade, StatusCode::BAD_REQUEST, entry);
            }
        },
        _ => None,
    };
    let normalized = match vigil_policy::path::normalize(req.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, path = req.uri().path(), "refusing ambiguous path");
            return reject(Rejected::AmbiguousPath, StatusCode::BAD_REQUEST, entry);
        }
    };
    if shared.log.enabled() {
        entry.path = Some(normalized.to_string());
    }

    // Kubelet-style probes: plaintext GET/HEAD to a declared route needs no identity
    // (and switches no protocol).
    let probe = matches!(ctx.source, Source::Plain)
        && protocols.is_none()
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && shared
            .cfg
            .probe_routes
            .iter()
            .any(|r| r.port == ctx.port && r.path == normalized);
    let judged_under = if probe {
        entry.reason.what = What::ProbeRoute;
        None
    } else {
        let http = HttpRequest {
            method: req.method().as_str(),
            path: &normalized,
            headers: req.headers(),
        };
        let verdict = authz::request(shared, &ctx.subject(), http, entry);
        match verdict.rate {
            _ if !verdict.decision.allowed => {
                return Judgement::Answer(
                    error_response(StatusCode::FORBIDDEN, request_id),
                    Decision::Deny,
                );
            }
            Rate::Exceeded { retry_after } => {
                let mut resp = error_response(StatusCode::TOO_MANY_REQUESTS, request_id);
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                return Judgement::Answer(resp, Decision::Deny);
            }
            Rate::Unlimited | Rate::Within => Some(verdict.policy),
        }
    };
    // Allowed: if the client goes away while the app answers, the record says so.
    entry.decision = Decision::Allow;
    let upgrade = protocols.map(|protocols| Upgrade {
        protocols,
        judged: Judged {
            source: ctx.source.clone(),
            src_ip: ctx.src_addr.ip(),
            port: ctx.port,
            http: Some(JudgedHttp {
                method: req.method().clone(),
                path: normalized.to_string(),
                headers: req.headers().clone(),
            }),
        },
        policy: judged_under.unwrap_or_else(|| shared.policy()),
    });
    // Only a path that normalising changed is copied; the received one is forwarded as is.
    let changed = match normalized {
        Cow::Borrowed(_) => None,
        Cow::Owned(path) => Some(path),
    };
    prepare(req, ctx, app, changed.as_deref(), request_id, upgrade)
}

/// An allowed request as the app gets it, and the upgrade it asks for.
struct Allowed {
    req: Request<ReqBody>,
    /// In the protocol the original client spoke: HTTP/1.1 (else HTTP/2).
    app_h1: bool,
    /// Boxed: rare, and the future that forwards a request holds it.
    upgrade: Option<Box<(Upgrade, OnUpgrade)>>,
}

/// An allowed upgrade request: what to ask the app for, and the decision the tunnel is
/// judged against again whenever policy changes.
struct Upgrade {
    protocols: HeaderValue,
    judged: Judged,
    /// The policy it was allowed under.
    policy: Arc<Policy>,
}

/// Carries an upgraded connection between the client and the app until either ends or
/// policy no longer allows the request that opened it.
fn spawn_tunnel(ctx: &Arc<ConnCtx>, up: Upgrade, client: OnUpgrade, app: OnUpgrade) {
    let ctx = ctx.clone();
    let shared = ctx.shared.clone();
    shared.tracker.spawn(async move {
        // A change between the decision and the switch counts too.
        let live = ctx
            .shared
            .conns
            .track(Recheck::Decision(Box::new(up.judged)), &up.policy);
        drop(up.policy);
        let ended = upgrade::tunnel(client, app, live.closed()).await;
        ended.record(&ctx.shared, DIRECTION, &ctx.source.id_string());
    });
}

/// An allowed request made ready for the app, in the protocol the original client spoke
/// (a `400` if it cannot be; still an allowed request). `normalized` is the path judged
/// when normalising changed the received one (`None`: the received path is canonical).
fn prepare(
    mut req: Request<ReqBody>,
    ctx: &Arc<ConnCtx>,
    app: Option<Authority>,
    normalized: Option<&str>,
    request_id: RequestId,
    upgrade: Option<Upgrade>,
) -> Judgement {
    // HTTP/1 that travelled over the HTTP/2 mesh connection goes back to HTTP/1 for the
    // app, HTTP/2 that travelled over an HTTP/1.1 one back to HTTP/2 (an upgrade stays
    // HTTP/1.1: only HTTP/1.1 switches protocols), and an app that speaks nothing else
    // gets HTTP/1.1 whatever the client spoke. (The marker only chooses the protocol the
    // app is spoken to in; the outbound removes it from whatever its app sends.)
    let orig = req.headers().get(ORIG_PROTO);
    let app_h1 = match ctx.proto {
        _ if ctx.app_http1_only => true,
        Proto::Http1 => upgrade.is_some() || orig.is_none_or(|v| v != "HTTP/2"),
        _ => orig.is_some_and(|v| v == "HTTP/1.1" || v == "HTTP/1.0"),
    };
    let upgrade = upgrade.map(|up| Box::new((up, hyper::upgrade::on(&mut req))));
    let authority = req.uri().authority().cloned();
    // The path judged is the one forwarded; it is usually the one received, shared as is.
    let judged = normalized.unwrap_or(req.uri().path());
    let path_and_query = match (req.uri().path_and_query(), req.uri().query()) {
        (Some(pq), _) if pq.path() == judged => Ok(pq.clone()),
        (_, Some(q)) => PathAndQuery::try_from(format!("{judged}?{q}")),
        (_, None) => PathAndQuery::try_from(judged),
    };
    let (Some(app), Ok(path_and_query)) = (app, path_and_query) else {
        return Judgement::Answer(
            error_response(StatusCode::BAD_REQUEST, request_id),
            Decision::Allow,
        );
    };
    // Changed in place: taking the request apart and putting it together again copied it
    // twice. HTTP/1.1 to the app in origin form; HTTP/2 carries scheme and authority.
    *req.uri_mut() = if app_h1 {
        Uri::from(path_and_query)
    } else {
        let Ok(uri) = http_uri(app.clone(), path_and_query) else {
            return Judgement::Answer(
                error_response(StatusCode::BAD_REQUEST, request_id),
                Decision::Allow,
            );
        };
        uri
    };
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(up) = &upgrade {
        upgrade::restore(headers, up.0.protocols.clone());
    }
    remove_header(headers, &ORIG_PROTO);
    // `insert` replaces whatever the client sent under the name.
    match &ctx.peer_id {
        Some(v) => {
            headers.insert(PEER_ID, v.clone());
        }
        None => remove_header(headers, &PEER_ID),
    }
    if app_h1 {
        // HTTP/1.1 needs a Host: the request's authority, else (an HTTP/1.0 request that
        // named none) the app's address, as any client of the app would send it.
        if !has_header(headers, &header::HOST)
            && let Ok(v) = HeaderValue::from_str(authority.as_ref().unwrap_or(&app).as_str())
        {
            headers.insert(header::HOST, v);
        }
        if ctx.proto == Proto::Http2 {
            join_cookies(headers);
        }
        *req.version_mut() = Version::HTTP_11;
    } else {
        headers.remove(header::HOST);
        *req.version_mut() = Version::HTTP_2;
    }
    Judgement::Forward(Allowed {
        req,
        app_h1,
        upgrade,
    })
}

/// Sends an allowed request to the app; an upgrade the app accepts becomes a tunnel.
async fn forward(allowed: Allowed, ctx: &Arc<ConnCtx>, request_id: RequestId) -> Response<Body> {
    // Fields moved out one by one: no second copy of the request in this future.
    match (ctx.app_client)
        .send(ctx.app, !allowed.app_h1, allowed.req)
        .await
    {
        Ok(mut resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let chosen = upgrade::chosen(resp.headers());
            let (Some(asked), Some(chosen)) = (allowed.upgrade, chosen) else {
                // A switch nobody asked for, or to no protocol: not passed on.
                tracing::debug!(app = %ctx.app, "the app switched protocols unasked");
                return app_error(ctx, request_id);
            };
            let app = hyper::upgrade::on(&mut resp);
            let (up, client) = *asked;
            spawn_tunnel(ctx, up, client, app);
            let (mut parts, _) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            upgrade::restore(&mut parts.headers, chosen);
            Response::from_parts(parts, crate::http_util::full(bytes::Bytes::new()))
        }
        Ok(mut resp) => {
            strip_hop_by_hop(resp.headers_mut());
            resp
        }
        Err(e) => {
            tracing::debug!(error = %e, app = %ctx.app, "forwarding to the app failed");
            app_error(ctx, request_id)
        }
    }
}

fn app_error(ctx: &ConnCtx, request_id: RequestId) -> Response<Body> {
    ctx.shared
        .metrics
        .reject(DIRECTION, Rejected::AppUnavailable);
    error_response(StatusCode::BAD_GATEWAY, request_id)
}

/// Exact body size, when the body knows it.
trait SizeHint {
    fn body_size_hint_exact(&self) -> u64;
}

impl<B: hyper::body::Body> SizeHint for Request<B> {
    fn body_size_hint_exact(&self) -> u64 {
        hyper::body::Body::size_hint(self.body())
            .exact()
            .unwrap_or(0)
    }
}

impl<B: hyper::body::Body> SizeHint for Response<B> {
    fn body_size_hint_exact(&self) -> u64 {
        hyper::body::Body::size_hint(self.body())
            .exact()
            .unwrap_or(0)
    }
}
