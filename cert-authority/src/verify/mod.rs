//! rustls verifiers that authenticate peers by SPIFFE ID.
//!
//! Both verifiers compose the same way: standard chain verification first (webpki against
//! the trust bundle's roots: signatures, validity period, EKU, CA constraints), then the
//! X.509-SVID rules and the identity checks ([`check_peer`]), then the revocation hook.
//!
//! A chain that verified once is remembered by exact bytes ([`VerifiedChains`]): the
//! peer's next handshake skips the chain's signature checks, but never the validity
//! window, the revocation hook or the peer's proof of key possession.
//!
//! - [`SpiffeClientVerifier`] (servers use it): a client certificate is *required*; any
//!   identity in the bundle's trust domain is accepted — *which* identities may do what is
//!   policy, decided per request after the handshake.
//! - [`SpiffeServerVerifier`] (clients use it): the server must present one of an expected
//!   set of SPIFFE IDs (those the controller says serve the destination). The TLS server
//!   name is not used: SPIFFE identity replaces host-name verification.

use std::{collections::BTreeSet, fmt, sync::Arc};

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{
        CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
    },
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

mod cache;

pub use cache::VerifiedChains;

use crate::{
    bundle::TrustBundle,
    spiffe::{SpiffeId, TrustDomain},
    svid::{self, SvidError, SvidInfo},
};

/// Decides whether a verified peer has been revoked (quarantine, compromised key).
///
/// Consulted on every handshake, after the chain and SVID checks pass.
pub trait Revocation: fmt::Debug + Send + Sync {
    /// True if this peer must be refused.
    fn is_revoked(&self, peer: &SvidInfo) -> bool;
}

/// Revokes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRevocation;

impl Revocation for NoRevocation {
    fn is_revoked(&self, _: &SvidInfo) -> bool {
        false
    }
}

/// Why a peer's SVID was refused after its chain verified. Carried inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The leaf breaks the X.509-SVID rules.
    #[error("peer certificate is not a valid X.509-SVID: {0}")]
    Svid(#[from] SvidError),
    /// The peer's ID is in another trust domain than the bundle's.
    #[error("peer identity {id} is not in trust domain {expected}")]
    ForeignTrustDomain {
        /// The peer's identity.
        id: SpiffeId,
        /// The bundle's trust domain.
        expected: TrustDomain,
    },
    /// The server is not one of the identities expected for this destination.
    #[error("server identity {id} is not one of the identities expected for this destination")]
    UnexpectedIdentity {
        /// The server's identity.
        id: SpiffeId,
    },
}

/// Why a verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// webpki refused the root set.
    #[error("cannot build a verifier from the trust bundle: {0}")]
    Build(String),
    /// The expected identity set is empty, so the verifier would accept no one.
    #[error("a server verifier needs at least one expected SPIFFE ID")]
    NoExpectedIdentities,
}

/// Verifies client SVIDs from one trust bundle; requires them unless built with
/// [`SpiffeClientVerifier::optional`].
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
    revocation: Arc<dyn Revocation>,
    mandatory: bool,
    chains: VerifiedChains,
}

/// Verifies that a server presents one of an expected set of SPIFFE IDs.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<rustls::RootCertStore>,
    trust_domain: TrustDomain,
    expected: BTreeSet<SpiffeId>,
    algs: WebPkiSupportedAlgorithms,
    revocation: Arc<dyn Revocation>,
    chains: VerifiedChains,
}

/// Checks a chain-verified leaf against the SVID rules, the trust domain and revocation.
/// The one identity check both verifiers share.
pub fn check_peer(
    end_entity: &CertificateDer<'_>,
    trust_domain: &TrustDomain,
    revocation: &dyn Revocation,
) -> Result<SvidInfo, Error> {
    let info = svid::inspect_leaf(end_entity).map_err(|e| other(PeerError::Svid(e)))?;
    if info.id.trust_domain_name() != trust_domain.as_str() {
        return Err(other(PeerError::ForeignTrustDomain {
            id: info.id,
            expected: trust_domain.clone(),
        }));
    }
    not_revoked(&info, revocation)?;
    Ok(info)
}

/// The part of [`check_peer`] that is never cached: the revocation hook.
fn not_revoked(info: &SvidInfo, revocation: &dyn Revocation) -> Result<(), Error> {
    match revocation.is_revoked(info) {
        true => Err(Error::InvalidCertificate(CertificateError::Revoked)),
        false => Ok(()),
    }
}

