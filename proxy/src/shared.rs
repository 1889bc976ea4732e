//! What every listener and connection shares. What only one side uses is that side's:
//! the pooled clients to the app are the inbound's, the mesh client the outbound's.

use std::{net::SocketAddr, sync::Arc};

use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use vigil_cert_authority::svid::SvidInfo;
use vigil_policy::{Peer, Policy};

use crate::{
    access_log::AccessLog,
    config::Config,
    connections::Connections,
    http_util::RequestIds,
    metrics::{
        Metrics,
        labels::{Direction, Flow},
    },
    peers::Peers,
    ratelimit::RateLimiter,
    tls_state::TlsState,
};

/// State shared by all listeners.
#[derive(Debug)]
pub struct Shared {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// Current TLS configs (None until credentials load).
    pub tls: watch::Receiver<Option<Arc<TlsState>>>,
    /// Current policy.
    pub policy: watch::Receiver<Arc<Policy>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Access log.
    pub log: AccessLog,
    /// Rate limit buckets.
    pub limiter: RateLimiter,
    /// Request ID generator.
    pub ids: RequestIds,
    /// Cancelled on SIGTERM: stop accepting, drain.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks for the drain.
    pub tracker: TaskTracker,
    /// Live connections that policy changes re-check.
    pub conns: Connections,
    /// The peers of recent mTLS connections (`/peers`).
    pub peers: Peers,
}

impl Shared {
    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.borrow().clone()
    }

    /// Records a finished TCP connection: byte counters and its access-log line.
    pub fn finish_tcp(
        &self,
        direction: Direction,
        mut entry: crate::access_log::Entry,
        counts: &crate::io::ByteCounts,
        start: std::time::Instant,
    ) {
        self.metrics.bytes(direction, Flow::Rx, counts.read());
        self.metrics.bytes(direction, Flow::Tx, counts.written());
        entry.bytes_rx = counts.read();
        entry.bytes_tx = counts.written();
        entry.latency_ms = start.elapsed().as_secs_f64() * 1e3;
        self.log.log(entry);
    }

    /// The TLS state in force, if credentials are loaded.
    pub fn tls(&self) -> Option<Arc<TlsState>> {
        self.tls.borrow().clone()
    }
}

/// Who is on the other end of an inbound connection.
#[derive(Clone, Debug)]
pub enum Source {
    /// A mesh peer with a verified SVID (shared by the connection's handlers and its
    /// registration: one copy per connection).
    Mesh(Arc<SvidInfo>),
    /// A plaintext (or non-mesh TLS) client.
    Plain,
}

impl Source {
    /// The evaluator's view.
    pub fn peer(&self) -> Peer<'_> {
        match self {
            Self::Mesh(info) => Peer::Authenticated(&info.id),
            Self::Plain => Peer::Unauthenticated,
        }
    }

    /// For logs.
    pub fn id_string(&self) -> String {
        match self {
            Self::Mesh(info) => info.id.to_string(),
            Self::Plain => "unauthenticated".to_string(),
        }
    }
}

pub use vigil_policy::unix_now;

/// The address a connection was originally sent to (SO_ORIGINAL_DST), if it was
/// redirected by iptables; `None` otherwise.
pub fn original_dst(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = crate::listen::canonical(stream.local_addr().ok()?);
    // IPv4 accepted by a dual-stack socket has IPv4 conntrack state: SOL_IP asks for it.
    let orig = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    }
    .ok()?
    .as_socket()
    .map(crate::listen::canonical)?;
    // Without a redirect the "original" destination is simply the local address.
    (orig != local).then_some(orig)
}
