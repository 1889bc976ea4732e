//! Serving plumbing shared by both directions: the accept loop (connection limit,
//! pending-handshake bounds, backoff on accept errors, drain)
//! and driving a server connection (hyper's HTTP/1 behind strict framing, with upgrades,
//! or HTTP/2 on `h2` with its limits, [`crate::h2_server`]) until it ends, the proxy
//! drains, or policy closes it.

use std::{
    convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration,
};

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::Service};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};

use crate::{
    detect::Proto,
    h2_server,
    head_timer::ConnTimer,
    http_util::{Body, has_header},
    io::ReadGate,
    log_limit::LogLimit,
    metrics::labels::{Closed, Direction, Rejected},
    pending::{Pending, PendingLimits},
    req_body::ReqBody,
    shared::Shared,
    strict_h1::{StrictH1, UpgradeSwitch},
};

/// What a connection holds while it is open: its slot under the connection limit and the
/// open-connections gauge. The handler keeps it (as an argument) until it returns, so the
/// task is the handler's future alone — wrapping that future in another async block would
/// store it twice.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _open: crate::metrics::OpenGuard,
    pending: Option<Pending>,
}

impl ConnGuard {
    /// Detection and the TLS handshake are done: the connection no longer counts against
    /// the pending-handshake bounds.
    pub(crate) fn established(&mut self) {
        self.pending = None;
    }
}

/// A connection's handler, ready to serve it: boxed, so the connection's task holds a
/// pointer to it and nothing of the setup that chose it.
pub(crate) type Handler = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Accept errors are logged at most once a second (with the count left out).
static ACCEPT_ERRORS: LogLimit = LogLimit::new(Duration::from_secs(1));
/// After an accept error, wait this long before the next accept, doubling to
/// [`ACCEPT_BACKOFF_MAX`]: `EMFILE` and friends do not clear by retrying at once, and
/// retrying in a loop burns a core.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts until shutdown; each connection runs `handle` as a tracked task, under the
/// per-listener connection limit and the pending-handshake bounds (excess connections are
/// closed at once and counted). Accept errors back off.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    shared: Arc<Shared>,
    direction: Direction,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Arc<Shared>, ConnGuard) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(shared.cfg.max_connections));
    let pending = PendingLimits::new(
        shared.cfg.max_pending_handshakes,
        shared.cfg.max_pending_per_source,
    );
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, src) = match accepted {
            Ok((stream, src)) => {
                backoff = Duration::ZERO;
                // IPv4 through a dual-stack listener arrives v4-mapped: policy, limits
                // and logs see the IPv4 address.
                (stream, crate::listen::canonical(src))
            }
            Err(e) => {
                shared.metrics.reject(direction, Rejected::AcceptError);
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                if let Some(left_out) = ACCEPT_ERRORS.allow() {
                    tracing::warn!(error = %e, direction = direction.as_str(), left_out, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                }
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.reject(direction, Rejected::ConnectionLimit);
            continue;
        };
        let place = match pending.admit(src.ip()) {
            Ok(p) => p,
            Err(refused) => {
                shared.metrics.reject(direction, refused.label());
                continue;
            }
        };
        // TCP_NODELAY comes from the listener (`listen::listen`), copied by accept.
        let guard = ConnGuard {
            _permit: permit,
            _open: shared.metrics.open(direction),
            pending: Some(place),
        };
        shared
            .tracker
            .spawn(handle(stream, src, shared.clone(), guard));
    }
}

/// Serves HTTP (`proto` says which version) on `io` with `service`, an HTTP/2 client's
/// header lists up to `header_list` bytes. Returns the reason if `closer` ended the
/// connection.
pub(crate) async fn http<I, S>(
    io: I,
    proto: Proto,
    header_list: u32,
    shared: &Shared,
    service: S,
    closer: impl Future<Output = Closed>,
) -> Option<Closed>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<ReqBody>, Response = Response<Body>, Error = Infallible>
        + Send
        + Unpin
        + 'static,
    S::Future: Send + 'static,
{
    let cfg = &shared.cfg;
    if proto == Proto::Http1 {
        let strict = StrictH1::new(io, cfg.max_header_bytes);
        let service = UpgradeAware {
            inner: service,
            switch: strict.upgrade_switch(),
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(ConnTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .max_buf_size(cfg.max_header_bytes)
            .writev(crate::http_util::H1_WRITEV)
            .serve_connection(TokioIo::new(ReadGate::new(strict)), service)
            .with_upgrades();
        drive(conn, |c| c.graceful_shutdown(), shared, closer).await
    } else {
        let settings = h2_server::Settings {
            max_concurrent_streams: cfg.max_concurrent_streams,
            stream_window: crate::http_util::STREAM_WINDOW,
            connection_window: crate::http_util::connection_window(cfg.max_concurrent_streams),
            max_header_list: header_list,
        };
        let conn = h2_server::serve_connection(ReadGate::new(io), settings, service);
        drive(conn, |c| c.get_mut().graceful_shutdown(), shared, closer).await
    }
}

/// HTTP/1 service wrapper keeping [`StrictH1`] and hyper in step on upgrades: a `101`
/// answer to a request carrying `Upgrade` flips the connection's switch (what follows is
/// the new protocol); any other answer to such a request closes the connection, so the
/// bytes held after it are never parsed as a request. (It also hands the service the
/// request's body as a [`ReqBody`].)
#[derive(Clone, Debug)]
struct UpgradeAware<S> {
    inner: S,
    switch: UpgradeSwitch,
}

impl<S> Service<Request<Incoming>> for UpgradeAware<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = UpgradeAwareFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let upgrade = has_header(req.headers(), &header::UPGRADE);
        UpgradeAwareFuture {
            inner: self.inner.call(req.map(ReqBody::Http1)),
            switch: upgrade.then(|| self.switch.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`UpgradeAware`]'s answer: the service's own future, and the switch to flip if
    /// the request asked to upgrade. (Not an `async` block: one holds the future it
    /// awaits twice over — measured: 9.6 KB copied per request on the inbound, where
    /// this moves the service's future once, into hyper's slot for it.)
    pub(crate) struct UpgradeAwareFuture<F> {
        #[pin]
        inner: F,
        switch: Option<UpgradeSwitch>,
    }
}

impl<F, E> Future for UpgradeAwareFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(switch) = this.switch.take() {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                switch.set();
            } else {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        std::task::Poll::Ready(Ok(resp))
    }
}

/// Runs `conn` until it ends, the proxy drains (then `graceful` lets in-flight requests
/// finish), or `closer` fires.
async fn drive<C: Future>(
    conn: C,
    graceful: impl FnOnce(Pin<&mut C>),
    shared: &Shared,
    closer: impl Future<Output = Closed>,
) -> Option<Closed> {
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => None,
        _ = shared.shutdown.cancelled() => {
            graceful(conn.as_mut());
            let _ = conn.await;
            None
        }
        reason = closer => Some(reason),
    }
}
