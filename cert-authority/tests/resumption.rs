//! Session resumption between mesh peers, over real TLS on loopback: a resumed session
//! carries both SVIDs, and a peer that was revoked (or quarantined: the proxy revokes a
//! quarantined identity), or whose certificate expired, since the session began is
//! refused by `established_peer` — the check every accepted and every made connection
//! goes through.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    io,
    sync::{Arc, Mutex, atomic::Ordering},
    time::SystemTime,
};

use rustls::{CertificateError, Error, HandshakeKind, server::ProducesTickets};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_cert_authority::{
    CertificateAuthority,
    creds::Credentials,
    svid::SvidInfo,
    tls::{self, MeshClient, MeshServer},
    verify::Revocation,
};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db";

/// What each side of one connection saw, with the peers checked as of `at`.
struct Seen {
    server_kind: Option<HandshakeKind>,
    client_kind: Option<HandshakeKind>,
    /// The server's `established_peer` for its client.
    client_peer: Result<SvidInfo, Error>,
    /// The chain the server holds for its client (on resumption: from the ticket).
    client_chain: Vec<CertificateDer<'static>>,
    /// The client's `established_peer` for its server.
    server_peer: Result<SvidInfo, Error>,
}

/// One connection from `client` to `server`; the client reads one byte so it also
/// receives the server's session ticket.
async fn connect(server: &MeshServer, client: &MeshClient, at: UnixTime) -> Seen {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server.config.clone());
    let verifier = server.verifier.clone();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let conn = tls.get_ref().1;
        let kind = conn.handshake_kind();
        let chain = conn.peer_certificates().unwrap().to_vec();
        let peer = verifier.established_peer(&chain, at);
        tls.write_all(b"k").await?;
        tls.flush().await?;
        Ok::<_, io::Error>((kind, peer, chain))
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(client.config.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let mut b = [0u8; 1];
    tls.read_exact(&mut b).await.unwrap();
    let conn = tls.get_ref().1;
    let client_kind = conn.handshake_kind();
    let server_peer = client
        .verifier
        .established_peer(conn.peer_certificates().unwrap(), at);
    let (server_kind, client_peer, client_chain) = accept.await.unwrap().unwrap();
    Seen {
        server_kind,
        client_kind,
        client_peer,
        client_chain,
        server_peer,
    }
}

fn server(creds: &Credentials, revocation: Arc<dyn Revocation>) -> MeshServer {
    tls::mesh_server(creds, tls::provider(), revocation, &[tls::ALPN_MESH]).unwrap()
}

fn client(creds: &Credentials, expected: &str, revocation: Arc<dyn Revocation>) -> MeshClient {
    tls::mesh_client(
        creds,
        [id(expected)],
        tls::provider(),
        revocation,
        &[tls::ALPN_MESH],
    )
    .unwrap()
}

struct Pair {
    _dir: tempfile::TempDir,
    ca: CertificateAuthority,
    server: MeshServer,
    client: MeshClient,
    revoke_client: Arc<Switch>,
    revoke_server: Arc<Switch>,
}

/// A DB server and a WEB client that have completed one full handshake (so the client
/// holds a ticket).
async fn resumable() -> Pair {
    let (dir, ca) = new_ca();
    let revoke_client = Arc::new(Switch::default());
    let revoke_server = Arc::new(Switch::default());
    let server = server(&creds(&ca, DB), revoke_client.clone());
    let client = client(&creds(&ca, WEB), DB, revoke_server.clone());
    let first = connect(&server, &client, UnixTime::now()).await;
    assert_eq!(first.server_kind, Some(HandshakeKind::Full));
    assert_eq!(first.client_peer.unwrap().id.as_str(), WEB);
    Pair {
        _dir: dir,
        ca,
        server,
        client,
        revoke_client,
        revoke_server,
    }
}

#[tokio::test]
async fn a_second_connection_resumes_and_carries_both_identities() {
    let p = resumable().await;
    let again = connect(&p.server, &p.client, UnixTime::now()).await;
    assert_eq!(again.server_kind, Some(HandshakeKind::Resumed));
    assert_eq!(again.client_kind, Some(HandshakeKind::Resumed));
    assert_eq!(again.client_peer.unwrap().id.as_str(), WEB);
    assert_eq!(again.server_peer.unwrap().id.as_str(), DB);
}

#[tokio::test]
async fn a_client_revoked_or_quarantined_since_cannot_resume() {
    let p = resumable().await;
    p.revoke_client.0.store(true, Ordering::SeqCst);
    let again = connect(&p.server, &p.client, UnixTime::now()).await;
    assert_eq!(again.server_kind, Some(HandshakeKind::Resumed));
    assert_eq!(
        again.client_peer.unwrap_err(),
        Error::InvalidCertificate(CertificateError::Revoked)
    );
}

#[tokio::test]
async fn a_server_revoked_since_is_refused_by_the_resuming_client() {
    let p = resumable().await;
    p.revoke_server.0.store(true, Ordering::SeqCst);
    let again = connect(&p.server, &p.client, UnixTime::now()).await;
    assert_eq!(again.client_kind, Some(HandshakeKind::Resumed));
    assert_eq!(
        again.server_peer.unwrap_err(),
        Error::InvalidCertificate(CertificateError::Revoked)
    );
}

#[tokio::test]
async fn an_expired_peer_cannot_resume() {
    let p = resumable().await;
    // Both SVIDs were issued for an hour; two hours on, the ticket is still in the
    // client's store but neither certificate is valid.
    let later = unix(SystemTime::now() + 2 * HOUR);
    let again = connect(&p.server, &p.client, later).await;
    assert_eq!(again.server_kind, Some(HandshakeKind::Resumed));
    for refused in [again.client_peer, again.server_peer] {
        let err = refused.unwrap_err();
        assert!(is_expired(&err), "{err:?}");
    }
}

