//! Inbound opaque TCP: authorize the connection at L4, then splice it to the app.
//! Re-authorized on every policy change; closed when no longer allowed.

use std::{sync::Arc, time::Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use vigil_policy::Request as AuthzRequest;

use super::{ConnCtx, DIRECTION, http::policy_label};
use crate::{
    access_log::Entry,
    io::{ByteCounts, Counted},
    shared::{closed_by_policy, unix_now},
};

pub(super) async fn serve<S>(io: S, ctx: Arc<ConnCtx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let shared = &ctx.shared;
    let policy = shared.policy();
    let authz = |p: &vigil_policy::Policy| {
        p.evaluate(
            &AuthzRequest {
                peer: ctx.source.peer(),
                source_ip: Some(ctx.src_addr.ip()),
                port: ctx.port,
                http: None,
            },
            unix_now(),
        )
    };
    let decision = authz(&policy);
    let label = policy_label(&policy, decision.reason);
    let verdict = if decision.allowed { "allow" } else { "deny" };
    shared
        .metrics
        .authz
        .with_label_values(&[DIRECTION, label, verdict])
        .inc();
    let mut entry = Entry {
        direction: DIRECTION,
        protocol: "tcp",
        src_addr: Some(ctx.src_addr.to_string()),
        src_id: ctx.source.id_string(),
        dst_addr: Some(ctx.app.to_string()),
        dst_id: shared.tls().map(|t| t.creds.info.id.to_string()),
        decision: verdict,
        reason: policy.describe(decision.reason),
        ..Entry::default()
    };
    if let vigil_policy::Reason::Rule(i) = decision.reason
        && let Some((p, r, _, _)) = policy.rule_info(i)
    {
        entry.policy = Some(p.to_string());
        entry.rule = Some(r);
    }
    if let Some(f) = decision.audit {
        let would = if f.would_allow {
            "would_allow"
        } else {
            "would_deny"
        };
        shared
            .metrics
            .audit
            .with_label_values(&[policy_label(&policy, f.reason), would])
            .inc();
        entry.audit = Some(format!(
            "{}: {}",
            would.replace('_', " "),
            policy.describe(f.reason)
        ));
    }
    if !decision.allowed {
        entry.latency_ms = start.elapsed().as_secs_f64() * 1e3;
        shared.log.log(entry);
        return; // dropping `io` closes the connection
    }

    let connect = tokio::time::timeout(
        shared.cfg.connect_timeout,
        tokio::net::TcpStream::connect(ctx.app),
    )
    .await;
    let app = match connect {
        Ok(Ok(s)) => s,
        _ => {
            shared
                .metrics
                .rejected
                .with_label_values(&[DIRECTION, "app_unavailable"])
                .inc();
            entry.reason = format!("{}; app unavailable", entry.reason);
            shared.log.log(entry);
            return;
        }
    };
    let _ = app.set_nodelay(true);
    let counts = ByteCounts::default();
    let mut client = Counted::new(io, counts.clone());
    let mut app = app;
    let closer = closed_by_policy(shared.policy.clone(), |p| {
        let d = authz(p);
        (!d.allowed).then_some(match d.reason {
            vigil_policy::Reason::Revoked => "revoked",
            vigil_policy::Reason::Quarantined => "quarantine",
            _ => "policy",
        })
    });
    tokio::select! {
        _ = crate::copy::bidirectional(&mut client, &mut app) => {}
        reason = closer => {
            tracing::info!(src = %ctx.src_addr, peer = %ctx.source.id_string(), reason, "closing inbound TCP connection");
            shared.metrics.closed.with_label_values(&[DIRECTION, reason]).inc();
            entry.reason = format!("{}; closed: {reason}", entry.reason);
        }
    }
    shared.finish_tcp(DIRECTION, entry, &counts, start);
}
