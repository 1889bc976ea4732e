//! The adapter under a real rustls mTLS server on loopback TCP (what goes out in which
//! `writev`, whether the client got a ticket it can resume with, whether a refused
//! client still learns why), and against an in-memory stream for partial writes, which
//! a loopback socket does not produce on demand.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::{
    ClientConfig, HandshakeKind, RootCertStore, ServerConfig, server::WebPkiClientVerifier,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

/// A CA and a leaf it signed.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Self {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn leaf(&self, name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        Arc::new(roots)
    }

    /// An mTLS server (client certificates from this CA), one ticket per handshake.
    fn server(&self) -> Arc<ServerConfig> {
        let verifier = WebPkiClientVerifier::builder(self.roots()).build().unwrap();
        let (chain, key) = self.leaf("localhost");
        let mut config = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
        config.send_tls13_tickets = 1;
        Arc::new(config)
    }

    /// A client of a server from `server_ca`, presenting a certificate from this CA;
    /// it resumes sessions.
    fn client(&self, server_ca: &Pki) -> Arc<ClientConfig> {
        let (chain, key) = self.leaf("client");
        Arc::new(
            ClientConfig::builder()
                .with_root_certificates(server_ca.roots())
                .with_client_auth_cert(chain, key)
                .unwrap(),
        )
    }
}

/// What reached the socket: each write's length and when; and when the handshake was
/// reported complete.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Seen>>);

/// The socket's writes (length, when) and when the handshake was reported complete.
type Seen = (Vec<(usize, Instant)>, Option<Instant>);

impl Log {
    fn lens(&self) -> Vec<usize> {
        self.0.lock().unwrap().0.iter().map(|w| w.0).collect()
    }
    /// How long after the handshake write `i` went out.
    fn after_established(&self, i: usize) -> Duration {
        let log = self.0.lock().unwrap();
        log.0[i].1.duration_since(log.1.unwrap())
    }
    /// Waits (up to 10 s, however loaded the machine) for `n` writes.
    async fn wait_for(&self, n: usize) {
        for _ in 0..1000 {
            if self.lens().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} writes: {:?}", self.lens());
    }
}

/// A stream that logs the writes it passes on.
struct Logged<T> {
    inner: T,
    log: Log,
}

impl<T: AsyncRead + Unpin> AsyncRead for Logged<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Logged<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.log.0.lock().unwrap().0.push((n, Instant::now()));
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
}

type Server = tokio_rustls::server::TlsStream<LastFlight<Logged<TcpStream>>>;

/// A listener whose connections are accepted through the adapter.
struct Listener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl Listener {
    async fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            tcp: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: TlsAcceptor::from(config),
        }
    }

    /// The next connection, handshake completed and its last flight held.
    async fn accept(
        &self,
        log: &Log,
    ) -> Result<Server, (io::Error, LastFlight<Logged<TcpStream>>)> {
        let (tcp, _) = self.tcp.accept().await.unwrap();
        let io = LastFlight::new(Logged {
            inner: tcp,
            log: log.clone(),
        });
        let mut tls = self.acceptor.accept(io).into_fallible().await?;
        log.0.lock().unwrap().1 = Some(Instant::now());
        tls.get_mut().0.established();
        Ok(tls)
    }

    async fn connect(
        &self,
        client: &Arc<ClientConfig>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.tcp.local_addr().unwrap()).await?;
        TlsConnector::from(client.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }
}

/// A second connection with `client` resumes the first one's session: the first one's
/// ticket arrived.
async fn assert_resumes(listener: &Listener, client: &Arc<ClientConfig>) {
    let log = Log::default();
    let (server, tls) = tokio::join!(listener.accept(&log), listener.connect(client));
    assert!(server.is_ok());
    let kind = tls.unwrap().get_ref().1.handshake_kind();
    assert_eq!(
        kind,
        Some(HandshakeKind::Resumed),
        "the client got no ticket"
    );
}

type Client = tokio_rustls::client::TlsStream<TcpStream>;

