//! Fixtures as code for proxy tests: a real CA, credential files, real proxies on
//! 127.0.0.1:0, small real apps (HTTP/1, HTTP/2 + gRPC-style trailers, TCP echo, a
//! server-first "banner" server) and mTLS test clients.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use vigil_cert_authority::{
    CertificateAuthority, InitOptions, SpiffeId, TrustDomain, creds::Credentials, pemfile, tls,
    ttl::TtlPolicy,
};
pub use vigil_proxy::testing::LogSink;
use vigil_proxy::{Proxy, access_log::AccessLog, testing::Loopback};

pub const TD: &str = "cluster.local";

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub fn wid(name: &str) -> String {
    format!("spiffe://{TD}/ns/shop/sa/{name}")
}

/// A CA in a temp dir plus a place for workload files.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub ca: CertificateAuthority,
}

impl Mesh {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::init(
            &dir.path().join("ca"),
            InitOptions::new(TrustDomain::new(TD).unwrap()),
            TtlPolicy::default().allow_short(),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .unwrap();
        Self { dir, ca }
    }

    /// Writes svid.pem, key.pem, bundle.pem for `name` (TTL `ttl`, issued at `at`) into
    /// `<tmp>/<name>/`; returns that directory. Overwrites atomically (rotation).
    pub fn write_creds_at(&self, name: &str, ttl: Duration, at: SystemTime) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let svid = self
            .ca
            .issue_at(csr.der(), &id(&wid(name)), Some(ttl), at)
            .unwrap();
        // Key first, then bundle, then the certificate last: a reload triggered midway
        // sees a key/cert mismatch and keeps the old credentials.
        write_atomic(&d.join("key.pem"), key.serialize_pem().as_bytes());
        write_atomic(&d.join("bundle.pem"), self.ca.bundle().to_pem().as_bytes());
        write_atomic(&d.join("svid.pem"), svid.to_pem().as_bytes());
        d
    }

    pub fn write_creds(&self, name: &str) -> PathBuf {
        self.write_creds_at(name, Duration::from_secs(3600), SystemTime::now())
    }

    /// In-memory credentials for a test client.
    pub fn client_creds(&self, name: &str) -> Credentials {
        self.client_creds_at(name, Duration::from_secs(3600), SystemTime::now())
    }

    pub fn client_creds_at(&self, name: &str, ttl: Duration, at: SystemTime) -> Credentials {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let svid = self
            .ca
            .issue_at(csr.der(), &id(&wid(name)), Some(ttl), at)
            .unwrap();
        let key = pemfile::decode_private_key(&key.serialize_pem()).unwrap();
        Credentials::new(
            svid.cert_chain(),
            key,
            self.ca.bundle(),
            &id(&wid(name)),
            &tls::provider(),
            at + Duration::from_secs(1),
        )
        .unwrap()
    }

    pub fn policy_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-policy.yaml"))
    }

    pub fn write_policy(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.policy_path(name);
        write_atomic(&p, yaml.as_bytes());
        p
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) {
    vigil_cert_authority::state::write_private_file(path, bytes).unwrap();
}

/// Proxy flags for tests: loopback listeners, a short detection timeout, no access log
/// unless one is given.
pub fn loopback() -> Loopback {
    Loopback::new()
        .arg("--detect-timeout", "200ms")
        .arg("--access-log", "off")
}

/// Starts a proxy for workload `name` with credentials and policy files from `mesh`.
pub async fn proxy(
    mesh: &Mesh,
    name: &str,
    policy_yaml: &str,
    extra: &[String],
) -> (Proxy, LogSink) {
    let creds = mesh.write_creds(name);
    let policy = mesh.write_policy(name, policy_yaml);
    proxy_with_files(&creds, &policy, extra).await
}

pub async fn proxy_with_files(creds: &Path, policy: &Path, extra: &[String]) -> (Proxy, LogSink) {
    let sink = LogSink::default();
    let p = loopback()
        .files(creds, policy)
        .args(extra.iter().cloned())
        .log(AccessLog::to_writer(sink.clone()))
        .start_ready()
        .await
        .unwrap();
    (p, sink)
}

