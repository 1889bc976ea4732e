//! Inbound opaque TCP: authorize the connection at L4, then splice it to the app.
//! Judged again on every policy change; closed when no longer allowed.

use std::{sync::Arc, time::Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::{ConnCtx, DIRECTION};
use crate::{
    access_log::{Entry, Note},
    authz::{self, Judged},
    connections::Recheck,
    io::{ByteCounts, Counted},
    metrics::labels::Rejected,
};

pub(super) async fn serve<S>(io: S, ctx: Arc<ConnCtx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let shared = &ctx.shared;
    let mut entry = Entry {
        direction: DIRECTION,
        protocol: "tcp",
        src_addr: Some(ctx.src_addr.to_string()),
        src_id: ctx.source.id_string(),
        dst_addr: Some(ctx.app.to_string()),
        dst_id: shared.tls().map(|t| t.creds.info.id.to_string()),
        ..Entry::default()
    };
    let verdict = authz::connection(shared, &ctx.subject(), &mut entry);
    if !verdict.allowed() {
        entry.latency_ms = start.elapsed().as_secs_f64() * 1e3;
        shared.log.log(entry);
        return; // dropping `io` closes the connection
    }
    let live = shared.conns.track(
        Recheck::Decision(Box::new(Judged {
            source: ctx.source.clone(),
            src_ip: ctx.src_addr.ip(),
            port: ctx.port,
            http: None,
        })),
        &verdict.policy,
    );
    drop(verdict);

    let connect = tokio::time::timeout(
        shared.cfg.connect_timeout,
        tokio::net::TcpStream::connect(ctx.app),
    )
    .await;
    let app = match connect {
        Ok(Ok(s)) => s,
        _ => {
            shared.metrics.reject(DIRECTION, Rejected::AppUnavailable);
            entry.reason.note(Note::AppUnavailable);
            shared.log.log(entry);
            return;
        }
    };
    let _ = app.set_nodelay(true);
    let counts = ByteCounts::default();
    let mut client = Counted::new(io, counts.clone());
    let mut app = app;
    tokio::select! {
        _ = crate::copy::bidirectional(&mut client, &mut app) => {}
        reason = live.closed() => {
            tracing::info!(src = %ctx.src_addr, peer = %ctx.source.id_string(), reason = reason.as_str(), "closing inbound TCP connection");
            shared.metrics.close(DIRECTION, reason);
            entry.reason.note(Note::Closed(reason));
        }
    }
    shared.finish_tcp(DIRECTION, entry, &counts, start);
}