#[tokio::test]
async fn new_credentials_end_every_session() {
    let p = resumable().await;
    // The proxy builds new configs when its SVID rotates or the bundle changes; their
    // ticket key is new, so the old ticket is useless and the handshake is full again.
    let rotated = server(&creds(&p.ca, DB), p.revoke_client.clone());
    let again = connect(&rotated, &p.client, UnixTime::now()).await;
    assert_eq!(again.server_kind, Some(HandshakeKind::Full));
    assert_eq!(again.client_kind, Some(HandshakeKind::Full));
    assert_eq!(again.client_peer.unwrap().id.as_str(), WEB);

    // A new client config has an empty ticket store: full as well.
    let fresh = client(&creds(&p.ca, WEB), DB, p.revoke_server.clone());
    let again = connect(&p.server, &fresh, UnixTime::now()).await;
    assert_eq!(again.client_kind, Some(HandshakeKind::Full));
}

#[tokio::test]
async fn a_client_expecting_other_identities_refuses_a_server_another_config_resumed_with() {
    // Tickets live in the client config that received them (that a fresh config starts
    // with none is `new_credentials_end_every_session`): a config expecting API, next to
    // one holding a DB ticket, verifies the DB server in full — and refuses it.
    let p = resumable().await;
    let api = "spiffe://cluster.local/ns/shop/sa/api";
    let other = client(&creds(&p.ca, WEB), api, Arc::new(Switch::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(p.server.config.clone());
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = tokio_rustls::TlsConnector::from(other.config.clone())
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap_err();
    assert!(
        matches!(
            peer_error(&err),
            Some(vigil_cert_authority::verify::PeerError::UnexpectedIdentity { .. })
        ),
        "{}",
        tls_error(&err)
    );
    let _ = accept.await;
}

/// Records the length of every ticket its config's ticketer seals, and the state in it.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ProducesTickets>,
    sealed: Mutex<Vec<(usize, Vec<u8>)>>,
}

impl ProducesTickets for Recording {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let ticket = self.inner.encrypt(plain)?;
        let opened = self.inner.decrypt(&ticket).unwrap();
        assert_eq!(opened, plain, "a ticket opens to the state sealed");
        self.sealed.lock().unwrap().push((ticket.len(), opened));
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.inner.decrypt(ticket)
    }
}

#[tokio::test]
async fn tickets_leave_out_the_clients_chain_and_resume_with_it() {
    let (_dir, ca) = new_ca();
    let server_creds = creds(&ca, DB);
    let client_creds = creds(&ca, WEB);
    let client_chain = client_creds.certified.cert.clone();
    let intermediate = &server_creds.certified.cert[1];
    assert_eq!(client_chain.len(), 2, "leaf and the issuer");
    assert_eq!(
        client_chain[1], *intermediate,
        "one issuer signed both SVIDs"
    );

    let mut server = server(&server_creds, Arc::new(Switch::default()));
    let mut config = (*server.config).clone();
    let recording = Arc::new(Recording {
        inner: config.ticketer.clone(),
        sealed: Mutex::default(),
    });
    config.ticketer = recording.clone();
    server.config = Arc::new(config);
    let client = client(&client_creds, DB, Arc::new(Switch::default()));

    for round in 0..3 {
        let seen = connect(&server, &client, UnixTime::now()).await;
        let kind = [HandshakeKind::Full, HandshakeKind::Resumed][round.min(1)];
        assert_eq!(seen.server_kind, Some(kind));
        assert_eq!(seen.client_kind, Some(kind));
        assert_eq!(seen.client_peer.unwrap().id.as_str(), WEB);
        // On resumption the chain comes out of the ticket: byte for byte the client's.
        assert_eq!(seen.client_chain, client_chain, "round {round}");
    }
    let sealed = recording.sealed.lock().unwrap().clone();
    assert_eq!(sealed.len(), 3, "one ticket per connection");

    // Other clients, their leaves learned beside the first's: each resumes as itself.
    let api = "spiffe://cluster.local/ns/shop/sa/api";
    let others = [creds(&ca, WEB), creds(&ca, api)];
    let clients: Vec<_> = others
        .iter()
        .map(|c| self::client(c, DB, Arc::new(Switch::default())))
        .collect();
    for round in 0..2 {
        for ((creds, client), id) in others.iter().zip(&clients).zip([WEB, api]) {
            let seen = connect(&server, client, UnixTime::now()).await;
            assert_eq!(
                seen.server_kind.unwrap() == HandshakeKind::Resumed,
                round == 1
            );
            assert_eq!(seen.client_peer.unwrap().id.as_str(), id);
            assert_eq!(
                seen.client_chain, creds.certified.cert,
                "{id}, round {round}"
            );
        }
    }
    let again = connect(&server, &client, UnixTime::now()).await;
    assert_eq!(again.server_kind, Some(HandshakeKind::Resumed));
    assert_eq!(again.client_chain, client_chain);

    for (len, state) in sealed.iter() {
        // rustls' state holds the client's chain verbatim; the ticket does not.
        for cert in &client_chain {
            let at = state.windows(cert.len()).position(|w| w == cert.as_ref());
            assert!(at.is_some(), "the state holds the client's chain");
        }
        let chain_len: usize = client_chain.iter().map(|c| c.len()).sum();
        // Key name 16, nonce 12, tag 16; a count, then two cuts: the leaf (offset 2,
        // tag 1, id 8), the issuer (offset 2, index 1).
        assert_eq!(*len, 16 + 12 + 16 + 1 + 11 + 3 + state.len() - chain_len);
    }
}