/// Polls /ready until 200 (or panics after 10 s).
/// Polls `f` every 25 ms until it holds; panics after 5 s naming `what`.
pub async fn wait_for(mut f: impl AsyncFnMut() -> bool, what: &str) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

pub async fn wait_ready(admin: SocketAddr) {
    vigil_proxy::testing::ready(admin, Duration::from_secs(10))
        .await
        .unwrap();
}

/// A plain HTTP/1 GET; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, String)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

// === apps ===

/// What the echo app saw, returned as JSON.
pub type AppBody = BoxBody<Bytes, Infallible>;

/// An HTTP/1 + HTTP/2 app. Paths:
/// - `/slow`: waits 500 ms;
/// - `/big?mb=N`: N MiB (default 16) of body, produced only as fast as it is read;
/// - `/count`: streams the request body, answers with its length;
/// - `/grpc.Test/Echo`: echoes the body with gRPC-style trailers (`grpc-status: 0`);
/// - anything else: JSON {method, path, query, version, peer, host, headers}.
pub async fn http_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_http_app(l));
    addr
}

/// [`http_app`] speaking HTTP/1.1 only (an HTTP/2 client's preface ends its connection).
pub async fn http1_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_echo(l, true));
    addr
}

/// Serves the echo app on `l` forever.
pub async fn serve_http_app(l: TcpListener) {
    serve_echo(l, false).await
}

/// Serves the echo app on `l` forever, over HTTP/1.1 only or over both versions.
async fn serve_echo(l: TcpListener, http1_only: bool) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (io, echo) = (TokioIo::new(s), hyper::service::service_fn(app));
            let _ = if http1_only {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, echo)
                    .await
                    .map_err(Into::into)
            } else {
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(io, echo)
                    .await
            };
        });
    }
}

async fn app(req: Request<Incoming>) -> Result<Response<AppBody>, Infallible> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Response::new(full("slow done")))
        }
        "/big" => {
            // `?mb=N` MiB (default 16) in 64 KiB chunks, produced as the reader takes them.
            let mb: usize = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("mb="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(16);
            let chunks = mb * 16;
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_chunks(chunk, chunks);
            Ok(Response::new(BodyExt::boxed(stream)))
        }
        "/count" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                    Err(_) => break,
                }
            }
            Ok(Response::new(full(n.to_string())))
        }
        "/grpc.Test/Echo" => {
            let data = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "ok".parse().unwrap());
            let body = DataThenTrailers {
                data: Some(data),
                trailers: Some(trailers),
            };
            let mut resp = Response::new(BodyExt::boxed(body));
            resp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            Ok(resp)
        }
        _ => {
            let h = req.headers();
            let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let doc = serde_json::json!({
                "method": req.method().as_str(),
                "path": path,
                "query": req.uri().query(),
                "version": format!("{:?}", req.version()),
                "peer": get("x-vigil-peer-id"),
                "host": get("host"),
                "orig_proto": get("vigil-orig-proto"),
                "x_tenant": get("x-tenant"),
                "cookies": h.get_all("cookie").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>(),
            });
            Ok(Response::new(full(doc.to_string())))
        }
    }
}

fn full(s: impl Into<Bytes>) -> AppBody {
    Full::new(s.into()).boxed()
}

/// `n` copies of `chunk`, one frame each, produced on demand (a reader that stops
/// reading stops the producer: nothing is buffered ahead).
pub fn futures_chunks(chunk: Bytes, n: usize) -> Chunks {
    Chunks { chunk, left: n }
}

pub struct Chunks {
    chunk: Bytes,
    left: usize,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

/// A body of one data frame followed by trailers (what a unary gRPC response looks like).
pub struct DataThenTrailers {
    pub data: Option<Bytes>,
    pub trailers: Option<http::HeaderMap>,
}

impl hyper::body::Body for DataThenTrailers {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(Frame::data(d))));
        }
        std::task::Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// A TCP echo server.
