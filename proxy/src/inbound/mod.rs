//! The inbound listener: traffic *to* this workload.
//!
//! ```text
//! accept ─► outer detect ─┬─ mesh TLS ─► mTLS handshake (client SVID required) ─┐
//!                         ├─ other TLS ───────────────────────── unauthenticated ┤
//!                         └─ plaintext ───────────────────────── unauthenticated ┤
//!                                                                                ▼
//!            inner detect (or ALPN hint / opaque port) ─┬─ HTTP/1, HTTP/2 ─► per-request authz ─► app
//!                                                       └─ opaque ─────────► L4 authz ─► app
//! ```
//!
//! Every HTTP request is authorized with the policy in force when it arrives; opaque
//! connections once, then again on every policy change (closed if no longer allowed).
//! Connections from a peer that becomes revoked, or all connections when this workload
//! is quarantined, are closed.

use std::{net::SocketAddr, sync::Arc};

use rustls_pki_types::UnixTime;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::{
    authz::Subject,
    detect::{self, Outer, Proto},
    io::{LastFlight, PrefixedIo},
    metrics::labels::{Direction, Rejected},
    serve::{ConnGuard, Handler},
    shared::{Shared, Source, original_dst},
};

mod forward;
mod http;
mod tcp;

pub use forward::AppClient;
pub(crate) use forward::Back as AppBack;

const DIRECTION: Direction = Direction::Inbound;

/// What a connection handler needs to know about its connection.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    /// Pooled clients to the app.
    pub(crate) app_client: Arc<AppClient>,
    /// The workload port this traffic is for (policy `ports`).
    pub(crate) port: u16,
    /// Where allowed traffic goes.
    pub(crate) app: SocketAddr,
    pub(crate) source: Source,
    pub(crate) src_addr: SocketAddr,
    pub(crate) proto: Proto,
    /// The app on this port speaks HTTP/1.1 only (`--http1-app-ports`): HTTP/2 requests
    /// reach it as HTTP/1.1.
    pub(crate) app_http1_only: bool,
    /// The mesh peer's SPIFFE ID as the `PEER_ID` header value the app gets with each
    /// request: made once per connection, shared by its requests.
    pub(crate) peer_id: Option<::http::HeaderValue>,
}

impl ConnCtx {
    /// Who asks: what every authorization on this connection judges.
    pub(crate) fn subject(&self) -> Subject<'_> {
        Subject {
            source: &self.source,
            src_ip: self.src_addr.ip(),
            port: self.port,
        }
    }
}

/// Accepts inbound connections until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, app_client: Arc<AppClient>) {
    crate::serve::accept_loop(
        listener,
        shared,
        DIRECTION,
        move |stream, src, shared, guard| handle(stream, src, shared, app_client.clone(), guard),
    )
    .await;
}

/// A connection's task. Setup (outer detection, the mTLS handshake, inner detection) runs
/// in a box that is freed before the connection is served: an idle connection then holds
/// its task (a few words), its handler and its stream, not the largest state of every
/// path it could have taken (B8: the task alone was 3 KB).
async fn handle(
    stream: TcpStream,
    src: SocketAddr,
    shared: Arc<Shared>,
    app_client: Arc<AppClient>,
    mut guard: ConnGuard,
) {
    let handler = Box::pin(setup(stream, src, shared, app_client, &mut guard)).await;
    if let Some(handler) = handler {
        handler.await;
    }
}

