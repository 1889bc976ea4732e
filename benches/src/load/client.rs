//! Connections to the target: TCP or TLS, HTTP/1.1 or HTTP/2, driven by hyper.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// HTTP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Protocol {
    /// HTTP/1.1, one request in flight per connection.
    Http1,
    /// HTTP/2, several streams per connection.
    Http2,
}

/// TLS towards the target.
#[derive(Clone)]
pub struct TlsClient {
    /// The rustls configuration (roots, optional client certificate, ALPN).
    pub config: Arc<rustls::ClientConfig>,
    /// The name to verify.
    pub server_name: ServerName<'static>,
}

impl TlsClient {
    /// The same client, offering the session of its previous connection to the same
    /// server (TLS 1.3 tickets, kept in memory), where `self` may not.
    pub fn resuming(&self) -> Self {
        let mut config = (*self.config).clone();
        config.resumption = rustls::client::Resumption::in_memory_sessions(16);
        Self {
            config: Arc::new(config),
            server_name: self.server_name.clone(),
        }
    }
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Where requests go.
#[derive(Clone, Debug)]
pub struct Target {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// Request path (and query).
    pub path: String,
    /// `Host` / `:authority`.
    pub authority: String,
    /// HTTP version.
    pub protocol: Protocol,
    /// TLS, if any.
    pub tls: Option<TlsClient>,
}

/// A request sender on one connection.
pub enum Sender {
    /// HTTP/1.1.
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    /// HTTP/2 (cloneable: one per stream).
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Connecting or the TLS handshake failed.
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    /// HTTP failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// A request could not be built.
    #[error("request: {0}")]
    Request(#[from] http::Error),
    /// Not a 2xx answer.
    #[error("status {0}")]
    Status(u16),
    /// The server had closed the idle connection before this request was sent (HTTP/1.0
    /// style servers): reconnect and send it, not a failure of the request.
    #[error("connection closed before the request")]
    Closed,
}

/// Opens one connection.
pub async fn connect(target: &Target) -> Result<Sender, LoadError> {
    let tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    match &target.tls {
        None => handshake(target.protocol, TokioIo::new(tcp)).await,
        Some(tls) => {
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(tls.server_name.clone(), tcp)
                .await?;
            handshake(target.protocol, TokioIo::new(stream)).await
        }
    }
}

async fn handshake<T>(protocol: Protocol, io: TokioIo<T>) -> Result<Sender, LoadError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    Ok(match protocol {
        Protocol::Http1 => {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(send)
        }
        Protocol::Http2 => {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(send)
        }
    })
}

impl Sender {
    /// Another handle on the same connection: HTTP/2 only (an HTTP/1.1 connection has one
    /// request in flight, so it belongs to one lane).
    pub fn share(&self) -> Option<Self> {
        match self {
            Self::H1(_) => None,
            Self::H2(s) => Some(Self::H2(s.clone())),
        }
    }

    /// Sends one GET and reads the whole body; the number of body bytes.
    pub async fn get(&mut self, target: &Target) -> Result<usize, LoadError> {
        let req = http::Request::get(target.path.as_str());
        let resp = match self {
            Self::H1(s) => {
                s.ready().await.map_err(|_| LoadError::Closed)?;
                let req = req
                    .header(http::header::HOST, target.authority.as_str())
                    .body(Empty::new())?;
                s.send_request(req).await?
            }
            Self::H2(s) => {
                s.ready().await.map_err(|_| LoadError::Closed)?;
                let uri = format!(
                    "{}://{}{}",
                    if target.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    },
                    target.authority,
                    target.path
                );
                let req = http::Request::get(uri).body(Empty::new())?;
                s.send_request(req).await?
            }
        };
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(LoadError::Status(status.as_u16()));
        }
        Ok(body.len())
    }
}