fn other(e: PeerError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

// === impl SpiffeClientVerifier ===

impl SpiffeClientVerifier {
    /// A verifier that requires a client SVID chaining to `bundle`.
    pub fn new(
        bundle: &TrustBundle,
        provider: Arc<CryptoProvider>,
        revocation: Arc<dyn Revocation>,
    ) -> Result<Self, VerifierError> {
        let inner =
            WebPkiClientVerifier::builder_with_provider(Arc::new(bundle.root_store()), provider)
                .build()
                .map_err(|e| VerifierError::Build(e.to_string()))?;
        Ok(Self {
            inner,
            trust_domain: bundle.trust_domain().clone(),
            revocation,
            mandatory: true,
            chains: VerifiedChains::default(),
        })
    }

    /// Like [`Self::new`], but a client may also connect *without* a certificate (the
    /// controller's API, where a proxy's first call comes before it has an SVID). A
    /// certificate that is presented is verified exactly as strictly.
    pub fn optional(
        bundle: &TrustBundle,
        provider: Arc<CryptoProvider>,
        revocation: Arc<dyn Revocation>,
    ) -> Result<Self, VerifierError> {
        Ok(Self {
            mandatory: false,
            ..Self::new(bundle, provider, revocation)?
        })
    }

    /// The chains this verifier has verified and remembers.
    pub fn verified_chains(&self) -> &VerifiedChains {
        &self.chains
    }

    /// The SVID of the client of an established connection (`chain` is its
    /// `peer_certificates()`), checked again as of `now`. A resumed session skipped
    /// [`ClientCertVerifier::verify_client_cert`], so this is where its peer's validity and
    /// revocation are checked; after a full handshake it is a cache hit that reads the
    /// SVID without parsing the certificate again.
    pub fn established_peer(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SvidInfo, Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(Error::NoCertificatesPresented)?;
        self.verified(leaf, intermediates, now, SvidInfo::clone)
    }

    /// Verifies a chain (from the cache when it verified before), checks revocation,
    /// then reads the result from its SVID with `read`.
    fn verified<R>(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        read: impl Fn(&SvidInfo) -> R,
    ) -> Result<R, Error> {
        let revocation = self.revocation.as_ref();
        self.chains.verify_with(
            end_entity,
            intermediates,
            now,
            || {
                self.inner
                    .verify_client_cert(end_entity, intermediates, now)?;
                check_peer(end_entity, &self.trust_domain, &NoRevocation)
            },
            |info| not_revoked(info, revocation).map(|()| read(info)),
        )
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Mesh peers know which certificate to send; no need to list our roots.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.verified(end_entity, intermediates, now, |_| {
            ClientCertVerified::assertion()
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// === impl SpiffeServerVerifier ===

impl SpiffeServerVerifier {
    /// A verifier accepting servers whose SVID chains to `bundle` and names one of `expected`.
    pub fn new(
        bundle: &TrustBundle,
        expected: impl IntoIterator<Item = SpiffeId>,
        provider: &CryptoProvider,
        revocation: Arc<dyn Revocation>,
    ) -> Result<Self, VerifierError> {
        let expected: BTreeSet<_> = expected.into_iter().collect();
        if expected.is_empty() {
            return Err(VerifierError::NoExpectedIdentities);
        }
        Ok(Self {
            roots: Arc::new(bundle.root_store()),
            trust_domain: bundle.trust_domain().clone(),
            expected,
            algs: provider.signature_verification_algorithms,
            revocation,
            chains: VerifiedChains::default(),
        })
    }

    /// The identities this verifier accepts.
    pub fn expected(&self) -> &BTreeSet<SpiffeId> {
        &self.expected
    }

    /// The chains this verifier has verified and remembers.
    pub fn verified_chains(&self) -> &VerifiedChains {
        &self.chains
    }

    /// The SVID of the server of an established connection (`chain` is its
    /// `peer_certificates()`), checked again as of `now`: see
    /// [`SpiffeClientVerifier::established_peer`].
    pub fn established_peer(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SvidInfo, Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(Error::NoCertificatesPresented)?;
        self.verified(leaf, intermediates, now, SvidInfo::clone)
    }

    /// Verifies a chain (from the cache when it verified before), checks the identity
    /// and revocation, then reads the result from its SVID with `read`.
    fn verified<R>(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        read: impl Fn(&SvidInfo) -> R,
    ) -> Result<R, Error> {
        self.chains.verify_with(
            end_entity,
            intermediates,
            now,
            || {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &parsed,
                    &self.roots,
                    intermediates,
                    now,
                    self.algs.all,
                )?;
                check_peer(end_entity, &self.trust_domain, &NoRevocation)
            },
            |info| self.admit(info).map(|()| read(info)),
        )
    }

    /// The checks a verified chain's SVID must pass on every handshake.
    fn admit(&self, info: &SvidInfo) -> Result<(), Error> {
        not_revoked(info, self.revocation.as_ref())?;
        if !self.expected.contains(&info.id) {
            return Err(other(PeerError::UnexpectedIdentity {
                id: info.id.clone(),
            }));
        }
        Ok(())
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.verified(end_entity, intermediates, now, |_| {
            ServerCertVerified::assertion()
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
