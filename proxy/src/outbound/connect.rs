//! Originating mesh mTLS: resolving a destination, connecting, verifying the server's
//! SPIFFE ID. HTTP pools these connections in [`super::pool`]; opaque TCP and upgrades
//! take one each.
//!
//! A destination is either a static route (`--outbound-route`) or an entry of the policy's
//! `outbound.destinations`, named by an authority: the original destination address, or
//! `r<N>.route.vigil` for static route N.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use rustls_pki_types::{ServerName, UnixTime};
use tokio::{net::TcpStream, sync::watch};
use tokio_rustls::{TlsConnector, client::TlsStream};
use vigil_cert_authority::svid::SvidInfo;
use vigil_policy::Policy;

use super::{discovery::Discovery, target::Target};
use crate::{
    config::OutboundRoute,
    connections::{Connections, Live, Recheck},
    io::ReadGate,
    metrics::labels::{Closed, Direction},
    peers::Peers,
    tls_state::TlsState,
};

/// Host suffix of static-route authorities.
const ROUTE_HOST: &str = ".route.vigil";

/// Resolves destinations and opens verified mTLS connections to them.
#[derive(Clone, Debug)]
pub struct MeshConnector {
    routes: Arc<Vec<OutboundRoute>>,
    /// Destinations outside the pushed table.
    pub discovery: Arc<Discovery>,
    tls: watch::Receiver<Option<Arc<TlsState>>>,
    policy: watch::Receiver<Arc<Policy>>,
    /// Where each mesh connection is registered, to be closed when its server is revoked
    /// or this workload quarantined.
    conns: Connections,
    /// Where each verified server is recorded (`/peers`).
    peers: Peers,
    connect_timeout: std::time::Duration,
    handshake_timeout: std::time::Duration,
    /// Round-robin position over virtual destinations' endpoints.
    next: Arc<std::sync::atomic::AtomicUsize>,
}

