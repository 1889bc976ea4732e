//! The proxy API over gRPC (tonic) and TLS 1.3.
//!
//! The server presents the controller's SVID. Clients may connect with their SVID (policy
//! streams, acks, renewals) or without a certificate (a proxy's first Certify, proven by a
//! bootstrap token). Handlers read the verified peer identity from the connection.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};
use vigil_api::pb::{identity_server::IdentityServer, policy_server::PolicyServer};
use vigil_cert_authority::{SpiffeId, svid};

use crate::{k8s::token_review::TokenReviewer, state::State};

mod ack;
mod identity;
mod peer;
mod policy;

/// Most concurrent TLS handshakes in flight.
const HANDSHAKE_QUEUE: usize = 256;

/// Serves the Identity and Policy services on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    reviewer: Option<TokenReviewer>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = tokio::sync::mpsc::channel(HANDSHAKE_QUEUE);
    let accept_state = state.clone();
    let accept_shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = accept_shutdown.cancelled() => return,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                },
            };
            let _ = tcp.set_nodelay(true);
            let config = match vigil_cert_authority::tls::control_server_config(
                &accept_state.creds.borrow(),
                vigil_cert_authority::tls::provider(),
            ) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the server TLS config");
                    continue;
                }
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    TlsAcceptor::from(Arc::new(config)).accept(tcp),
                );
                match handshake.await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "controller TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "controller TLS handshake timed out"),
                }
            });
        }
    });
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity::IdentityService::new(
            state.clone(),
            reviewer,
        )))
        .add_service(PolicyServer::new(policy::PolicyService::new(state)))
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown.cancelled_owned())
        .await
}

/// The verified SPIFFE ID of the caller, if it presented an SVID.
pub(crate) fn peer_identity<T>(req: &Request<T>) -> Option<SpiffeId> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    svid::inspect_leaf(leaf).ok().map(|i| i.id)
}

/// The caller's address, for logs.
pub(crate) fn peer_addr<T>(req: &Request<T>) -> Option<SocketAddr> {
    req.remote_addr()
}

/// Parses `namespace/name`.
pub(crate) fn workload_key(s: &str) -> Result<vigil_index::ObjectKey, Status> {
    vigil_api::parse_workload(s)
        .map(|(ns, name)| vigil_index::ObjectKey::new(ns, name))
        .ok_or_else(|| Status::invalid_argument(format!("workload {s:?} is not namespace/name")))
}