/// One established connection through the adapter, with what a second one needs.
struct Conn {
    listener: Listener,
    client: Arc<ClientConfig>,
    log: Log,
    server: Server,
    tls: Client,
    /// What the handshake left held.
    held: usize,
}

async fn one_connection() -> Conn {
    let pki = Pki::new();
    let listener = Listener::new(pki.server()).await;
    let client = pki.client(&pki);
    let log = Log::default();
    let (server, tls) = tokio::join!(listener.accept(&log), listener.connect(&client));
    let (server, tls) = (server.ok().unwrap(), tls.unwrap());
    let held = server.get_ref().0.held();
    Conn {
        listener,
        client,
        log,
        server,
        tls,
        held,
    }
}

#[tokio::test]
async fn the_ticket_goes_out_with_the_first_write() {
    let Conn {
        listener,
        client,
        log,
        mut server,
        mut tls,
        held,
    } = one_connection().await;
    assert!(held > 0, "the ticket is held");
    assert_eq!(
        log.lens().len(),
        1,
        "only the server's first flight went out"
    );

    server.write_all(b"response").await.unwrap();
    server.flush().await.unwrap();
    // One TLS record of 8 bytes: header, content type, AEAD tag.
    assert_eq!(
        log.lens()[1..],
        [held + 5 + 8 + 1 + 16],
        "one writev: ticket + response"
    );
    assert_eq!(server.get_ref().0.held(), 0);

    let mut got = [0u8; 8];
    tls.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"response");
    // Later writes pass through.
    server.write_all(b"more").await.unwrap();
    assert_eq!(log.lens()[2..], [5 + 4 + 1 + 16]);
    assert_resumes(&listener, &client).await;
}

#[tokio::test]
async fn flushes_do_not_send_the_ticket_alone() {
    let Conn {
        log,
        mut server,
        tls: _client,
        held,
        ..
    } = one_connection().await;
    // hyper flushes every turn of its loop, with or without a response to send.
    server.flush().await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(log.lens().len(), 1);
    assert_eq!(server.get_ref().0.held(), held);
}

#[tokio::test]
async fn a_connection_that_does_not_write_sends_the_ticket_after_the_hold() {
    let Conn {
        listener,
        client,
        log,
        mut server,
        mut tls,
        held,
    } = one_connection().await;

    // The server only reads (a request still coming, say).
    let reader = tokio::spawn(async move {
        let mut b = [0u8; 1];
        let n = server.read(&mut b).await.unwrap();
        (n, server)
    });
    log.wait_for(2).await;
    assert_eq!(log.lens()[1..], [held], "the ticket alone, once");
    let after = log.after_established(1);
    assert!(after >= HOLD_MAX, "held for {after:?}");
    // The client's TLS takes in the ticket when it reads (no application data came).
    let mut b = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(100), tls.read(&mut b)).await;
    assert!(waited.is_err(), "{waited:?}");

    tls.write_all(b"x").await.unwrap();
    let (n, server) = reader.await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(server.get_ref().0.held(), 0);
    assert_resumes(&listener, &client).await;
}

#[tokio::test]
async fn a_shutdown_sends_the_ticket_with_the_close_notify() {
    let Conn {
        listener,
        client,
        log,
        mut server,
        mut tls,
        held,
    } = one_connection().await;
    server.shutdown().await.unwrap();
    // close_notify: an alert of two bytes in one record.
    assert_eq!(log.lens()[1..], [held + 5 + 2 + 1 + 16]);
    let mut rest = Vec::new();
    assert_eq!(
        tls.read_to_end(&mut rest).await.unwrap(),
        0,
        "a clean close"
    );
    assert_resumes(&listener, &client).await;
}

