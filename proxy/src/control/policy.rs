//! The policy loop: watch, apply (fail closed on invalid), acknowledge, reconnect.
//!
//! One `Policy.Sync` stream carries the snapshots and their acks; a controller that
//! predates Sync (it answers UNIMPLEMENTED, as during a rolling upgrade) gets
//! `Policy.Watch` and a unary `Policy.Ack` per snapshot instead. Sync is tried again at
//! every reconnection, so an upgraded controller is used as soon as it answers.

use std::{sync::Arc, time::SystemTime};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming, transport::Channel};
use vigil_api::{
    convert::bundle_from_wire,
    pb::{self, policy_client::PolicyClient, sync_request::Kind},
};
use vigil_cert_authority::{rotation::Backoff, tls};
use vigil_policy::ProxyPolicy;

use super::{Control, jitter};

/// Re-opening the policy stream: 0.5 s doubling to 5 s (±10 % jitter). Policy changes —
/// a quarantine among them — made while the controller was away reach this proxy at most
/// ~5 s after a controller answers again (with the 60 s cap of certificate renewals it
/// was up to a minute, measured on a real node after the controller pod was killed).
/// A failed attempt is one refused TCP connection: cheap for a controller that is down.
const STREAM_BACKOFF: Backoff = Backoff {
    base: std::time::Duration::from_millis(500),
    max: std::time::Duration::from_secs(5),
};

/// Keeps the policy store in step with the controller until `stop` is cancelled. While the
/// controller is unreachable the last policy stays in force (fail static).
pub async fn run_policy(ctl: Arc<Control>, stop: CancellationToken) {
    let backoff = STREAM_BACKOFF;
    let mut attempt = 0u32;
    let mut creds_rx = ctl.creds.subscribe();
    loop {
        // Policy streams need an SVID (the controller checks who is asking).
        while ctl.creds.current().is_none() {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = creds_rx.changed() => if r.is_err() { return },
            }
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            o = watch_once(&ctl) => o,
        };
        match outcome {
            Ok(n) if n > 0 => attempt = 0,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "policy stream failed; keeping the current policy")
            }
        }
        let delay = backoff.delay(attempt, jitter());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Acks not yet taken by the HTTP/2 stream (one per snapshot; the controller reads them
/// as they come, so this never fills in practice).
const PENDING_ACKS: usize = 4;

/// One stream; returns how many snapshots it applied.
async fn watch_once(ctl: &Control) -> anyhow::Result<u64> {
    let channel = ctl.channel(true).await?;
    let mut client = PolicyClient::new(channel);
    let (requests, rx) = mpsc::channel(PENDING_ACKS);
    let watch = pb::SyncRequest {
        kind: Some(Kind::Watch(pb::WatchRequest {
            workload: ctl.workload.clone(),
        })),
    };
    let outbound =
        tokio_stream::StreamExt::chain(tokio_stream::once(watch), ReceiverStream::new(rx));
    match client.sync(outbound).await {
        Ok(stream) => sync(ctl, stream.into_inner(), requests).await,
        Err(s) if s.code() == Code::Unimplemented => {
            tracing::info!(
                "the controller predates Policy.Sync; using Policy.Watch and Policy.Ack"
            );
            watch_and_ack(ctl, client).await
        }
        Err(s) => Err(refused(&s)),
    }
}

/// Applies each snapshot of a Sync stream and acknowledges it on the same stream.
async fn sync(
    ctl: &Control,
    mut stream: Streaming<pb::Snapshot>,
    requests: mpsc::Sender<pb::SyncRequest>,
) -> anyhow::Result<u64> {
    let mut applied = 0;
    while let Some(snapshot) = stream.message().await? {
        let ack = apply_and_ack(ctl, snapshot);
        applied += 1;
        requests
            .send(pb::SyncRequest {
                kind: Some(Kind::Ack(ack)),
            })
            .await
            .map_err(|_| anyhow::anyhow!("the policy stream stopped taking acks"))?;
    }
    Ok(applied)
}

/// The same over `Policy.Watch`, each snapshot acknowledged by a unary `Policy.Ack`.
async fn watch_and_ack(ctl: &Control, mut client: PolicyClient<Channel>) -> anyhow::Result<u64> {
    let mut stream = client
        .watch(pb::WatchRequest {
            workload: ctl.workload.clone(),
        })
        .await
        .map_err(|s| refused(&s))?
        .into_inner();
    let mut applied = 0;
    while let Some(snapshot) = stream.message().await? {
        let ack = apply_and_ack(ctl, snapshot);
        applied += 1;
        client.ack(ack).await?;
    }
    Ok(applied)
}

fn refused(s: &Status) -> anyhow::Error {
    anyhow::anyhow!(
        "controller refused the policy stream: {} ({:?})",
        s.message(),
        s.code()
    )
}

/// Applies a snapshot; returns its ack.
fn apply_and_ack(ctl: &Control, snapshot: pb::Snapshot) -> pb::AckRequest {
    let generation = snapshot.generation;
    let (valid, error) = apply(ctl, snapshot);
    let cert_not_after = ctl
        .creds
        .current()
        .and_then(|c| c.info.not_after.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    pb::AckRequest {
        workload: ctl.workload.clone(),
        generation,
        valid,
        error,
        cert_not_after_unix: cert_not_after,
    }
}

/// Applies a snapshot; returns (valid, error) for the ack.
fn apply(ctl: &Control, snapshot: pb::Snapshot) -> (bool, String) {
    if let Some(b) = snapshot.bundle {
        match bundle_from_wire(b) {
            Ok(bundle) if bundle != ctl.bundle() => {
                // New roots (a root rotation): republish the current SVID with them so new
                // handshakes verify peers against the new set.
                let svid = ctl
                    .svid
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|(chain, key)| (chain.clone(), key.clone_key()));
                if let Some((chain, key)) = svid {
                    match ctl.creds.publish(
                        chain,
                        key,
                        bundle.clone(),
                        &tls::provider(),
                        SystemTime::now(),
                    ) {
                        Ok(_) => {
                            tracing::info!(sequence = bundle.sequence(), "trust bundle updated")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "new trust bundle does not verify our certificate; keeping the old one until renewal")
                        }
                    }
                }
                *ctl.bundle.lock().unwrap_or_else(|p| p.into_inner()) = bundle;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "invalid trust bundle in snapshot; ignored"),
        }
    }
    let generation = snapshot.generation;
    match snapshot.policy.map(ProxyPolicy::try_from) {
        Some(Ok(model)) => match ctl.policy.apply(model) {
            Ok(p) => {
                tracing::info!(generation = p.generation(), "policy applied");
                (true, String::new())
            }
            Err(e) => (false, e.to_string()),
        },
        Some(Err(e)) => {
            ctl.policy
                .apply_unparseable(format!("generation {generation}: {e}"));
            (false, e.to_string())
        }
        None => {
            ctl.policy
                .apply_unparseable(format!("generation {generation}: snapshot without policy"));
            (false, "snapshot without policy".into())
        }
    }
}
