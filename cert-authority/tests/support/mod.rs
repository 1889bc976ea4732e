//! Test fixtures as code: real CAs in temp dirs, real CSRs, real TLS over loopback.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{
    io,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_cert_authority::{
    CertificateAuthority, InitOptions, SpiffeId, TrustDomain,
    creds::Credentials,
    pemfile,
    svid::SvidInfo,
    tls,
    ttl::TtlPolicy,
    verify::{NoRevocation, Revocation},
};

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

/// A fresh CA in a temp dir, initialised at `now`.
pub fn new_ca_at(now: SystemTime) -> (tempfile::TempDir, CertificateAuthority) {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(
        &dir.path().join("ca"),
        InitOptions::new(td()),
        TtlPolicy::default().allow_short(),
        now,
    )
    .unwrap();
    (dir, ca)
}

pub fn new_ca() -> (tempfile::TempDir, CertificateAuthority) {
    new_ca_at(SystemTime::now())
}

/// A P-256 key and a CSR whose subject and SANs *claim* `claimed` (which the CA must ignore).
pub fn csr_claiming(claimed: &str) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::URI(claimed.try_into().unwrap()),
        SanType::DnsName("evil.example".try_into().unwrap()),
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, claimed);
    let csr = params.serialize_request(&key).unwrap();
    (key, csr.der().to_vec())
}

pub fn csr() -> (KeyPair, Vec<u8>) {
    csr_claiming("spiffe://cluster.local/ns/x/sa/y")
}

