//! The outbound side: traffic *from* this workload.
//!
//! ```text
//! app ─► outbound listener (SO_ORIGINAL_DST) ─┬─ mesh destination ─┬─ HTTP ─► pooled mTLS (HTTP/1.1, HTTP/2) ─► peer proxy
//!        static route listener ───────────────┘                    └─ opaque ─► mTLS tunnel ──────────────────────► peer proxy
//!                                              └─ not in the mesh ─► plaintext passthrough, or refused (strict egress)
//! ```
//!
//! A mesh destination is a static route, an entry of the pushed table (what policy lets
//! this workload reach), or — for any other address — what [`discovery`] learns from the
//! controller, so every call to a mesh workload is mTLS even when its policy will deny it.
//!
//! The server must present one of the SPIFFE IDs the policy (or route) names for the
//! destination. A quarantined workload's outbound traffic is refused and its open
//! connections are closed.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};

use crate::{
    detect::{self, Proto},
    io::PrefixedIo,
    metrics::labels::{Direction, Rejected},
    serve::Handler,
    shared::{Shared, original_dst},
};

mod connect;
pub mod discovery;
mod http;
mod pool;
mod target;
mod tcp;
mod upgrade;

pub use connect::{ConnectError, MeshConn, MeshConnector};
pub(crate) use pool::MeshBack;
pub use pool::{AUTO_HTTP2_FROM, AUTO_QUIET, MeshError, MeshPool};
pub use target::Target;

const DIRECTION: Direction = Direction::Outbound;

/// Where an outbound connection is going.
#[derive(Clone, Debug)]
pub(crate) struct OutCtx {
    pub(crate) shared: Arc<Shared>,
    /// Resolves, connects and pools mesh connections.
    pub(crate) mesh: Arc<MeshPool>,
    /// The pool authority for HTTP (`ip:port` or a route authority).
    pub(crate) authority: String,
    /// `authority` parsed for request URIs, once per connection (`None`: not a valid one,
    /// and every request gets a 400).
    pub(crate) uri_authority: Option<::http::uri::Authority>,
    /// `authority` as a `Host` field value, once per connection: what a request without
    /// one of its own carries over the HTTP/1.1 mesh hop (an HTTP/2 app's `:authority`
    /// names the destination too, and clones of it share one buffer).
    pub(crate) host: Option<::http::HeaderValue>,
    /// Resolved mesh destination.
    pub(crate) target: Target,
    /// The address the app asked for (for logs).
    pub(crate) dst: SocketAddr,
    pub(crate) src_addr: SocketAddr,
    pub(crate) proto: Proto,
}

/// Accepts on the transparent outbound listener (original destination from iptables).
pub async fn serve_transparent(listener: TcpListener, shared: Arc<Shared>, mesh: Arc<MeshPool>) {
    serve(listener, shared, mesh, None).await;
}

/// Accepts on the listener of static route `index`.
pub async fn serve_route(
    listener: TcpListener,
    shared: Arc<Shared>,
    mesh: Arc<MeshPool>,
    index: usize,
) {
    serve(listener, shared, mesh, Some(index)).await;
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mesh: Arc<MeshPool>,
    route: Option<usize>,
) {
    crate::serve::accept_loop(
        listener,
        shared,
        DIRECTION,
        move |stream, src, shared, guard| handle(stream, src, shared, mesh.clone(), route, guard),
    )
    .await;
}

/// A connection's task: setup (destination, discovery, detection) in a box freed before
/// the connection is served, then its handler (see the inbound's `handle`).
async fn handle(
    stream: TcpStream,
    src: SocketAddr,
    shared: Arc<Shared>,
    mesh: Arc<MeshPool>,
    route: Option<usize>,
    mut guard: crate::serve::ConnGuard,
) {
    // Only the pod's own applications reach the outbound, and detection is bounded by
    // its timeout: its connections do not count as pending handshakes.
    guard.established();
    let handler = Box::pin(setup(stream, src, shared, mesh, route)).await;
    if let Some(handler) = handler {
        handler.await;
    }
}

/// Where a connection goes and what it is: returns its handler.
async fn setup(
    mut stream: TcpStream,
    src: SocketAddr,
    shared: Arc<Shared>,
    mesh: Arc<MeshPool>,
    route: Option<usize>,
) -> Option<Handler> {
    let policy = shared.policy();
    if policy.is_quarantined() {
        shared.metrics.reject(DIRECTION, Rejected::Quarantine);
        return None;
    }
    let (authority, dst) = match route {
        Some(i) => (
            MeshConnector::route_authority(i),
            shared.cfg.outbound_routes[i].upstream,
        ),
        None => match original_dst(&stream) {
            Some(orig) => (orig.to_string(), orig),
            None => {
                // Connected to the outbound port directly, not redirected: nowhere to go.
                shared.metrics.reject(DIRECTION, Rejected::NoDestination);
                return None;
            }
        },
    };
    let target = match mesh.connector.resolve(&authority) {
        Some(t) => t,
        None => match mesh.connector.discovery.lookup(dst).await {
            discovery::Found::Mesh(t) => t,
            discovery::Found::NotMesh => {
                return Some(Box::pin(tcp::passthrough(stream, src, dst, shared)));
            }
            discovery::Found::Unknown(why) => {
                tcp::refuse_unknown(src, dst, &shared, why);
                return None;
            }
        },
    };
    let (proto, prefix) = if shared.cfg.opaque_ports.contains(&dst.port()) {
        (Proto::Opaque, bytes::Bytes::new())
    } else {
        detect::inner(&mut stream, shared.cfg.detect_timeout)
            .await
            .ok()?
    };
    shared.metrics.connection(DIRECTION, proto);
    let ctx = Arc::new(OutCtx {
        shared,
        mesh,
        uri_authority: (proto != Proto::Opaque)
            .then(|| ::http::uri::Authority::try_from(authority.as_str()).ok())
            .flatten(),
        host: (proto != Proto::Opaque)
            .then(|| ::http::HeaderValue::from_str(&authority).ok())
            .flatten(),
        authority,
        target,
        dst,
        src_addr: src,
        proto,
    });
    let io = PrefixedIo::new(prefix, stream);
    Some(match proto {
        // Boxed: a connection's task holds only the state of the path it took.
        Proto::Opaque => Box::pin(tcp::tunnel(io, ctx)),
        Proto::Http1 | Proto::Http2 => Box::pin(http::serve(io, ctx)),
    })
}
