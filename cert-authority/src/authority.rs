//! The certificate authority: a persistent root -> issuer hierarchy that signs SVIDs.
//!
//! [`CertificateAuthority`] owns the in-memory CA loaded from a state directory
//! ([`crate::state`]), decides what may be signed (trust domain, TTL policy, issuer
//! expiry) and, in [`rotate`], when issuers and roots change. It only ever *loads* a CA
//! with [`CertificateAuthority::open`]; creating one is the explicit
//! [`CertificateAuthority::init`], which refuses to touch a directory that has state.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use rustls_pki_types::CertificateDer;

use crate::{
    bundle::TrustBundle,
    csr::{self, CsrError},
    issuer,
    keys::KeyAlgorithm,
    pemfile,
    spiffe::{SpiffeId, SpiffeIdError, TrustDomain},
    state::{StateDir, StateError},
    token::TokenKey,
    ttl::{TtlError, TtlPolicy},
};

mod load;
mod rotate;

pub use rotate::{ISSUER_ROTATION_POINT, Maintenance};

/// Default lifetime of a generated root.
pub const DEFAULT_ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Default lifetime of an issuer; it is replaced before half life, so a fresh one always
/// outlives the longest SVID (24 h) many times over.
pub const DEFAULT_ISSUER_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A loaded certificate authority.
#[derive(Debug)]
pub struct CertificateAuthority {
    dir: StateDir,
    ttl: TtlPolicy,
    state: load::Loaded,
}

/// Where the root of a new CA comes from.
#[derive(Clone, Debug)]
pub enum RootSource {
    /// Generate a root key and self-signed certificate.
    Generate(KeyAlgorithm),
    /// Use an operator-supplied root (PEM certificate and private key).
    Supplied {
        /// The root certificate, PEM.
        cert_pem: String,
        /// Its private key, PEM (PKCS#8 or SEC1).
        key_pem: String,
    },
}

/// Settings for [`CertificateAuthority::init`].
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The trust domain every SVID belongs to.
    pub trust_domain: TrustDomain,
    /// The root.
    pub root: RootSource,
    /// Lifetime of generated roots.
    pub root_ttl: Duration,
    /// Lifetime of issuers.
    pub issuer_ttl: Duration,
}

impl InitOptions {
    /// Defaults: generated P-256 root for 10 years, 7-day issuers.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            root: RootSource::Generate(KeyAlgorithm::P256),
            root_ttl: DEFAULT_ROOT_TTL,
            issuer_ttl: DEFAULT_ISSUER_TTL,
        }
    }
}

/// A signed SVID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedSvid {
    /// The identity written into the certificate.
    pub id: SpiffeId,
    /// The leaf certificate.
    pub leaf: CertificateDer<'static>,
    /// The intermediates from the leaf's issuer up to (not including) the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity (never after the issuer's).
    pub not_after: SystemTime,
    /// The serial number.
    pub serial: Vec<u8>,
}

/// Why the CA cannot be initialised, loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A problem with the state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// An operator-supplied root is unusable.
    #[error("the supplied root cannot be used: {0}")]
    BadRoot(String),
    /// Key generation or signing failed.
    #[error("certificate generation failed: {0}")]
    Crypto(#[from] rcgen::Error),
}

/// Why a CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CSR is unacceptable.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The identity is not a workload ID.
    #[error(transparent)]
    Identity(#[from] SpiffeIdError),
    /// The identity belongs to another trust domain.
    #[error("identity {id} is not in this CA's trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The requested identity.
        id: SpiffeId,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },
    /// TTL out of bounds.
    #[error(transparent)]
    Ttl(#[from] TtlError),
    /// The issuer has expired; the CA needs maintenance (issuer rotation).
    #[error(
        "the issuer certificate is not valid now; run `vigil ca rotate` or restart the controller"
    )]
    IssuerNotValid,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

// === impl CertificateAuthority ===

impl CertificateAuthority {
    /// Creates a new CA in `dir` (created with mode 0700 if absent). Refuses if `dir`
    /// already holds any CA state.
    pub fn init(
        dir: &Path,
        opts: InitOptions,
        ttl: TtlPolicy,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let dir = StateDir::new(dir);
        dir.create()?;
        let _lock = dir.lock(true)?;
        if dir.has_any_state()? {
            return Err(StateError::AlreadyInitialized(dir.path().to_owned()).into());
        }
        let root = match &opts.root {
            RootSource::Generate(alg) => {
                issuer::new_root(&opts.trust_domain, *alg, now, opts.root_ttl)?
            }
            RootSource::Supplied { cert_pem, key_pem } => {
                load::supplied_root(&opts.trust_domain, cert_pem, key_pem, now)?
            }
        };
        let state = load::Loaded::create(&dir, &opts, root, now)?;
        Ok(Self { dir, ttl, state })
    }

