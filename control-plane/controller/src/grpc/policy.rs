//! `Policy.Watch` and `Policy.Ack`: snapshots to the workload's own proxy, acks back;
//! `Policy.Resolve`: which mesh workload serves an address.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vigil_api::pb;

use super::{peer::PeerIds, workload_key};
use crate::state::State;

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
}

#[tonic::async_trait]
impl pb::policy_server::Policy for PolicyService {
    type WatchStream = ReceiverStream<Result<pb::Snapshot, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let key = self.authorize(&req, &req.get_ref().workload)?;
        let mut policy_rx = self.state.index().watch(&key);
        let mut bundle_rx = self.state.bundle.subscribe();
        // Capacity 1: a slow proxy holds back the forwarder, and the watch channels keep
        // only the latest value, so it receives the newest snapshot, never a backlog.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let guard = self.state.connect(key.clone());
        let shutdown = self.state.shutdown.clone();
        tracing::info!(workload = %key, "policy stream opened");
        tokio::spawn(async move {
            let _guard = guard;
            // The bundle is converted when it changes, not with every policy change.
            let mut bundle = pb::TrustBundle::from(&*bundle_rx.borrow_and_update());
            loop {
                if bundle_rx.has_changed().unwrap_or(false) {
                    bundle = pb::TrustBundle::from(&*bundle_rx.borrow_and_update());
                }
                let snapshot = {
                    let s = policy_rx.borrow_and_update().clone();
                    pb::Snapshot {
                        generation: s.generation,
                        policy: Some(pb::WorkloadPolicy::from(&s.policy)),
                        bundle: Some(bundle.clone()),
                    }
                };
                if tx.send(Ok(snapshot)).await.is_err() {
                    break; // the proxy went away
                }
                tokio::select! {
                    r = policy_rx.changed() => if r.is_err() { break },
                    r = bundle_rx.changed() => if r.is_err() { break },
                    _ = tx.closed() => break,
                    _ = shutdown.cancelled() => break,
                }
            }
            tracing::info!(workload = %key, "policy stream closed");
        });
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
        let ack = req.into_inner();
        if !ack.valid {
            tracing::error!(workload = %key, generation = ack.generation, error = %ack.error, "proxy could not apply its policy (it denies all affected traffic)");
        }
        // A snapshot the proxy could not apply is not "enforced".
        let latency = if ack.valid {
            self.state.index().ack(&key, ack.generation)
        } else {
            None
        };
        if let Some(d) = latency {
            self.state.metrics.propagation.observe(d.as_secs_f64());
        }
        self.state
            .metrics
            .applied
            .with_label_values(&[&key.to_string()])
            .set(i64::try_from(ack.generation).unwrap_or(i64::MAX));
        self.state
            .cert_expiry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, ack.cert_not_after_unix);
        Ok(Response::new(pb::AckResponse {}))
    }
}
