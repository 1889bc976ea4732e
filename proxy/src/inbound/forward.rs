//! Connections to the local application: HTTP/1.1 keep-alive connections pooled per app
//! address, and one shared HTTP/2 (prior knowledge) connection per app address
//! ([`crate::h2_client`]: each request opens its stream and awaits its response in its
//! own task).
//!
//! The app is on loopback at a handful of addresses (one per port it serves), so the pool
//! is a short list searched by address — no hashing. An HTTP/1.1 connection goes back to
//! the pool when its response body has ended ([`crate::checkin`]) and is taken again only once
//! hyper says it can carry the next request; one whose response was abandoned midway is
//! not reused (hyper closes it). A request that finds its pooled connection closed by the
//! app before any of it was written is retried once on a new connection, so an app that
//! closes idle keep-alive connections costs no request. (hyper-util's pooled client, used
//! before, hashed its key with SipHash three times and spawned a task per request: 8.5 k
//! of the inbound's 79 k instructions per request.) Connections idle for
//! `--pool-idle-timeout` are closed by a sweeper task that lives as long as the client.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::{Duration, Instant},
};

use http::{Request, Response};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{
    checkin::{Checkin, Return},
    h2_client,
    http_util::Body,
    io::ReadGate,
    req_body::ReqBody,
};

/// Why a request could not be forwarded to the app.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    /// No TCP connection to the app (refused, or not within the connect timeout).
    #[error("cannot connect to the app at {addr}: {source}")]
    Connect {
        /// The app's address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP/1.1 handshake or exchange failed.
    #[error("HTTP to the app at {addr} failed: {source}")]
    Http {
        /// The app's address.
        addr: SocketAddr,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The HTTP/2 handshake or exchange failed.
    #[error("HTTP/2 to the app at {addr} failed: {source}")]
    Http2 {
        /// The app's address.
        addr: SocketAddr,
        /// `h2`'s error.
        source: h2::Error,
    },
}

/// An idle HTTP/1.1 connection to the app.
#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<ReqBody>,
    since: Instant,
}

/// Connections to the app, by address.
#[derive(Debug)]
pub struct AppClient {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    http1: Mutex<Vec<(SocketAddr, Vec<Idle>)>>,
    /// The shared connection per address and when a request last used it.
    http2: Mutex<Vec<(SocketAddr, h2_client::SendRequest, Instant)>>,
    sweeping: AtomicBool,
}

