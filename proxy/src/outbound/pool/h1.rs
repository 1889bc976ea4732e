//! The outbound's HTTP/1.1 mesh connections: keep-alive mTLS connections to a
//! destination's proxy (ALPN `vigil/1+h1`), one request at a time each, kept per
//! destination authority between requests.
//!
//! An app's HTTP/1.1 request travels this way unless `--mesh-http1` says otherwise (with
//! `auto`, the default: while fewer than [`super::AUTO_HTTP2_FROM`] of the destination's
//! requests are in flight, see [`MeshPool::http1_out`]): each proxy then reads and writes
//! HTTP/1.1 only, as the app does — no HPACK, no stream state and no task per stream on
//! either side of the mesh hop. So does an HTTP/2 app's request that this hop can carry
//! as it is (no body, no trailers asked for: see `outbound/http.rs`), to a destination
//! whose proxy said it knows the hop (the ALPN of its HTTP/2 connection).
//!
//! - A connection goes back to its destination's idle list when its response has ended
//!   ([`crate::checkin`]); up to `--pool-max-idle` stay per destination, the oldest
//!   goes first. Concurrent requests take a connection each.
//! - An idle connection is taken again only if it is open, its server
//!   (the SPIFFE ID it proved) is among the identities the request's destination expects
//!   — a policy that changes who may serve an address applies to the next request — and
//!   it has been idle for less than [`MeshPool::h1_idle`]. The destination's proxy closes
//!   a keep-alive connection idle for its `--header-read-timeout`; a request written onto
//!   a connection the server is closing fails and cannot be replayed, so the pool stops
//!   reusing a connection well before that (half the header read timeout).
//! - At most [`MAX_CONNECTING`] handshakes per destination are under way at once; a
//!   request beyond them waits for one to end and takes an idle connection if one came
//!   back meanwhile. A burst of concurrent first requests so costs the destination a
//!   bounded number of simultaneous handshakes (its inbound closes a source's
//!   connections beyond `--max-pending-per-source` still in their handshake).
//! - A request the connection refused before any of it was written (it closed meanwhile)
//!   is retried once on a new connection.
//! - Revocation and quarantine close pooled connections by themselves (see
//!   [`crate::connections`]); a closed connection is never handed out.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, PoisonError},
    time::Instant,
};

use http::{Request, Response, StatusCode};
use hyper::client::conn::http1;
use rustc_hash::FxBuildHasher;
use tokio::sync::Semaphore;
use vigil_cert_authority::SpiffeId;

use super::{MeshError, MeshPool};
use crate::{
    checkin::{Checkin, Return},
    req_body::ReqBody,
};

/// Most handshakes under way at once per destination.
pub(super) const MAX_CONNECTING: usize = 32;

/// One destination's idle HTTP/1.1 connections, its key (shared by its requests out on
/// HTTP/1.1 connections, see [`H1Out`]) and its handshake slots.
#[derive(Debug)]
pub(super) struct H1Dest {
    pub(super) key: Arc<str>,
    pub(super) idle: Vec<Idle>,
    connecting: Arc<Semaphore>,
    /// With `--mesh-http1 auto`: until when its HTTP/1.1 requests take streams, since it
    /// last had [`super::AUTO_HTTP2_FROM`] requests in flight.
    pub(super) busy_until: Option<Instant>,
    /// Requests in a row that found fewer in flight within the hold ([`super::AUTO_QUIET`]
    /// end it early).
    quiet: u32,
}

impl H1Dest {
    fn new(key: Arc<str>) -> Self {
        Self {
            key,
            idle: Vec::new(),
            connecting: Arc::new(Semaphore::new(MAX_CONNECTING)),
            busy_until: None,
            quiet: 0,
        }
    }
}

/// A request's place on its destination's HTTP/1.1 connections, from the choice of the
/// hop until its connection is given back (or dropped): a clone of the destination's
/// key. So the key's strong count, less the destination's own, is how many of the
/// destination's requests are out on HTTP/1.1 connections or connecting — what
/// `--mesh-http1 auto` weighs — with no counter to keep in step on each of the ways a
/// request can end (answered, failed, its body dropped half read, upgraded).
#[derive(Debug)]
pub(crate) struct H1Out(Arc<str>);

impl H1Out {
    /// The destination's requests out on HTTP/1.1 connections (or connecting).
    fn count(dest: &H1Dest) -> usize {
        Arc::strong_count(&dest.key) - 1
    }
}

/// The idle HTTP/1.1 mesh connections, by destination authority.
pub(super) type H1Dests = HashMap<Box<str>, H1Dest, FxBuildHasher>;