    /// Loads the CA from `dir`. Never creates or repairs anything.
    pub fn open(dir: &Path, ttl: TtlPolicy) -> Result<Self, CaError> {
        let dir = StateDir::new(dir);
        if !dir.has_any_state()? {
            return Err(StateError::NotInitialized(dir.path().to_owned()).into());
        }
        let _lock = dir.lock(false)?;
        let state = load::Loaded::read(&dir)?;
        Ok(Self { dir, ttl, state })
    }

    /// Re-reads the state directory (after another process rotated). Keeps the current
    /// state if the directory is now invalid.
    pub fn reload(&mut self) -> Result<(), CaError> {
        let _lock = self.dir.lock(false)?;
        self.state = load::Loaded::read(&self.dir)?;
        Ok(())
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.state.trust_domain
    }

    /// The TTL policy in force.
    pub fn ttl_policy(&self) -> &TtlPolicy {
        &self.ttl
    }

    /// The current trust bundle (active root plus any retiring roots).
    pub fn bundle(&self) -> TrustBundle {
        self.state.bundle.clone()
    }

    /// The bootstrap-token key.
    pub fn token_key(&self) -> &TokenKey {
        &self.state.token_key
    }

    /// The current issuer certificate.
    pub fn issuer_cert(&self) -> &CertificateDer<'static> {
        &self.state.issuer.cert
    }

    /// When the current issuer expires.
    pub fn issuer_not_after(&self) -> SystemTime {
        self.state.issuer.not_after
    }

    /// Signs an SVID for `id` now. See [`Self::issue_at`].
    pub fn issue(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<IssuedSvid, IssueError> {
        self.issue_at(csr_der, id, ttl, SystemTime::now())
    }

    /// Signs an SVID for the *authenticated* identity `id` over the CSR's public key.
    ///
    /// Everything the CSR claims besides its key is ignored. The leaf is valid from
    /// `now - 1 min` for the resolved TTL, cut short so it never outlives the issuer.
    pub fn issue_at(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<IssuedSvid, IssueError> {
        let id = id.clone().require_workload()?;
        if id.trust_domain_name() != self.state.trust_domain.as_str() {
            return Err(IssueError::ForeignTrustDomain {
                id,
                trust_domain: self.state.trust_domain.clone(),
            });
        }
        let ttl = self.ttl.resolve(ttl)?;
        let public_key = csr::public_key(csr_der)?;
        let issuer = &self.state.issuer;
        if now < issuer.not_before || now >= issuer.not_after {
            return Err(IssueError::IssuerNotValid);
        }
        let (not_before, not_after) = issuer::window(now, ttl, Some(issuer.not_after));
        let (leaf, serial) = issuer::sign_leaf(issuer, &public_key, &id, not_before, not_after)?;
        Ok(IssuedSvid {
            id,
            leaf,
            chain: vec![issuer.cert.clone()],
            not_before,
            not_after,
            serial,
        })
    }
}

impl CertificateAuthority {
    /// Signs a TLS server certificate for DNS names / IP addresses over a new key (the
    /// controller's admission webhook; the apiserver trusts it through the root bundle).
    /// Returns the chain (leaf, issuer) and the key, PEM. `names` must not be empty.
    pub fn issue_server_cert(
        &self,
        names: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(Vec<CertificateDer<'static>>, String), IssueError> {
        if names.is_empty() {
            return Err(IssueError::Sign(rcgen::Error::CouldNotParseCertificate));
        }
        let issuer = &self.state.issuer;
        if now < issuer.not_before || now >= issuer.not_after {
            return Err(IssueError::IssuerNotValid);
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let (not_before, not_after) = issuer::window(now, ttl, Some(issuer.not_after));
        let leaf = issuer::sign_server(issuer, &key, names, not_before, not_after)?;
        Ok((vec![leaf, issuer.cert.clone()], key.serialize_pem()))
    }
}

// === impl IssuedSvid ===

impl IssuedSvid {
    /// Leaf followed by the chain, as PEM (what `svid.pem` holds).
    pub fn to_pem(&self) -> String {
        pemfile::encode_certs(std::iter::once(&self.leaf).chain(&self.chain))
    }

    /// Leaf followed by the chain, for rustls.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        std::iter::once(self.leaf.clone())
            .chain(self.chain.iter().cloned())
            .collect()
    }
}
