//! The one place that builds rustls configurations for mesh traffic.
//!
//! - TLS 1.3 only, aws-lc-rs crypto.
//! - Key exchange prefers the hybrid post-quantum group X25519MLKEM768, then X25519 and
//!   P-256 for peers without it; the cipher suite AES-256-GCM, then AES-128-GCM and
//!   ChaCha20-Poly1305. Both lists can be narrowed or reordered ([`params`]).
//! - Servers require a client SVID ([`SpiffeClientVerifier`]); clients require the server
//!   to be one of the expected identities ([`SpiffeServerVerifier`]).
//! - ALPN `vigil/1` marks mesh traffic.
//! - Mesh TLS resumes sessions (TLS 1.3 PSK with (EC)DHE, tickets from a key that lives
//!   and dies with the config; no 0-RTT; no state per session, but the client leaves
//!   tickets name instead of carrying them, `ticket_leaves`). A resumed session carries the peer's
//!   original certificate chain but skips the verifier, so the owner of an established
//!   connection must call `established_peer` on the verifier ([`MeshServer`],
//!   [`MeshClient`]) before using it: that checks the chain's validity and revocation
//!   again as of now (a cache hit after a full handshake). Configs are rebuilt when
//!   credentials or the trust bundle change, which ends every session made with them.
//!   A client's session store belongs to one config, so to one expected-identity set.
//! - The controller's API does not resume: its callers are few and long-lived.

use std::sync::Arc;

use rustls::{
    ClientConfig, CommonState, ServerConfig,
    client::{Resumption, Tls12Resumption},
    crypto::CryptoProvider,
};

use crate::{
    bundle::TrustBundle,
    creds::Credentials,
    spiffe::SpiffeId,
    svid::{self, SvidInfo},
    verify::{NoRevocation, Revocation, SpiffeClientVerifier, SpiffeServerVerifier, VerifierError},
};

/// Sessions a mesh client config remembers (tickets, one per server it talked to).
const CLIENT_SESSIONS: usize = 64;

mod hkdf;
mod params;
mod ticket_certs;
mod ticket_leaves;
mod tickets;

pub use params::{
    CIPHER_SUITE_NAMES, CIPHER_SUITES, KX_GROUP_NAMES, KX_GROUPS, TlsParam, UnknownTlsName,
    cipher_suite, cipher_suite_name, kx_group, kx_group_name, name_of_group, name_of_suite,
    provider, provider_with, provider_with_groups,
};

/// ALPN protocol ID of Vigil's mesh TLS.
pub const ALPN_MESH: &[u8] = b"vigil/1";

/// A mesh server config and the verifier that checks the peers of its connections.
#[derive(Debug, Clone)]
pub struct MeshServer {
    /// The rustls config (resumes sessions).
    pub config: Arc<ServerConfig>,
    /// Its client verifier: call [`SpiffeClientVerifier::established_peer`] on every
    /// accepted connection.
    pub verifier: Arc<SpiffeClientVerifier>,
}

/// A mesh client config and the verifier that checks the servers it connects to.
#[derive(Debug, Clone)]
pub struct MeshClient {
    /// The rustls config (resumes sessions with servers it verified before).
    pub config: Arc<ClientConfig>,
    /// Its server verifier: call [`SpiffeServerVerifier::established_peer`] on every
    /// connection made.
    pub verifier: Arc<SpiffeServerVerifier>,
}

/// A server config presenting `creds` and requiring client SVIDs from `creds.bundle`.
pub fn server_config(
    creds: &Credentials,
    provider: Arc<CryptoProvider>,
    revocation: Arc<dyn Revocation>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, VerifierError> {
    let verifier = SpiffeClientVerifier::new(&creds.bundle, provider.clone(), revocation)?;
    mesh_server_config(creds, provider, Arc::new(verifier), alpn)
}

/// [`server_config`] with its verifier.
pub fn mesh_server(
    creds: &Credentials,
    provider: Arc<CryptoProvider>,
    revocation: Arc<dyn Revocation>,
    alpn: &[&[u8]],
) -> Result<MeshServer, VerifierError> {
    let verifier = Arc::new(SpiffeClientVerifier::new(
        &creds.bundle,
        provider.clone(),
        revocation,
    )?);
    let config = mesh_server_config(creds, provider, verifier.clone(), alpn)?;
    Ok(MeshServer {
        config: Arc::new(config),
        verifier,
    })
}

fn mesh_server_config(
    creds: &Credentials,
    provider: Arc<CryptoProvider>,
    verifier: Arc<SpiffeClientVerifier>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, VerifierError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| VerifierError::Build(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            creds.certified.clone(),
        )));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Tickets only: no per-session memory on the server (the leaves tickets name are
    // per client, bounded: `ticket_leaves`).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    // A client's intermediates are normally the server's own: its tickets leave them out.
    let own_intermediates = creds.certified.cert.iter().skip(1).map(|c| c.as_ref());
    config.ticketer =
        tickets::ticketer(own_intermediates).map_err(|e| VerifierError::Build(e.to_string()))?;
    config.send_tls13_tickets = 1;
    config.max_early_data_size = 0;
    Ok(config)
}

