//! Outbound opaque TCP: an mTLS tunnel to the destination's proxy, or plaintext
//! passthrough to destinations outside the mesh when policy allows it.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use super::{DIRECTION, OutCtx};
use crate::{
    access_log::{Entry, FORWARD},
    detect::ALPN_TCP,
    io::{ByteCounts, Counted},
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
        decision: FORWARD,
        reason: "forwarded over mTLS".into(),
        ..Entry::default()
    };
    let (conn, server) = match shared.mesh.connector.connect(&ctx.target, ALPN_TCP).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(dst = %ctx.dst, error = %e, "mesh tunnel failed");
            shared
                .metrics
                .rejected
                .with_label_values(&[DIRECTION, "upstream_unavailable"])
                .inc();
            entry.decision = "deny";
            entry.reason = e.to_string();
            shared.log.log(entry);
            return;
        }
    };
    shared
        .metrics
        .tls_handshakes
        .with_label_values(&[DIRECTION, "success"])
        .inc();
    entry.dst_id = Some(server.id.to_string());
    let (mut upstream, killed, _guard) = conn.into_parts();
    let counts = ByteCounts::default();
    let mut client = Counted::new(io, counts.clone());
    tokio::select! {
        _ = crate::copy::bidirectional(&mut client, &mut upstream) => {}
        _ = killed => {
            shared.metrics.closed.with_label_values(&[DIRECTION, "policy"]).inc();
            entry.reason = "closed by policy".into();
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
        .rejected
        .with_label_values(&[DIRECTION, "discovery_unavailable"])
        .inc();
    shared.log.log(Entry {
        decision: "deny",
        reason: format!("destination unknown (controller unreachable: {why})"),
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
        decision: "allow",
        reason: "passthrough (not a mesh destination)".into(),
        ..plain_entry(src, dst, &shared)
    };
    if !shared.policy().passthrough() {
        shared
            .metrics
            .rejected
            .with_label_values(&[DIRECTION, "egress_denied"])
            .inc();
        entry.decision = "deny";
        entry.reason = "not a mesh destination and passthrough is off".into();
        shared.log.log(entry);
        return;
    }
    let upstream = tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect(dst)).await;
    let Ok(Ok(mut upstream)) = upstream else {
        shared
            .metrics
            .rejected
            .with_label_values(&[DIRECTION, "upstream_unavailable"])
            .inc();
        entry.decision = "deny";
        entry.reason = "passthrough connect failed".into();
        shared.log.log(entry);
        return;
    };
    let counts = ByteCounts::default();
    let mut client = Counted::new(stream, counts.clone());
    let closer = crate::shared::closed_by_policy(shared.policy.clone(), |p| {
        (!p.passthrough()).then_some("policy")
    });
    tokio::select! {
        _ = crate::copy::bidirectional(&mut client, &mut upstream) => {}
        reason = closer => {
            shared.metrics.closed.with_label_values(&[DIRECTION, reason]).inc();
        }
    }
    shared.finish_tcp(DIRECTION, entry, &counts, start);
}
