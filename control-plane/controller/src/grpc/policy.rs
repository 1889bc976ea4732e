//! `Policy.Sync` (and the older `Policy.Watch` + `Policy.Ack`): snapshots to the
//! workload's own proxy, acks back; `Policy.Resolve`: which mesh workload serves an
//! address.
//!
//! A Sync stream is authorized once, by its first request (a watch); its acks are then
//! checked only to name the same workload. Watch and Ack stay for proxies older than Sync
//! (a rolling upgrade); both paths record acks through [`Acks`].

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use vigil_api::pb::{self, sync_request::Kind};
use vigil_index::{ObjectKey, Snapshot};

use super::{ack::Acks, peer::PeerIds, workload_key};
use crate::state::State;

/// How long a Sync stream may take to send its watch request.
const FIRST_REQUEST: Duration = Duration::from_secs(10);

type Snapshots = mpsc::Sender<Result<pb::Snapshot, Status>>;

/// The Policy service.
pub(super) struct PolicyService {
    state: Arc<State>,
    /// Callers' identities by certificate (every ack is authorized).
    peers: PeerIds,
}

impl PolicyService {
    pub(super) fn new(state: Arc<State>) -> Self {
        Self {
            state,
            peers: PeerIds::default(),
        }
    }

    /// The caller must present an SVID naming the workload's identity.
    fn authorize<T>(
        &self,
        req: &Request<T>,
        workload: &str,
    ) -> Result<vigil_index::ObjectKey, Status> {
        let key = workload_key(workload)?;
        let refuse = |reason: &'static str, s: Status| {
            self.state
                .metrics
                .watch_refused
                .with_label_values(&[reason])
                .inc();
            Err(s)
        };
        let Some(caller) = self.peers.identity(req) else {
            return refuse(
                "no_svid",
                Status::unauthenticated("present your SVID (mTLS) to read policy"),
            );
        };
        match self.state.index().identity(&key) {
            Some(id) if *id == caller => Ok(key),
            Some(id) => refuse(
                "wrong_identity",
                Status::permission_denied(format!(
                    "{caller} may not read the policy of {key} (which runs as {id})"
                )),
            ),
            None => refuse(
                "unknown_workload",
                Status::not_found(format!("workload {key} is not known to the controller")),
            ),
        }
    }

    /// Sends `key`'s snapshot now and after every change of its policy or of the trust
    /// bundle, until the proxy goes away or `stop` is cancelled; cancels `stop` when it
    /// ends (a Sync stream's acks end with it; `stop` is a child of the controller's
    /// shutdown token, never that token). Capacity 1 on `tx`: a slow proxy holds back the
    /// forwarder, and the watch channels keep only the latest value, so it receives the
    /// newest snapshot, never a backlog.
    fn forward(
        &self,
        key: ObjectKey,
        mut policy_rx: watch::Receiver<Arc<Snapshot>>,
        tx: Snapshots,
        stop: CancellationToken,
    ) {
        let mut bundle_rx = self.state.bundle.subscribe();
        let guard = self.state.connect(key.clone());
        tracing::info!(workload = %key, "policy stream opened");
        tokio::spawn(async move {
            let _guard = guard;
            // The bundle goes with the stream's first snapshot and then only when it
            // changes (absent: unchanged); converted only then, too. Most changes are
            // policy changes, and the roots were half of each snapshot's bytes (B10).
            let mut bundle = Some(pb::TrustBundle::from(&*bundle_rx.borrow_and_update()));
            loop {
                let snapshot = {
                    let s = policy_rx.borrow_and_update().clone();
                    pb::Snapshot {
                        generation: s.generation,
                        policy: Some(pb::WorkloadPolicy::from(&s.policy)),
                        bundle: bundle.take(),
                    }
                };
                if tx.send(Ok(snapshot)).await.is_err() {
                    break; // the proxy went away
                }
                tokio::select! {
                    r = policy_rx.changed() => if r.is_err() { break },
                    // (`changed` marks the new roots seen: take them here.)
                    r = bundle_rx.changed() => {
                        if r.is_err() { break }
                        bundle = Some(pb::TrustBundle::from(&*bundle_rx.borrow_and_update()));
                    }
                    _ = tx.closed() => break,
                    _ = stop.cancelled() => break,
                }
            }
            stop.cancel();
            tracing::info!(workload = %key, "policy stream closed");
        });
    }
}

