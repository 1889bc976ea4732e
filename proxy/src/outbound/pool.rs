//! The outbound's mesh connections for HTTP: one shared HTTP/2 connection (mTLS to the
//! destination's proxy) per destination authority, made on first use and reused by the
//! requests to that authority while it is open, its server is one the destination
//! expects, and it was used within `--pool-idle-timeout`. The app's HTTP/1.1 requests
//! take keep-alive HTTP/1.1 mesh connections instead, see [`h1`] — with `--mesh-http1
//! auto` (the default) while fewer than [`AUTO_HTTP2_FROM`] requests to their destination
//! are in flight.
//!
//! - Concurrent first requests to an authority share one handshake: a per-authority
//!   lock is held while connecting, and whoever waited on it takes the new connection.
//! - A request goes over a pooled connection only if that connection's server (its
//!   verified SPIFFE ID) is among the identities the request's destination expects: a
//!   policy that changes who may serve an address applies to the next request, not only
//!   once the old connection happens to close. (Revocation and quarantine close pooled
//!   connections by themselves, see [`crate::connections`].)
//! - A request the connection refused before any of it was sent (it closed meanwhile) is
//!   retried once on a new connection.
//! - `--pool-max-idle 0` keeps no connection between requests.
//! - A sweeper task, started by the first request and ending with the pool, forgets
//!   connections unused for `--pool-idle-timeout`; streams still open on one finish, then
//!   the connection closes.
//! - The HTTP/2 connections are [`crate::h2_client`]'s: a request opens its stream and
//!   awaits its response in its own task.
//!
//! hyper-util's pooled client, used before, hashed a scheme + authority key with SipHash
//! several times and wrapped every request in pool bookkeeping (about 5.8 k instructions
//! per request); here a request costs one short lock, an FxHash of the authority and a
//! sender clone.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError, atomic::AtomicBool},
    time::{Duration, Instant},
};

use http::{Request, Response};
use hyper_util::rt::TokioIo;
use rustc_hash::FxBuildHasher;
use vigil_cert_authority::SpiffeId;

use super::connect::{ConnectError, MeshConnector};
use crate::{
    h2_client::{self, RecvBody, SendError},
    req_body::ReqBody,
};

/// With `--mesh-http1 auto`: from this many requests in flight to a destination (out on
/// its HTTP/1.1 connections, or awaiting their answer on its HTTP/2 connection), the app's
/// next HTTP/1.1 requests to it travel as streams of the HTTP/2 connection (for
/// [`AUTO_HOLD`] at least). Below it the HTTP/1.1 hop is the cheaper (measured: 82 k
/// instructions per request for the sidecar pair against ~110 k as streams); at it and
/// above, streams whose writes the connection gathers per turn make fewer system calls
/// than a read and a write per request on every connection (6 against 8.6 per request at
/// saturation, benches/RESULTS.md 37).
pub const AUTO_HTTP2_FROM: usize = 4;

/// With `--mesh-http1 auto`: how long a destination's HTTP/1.1 requests keep taking
/// streams after it last had [`AUTO_HTTP2_FROM`] requests in flight.
pub(crate) const AUTO_HOLD: Duration = Duration::from_millis(100);

/// With `--mesh-http1 auto`: the hold ([`AUTO_HOLD`]) ends early once this many of the
/// destination's requests in a row found fewer than [`AUTO_HTTP2_FROM`] in flight. Under
/// load the first requests of each batch find fewer, at most `AUTO_HTTP2_FROM - 1` in a
/// row; after a momentary burst (a stall at a modest rate puts 4 in flight) the rate's
/// next requests all do, and 100 ms of them on streams cost ~30 k instructions each more
/// than on HTTP/1.1 connections.
pub const AUTO_QUIET: u32 = 16;

/// Why a request could not be sent to the destination's proxy.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// No verified mTLS connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP/1.1 exchange with the destination's proxy failed.
    #[error("HTTP to the mesh destination {authority} failed: {}", with_causes(.source))]
    Http {
        /// The destination's pool authority.
        authority: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The HTTP/2 exchange with the destination's proxy failed.
    #[error("HTTP/2 to the mesh destination {authority} failed: {source}")]
    Http2 {
        /// The destination's pool authority.
        authority: String,
        /// `h2`'s error.
        source: h2::Error,
    },
}

