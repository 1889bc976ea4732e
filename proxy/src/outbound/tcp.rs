//! Outbound opaque TCP: an mTLS tunnel to the destination's proxy, or plaintext
//! passthrough to destinations outside the mesh when policy allows it.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use super::{DIRECTION, OutCtx};
use crate::{
    access_log::{Entry, Note, What},
    connections::Recheck,
    detect::OFFER_TCP,
    io::{ByteCounts, Counted},
    metrics::labels::{Decision, Rejected},
    shared::Shared,
};

pub(super) async fn tunnel<S>(io: S, ctx: Arc<OutCtx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let shared = &ctx.shared;
    let mut entry = Entry {
        direction: DIRECTION,
        protocol: "tcp",
        src_addr: Some(ctx.src_addr.to_string()),
        src_id: shared
            .tls()
            .map(|t| t.creds.info.id.to_string())
            .unwrap_or_default(),
        dst_addr: Some(ctx.dst.to_string()),
        decision: Decision::Forward,
        reason: What::Forwarded(None).into(),
        ..Entry::default()
    };
    // Boxed: the handshake's state is large and this future lives as long as the tunnel.
    let (conn, server) = match Box::pin(ctx.mesh.connector.connect(&ctx.target, OFFER_TCP)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(dst = %ctx.dst, error = %e, "mesh tunnel failed");
            shared
                .metrics
                .reject(DIRECTION, Rejected::UpstreamUnavailable);
            entry.decision = Decision::Deny;
            entry.reason = What::UpstreamFailed(e.to_string()).into();
            shared.log.log(entry);
            return;
        }
    };
    shared.metrics.handshake(DIRECTION, None);
    entry.dst_id = Some(server.id.to_string());
    // Registered twice: as a mesh connection (its server's identity) and as the app's
    // (this workload's quarantine, also since the connection was accepted).
    let (mut upstream, server_live) = conn.into_parts();
    let app_live = shared.conns.track_checked(Recheck::Quarantine);
    let counts = ByteCounts::default();
    let mut client = Counted::new(io, counts.clone());
    tokio::select! {
        _ = crate::copy::bidirectional(&mut client, &mut upstream) => {}
        reason = async { tokio::select! {
            r = server_live.closed() => r,
            r = app_live.closed() => r,
        } } => {
            shared.metrics.close(DIRECTION, reason);
            entry.reason.note(Note::Closed(reason));
        }
    }
    shared.finish_tcp(DIRECTION, entry, &counts, start);
}

/// Refuses a connection to an address nobody could classify (the controller did not
/// answer and nothing is cached): it may be a mesh workload, so plaintext is not safe.
pub(super) fn refuse_unknown(src: SocketAddr, dst: SocketAddr, shared: &Shared, why: String) {
    tracing::warn!(%dst, error = %why, "cannot tell whether the destination is in the mesh; refusing");
    shared
        .metrics
        .reject(DIRECTION, Rejected::DiscoveryUnavailable);
    shared.log.log(Entry {
        decision: Decision::Deny,
        reason: What::DestinationUnknown(why).into(),
        ..plain_entry(src, dst, shared)
    });
}

/// The log line of a plaintext (non-mesh) connection from this workload.
fn plain_entry(src: SocketAddr, dst: SocketAddr, shared: &Shared) -> Entry {
    Entry {
        direction: DIRECTION,
        protocol: "tcp",
        src_addr: Some(src.to_string()),
        src_id: shared
            .tls()
            .map(|t| t.creds.info.id.to_string())
            .unwrap_or_default(),
        dst_addr: Some(dst.to_string()),
        ..Entry::default()
    }
}

/// Plaintext to a destination outside the mesh, if policy permits; else the connection
/// is refused.
pub(super) async fn passthrough(
    stream: TcpStream,
    src: SocketAddr,
    dst: SocketAddr,
    shared: Arc<Shared>,
) {
    let start = Instant::now();
    let mut entry = Entry {
        decision: Decision::Allow,
        reason: What::Passthrough.into(),
        ..plain_entry(src, dst, &shared)
    };
    let policy = shared.policy();
    if !policy.passthrough() {
        shared.metrics.reject(DIRECTION, Rejected::EgressDenied);
        entry.decision = Decision::Deny;
        entry.reason = What::PassthroughOff.into();
        shared.log.log(entry);
        return;
    }
    let live = shared.conns.track(Recheck::Passthrough, &policy);
    drop(policy);
    let upstream = tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect(dst)).await;
    let Ok(Ok(mut upstream)) = upstream else {
        shared
            .metrics
            .reject(DIRECTION, Rejected::UpstreamUnavailable);
        entry.decision = Decision::Deny;
        entry.reason = What::PassthroughFailed.into();
        shared.log.log(entry);
        return;
    };
    let counts = ByteCounts::default();
    let mut client = Counted::new(stream, counts.clone());
    tokio::select! {
        _ = crate::copy::bidirectional(&mut client, &mut upstream) => {}
        reason = live.closed() => {
            shared.metrics.close(DIRECTION, reason);
            entry.reason.note(Note::Closed(reason));
        }
    }
    shared.finish_tcp(DIRECTION, entry, &counts, start);
}