/// `authority`'s entry, made on first use.
fn dest_of<'a>(dests: &'a mut H1Dests, authority: &str) -> &'a mut H1Dest {
    // Looked up before inserting: the common case allocates no key.
    if !dests.contains_key(authority) {
        dests.insert(authority.into(), H1Dest::new(authority.into()));
    }
    dests.get_mut(authority).expect("inserted above")
}

/// An idle HTTP/1.1 mesh connection.
#[derive(Debug)]
pub(super) struct Idle {
    pub(super) sender: http1::SendRequest<ReqBody>,
    pub(super) server: SpiffeId,
    since: Instant,
}

/// A connection out on a request, and where it goes back.
#[derive(Debug)]
pub(crate) struct Back {
    pool: Arc<MeshPool>,
    out: H1Out,
    sender: http1::SendRequest<ReqBody>,
    server: SpiffeId,
}

impl Return for Back {
    fn check_in(self) {
        let Self {
            pool,
            out,
            sender,
            server,
        } = self;
        pool.h1_put(out.0, sender, server);
    }
}

/// The response of an HTTP/1.1 mesh request: its body gives the connection back.
pub(crate) type H1Response = Response<Checkin<Back>>;

impl MeshPool {
    /// Whether an HTTP/1.1 request to `authority` takes an HTTP/1.1 connection (its place
    /// among them) or a stream of the HTTP/2 connection (`None`). With `--mesh-http1
    /// auto`, a stream once [`super::AUTO_HTTP2_FROM`] of the destination's requests are
    /// in flight — out on its HTTP/1.1 connections, or awaiting their answer on its HTTP/2
    /// connection — and for [`super::AUTO_HOLD`] after the last time they were (or until
    /// [`super::AUTO_QUIET`] requests in a row found fewer), else an HTTP/1.1 connection:
    /// a lone request costs the fewest instructions that way, and many at once the fewest
    /// system calls as streams, whose writes the connection gathers per turn
    /// ([`crate::io::Coalesce`]). The hold keeps a loaded destination on streams: a proxy
    /// answers a batch of requests in one turn and reads the next batch in the next, when
    /// none of them is in flight any more — the first few of each batch find fewer, never
    /// [`super::AUTO_QUIET`] in a row while the load lasts. A destination that was busy
    /// only for a moment (a scheduling stall at a modest rate) so goes back to HTTP/1.1
    /// connections after that many requests rather than after all of the hold's.
    ///
    /// An HTTP/2 app's request (`from_h2`: one the HTTP/1.1 hop can carry, see
    /// `outbound/http.rs`) takes it only while the destination's HTTP/2 connection is
    /// open and its server chose [`crate::detect::ALPN_H2_MARKED`] (its proxy hands the
    /// request to its app as HTTP/2 again; one of an earlier version would not): the
    /// destination's first such request, and any while no HTTP/2 connection is kept, goes
    /// as a stream.
    pub(crate) fn http1_out(&self, authority: &str, from_h2: bool) -> Option<H1Out> {
        if self.http1_below == 0 {
            return None;
        }
        // Read before h1's lock, not under it (the two locks are never nested).
        let streams = if from_h2 {
            match self.h2_in_flight(authority) {
                (n, true) => n,
                (_, false) => return None,
            }
        } else if self.http1_below == usize::MAX {
            0
        } else {
            self.h2_in_flight(authority).0
        };
        let mut dests = self.h1.lock().unwrap_or_else(PoisonError::into_inner);
        let dest = dest_of(&mut dests, authority);
        if H1Out::count(dest).saturating_add(streams) >= self.http1_below {
            dest.busy_until = Some(Instant::now() + super::AUTO_HOLD);
            dest.quiet = 0;
            return None;
        }
        if let Some(until) = dest.busy_until {
            dest.quiet += 1;
            if dest.quiet < super::AUTO_QUIET && Instant::now() < until {
                return None;
            }
            dest.busy_until = None;
        }
        Some(H1Out(dest.key.clone()))
    }