pub fn private_key(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// Issues credentials for `who` from `ca` at `now` with `ttl`, checked as of `now`.
pub fn creds_at(
    ca: &CertificateAuthority,
    who: &str,
    ttl: Duration,
    now: SystemTime,
) -> Credentials {
    let (key, csr) = csr();
    let svid = ca.issue_at(&csr, &id(who), Some(ttl), now).unwrap();
    Credentials::new(
        svid.cert_chain(),
        private_key(&key),
        ca.bundle(),
        &id(who),
        &tls::provider(),
        now,
    )
    .unwrap()
}

pub fn creds(ca: &CertificateAuthority, who: &str) -> Credentials {
    creds_at(ca, who, HOUR, SystemTime::now())
}

/// Unvalidated credentials: whatever chain and key a test issued or forged, used as-is.
pub struct Raw {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A chain and key issued by `ca` at `at`, without any validation on the holder's side.
pub fn raw_svid(ca: &CertificateAuthority, who: &str, ttl: Duration, at: SystemTime) -> Raw {
    let (key, csr) = csr();
    let svid = ca.issue_at(&csr, &id(who), Some(ttl), at).unwrap();
    Raw {
        chain: svid.cert_chain(),
        key: private_key(&key),
    }
}

/// The current issuer of the CA in `state_dir`, loaded from its files the way an attacker
/// who stole them (or a test) would.
pub fn issuer_from_disk(state_dir: &Path) -> (CertificateDer<'static>, KeyPair) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("ca.json")).unwrap()).unwrap();
    let cert_file = manifest["issuer"]["cert"].as_str().unwrap();
    let key_file = manifest["issuer"]["key"].as_str().unwrap();
    let cert = pemfile::decode_certs(&std::fs::read_to_string(state_dir.join(cert_file)).unwrap())
        .unwrap()
        .remove(0);
    let key = pemfile::decode_key_pair(&std::fs::read_to_string(state_dir.join(key_file)).unwrap())
        .unwrap();
    (cert, key)
}

/// Signs a leaf with the CA's issuer key directly, after `shape` adjusts a normal SVID
/// template — to make certificates the CA itself would never issue.
pub fn forge_leaf(state_dir: &Path, uri: &str, shape: impl FnOnce(&mut CertificateParams)) -> Raw {
    let (issuer_cert, issuer_key) = issuer_from_disk(state_dir);
    let issuer = rcgen::Issuer::from_ca_cert_der(&issuer_cert, issuer_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::hours(1);
    shape(&mut params);
    let leaf = params.signed_by(&key, &issuer).unwrap();
    Raw {
        chain: vec![leaf.der().clone(), issuer_cert],
        key: private_key(&key),
    }
}

/// Builds a server config from raw parts (the verifier still comes from `tls`).
pub fn raw_server_config(raw: &Raw, bundle_ca: &CertificateAuthority) -> ServerConfig {
    let provider = tls::provider();
    let verifier = vigil_cert_authority::verify::SpiffeClientVerifier::new(
        &bundle_ca.bundle(),
        provider.clone(),
        Arc::new(NoRevocation),
    )
    .unwrap();
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(raw.chain.clone(), raw.key.clone_key())
        .unwrap();
    cfg.alpn_protocols = vec![tls::ALPN_MESH.to_vec()];
    cfg
}

/// A client config that presents `raw` (or nothing) and expects `expected` from the server.
pub fn raw_client_config(
    raw: Option<&Raw>,
    bundle_ca: &CertificateAuthority,
    expected: &[&str],
) -> ClientConfig {
    let provider = tls::provider();
    let verifier = vigil_cert_authority::verify::SpiffeServerVerifier::new(
        &bundle_ca.bundle(),
        expected.iter().map(|s| id(s)),
        &provider,
        Arc::new(NoRevocation),
    )
    .unwrap();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut cfg = match raw {
        Some(raw) => builder
            .with_client_auth_cert(raw.chain.clone(), raw.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![tls::ALPN_MESH.to_vec()];
    cfg
}

pub fn server_config(creds: &Credentials, revocation: Arc<dyn Revocation>) -> ServerConfig {
    tls::server_config(creds, tls::provider(), revocation, &[tls::ALPN_MESH]).unwrap()
}

pub fn client_config(creds: &Credentials, expected: &[&str]) -> ClientConfig {
    client_config_with(creds, expected, tls::provider())
}

pub fn client_config_with(
    creds: &Credentials,
    expected: &[&str],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> ClientConfig {
    tls::client_config(
        creds,
        expected.iter().map(|s| id(s)),
        provider,
        Arc::new(NoRevocation),
        &[tls::ALPN_MESH],
    )
    .unwrap()
}

/// What each side saw of a handshake.
#[derive(Debug)]
pub struct Outcome {
    /// Server: the client's identity, or the error accepting it.
    pub server: io::Result<Option<SvidInfo>>,
    /// Client: what it negotiated, or the error.
    pub client: io::Result<Negotiated>,
}

/// What a client's successful handshake negotiated.
#[derive(Debug)]
pub struct Negotiated {
    /// The server's identity.
    pub server: Option<SvidInfo>,
    /// Key-exchange group (rustls' name).
    pub group: String,
    /// Cipher suite (rustls' name).
    pub suite: String,
    /// ALPN protocol.
    pub alpn: Option<Vec<u8>>,
}

/// Runs a real TLS handshake over loopback TCP, then one byte of application data from
/// the server so TLS 1.3 client-certificate rejections surface on the client too.
pub async fn handshake(server: ServerConfig, client: ClientConfig) -> Outcome {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let peer = tls::peer_identity(tls.get_ref().1);
        tls.write_all(b"k").await?;
        tls.flush().await?;
        Ok::<_, io::Error>(peer)
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let client = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        // The server name is irrelevant to SPIFFE verification; any valid name will do.
        let name = ServerName::try_from("mesh.invalid").unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await?;
        let conn = tls.get_ref().1;
        let group = conn
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name()))
            .unwrap_or_default();
        let suite = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        Ok(Negotiated {
            server: tls::peer_identity(conn),
            group,
            suite,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        })
    }
    .await;
    let server = server_task.await.unwrap();
    Outcome { server, client }
}

/// The rustls error inside an I/O error, as text (for asserting *why* a handshake failed).
pub fn tls_error(e: &io::Error) -> String {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| format!("(not a rustls error) {e}"))
}

/// The SPIFFE-level reason inside a handshake error, if the chain verified but the SVID
/// checks refused the peer.
pub fn peer_error(e: &io::Error) -> Option<vigil_cert_authority::verify::PeerError> {
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) =
        e.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    other.0.downcast_ref().cloned()
}

/// Revokes every peer while switched on: a revocation or quarantine that lands between
/// two handshakes of the same peer.
#[derive(Debug, Default)]
pub struct Switch(pub std::sync::atomic::AtomicBool);

impl Revocation for Switch {
    fn is_revoked(&self, _: &SvidInfo) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `t` as rustls' time.
pub fn unix(t: SystemTime) -> rustls_pki_types::UnixTime {
    rustls_pki_types::UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
}

/// Whether rustls refused a certificate as expired (with or without its context).
pub fn is_expired(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
        )
    )
}