/// Everything before a connection is served: where it goes, what it is, who it is from.
async fn setup(
    stream: TcpStream,
    src: SocketAddr,
    shared: Arc<Shared>,
    app_client: Arc<AppClient>,
    guard: &mut ConnGuard,
) -> Option<Handler> {
    let cfg = &shared.cfg;
    // Asked of the socket (two syscalls per connection) only when no app is configured.
    let orig = if cfg.app.is_none() {
        original_dst(&stream)
    } else {
        None
    };
    let (port, app) = match (cfg.app, orig) {
        (Some(app), _) => (app.port(), app),
        // The app on the loopback of the family the client used: IPv6 clients reach
        // it on ::1 (an app in an IPv6 or dual-stack pod listens on `::`).
        (None, Some(orig)) => {
            let lo: std::net::IpAddr = match orig {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            (orig.port(), SocketAddr::new(lo, orig.port()))
        }
        (None, None) => {
            // Neither redirected nor configured with --app: nowhere to forward.
            shared.metrics.reject(DIRECTION, Rejected::NoDestination);
            return None;
        }
    };
    let mut stream = stream;
    let (outer, prefix) = detect::outer(&mut stream, cfg.detect_timeout).await.ok()?;
    // A client that said nothing during outer detection is server-first: opaque, without
    // waiting a second detection timeout.
    let silent = prefix.is_empty();
    let io = PrefixedIo::new(prefix, stream);
    let opaque_port = cfg.opaque_ports.contains(&port);
    match outer {
        Outer::MeshTls => {
            let Some(tls) = shared.tls() else {
                // No credentials yet: cannot terminate mesh TLS.
                shared.metrics.tls_unavailable(DIRECTION, "no_credentials");
                return None;
            };
            let acceptor = TlsAcceptor::from(tls.server.config.clone());
            // The handshake's state lives in `setup`'s box, freed once the connection is
            // served.
            // The handshake's last flight (the session ticket) waits for the connection's
            // first write, to share its segment (`LastFlight`).
            let accept = acceptor.accept(LastFlight::new(io)).into_fallible();
            let accepted = tokio::time::timeout(cfg.handshake_timeout, accept).await;
            // Boxed once: the connection's state (1.3 KB) then lives in one place for the
            // connection's life, not in every future it passes through (`setup`, `route` and
            // the handler keep their own slots for an argument moved on: B8 counted it 5×).
            let mut tls_stream = match accepted {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err((e, mut io))) => {
                    // The alert saying why is still held: send it before closing.
                    io.send_now();
                    let reason = crate::tls_errors::reason(&e);
                    tracing::debug!(%src, error = %e, "inbound mTLS handshake failed");
                    shared.metrics.handshake(DIRECTION, Some(reason));
                    return None;
                }
                Err(_) => {
                    shared.metrics.handshake(DIRECTION, Some("timeout"));
                    return None;
                }
            };
            tls_stream.get_mut().0.established();
            let conn = tls_stream.get_ref().1;
            // The peer's chain is checked again now: a resumed session skipped the verifier
            // (after a full handshake this is a cache hit that reads its SVID).
            let chain = conn.peer_certificates().unwrap_or_default();
            let peer = match tls.server.verifier.established_peer(chain, UnixTime::now()) {
                Ok(peer) => peer,
                Err(e) => {
                    tracing::debug!(%src, error = %e, "inbound mTLS peer refused after the handshake");
                    let reason = crate::tls_errors::rustls_reason(&e);
                    shared.metrics.handshake(DIRECTION, Some(reason));
                    return None;
                }
            };
            shared.metrics.handshake(DIRECTION, None);
            shared.metrics.negotiated(conn);
            shared
                .peers
                .seen(DIRECTION, &peer.id, crate::shared::unix_now());
            if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                shared.metrics.resumed(DIRECTION);
            }
            guard.established();
            let hint = Proto::from_alpn(conn.alpn_protocol());
            let source = Source::Mesh(Arc::new(peer));
            let proto_hint = if opaque_port {
                Some(Proto::Opaque)
            } else {
                hint
            };
            let to = To {
                port,
                app,
                shared,
                app_client,
            };
            route(tls_stream, proto_hint, source, src, to).await
        }
        Outer::OtherTls => {
            guard.established();
            // Someone else's TLS: opaque, unauthenticated; policy decides.
            let to = To {
                port,
                app,
                shared,
                app_client,
            };
            route(io, Some(Proto::Opaque), Source::Plain, src, to).await
        }
        Outer::Plaintext => {
            guard.established();
            let hint = (opaque_port || silent).then_some(Proto::Opaque);
            let to = To {
                port,
                app,
                shared,
                app_client,
            };
            route(io, hint, Source::Plain, src, to).await
        }
    }
}

/// Where an accepted connection goes, and with what.
struct To {
    port: u16,
    app: SocketAddr,
    shared: Arc<Shared>,
    app_client: Arc<AppClient>,
}

/// Detects the inner protocol (unless hinted) and returns the stream's handler.
async fn route<S>(
    mut io: S,
    hint: Option<Proto>,
    source: Source,
    src_addr: SocketAddr,
    to: To,
) -> Option<Handler>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let To {
        port,
        app,
        shared,
        app_client,
    } = to;
    let (proto, prefix) = match hint {
        Some(p) => (p, bytes::Bytes::new()),
        None => detect::inner(&mut io, shared.cfg.detect_timeout)
            .await
            .ok()?,
    };
    shared.metrics.connection(DIRECTION, proto);
    let peer_id = match &source {
        Source::Mesh(info) => ::http::HeaderValue::from_str(info.id.as_str()).ok(),
        Source::Plain => None,
    };
    let app_http1_only = shared.cfg.http1_app_ports.contains(&port);
    let ctx = Arc::new(ConnCtx {
        shared,
        app_client,
        port,
        app,
        source,
        src_addr,
        proto,
        app_http1_only,
        peer_id,
    });
    let io = PrefixedIo::new(prefix, io);
    Some(match proto {
        Proto::Opaque => Box::pin(tcp::serve(io, ctx)),
        Proto::Http1 | Proto::Http2 => Box::pin(http::serve(io, ctx)),
    })
}