#[tokio::test]
async fn a_refused_client_still_gets_the_alert_that_says_why() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let listener = Listener::new(pki.server()).await;
    // Trusts the server, presents a certificate the server's CA never signed.
    let client = stranger.client(&pki);
    let log = Log::default();
    let (server, tls) = tokio::join!(
        async {
            let (e, mut io) = listener.accept(&log).await.err().unwrap();
            // The alert was left here: the handshake does not read after it.
            assert!(io.held() > 0, "{e}");
            assert!(io.send_now(), "sent at once");
            assert_eq!(io.held(), 0);
            io
        },
        listener.connect(&client)
    );
    // TLS 1.3: the client's handshake completes before the server reads its
    // certificate, so the alert is what the client's first read finds.
    let mut tls = tls.unwrap();
    let mut b = [0u8; 1];
    let err = tls.read(&mut b).await.unwrap_err();
    let rustls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {err}"));
    assert!(
        matches!(rustls_err, rustls::Error::AlertReceived(_)),
        "{rustls_err:?}"
    );
    drop(server);
}

/// Takes `room` more bytes, then none (`Pending`) until given more room.
#[derive(Default)]
struct Narrow {
    taken: Vec<u8>,
    room: usize,
}

impl AsyncWrite for Narrow {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.room == 0 {
            return Poll::Pending;
        }
        let n = buf.len().min(self.room);
        self.taken.extend_from_slice(&buf[..n]);
        self.room -= n;
        Poll::Ready(Ok(n))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.poll_write(cx, &joined)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_socket_that_takes_part_of_a_write_loses_and_repeats_nothing() {
    let mut s = LastFlight::new(Narrow::default());
    let mut cx = Context::from_waker(Waker::noop());
    // During the handshake: gathered, whatever the socket's room.
    assert!(matches!(
        Pin::new(&mut s).poll_write(&mut cx, b"ticket"),
        Poll::Ready(Ok(6))
    ));
    assert!(s.get_ref().taken.is_empty());
    s.established();
    assert_eq!(s.held(), 6);

    // Room for 3 bytes: the held flight's, none of the caller's yet — so not done.
    s.inner.room = 3;
    let r = Pin::new(&mut s).poll_write(&mut cx, b"hello");
    assert!(r.is_pending(), "{r:?}");
    assert_eq!(s.get_ref().taken, b"tic");
    assert_eq!(s.held(), 3);

    // The caller writes again: the rest of the flight first, then its own bytes.
    s.inner.room = 5;
    let r = Pin::new(&mut s).poll_write(&mut cx, b"hello");
    assert!(matches!(r, Poll::Ready(Ok(2))), "{r:?}");
    assert_eq!(s.held(), 0);
    assert_eq!(s.get_ref().taken, b"tickethe");

    // Then straight through.
    s.inner.room = 10;
    let r = Pin::new(&mut s).poll_write(&mut cx, b"llo");
    assert!(matches!(r, Poll::Ready(Ok(3))), "{r:?}");
    assert_eq!(s.get_ref().taken, b"tickethello");
}

#[tokio::test]
async fn a_flight_exactly_as_long_as_the_room_then_the_callers_bytes() {
    let mut s = LastFlight::new(Narrow::default());
    let mut cx = Context::from_waker(Waker::noop());
    let _ = Pin::new(&mut s).poll_write(&mut cx, b"ticket");
    s.established();
    // The flight fits exactly: the caller's write goes on to the socket, which is full.
    s.inner.room = 6;
    let r = Pin::new(&mut s).poll_write(&mut cx, b"hello");
    assert!(
        r.is_pending(),
        "not Ok(0), which would read as a closed stream: {r:?}"
    );
    assert_eq!(s.held(), 0);
    s.inner.room = 5;
    let r = Pin::new(&mut s).poll_write(&mut cx, b"hello");
    assert!(matches!(r, Poll::Ready(Ok(5))), "{r:?}");
    assert_eq!(s.get_ref().taken, b"tickethello");
}

#[tokio::test]
async fn during_the_handshake_a_flight_goes_out_when_the_handshake_reads() {
    let (a, mut b) = tokio::io::duplex(1024);
    let mut s = LastFlight::new(a);
    s.write_all(b"server").await.unwrap();
    s.write_all(b"hello").await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.held(), 11, "not sent by writes or flushes");
    b.write_all(b"finished").await.unwrap();
    let mut got = [0u8; 8];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(s.held(), 0, "sent by the read");
    let mut flight = [0u8; 11];
    b.read_exact(&mut flight).await.unwrap();
    assert_eq!(&flight, b"serverhello");
}