impl AppClient {
    /// A client with the given connect timeout, idle timeout and idle connections kept
    /// per address.
    pub fn new(connect_timeout: Duration, pool_idle: Duration, pool_max_idle: usize) -> Self {
        Self {
            connect_timeout,
            idle_timeout: pool_idle,
            max_idle: pool_max_idle,
            http1: Mutex::default(),
            http2: Mutex::default(),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Starts the task that closes idle connections, once.
    fn sweep(self: &Arc<Self>) {
        crate::sweeper::start(self, &self.sweeping, self.idle_timeout, Self::close_idle);
    }

    /// Forgets closed connections and those idle for the idle timeout.
    fn close_idle(&self, now: Instant) {
        let fresh = |since: Instant| now - since < self.idle_timeout;
        let mut h1 = self.http1.lock().unwrap_or_else(|p| p.into_inner());
        for (_, idle) in h1.iter_mut() {
            idle.retain(|i| !i.sender.is_closed() && fresh(i.since));
        }
        h1.retain(|(_, idle)| !idle.is_empty());
        drop(h1);
        let mut h2 = self.http2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|(_, s, used)| !s.is_closed() && fresh(*used));
    }

    /// Sends `req` (its URI in origin form for HTTP/1.1, absolute for HTTP/2) to the app
    /// at `addr` over HTTP/1.1 or HTTP/2.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        http2: bool,
        mut req: Request<ReqBody>,
    ) -> Result<Response<Body>, AppError> {
        self.sweep();
        if http2 {
            let mut sender = match self.h2_shared(addr) {
                Some(s) => s,
                None => Box::pin(self.h2_connect(addr)).await?,
            };
            let resp = sender.send(req).await.map_err(|e| AppError::Http2 {
                addr,
                source: e.into_error(),
            })?;
            return Ok(resp.map(Body::http2));
        }
        // (The request stays where it is: passing it through a tuple here copied it twice.)
        let mut sender = match self.h1_idle(addr) {
            Some(sender) => sender,
            // Boxed, here and below: connecting (TCP and hyper's handshake) is rare, and
            // inline its state would be part of every request's future, which hyper moves
            // into a box of its own per request (measured: ~11 k instructions of `memcpy`
            // per request on the inbound).
            None => Box::pin(self.h1_connect(addr)).await?,
        };
        for attempt in 0..2 {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    // A connection that switched protocols is the tunnel's now.
                    let back =
                        (resp.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Back {
                            pool: self.clone(),
                            addr,
                            sender,
                        });
                    return Ok(resp.map(|body| Body::app(Checkin::new(body, back))));
                }
                Err(mut e) => match e.take_message() {
                    // Never written (the app closed the connection first): once more on a
                    // new connection.
                    Some(unsent) if attempt == 0 => {
                        req = unsent;
                        sender = Box::pin(self.h1_connect(addr)).await?;
                    }
                    _ => {
                        return Err(AppError::Http {
                            addr,
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
        unreachable!("the second attempt returns")
    }

    /// An idle HTTP/1.1 connection to `addr` that can take a request now; closed and
    /// expired ones are dropped on the way.
    fn h1_idle(&self, addr: SocketAddr) -> Option<http1::SendRequest<ReqBody>> {
        let mut pools = self.http1.lock().unwrap_or_else(|p| p.into_inner());
        let (_, idle) = pools.iter_mut().find(|(a, _)| *a == addr)?;
        let now = Instant::now();
        idle.retain(|i| !i.sender.is_closed() && now - i.since < self.idle_timeout);
        // The most recently used first: the one most likely to still be open.
        let at = idle.iter().rposition(|i| i.sender.is_ready())?;
        Some(idle.remove(at).sender)
    }

    /// Returns an HTTP/1.1 connection whose response has ended.
    fn h1_put(&self, addr: SocketAddr, sender: http1::SendRequest<ReqBody>) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut pools = self.http1.lock().unwrap_or_else(|p| p.into_inner());
        let idle = match pools.iter().position(|(a, _)| *a == addr) {
            Some(i) => &mut pools[i].1,
            None => {
                pools.push((addr, Vec::new()));
                &mut pools.last_mut().expect("just pushed").1
            }
        };
        if idle.len() >= self.max_idle {
            idle.remove(0); // the oldest
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn h1_connect(&self, addr: SocketAddr) -> Result<http1::SendRequest<ReqBody>, AppError> {
        let io = self.tcp(addr).await?;
        let (sender, conn) = http1::Builder::new()
            .writev(crate::http_util::H1_WRITEV)
            .max_buf_size(crate::http_util::H1_CLIENT_BUF)
            .handshake(io)
            .await
            .map_err(|source| AppError::Http { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "app connection ended");
            }
        });
        Ok(sender)
    }

    /// The shared HTTP/2 connection to `addr`, if it is open.
    fn h2_shared(&self, addr: SocketAddr) -> Option<h2_client::SendRequest> {
        let mut conns = self.http2.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .iter_mut()
            .find(|(a, s, _)| *a == addr && !s.is_closed())
            .map(|(_, s, used)| {
                *used = Instant::now();
                s.clone()
            })
    }

    /// A new HTTP/2 connection to `addr`, shared from now on.
    async fn h2_connect(&self, addr: SocketAddr) -> Result<h2_client::SendRequest, AppError> {
        let io = self.tcp(addr).await?.into_inner();
        // The app's HTTP/2 connection is shared by the requests of many mesh streams: the
        // same windows as the mesh side, so one stalled response cannot hold the others.
        let settings = h2_client::Settings {
            max_send_streams: APP_MAX_STREAMS as usize,
            stream_window: crate::http_util::STREAM_WINDOW,
            connection_window: crate::http_util::connection_window(APP_MAX_STREAMS),
        };
        let (sender, conn) = h2_client::handshake(io, settings)
            .await
            .map_err(|source| AppError::Http2 { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "app HTTP/2 connection ended");
            }
        });
        let mut conns = self.http2.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|(a, s, _)| *a != addr || !s.is_closed());
        conns.push((addr, sender.clone(), Instant::now()));
        Ok(sender)
    }

    async fn tcp(&self, addr: SocketAddr) -> Result<TokioIo<ReadGate<TcpStream>>, AppError> {
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(AppError::Connect { addr, source }),
            Err(_) => {
                return Err(AppError::Connect {
                    addr,
                    source: std::io::ErrorKind::TimedOut.into(),
                });
            }
        };
        let _ = tcp.set_nodelay(true);
        Ok(TokioIo::new(ReadGate::new(tcp)))
    }
}

/// Concurrent streams assumed on the app's HTTP/2 connection when sizing its window.
const APP_MAX_STREAMS: u32 = 100;

/// Where an HTTP/1.1 connection goes back once its response has ended.
#[derive(Debug)]
pub(crate) struct Back {
    pool: Arc<AppClient>,
    addr: SocketAddr,
    sender: http1::SendRequest<ReqBody>,
}

impl Return for Back {
    fn check_in(self) {
        self.pool.h1_put(self.addr, self.sender);
    }
}