    /// Sends `req` (HTTP/1.1, origin form, with its `Host`) to the destination
    /// `authority`, whose server must be one of `expected`, over a keep-alive connection;
    /// `out` is the request's place among them ([`Self::http1_out`]).
    pub(crate) async fn send_h1(
        self: &Arc<Self>,
        out: H1Out,
        authority: &str,
        expected: &BTreeSet<SpiffeId>,
        mut req: Request<ReqBody>,
    ) -> Result<H1Response, MeshError> {
        self.sweep();
        let mut idle = self.h1_idle(authority, expected);
        // Given back with its response's end, it may not have told it can take the next
        // request yet: it will (or closes) once its task has run.
        if let Some((sender, _)) = &mut idle
            && sender.ready().await.is_err()
        {
            idle = None;
        }
        let (mut sender, mut server) = match idle {
            Some(idle) => idle,
            // Boxed: the connect path's state (a TLS handshake) is large, and this future
            // is moved with every request.
            None => Box::pin(self.h1_connect(authority, expected)).await?,
        };
        let mut retried = false;
        loop {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    // A connection that switched protocols is not HTTP/1.1 any more.
                    let back = (resp.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Back {
                        pool: self.clone(),
                        out,
                        sender,
                        server,
                    });
                    return Ok(resp.map(|body| Checkin::new(body, back)));
                }
                Err(mut e) => match e.take_message() {
                    // Never written (the connection closed first): once more on a new one.
                    Some(unsent) if !retried => {
                        retried = true;
                        req = unsent;
                        (sender, server) = Box::pin(self.h1_connect(authority, expected)).await?;
                    }
                    _ => {
                        return Err(MeshError::Http {
                            authority: authority.to_owned(),
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
    }

    /// An idle connection to `authority` that can take a request now, whose server is
    /// expected; closed and expired ones are dropped on the way, and so are those of a
    /// server no longer expected.
    pub(super) fn h1_idle(
        &self,
        authority: &str,
        expected: &BTreeSet<SpiffeId>,
    ) -> Option<(http1::SendRequest<ReqBody>, SpiffeId)> {
        let mut dests = self.h1.lock().unwrap_or_else(PoisonError::into_inner);
        let dest = dests.get_mut(authority)?;
        let now = Instant::now();
        dest.idle.retain(|i| {
            !i.sender.is_closed()
                && now.duration_since(i.since) < self.h1_idle
                && expected.contains(&i.server)
        });
        // One that can take a request now, the most recently used first (the one most
        // likely to be open still); else the most recent.
        let at = (dest.idle.iter().rposition(|i| i.sender.is_ready()))
            .or_else(|| dest.idle.len().checked_sub(1))?;
        let idle = dest.idle.remove(at);
        Some((idle.sender, idle.server))
    }

    /// Takes back a connection whose response has ended.
    pub(super) fn h1_put(
        &self,
        key: Arc<str>,
        sender: http1::SendRequest<ReqBody>,
        server: SpiffeId,
    ) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut dests = self.h1.lock().unwrap_or_else(PoisonError::into_inner);
        let dest = match dests.get_mut(&*key) {
            Some(d) => d,
            None => dests.entry((*key).into()).or_insert(H1Dest::new(key)),
        };
        if dest.idle.len() >= self.max_idle {
            dest.idle.remove(0); // the oldest
        }
        dest.idle.push(Idle {
            sender,
            server,
            since: Instant::now(),
        });
    }

    /// A new connection to `authority`, resolved from the policy in force now — or, if
    /// one came back while this waited for a handshake slot, that one.
    pub(super) async fn h1_connect(
        &self,
        authority: &str,
        expected: &BTreeSet<SpiffeId>,
    ) -> Result<(http1::SendRequest<ReqBody>, SpiffeId), MeshError> {
        let slots = self.h1_slots(authority);
        let _slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let slot = slots.acquire_owned().await.expect("never closed");
                if let Some(mut idle) = self.h1_idle(authority, expected)
                    && idle.0.ready().await.is_ok()
                {
                    return Ok(idle);
                }
                slot
            }
        };
        let (io, server) = self.connect_to(authority, crate::detect::OFFER_H1).await?;
        let http = |source| MeshError::Http {
            authority: authority.to_owned(),
            source,
        };
        let (sender, conn) = http1::Builder::new()
            .writev(crate::http_util::H1_WRITEV)
            .max_buf_size(crate::http_util::H1_CLIENT_BUF)
            .handshake(io)
            .await
            .map_err(http)?;
        let dst = authority.to_owned();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%dst, error = %e, "mesh HTTP/1.1 connection ended");
            }
        });
        Ok((sender, server.id))
    }

    /// The handshake slots of `authority` (made once per destination).
    pub(super) fn h1_slots(&self, authority: &str) -> Arc<Semaphore> {
        let mut dests = self.h1.lock().unwrap_or_else(PoisonError::into_inner);
        let dest = dest_of(&mut dests, authority);
        dest.connecting.clone()
    }

    /// Forgets closed connections and those idle too long.
    pub(super) fn forget_idle_h1(&self, now: Instant) {
        let mut dests = self.h1.lock().unwrap_or_else(PoisonError::into_inner);
        dests.retain(|_, d| {
            d.idle
                .retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < self.h1_idle);
            // An entry someone is connecting through stays (its slots are shared), and so
            // does one with requests out (they are counted by its key).
            !d.idle.is_empty() || Arc::strong_count(&d.connecting) > 1 || H1Out::count(d) > 0
        });
    }
}