/// hyper's error and what caused it (its `Display` names only the kind).
fn with_causes(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The mesh connections of the outbound's HTTP traffic, by destination authority.
#[derive(Debug)]
pub struct MeshPool {
    /// Resolves destinations and makes verified connections.
    pub connector: MeshConnector,
    idle_timeout: Duration,
    /// False with `--pool-max-idle 0`: nothing is kept between requests.
    keep: bool,
    max_streams: u32,
    dests: Mutex<HashMap<Box<str>, Dest, FxBuildHasher>>,
    /// The app's HTTP/1.1 requests take HTTP/1.1 mesh connections while fewer than this
    /// many requests to their destination are in flight: 0 never (`--mesh-http1 http2`),
    /// `usize::MAX` always (`http1`).
    http1_below: usize,
    /// Most idle HTTP/1.1 connections kept per destination.
    max_idle: usize,
    /// How long an idle HTTP/1.1 connection may be reused.
    h1_idle: Duration,
    h1: Mutex<h1::H1Dests>,
    sweeping: AtomicBool,
}

/// One destination authority's connection, and the turn to make one.
#[derive(Debug, Default)]
struct Dest {
    conn: Option<Conn>,
    connecting: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug)]
struct Conn {
    sender: h2_client::SendRequest,
    /// The SPIFFE ID the server proved at the handshake.
    server: SpiffeId,
    used: Instant,
    /// The server chose [`crate::detect::ALPN_H2_MARKED`]: its proxy hands HTTP/2
    /// requests that cross the HTTP/1.1 hop to its app as HTTP/2.
    marked_h1: bool,
}