/// Why a mesh connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The authority names no known mesh destination.
    #[error("{0} is not a mesh destination")]
    UnknownDestination(String),
    /// No credentials yet.
    #[error("no workload credentials loaded yet")]
    NoCredentials,
    /// TCP connect failed or timed out.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The upstream proxy.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The TLS handshake failed (including: the server is not who it should be).
    #[error("mTLS handshake with {addr}: {source}")]
    Handshake {
        /// The upstream proxy.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The client TLS config could not be built.
    #[error(transparent)]
    Verifier(#[from] vigil_cert_authority::verify::VerifierError),
}

impl MeshConnector {
    /// A connector over the current TLS state and policy.
    pub fn new(
        routes: Vec<OutboundRoute>,
        tls: watch::Receiver<Option<Arc<TlsState>>>,
        policy: watch::Receiver<Arc<Policy>>,
        conns: Connections,
        connect_timeout: std::time::Duration,
        handshake_timeout: std::time::Duration,
        discovery: Arc<Discovery>,
    ) -> Self {
        Self {
            routes: Arc::new(routes),
            discovery,
            tls,
            policy,
            conns,
            peers: Peers::new(0),
            connect_timeout,
            handshake_timeout,
            next: Arc::default(),
        }
    }

    /// Records every verified server in `peers` (`/peers`; without it, nothing is
    /// recorded).
    pub fn recording(mut self, peers: Peers) -> Self {
        self.peers = peers;
        self
    }

    /// The authority to use for static route `index`.
    pub fn route_authority(index: usize) -> String {
        format!("r{index}{ROUTE_HOST}")
    }

    /// Resolves an authority (`r<N>.route.vigil` or `ip:port`) to a destination: a
    /// static route, the pushed table, or a discovered destination already cached.
    pub fn resolve(&self, authority: &str) -> Option<Target> {
        if let Some(n) = authority
            .strip_suffix(ROUTE_HOST)
            .and_then(|h| h.strip_prefix('r'))
        {
            let route = self.routes.get(n.parse::<usize>().ok()?)?;
            return Some(Target {
                proxy: route.upstream,
                identities: route.identities.clone(),
                endpoints: Arc::from([]),
            });
        }
        let addr: SocketAddr = authority.parse().ok()?;
        let listed = {
            let policy = self.policy.borrow();
            policy.destination(&addr).map(Target::from).or_else(|| {
                // A backend of a virtual address (the authority a balanced request uses).
                policy
                    .endpoint_owner(&addr)
                    .map(|d| Target::from(d).backend(addr))
            })
        };
        listed
            .or_else(|| self.discovery.cached(&addr))
            .or_else(|| self.discovery.cached_backend(&addr))
    }

    /// For a request to `authority`: the backend to send it to, when the destination is
    /// a virtual address with endpoints (round robin over the endpoints the current
    /// policy lists: a backend that leaves the list gets no new requests).
    pub fn backend_for(&self, authority: &str) -> Option<SocketAddr> {
        if authority.ends_with(ROUTE_HOST) {
            return None;
        }
        let addr: SocketAddr = authority.parse().ok()?;
        let endpoints = match self.policy.borrow().destination(&addr) {
            Some(d) => d.endpoints.clone(),
            None => self.discovery.cached(&addr)?.endpoints,
        };
        self.pick(&endpoints)
    }

    fn pick(&self, endpoints: &[SocketAddr]) -> Option<SocketAddr> {
        if endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        endpoints.get(n % endpoints.len()).copied()
    }

    /// Connects to `target` with mTLS offering `alpn`; the server must present one of the
    /// target's identities. The connection closes itself if policy later revokes the
    /// server or quarantines this workload.
    pub async fn connect(
        &self,
        target: &Target,
        alpn: &'static [&'static [u8]],
    ) -> Result<(MeshConn, SvidInfo), ConnectError> {
        let tls = self
            .tls
            .borrow()
            .clone()
            .ok_or(ConnectError::NoCredentials)?;
        let client = tls.client(&target.identities, alpn)?;
        // The server's certificate is checked against this policy's revocations.
        let judged = self.policy.borrow().clone();
        let (addr, tcp) = self.tcp(target).await?;
        let _ = tcp.set_nodelay(true);
        // SPIFFE verification ignores the server name; the config keeps session tickets
        // per name, so the name is the address (no SNI is sent for an IP).
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = tokio::time::timeout(
            self.handshake_timeout,
            TlsConnector::from(client.config).connect(name, tcp),
        )
        .await
        .map_err(|_| ConnectError::Handshake {
            addr,
            source: io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|source| ConnectError::Handshake { addr, source })?;
        // Checked again now: a resumed session skipped the verifier (after a full
        // handshake this is a cache hit that reads the server's SVID).
        let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
        let server = client
            .verifier
            .established_peer(chain, UnixTime::now())
            .map_err(|e| ConnectError::Handshake {
                addr,
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?;
        self.peers
            .seen(Direction::Outbound, &server.id, crate::shared::unix_now());
        let live = self.conns.track(Recheck::Server(server.clone()), &judged);
        Ok((
            MeshConn {
                // Boxed: see `into_parts` — the TLS state (1.1 KB) lives in one place.
                io: TokioIo::new(ReadGate::new(Box::new(stream))),
                killed: Box::pin(live.closed()),
                live,
            },
            server,
        ))
    }
}

impl MeshConnector {
    /// A TCP connection to the target's proxy, or for a virtual destination to one of its
    /// endpoints — trying up to three of them, so a backend that just went away (before
    /// the policy said so) costs a retry, not a failed connection.
    async fn tcp(&self, target: &Target) -> Result<(SocketAddr, TcpStream), ConnectError> {
        let attempts = target.endpoints.len().clamp(1, 3);
        let mut last = None;
        for _ in 0..attempts {
            let addr = self.pick(&target.endpoints).unwrap_or(target.proxy);
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => return Ok((addr, tcp)),
                Ok(Err(source)) => last = Some(ConnectError::Connect { addr, source }),
                Err(_) => {
                    last = Some(ConnectError::Connect {
                        addr,
                        source: io::ErrorKind::TimedOut.into(),
                    });
                }
            }
        }
        Err(last.unwrap_or(ConnectError::Connect {
            addr: target.proxy,
            source: io::ErrorKind::NotFound.into(),
        }))
    }
}

/// A mesh mTLS connection that fails all I/O once policy closes it (its server is
/// revoked, or this workload quarantined: see [`crate::connections`]).
pub struct MeshConn {
    io: TokioIo<ReadGate<Box<TlsStream<TcpStream>>>>,
    killed: Pin<Box<dyn Future<Output = Closed> + Send + Sync>>,
    live: Live,
}

impl std::fmt::Debug for MeshConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConn").finish_non_exhaustive()
    }
}

impl MeshConn {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(_) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by policy",
            )),
            Poll::Pending => Ok(()),
        }
    }

    /// The protocol the server chose (ALPN).
    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        self.io.inner().get_ref().get_ref().1.alpn_protocol()
    }

    /// The TLS stream and its registration, for opaque tunnels.
    /// Boxed, so that the futures an opaque tunnel passes it through do not each keep a
    /// copy's worth of space for it.
    pub(crate) fn into_parts(self) -> (Box<TlsStream<TcpStream>>, Live) {
        (self.io.into_inner().into_inner(), self.live)
    }
}

impl hyper::rt::Read for MeshConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MeshConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
pub(super) mod tests;