pub async fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A server-first protocol: greets immediately, then echoes.
pub async fn banner_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = s.write_all(b"220 banner ready\r\n").await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

// === A mesh server of an earlier version ===

/// A mesh server as `orders` that accepts only the ALPNs `alpns` (what a proxy of an
/// earlier version accepted) and answers every request, over HTTP/1.1 or HTTP/2, with
/// `"{version:?} {alpn}"`: the HTTP version it was spoken to in and the ALPN it chose.
pub async fn earlier_proxy(mesh: &Mesh, alpns: &[&[u8]]) -> SocketAddr {
    let server = tls::server_config(
        &mesh.client_creds("orders"),
        tls::provider(),
        Arc::new(vigil_cert_authority::verify::NoRevocation),
        alpns,
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = String::from_utf8_lossy(tls.get_ref().1.alpn_protocol().unwrap_or(b""))
                    .into_owned();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let answer = format!("{:?} {alpn}", req.version());
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer)))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

// === mTLS test clients (playing a peer proxy) ===

/// Opens mTLS to `addr` presenting `creds`, expecting `server` identities, offering `alpn`.
pub async fn mtls(
    addr: SocketAddr,
    creds: &Credentials,
    server: &[&str],
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let cfg = tls::client_config(
        creds,
        server.iter().map(|s| id(s)),
        tls::provider(),
        Arc::new(vigil_cert_authority::verify::NoRevocation),
        &[alpn],
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("mesh.invalid").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// A leaf + key issued by `mesh`'s CA, unvalidated (to present to another mesh).
pub fn raw_creds(
    mesh: &Mesh,
    name: &str,
) -> (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let svid = mesh.ca.issue(csr.der(), &id(&wid(name)), None).unwrap();
    (
        svid.cert_chain(),
        pemfile::decode_private_key(&key.serialize_pem()).unwrap(),
    )
}

/// mTLS with explicit parts: the server is verified against `trust`'s bundle and must be
/// one of `expected`; the client presents `client` (or no certificate).
pub async fn mtls_raw(
    addr: SocketAddr,
    client: Option<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
    trust: &Mesh,
    expected: &[&str],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = tls::provider();
    let verifier = vigil_cert_authority::verify::SpiffeServerVerifier::new(
        &trust.ca.bundle(),
        expected.iter().map(|s| id(s)),
        &provider,
        Arc::new(vigil_cert_authority::verify::NoRevocation),
    )
    .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut cfg = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"vigil/1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("mesh.invalid").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// An HTTP/1 client over mesh mTLS.
pub async fn h1_over_mtls(
    addr: SocketAddr,
    creds: &Credentials,
    server: &[&str],
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let tls = mtls(addr, creds, server, b"vigil/1").await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends a request; returns status, headers and body text.
pub async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, http::HeaderMap, String)> {
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "orders.shop")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Raw bytes in, raw bytes out (until the server closes or `wait` passes).
pub async fn raw_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
    wait: Duration,
) -> String {
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Proxy B for `orders` in front of `app`, and proxy A for `web` with a route to it.
/// Returns A's route listener.
pub async fn pair(
    mesh: &Mesh,
    app: SocketAddr,
    extra: &[&str],
) -> (vigil_proxy::Proxy, vigil_proxy::Proxy, SocketAddr) {
    let ((a, _), (b, _)) = pair_with_logs(mesh, app, ALLOW_WEB, extra).await;
    let via = a.routes[0];
    (a, b, via)
}

/// [`pair`] with B's policy chosen, and both access logs.
pub async fn pair_with_logs(
    mesh: &Mesh,
    app: SocketAddr,
    orders_policy: &str,
    extra: &[&str],
) -> ((vigil_proxy::Proxy, LogSink), (vigil_proxy::Proxy, LogSink)) {
    let b = callee(mesh, "orders", orders_policy, app, extra).await;
    let a = caller(mesh, "web", b.0.inbound, "orders", extra).await;
    (a, b)
}

/// The proxy of workload `name` in front of `app`, under `policy`.
pub async fn callee(
    mesh: &Mesh,
    name: &str,
    policy: &str,
    app: SocketAddr,
    extra: &[&str],
) -> (vigil_proxy::Proxy, LogSink) {
    let mut args = vec!["--app".to_string(), app.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    proxy(mesh, name, policy, &args).await
}

/// The proxy of workload `name`, admitting nothing, with one route (`routes[0]`) to the
/// proxy whose inbound is `upstream`, which must present `server`'s identity.
pub async fn caller(
    mesh: &Mesh,
    name: &str,
    upstream: SocketAddr,
    server: &str,
    extra: &[&str],
) -> (vigil_proxy::Proxy, LogSink) {
    let route = format!("127.0.0.1:0={upstream},{}", wid(server));
    let mut args = vec!["--outbound-route".to_string(), route];
    args.extend(extra.iter().map(|s| s.to_string()));
    proxy(mesh, name, "inbound: []\n", &args).await
}

/// Kills a child process when the test ends, pass or fail.
pub struct ChildGuard(pub Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One opaque tunnel through the caller's route: true if `msg` came back.
pub async fn tunnel_echoes(route: SocketAddr, msg: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut t) = tokio::net::TcpStream::connect(route).await else {
        return false;
    };
    if t.write_all(msg).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), t.read_exact(&mut buf)).await,
        Ok(Ok(_)) if buf == msg
    )
}

/// A policy admitting `web` (and nothing else) on every port.
pub const ALLOW_WEB: &str = r#"
generation: 1
inbound:
  - {policy: shop/web, action: allow, from: [{id: "spiffe://cluster.local/ns/shop/sa/web"}]}
"#;

/// The real `vigil-proxy` binary for workload `name` in front of `app`, on free loopback
/// ports. Returns the process (killed on drop), its inbound and admin addresses; it is
/// ready when this returns. A free port found here can be taken by a parallel test
/// before the proxy binds it: a proxy that exits before it is ready is started again on
/// other ports (three tries); one that fails otherwise fails the test with its stderr.
pub async fn spawn_proxy_binary(
    mesh: &Mesh,
    name: &str,
    policy_yaml: &str,
    app: SocketAddr,
) -> (ChildGuard, SocketAddr, SocketAddr) {
    let creds = mesh.write_creds(name);
    let policy = mesh.write_policy(name, policy_yaml);
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let path = |f: &str| creds.join(f).display().to_string();
    let mut stderr_of_last = String::new();
    for attempt in 0..3 {
        let (inbound, admin) = (free(), free());
        let log = creds.join(format!("proxy-stderr-{attempt}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-proxy"))
            .args([
                "run",
                "--inbound",
                &inbound.to_string(),
                "--outbound",
                "127.0.0.1:0",
            ])
            .args([
                "--admin",
                &admin.to_string(),
                "--app",
                &app.to_string(),
                "--access-log",
                "off",
            ])
            .args([
                "--svid",
                &path("svid.pem"),
                "--key",
                &path("key.pem"),
                "--bundle",
                &path("bundle.pem"),
            ])
            .args(["--policy", &policy.display().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut guard = ChildGuard(Some(child));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if vigil_proxy::testing::ready(admin, Duration::from_millis(200))
                .await
                .is_ok()
            {
                return (guard, inbound, admin);
            }
            let exited = guard.0.as_mut().and_then(|c| c.try_wait().unwrap());
            if exited.is_some() {
                stderr_of_last = std::fs::read_to_string(&log).unwrap_or_default();
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "vigil-proxy not ready on {admin} after 30 s; its stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if !stderr_of_last.contains("in use") {
            break;
        }
    }
    panic!("vigil-proxy exited before it was ready; its stderr:\n{stderr_of_last}");
}
