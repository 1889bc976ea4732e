//! A workload's identity material and the store that publishes it.
//!
//! [`Credentials`] are an SVID chain, its private key and the trust bundle, checked to
//! belong together. [`CredentialStore`] validates new credentials *before* publishing them
//! on a `tokio::sync::watch` channel, so a bad renewal (wrong identity, key mismatch, chain
//! that does not verify, expired) never replaces the last good certificate: listeners see
//! only credentials that passed every check.

use std::{sync::Arc, time::SystemTime};

use rustls::{crypto::CryptoProvider, server::ParsedCertificate, sign::CertifiedKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::sync::watch;

use crate::{
    bundle::TrustBundle,
    spiffe::SpiffeId,
    svid::{self, SvidInfo},
    verify::{NoRevocation, check_peer},
};

/// A validated SVID with its key and the bundle to verify peers against.
#[derive(Debug)]
pub struct Credentials {
    /// What the leaf says (identity, serial, validity).
    pub info: SvidInfo,
    /// Leaf, intermediates and key in the form rustls signs with.
    pub certified: Arc<CertifiedKey>,
    /// Roots for verifying peers.
    pub bundle: TrustBundle,
}

/// Why credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    /// No certificates.
    #[error("SVID chain is empty")]
    EmptyChain,
    /// The leaf is not an SVID.
    #[error(transparent)]
    Svid(#[from] svid::SvidError),
    /// The SVID names another workload.
    #[error("SVID is for {found}, but this workload is {expected}")]
    WrongIdentity {
        /// The identity this store serves.
        expected: SpiffeId,
        /// The identity in the certificate.
        found: SpiffeId,
    },
    /// The key, the chain, or the validity is wrong.
    #[error("SVID rejected: {0}")]
    Invalid(#[from] rustls::Error),
}

impl Credentials {
    /// Checks and assembles credentials: the leaf is an SVID for `expected`, the key is
    /// the leaf's, and the chain verifies against `bundle` at `now`.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundle: TrustBundle,
        expected: &SpiffeId,
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<Self, CredsError> {
        let (leaf, intermediates) = chain.split_first().ok_or(CredsError::EmptyChain)?;
        let info = svid::inspect_leaf(leaf)?;
        if &info.id != expected {
            return Err(CredsError::WrongIdentity {
                expected: expected.clone(),
                found: info.id,
            });
        }
        let parsed = ParsedCertificate::try_from(leaf)?;
        let now = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &bundle.root_store(),
            intermediates,
            now,
            provider.signature_verification_algorithms.all,
        )?;
        check_peer(leaf, bundle.trust_domain(), &NoRevocation)?;
        let signing_key = provider.key_provider.load_private_key(key)?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified.keys_match()?;
        Ok(Self {
            info,
            certified: Arc::new(certified),
            bundle,
        })
    }
}

/// Publishes the current credentials of one workload identity.
#[derive(Debug)]
pub struct CredentialStore {
    id: SpiffeId,
    tx: watch::Sender<Option<Arc<Credentials>>>,
}

impl CredentialStore {
    /// An empty store for the workload `id`.
    pub fn new(id: SpiffeId) -> Self {
        Self {
            id,
            tx: watch::Sender::new(None),
        }
    }

    /// The identity this store holds credentials for.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Validates and publishes new credentials. On error the previous credentials stay
    /// current and nothing is sent to subscribers.
    pub fn publish(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundle: TrustBundle,
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<Arc<Credentials>, CredsError> {
        let creds = Arc::new(Credentials::new(
            chain, key, bundle, &self.id, provider, now,
        )?);
        self.tx.send_replace(Some(creds.clone()));
        Ok(creds)
    }

    /// The current credentials, if any were ever published.
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every published credential set.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Credentials>>> {
        self.tx.subscribe()
    }
}
