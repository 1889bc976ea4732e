//! Outbound HTTP/1.1 upgrades (WebSocket …): the app's upgrade request goes to the
//! destination's proxy on a mesh mTLS connection of its own, as HTTP/1.1, where it is
//! authorized like any request. When the far side answers `101`, that connection and the
//! app's become one tunnel, closed if this workload is quarantined (and, by the
//! connection itself, if the server is revoked).

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::upgrade::OnUpgrade;

use super::{DIRECTION, OutCtx};
use crate::{
    access_log::{Entry, What},
    connections::Recheck,
    http_util::{Body, ORIG_PROTO, PEER_ID, RequestId, error_response, strip_hop_by_hop},
    metrics::labels::{Decision, Rejected},
    req_body::ReqBody,
    upgrade,
};

/// Sends the upgrade request `req` (asking for `protocols`) to the destination and, on
/// `101`, tunnels the two connections together.
pub(super) async fn send(
    mut req: Request<ReqBody>,
    protocols: HeaderValue,
    ctx: &Arc<OutCtx>,
    request_id: RequestId,
    entry: &mut Entry,
) -> Response<Body> {
    let shared = &ctx.shared;
    let on_app = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    let fail = |why: String, entry: &mut Entry| {
        tracing::info!(dst = %ctx.dst, error = %why, "mesh upgrade request failed");
        shared
            .metrics
            .reject(DIRECTION, Rejected::UpstreamUnavailable);
        entry.decision = Decision::Deny;
        entry.reason.what = What::UpstreamFailed(why);
        error_response(StatusCode::BAD_GATEWAY, request_id)
    };
    let (conn, server) = match ctx
        .mesh
        .connector
        .connect(&ctx.target, crate::detect::OFFER_DETECT)
        .await
    {
        Ok(c) => c,
        Err(e) => return fail(e.to_string(), entry),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
        .handshake::<_, ReqBody>(conn)
        .await
    {
        Ok(c) => c,
        Err(e) => return fail(e.to_string(), entry),
    };
    shared.tracker.spawn(conn.with_upgrades());

    strip_hop_by_hop(&mut parts.headers);
    upgrade::restore(&mut parts.headers, protocols);
    parts.headers.remove(PEER_ID);
    parts.headers.remove(ORIG_PROTO);
    if !parts.headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(&ctx.authority)
    {
        parts.headers.insert(header::HOST, v);
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    parts.uri = match Uri::try_from(path_and_query) {
        Ok(u) => u,
        Err(_) => return error_response(StatusCode::BAD_REQUEST, request_id),
    };
    parts.version = Version::HTTP_11;
    let mut resp = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => return fail(e.to_string(), entry),
    };
    if shared.log.enabled() {
        entry.dst_id = Some(server.id.to_string());
        entry.reason.what = super::http::answered(&resp);
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Denied (403), declined by the app, or failed: the answer goes back as it is,
        // and the app's connection closes after it (see `serve::http`).
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Response::from_parts(parts, Body::boxed(body));
    }
    let Some(chosen) = upgrade::chosen(resp.headers()) else {
        return fail("switched to no protocol".into(), entry);
    };
    let on_mesh = hyper::upgrade::on(&mut resp);
    spawn_tunnel(ctx, on_app, on_mesh);
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    upgrade::restore(&mut parts.headers, chosen);
    Response::from_parts(parts, crate::http_util::full(bytes::Bytes::new()))
}

fn spawn_tunnel(ctx: &Arc<OutCtx>, app: OnUpgrade, mesh: OnUpgrade) {
    let ctx = ctx.clone();
    let shared = ctx.shared.clone();
    shared.tracker.spawn(async move {
        // The mesh connection closes itself when its server is revoked; the tunnel, as
        // the app's traffic, when this workload is quarantined (also since the request
        // was sent).
        let live = ctx.shared.conns.track_checked(Recheck::Quarantine);
        let ended = upgrade::tunnel(app, mesh, live.closed()).await;
        ended.record(&ctx.shared, DIRECTION, &ctx.dst.to_string());
    });
}