impl MeshPool {
    /// A pool keeping a destination's connection for `idle` after its last request (none
    /// when `max_idle` is 0), with `max_streams` concurrent streams per connection until
    /// the server says otherwise.
    pub fn new(
        connector: MeshConnector,
        idle: Duration,
        max_idle: usize,
        max_streams: u32,
    ) -> Self {
        Self {
            connector,
            idle_timeout: idle,
            keep: max_idle > 0,
            max_streams,
            dests: Mutex::default(),
            http1_below: 0,
            max_idle,
            h1_idle: idle,
            h1: Mutex::default(),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Carries the app's HTTP/1.1 requests over keep-alive HTTP/1.1 mesh connections
    /// (instead of HTTP/2 streams) while fewer than `below` requests to their destination
    /// are in flight (`usize::MAX`: always; see [`Self::http1_out`]), reusing a connection
    /// idle for less than `keepalive` (and than the pool's idle timeout).
    pub fn http1_hop(mut self, keepalive: Duration, below: usize) -> Self {
        self.http1_below = below;
        self.h1_idle = self.h1_idle.min(keepalive);
        self
    }

    /// The requests awaiting their answer on the HTTP/2 connection to `authority`, and
    /// whether its server takes marked HTTP/2 requests over the HTTP/1.1 hop (known only
    /// while there is such a connection).
    fn h2_in_flight(&self, authority: &str) -> (usize, bool) {
        let dests = self.dests.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = dests.get(authority).and_then(|d| d.conn.as_ref());
        conn.map_or((0, false), |c| (c.sender.in_flight(), c.marked_h1))
    }

    /// Sends `req` (absolute URI, HTTP/2) to the destination `authority`, whose server
    /// must be one of `expected`.
    pub async fn send(
        self: &Arc<Self>,
        authority: &str,
        expected: &BTreeSet<SpiffeId>,
        mut req: Request<ReqBody>,
    ) -> Result<Response<RecvBody>, MeshError> {
        self.sweep();
        let mut sender = match self.shared(authority, expected) {
            Some(s) => s,
            // Boxed: the connect path's state (a TLS and an HTTP/2 handshake) is large, and
            // this future is moved with every request (hyper boxes the service's future).
            None => Box::pin(self.connect(authority, expected)).await?,
        };
        let mut retried = false;
        loop {
            match sender.send(req).await {
                Ok(resp) => return Ok(resp),
                // Never sent (the connection closed first): once more on a new one.
                Err(SendError::Unsent { request, .. }) if !retried => {
                    retried = true;
                    req = *request;
                    sender = Box::pin(self.connect(authority, expected)).await?;
                }
                Err(e) => {
                    return Err(MeshError::Http2 {
                        authority: authority.to_owned(),
                        source: e.into_error(),
                    });
                }
            }
        }
    }

    /// The pooled connection to `authority`, if it is open, fresh and its server
    /// expected; one that is not is forgotten.
    fn shared(
        &self,
        authority: &str,
        expected: &BTreeSet<SpiffeId>,
    ) -> Option<h2_client::SendRequest> {
        let mut dests = self.dests.lock().unwrap_or_else(PoisonError::into_inner);
        let dest = dests.get_mut(authority)?;
        let conn = dest.conn.as_mut()?;
        let now = Instant::now();
        if conn.sender.is_closed()
            || now.duration_since(conn.used) >= self.idle_timeout
            || !expected.contains(&conn.server)
        {
            dest.conn = None;
            return None;
        }
        conn.used = now;
        Some(conn.sender.clone())
    }

    /// A new connection to `authority` (or the one a concurrent request just made).
    async fn connect(
        &self,
        authority: &str,
        expected: &BTreeSet<SpiffeId>,
    ) -> Result<h2_client::SendRequest, MeshError> {
        let turn = {
            let mut dests = self.dests.lock().unwrap_or_else(PoisonError::into_inner);
            match dests.get(authority) {
                Some(d) => d.connecting.clone(),
                None => {
                    let d = Dest::default();
                    let turn = d.connecting.clone();
                    dests.insert(authority.into(), d);
                    turn
                }
            }
        };
        let _turn = turn.lock().await;
        if let Some(s) = self.shared(authority, expected) {
            return Ok(s);
        }
        let http = |source| MeshError::Http2 {
            authority: authority.to_owned(),
            source,
        };
        let (io, server) = self.connect_to(authority, crate::detect::OFFER_H2).await?;
        let marked_h1 = io.alpn() == Some(crate::detect::ALPN_H2_MARKED);
        let settings = h2_client::Settings {
            max_send_streams: self.max_streams as usize,
            stream_window: crate::http_util::STREAM_WINDOW,
            connection_window: crate::http_util::connection_window(self.max_streams),
        };
        let (mut sender, conn) = h2_client::handshake(TokioIo::new(io), settings)
            .await
            .map_err(http)?;
        let dst = authority.to_owned();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%dst, error = %e, "mesh HTTP/2 connection ended");
            }
        });
        sender.ready().await.map_err(http)?;
        if self.keep {
            let mut dests = self.dests.lock().unwrap_or_else(PoisonError::into_inner);
            // The sweeper may have removed the entry while this connected.
            dests.entry(authority.into()).or_default().conn = Some(Conn {
                sender: sender.clone(),
                server: server.id,
                used: Instant::now(),
                marked_h1,
            });
        }
        Ok(sender)
    }

    /// A verified mTLS connection to `authority` offering `alpn`, the destination resolved
    /// now, from the policy in force (a request's own view may be older).
    async fn connect_to(
        &self,
        authority: &str,
        alpn: &'static [&'static [u8]],
    ) -> Result<(super::MeshConn, vigil_cert_authority::svid::SvidInfo), ConnectError> {
        let target = self
            .connector
            .resolve(authority)
            .ok_or_else(|| ConnectError::UnknownDestination(authority.to_owned()))?;
        self.connector.connect(&target, alpn).await
    }

    /// Starts the task that forgets idle and closed connections, once.
    fn sweep(self: &Arc<Self>) {
        crate::sweeper::start(self, &self.sweeping, self.idle_timeout, Self::forget_idle);
    }

    /// Forgets closed connections and those unused for the idle timeout.
    fn forget_idle(&self, now: Instant) {
        self.forget_idle_h1(now);
        let mut dests = self.dests.lock().unwrap_or_else(PoisonError::into_inner);
        dests.retain(|_, d| {
            if d.conn.as_ref().is_some_and(|c| {
                c.sender.is_closed() || now.duration_since(c.used) >= self.idle_timeout
            }) {
                d.conn = None;
            }
            // An entry someone is connecting through stays (its lock is shared).
            d.conn.is_some() || Arc::strong_count(&d.connecting) > 1
        });
    }
}

mod h1;
pub(crate) use h1::{Back as MeshBack, H1Out};
#[cfg(test)]
mod tests;