#[tonic::async_trait]
impl pb::policy_server::Policy for PolicyService {
    type WatchStream = ReceiverStream<Result<pb::Snapshot, Status>>;
    type SyncStream = ReceiverStream<Result<pb::Snapshot, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let key = self.authorize(&req, &req.get_ref().workload)?;
        let policy_rx = self.state.index().watch(&key);
        let (tx, rx) = mpsc::channel(1);
        self.forward(key, policy_rx, tx, self.state.shutdown.child_token());
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn sync(
        &self,
        mut req: Request<Streaming<pb::SyncRequest>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let first = tokio::time::timeout(FIRST_REQUEST, req.get_mut().message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("a Sync stream must begin with its watch request")
            })??;
        let Some(pb::SyncRequest {
            kind: Some(Kind::Watch(watch)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first request of a Sync stream must be a watch",
            ));
        };
        let key = self.authorize(&req, &watch.workload)?;
        let (policy_rx, acker) = {
            let mut index = self.state.index();
            (index.watch(&key), index.acker(&key))
        };
        let acks = Acks::on_stream(key.clone(), acker);
        let (tx, rx) = mpsc::channel(1);
        // Cancelled when either half ends: the acks stop with the snapshots and vice versa.
        let stop = self.state.shutdown.child_token();
        self.forward(key, policy_rx, tx.clone(), stop.clone());
        tokio::spawn(receive_acks(
            self.state.clone(),
            watch.workload,
            acks,
            req.into_inner(),
            tx,
            stop,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        self.authorize(&req, &req.get_ref().workload)?;
        let address: std::net::SocketAddr = req
            .get_ref()
            .address
            .parse()
            .map_err(|_| Status::invalid_argument("address must be ip:port"))?;
        let destination = self
            .state
            .index()
            .resolve(&address)
            .map(pb::Destination::from);
        self.state
            .metrics
            .resolves
            .with_label_values(&[if destination.is_some() {
                "mesh"
            } else {
                "not_mesh"
            }])
            .inc();
        Ok(Response::new(pb::ResolveResponse { destination }))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let key = self.authorize(&req, &req.get_ref().workload)?;
        Acks::new(key).record(&self.state, req.get_ref());
        Ok(Response::new(pb::AckResponse {}))
    }
}

/// The acks of one Sync stream for `workload` (as its watch spelled it), until the proxy
/// ends its requests or goes away, the snapshots stop, or a request breaks the protocol —
/// which ends the stream with INVALID_ARGUMENT and records nothing.
async fn receive_acks(
    state: Arc<State>,
    workload: String,
    mut acks: Acks,
    mut requests: Streaming<pb::SyncRequest>,
    tx: Snapshots,
    stop: CancellationToken,
) {
    let refusal = loop {
        let request = tokio::select! {
            r = requests.message() => r,
            _ = stop.cancelled() => break None,
        };
        match request {
            Ok(Some(pb::SyncRequest {
                kind: Some(Kind::Ack(ack)),
            })) => {
                if ack.workload != workload {
                    break Some(Status::invalid_argument(format!(
                        "this Sync stream is for {workload}; it cannot acknowledge {:?}",
                        ack.workload
                    )));
                }
                acks.record(&state, &ack);
            }
            Ok(Some(_)) => {
                break Some(Status::invalid_argument(
                    "after its watch, a Sync stream carries only acks",
                ));
            }
            // The proxy ended its requests, or went away.
            Ok(None) | Err(_) => break None,
        }
    };
    stop.cancel();
    if let Some(status) = refusal {
        tracing::warn!(%workload, error = %status.message(), "policy stream refused");
        // Bounded: a proxy that stopped reading (a snapshot fills the channel) must not
        // hold this task forever; the stream ends when `tx` drops either way.
        let _ = tokio::time::timeout(FIRST_REQUEST, tx.send(Err(status))).await;
    }
}