/// A web-PKI server config (no client certificates) for a name certificate from
/// [`crate::CertificateAuthority::issue_server_cert`]: the controller's admission
/// webhook, which the kube-apiserver calls over HTTPS/1.1. TLS 1.2 is allowed as well, as
/// the apiserver's client may be configured for it.
pub fn web_server_config(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key_pem: &str,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, VerifierError> {
    let key = crate::pemfile::decode_private_key(key_pem)
        .map_err(|e| VerifierError::Build(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| VerifierError::Build(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| VerifierError::Build(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client config presenting `creds` and accepting only servers in `expected`.
pub fn client_config(
    creds: &Credentials,
    expected: impl IntoIterator<Item = SpiffeId>,
    provider: Arc<CryptoProvider>,
    revocation: Arc<dyn Revocation>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, VerifierError> {
    let verifier = SpiffeServerVerifier::new(&creds.bundle, expected, &provider, revocation)?;
    mesh_client_config(creds, provider, Arc::new(verifier), alpn)
}

/// [`client_config`] with its verifier.
pub fn mesh_client(
    creds: &Credentials,
    expected: impl IntoIterator<Item = SpiffeId>,
    provider: Arc<CryptoProvider>,
    revocation: Arc<dyn Revocation>,
    alpn: &[&[u8]],
) -> Result<MeshClient, VerifierError> {
    let verifier = Arc::new(SpiffeServerVerifier::new(
        &creds.bundle,
        expected,
        &provider,
        revocation,
    )?);
    let config = mesh_client_config(creds, provider, verifier.clone(), alpn)?;
    Ok(MeshClient {
        config: Arc::new(config),
        verifier,
    })
}

fn mesh_client_config(
    creds: &Credentials,
    provider: Arc<CryptoProvider>,
    verifier: Arc<SpiffeServerVerifier>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, VerifierError> {
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| VerifierError::Build(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            creds.certified.clone(),
        )));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Tickets are kept per server name: mesh clients name the server by its address.
    config.resumption =
        Resumption::in_memory_sessions(CLIENT_SESSIONS).tls12_resumption(Tls12Resumption::Disabled);
    config.enable_early_data = false;
    Ok(config)
}

/// The controller API's server config: presents the controller's SVID, accepts clients
/// with a valid SVID (renewals, policy streams) *or* without any certificate (a proxy's
/// first, bootstrap-token call). Handlers decide what each kind of caller may do. HTTP/2.
pub fn control_server_config(
    creds: &Credentials,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, VerifierError> {
    let verifier =
        SpiffeClientVerifier::optional(&creds.bundle, provider.clone(), Arc::new(NoRevocation))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| VerifierError::Build(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            creds.certified.clone(),
        )));
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The client config for talking to the controller: verifies the controller's identity
/// against `bundle`, presents `creds` if the workload has an SVID yet. HTTP/2.
pub fn control_client_config(
    bundle: &TrustBundle,
    creds: Option<&Credentials>,
    controller: SpiffeId,
    provider: Arc<CryptoProvider>,
) -> Result<ClientConfig, VerifierError> {
    let verifier =
        SpiffeServerVerifier::new(bundle, [controller], &provider, Arc::new(NoRevocation))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| VerifierError::Build(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match creds {
        Some(c) => builder.with_client_cert_resolver(Arc::new(
            rustls::sign::SingleCertAndKey::from(c.certified.clone()),
        )),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The verified peer's SVID, read from an established connection.
///
/// Returns `None` before the handshake completes or if the peer sent no certificate
/// (which the verifiers above never allow).
pub fn peer_identity(conn: &CommonState) -> Option<SvidInfo> {
    let leaf = conn.peer_certificates()?.first()?;
    svid::inspect_leaf(leaf).ok()
}
