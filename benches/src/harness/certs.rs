//! The benchmark's identities, all from the project's own CA: SPIFFE SVIDs (P-256) for the
//! client and server sidecars, plus a DNS-named server certificate from the same CA for
//! HAProxy and nginx, which verify a peer by CA membership and host name only (they cannot
//! match SPIFFE IDs). Written as the PEM files the reference configurations name.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use rustls::{ClientConfig, RootCertStore, client::Resumption, crypto::CryptoProvider};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use vigil_cert_authority::{
    CertificateAuthority, InitOptions, SpiffeId, TrustDomain, creds::Credentials, pemfile, tls,
    ttl::TtlPolicy, verify::NoRevocation,
};

use crate::load::TlsClient;

/// Trust domain of the benchmark mesh.
pub const TRUST_DOMAIN: &str = "bench.local";

/// The client sidecar's identity.
pub fn client_id() -> SpiffeId {
    spiffe("client")
}

/// The server sidecar's identity.
pub fn server_id() -> SpiffeId {
    spiffe("server")
}

fn spiffe(sa: &str) -> SpiffeId {
    // A constant, well-formed ID.
    SpiffeId::parse(&format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}"))
        .unwrap_or_else(|e| unreachable_id(&e.to_string()))
}

#[allow(clippy::panic)]
fn unreachable_id(e: &str) -> SpiffeId {
    panic!("constant SPIFFE ID rejected: {e}")
}

/// Where the files are, and the client's credentials for direct mTLS to inbound sidecars.
pub struct Certs {
    /// The work directory holding the files.
    pub dir: PathBuf,
    /// The client's SVID (chain) and key, for the load generator.
    pub client_chain: Vec<CertificateDer<'static>>,
    client_key: PrivateKeyDer<'static>,
    /// The server sidecar's SVID chain and key (B7's in-memory handshake).
    pub server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    bundle: vigil_cert_authority::bundle::TrustBundle,
}

impl Certs {
    /// Creates a CA under `dir/ca` and writes every file the configurations use:
    /// `ca.crt` (roots), `{server,client}.{crt,key}` (SVIDs), `client.pem` (chain + key),
    /// `dns-server.{crt,key,pem}` (host name `localhost`).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let now = SystemTime::now();
        let ca = CertificateAuthority::init(
            &dir.join("ca"),
            InitOptions::new(TrustDomain::new(TRUST_DOMAIN)?),
            TtlPolicy::default(),
            now,
        )
        .context("creating the benchmark CA")?;
        let bundle = ca.bundle();
        fs::write(dir.join("ca.crt"), bundle.to_pem())?;
        let svid = |who: &str, id: &SpiffeId| -> anyhow::Result<_> {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
            let issued = ca.issue(csr.der(), id, None)?;
            let chain_pem = issued.to_pem();
            let key_pem = key.serialize_pem();
            write_key_pair(dir, who, &chain_pem, &key_pem)?;
            Ok((issued.cert_chain(), pemfile::decode_private_key(&key_pem)?))
        };
        let (client_chain, client_key) = svid("client", &client_id())?;
        let (server_chain, server_key) = svid("server", &server_id())?;
        let (dns_chain, dns_key) = ca.issue_server_cert(
            &["localhost".to_string(), "127.0.0.1".to_string()],
            Duration::from_secs(24 * 3600),
            now,
        )?;
        write_key_pair(
            dir,
            "dns-server",
            &pemfile::encode_certs(&dns_chain),
            &dns_key,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            client_chain,
            client_key,
            server_chain,
            server_key,
            bundle,
        })
    }

    /// The client's credentials as the mesh sees them.
    pub fn client_creds(&self, provider: &CryptoProvider) -> anyhow::Result<Credentials> {
        Ok(Credentials::new(
            self.client_chain.clone(),
            self.client_key.clone_key(),
            self.bundle.clone(),
            &client_id(),
            provider,
            SystemTime::now(),
        )?)
    }

    /// The server's credentials (B7's in-memory handshake).
    pub fn server_creds(&self, provider: &CryptoProvider) -> anyhow::Result<Credentials> {
        Ok(Credentials::new(
            self.server_chain.clone(),
            self.server_key.clone_key(),
            self.bundle.clone(),
            &server_id(),
            provider,
            SystemTime::now(),
        )?)
    }

    /// The server's credentials from the files [`Certs::create`] wrote in `dir` (B7's
    /// socket floor, [`super::tls_server`], runs in a process of its own).
    pub fn load_server_creds(dir: &Path, provider: &CryptoProvider) -> anyhow::Result<Credentials> {
        let read = |name: &str| {
            fs::read_to_string(dir.join(name)).with_context(|| format!("reading {name}"))
        };
        Ok(Credentials::new(
            pemfile::decode_certs(&read("server.crt")?)?,
            pemfile::decode_private_key(&read("server.key")?)?,
            vigil_cert_authority::bundle::TrustBundle::from_pem(
                TrustDomain::new(TRUST_DOMAIN)?,
                &read("ca.crt")?,
            )?,
            &server_id(),
            provider,
            SystemTime::now(),
        )?)
    }

    /// A TLS client presenting the client SVID and requiring the server SVID, offering
    /// `alpn` (`vigil/1` for a vigil inbound, none for Envoy).
    pub fn spiffe_client(
        &self,
        provider: Arc<CryptoProvider>,
        alpn: &[&[u8]],
    ) -> anyhow::Result<TlsClient> {
        let creds = self.client_creds(&provider)?;
        let mut config = tls::client_config(
            &creds,
            [server_id()],
            provider,
            Arc::new(NoRevocation),
            alpn,
        )?;
        // Full handshakes unless a workload asks for resumption (`TlsClient::resuming`).
        config.resumption = Resumption::disabled();
        Ok(TlsClient {
            config: Arc::new(config),
            server_name: ServerName::try_from("localhost")?,
        })
    }

    /// A TLS client presenting the client SVID and verifying `localhost` against the mesh
    /// roots (HAProxy and nginx inbound sidecars).
    pub fn dns_client(&self, provider: Arc<CryptoProvider>) -> anyhow::Result<TlsClient> {
        let roots: RootCertStore = self.bundle.root_store();
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(self.client_chain.clone(), self.client_key.clone_key())?;
        // rustls resumes by default: full handshakes unless a workload asks.
        config.resumption = Resumption::disabled();
        Ok(TlsClient {
            config: Arc::new(config),
            server_name: ServerName::try_from("localhost")?,
        })
    }
}

fn write_key_pair(dir: &Path, who: &str, chain_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let write_secret = |path: PathBuf, text: &str| -> std::io::Result<()> {
        use std::io::Write;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?
            .write_all(text.as_bytes())
    };
    fs::write(dir.join(format!("{who}.crt")), chain_pem)?;
    write_secret(dir.join(format!("{who}.key")), key_pem)?;
    // HAProxy wants the chain and the key in one file.
    write_secret(
        dir.join(format!("{who}.pem")),
        &format!("{chain_pem}{key_pem}"),
    )?;
    Ok(())
}
