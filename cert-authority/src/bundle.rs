//! Trust bundles: the set of root certificates a trust domain's SVIDs chain to.
//!
//! A bundle holds several roots during a root rotation (old and new), so SVIDs from either
//! verify until the old root is retired. It exports as PEM and as a [SPIFFE bundle]
//! (a JWK set with `use: "x509-svid"` keys), and builds the rustls root store the
//! verifiers use.
//!
//! [SPIFFE bundle]: https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Trust_Domain_and_Bundle.md

use base64::{Engine, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use x509_parser::{oid_registry, public_key::PublicKey};

use crate::{pemfile, spiffe::TrustDomain, svid};

/// The roots of one trust domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
    /// Increases whenever the root set changes (SPIFFE `spiffe_sequence`).
    sequence: u64,
}

/// Why a bundle cannot be built or exported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// No roots at all: such a bundle would trust nothing and is surely a mistake.
    #[error("trust bundle has no root certificates")]
    Empty,
    /// A root is not a CA certificate, or cannot be parsed.
    #[error("trust bundle root #{index} is unusable: {source}")]
    BadRoot {
        /// Position in the bundle.
        index: usize,
        /// What is wrong with it.
        source: svid::SvidError,
    },
    /// A root carries a trust-domain ID of another trust domain.
    #[error("trust bundle root #{index} belongs to trust domain {found}, not {expected}")]
    ForeignRoot {
        /// Position in the bundle.
        index: usize,
        /// The bundle's trust domain.
        expected: String,
        /// The root's trust domain.
        found: String,
    },
    /// The PEM input is unreadable.
    #[error(transparent)]
    Pem(#[from] pemfile::PemError),
    /// A root key type that a JWK cannot express here.
    #[error(
        "root #{0} has a public key type that cannot be exported as a JWK (only EC P-256/P-384)"
    )]
    UnsupportedKey(usize),
}

impl TrustBundle {
    /// Builds a bundle, checking every root is a CA certificate of this trust domain.
    pub fn new(
        trust_domain: TrustDomain,
        roots: Vec<CertificateDer<'static>>,
        sequence: u64,
    ) -> Result<Self, BundleError> {
        if roots.is_empty() {
            return Err(BundleError::Empty);
        }
        for (index, root) in roots.iter().enumerate() {
            let info =
                svid::inspect_ca(root).map_err(|source| BundleError::BadRoot { index, source })?;
            if let Some(id) = info.trust_domain_id
                && id.trust_domain_name() != trust_domain.as_str()
            {
                return Err(BundleError::ForeignRoot {
                    index,
                    expected: trust_domain.to_string(),
                    found: id.trust_domain_name().to_owned(),
                });
            }
        }
        Ok(Self {
            trust_domain,
            roots,
            sequence,
        })
    }

    /// Reads a bundle from PEM (one or more `CERTIFICATE` blocks).
    pub fn from_pem(trust_domain: TrustDomain, pem: &str) -> Result<Self, BundleError> {
        Self::new(trust_domain, pemfile::decode_certs(pem)?, 0)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The roots, newest last.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The bundle sequence number.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The roots as PEM.
    pub fn to_pem(&self) -> String {
        pemfile::encode_certs(&self.roots)
    }

    /// A rustls root store holding exactly these roots.
    pub fn root_store(&self) -> RootCertStore {
        let mut store = RootCertStore::empty();
        // Every root was parsed in `new`; webpki's own parser accepts all of them.
        let (_added, _ignored) = store.add_parsable_certificates(self.roots.iter().cloned());
        store
    }

    /// The bundle in SPIFFE bundle format (JWKS), pretty-printed JSON.
    ///
    /// `refresh_hint` is the number of seconds after which consumers should re-fetch.
    pub fn to_spiffe_json(&self, refresh_hint_secs: u64) -> Result<String, BundleError> {
        let keys = self
            .roots
            .iter()
            .enumerate()
            .map(|(i, der)| jwk(i, der))
            .collect::<Result<Vec<_>, _>>()?;
        let doc = serde_json::json!({
            "keys": keys,
            "spiffe_sequence": self.sequence,
            "spiffe_refresh_hint": refresh_hint_secs,
        });
        // Serialising a `Value` cannot fail.
        Ok(serde_json::to_string_pretty(&doc).unwrap_or_default())
    }
}

fn jwk(index: usize, der: &CertificateDer<'_>) -> Result<serde_json::Value, BundleError> {
    let cert = svid::parse(der).map_err(|source| BundleError::BadRoot { index, source })?;
    let spki = cert.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let crv = match curve {
        Some(oid) if oid == oid_registry::OID_EC_P256 => "P-256",
        Some(oid) if oid == oid_registry::OID_NIST_EC_P384 => "P-384",
        _ => return Err(BundleError::UnsupportedKey(index)),
    };
    let point = match spki.parsed() {
        Ok(PublicKey::EC(point)) => point.data().to_vec(),
        _ => return Err(BundleError::UnsupportedKey(index)),
    };
    // Uncompressed point: 0x04 || X || Y.
    if point.first() != Some(&0x04) || point.len() % 2 != 1 {
        return Err(BundleError::UnsupportedKey(index));
    }
    let (x, y) = point[1..].split_at((point.len() - 1) / 2);
    Ok(serde_json::json!({
        "use": "x509-svid",
        "kty": "EC",
        "crv": crv,
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
        "x5c": [STANDARD.encode(der.as_ref())],
    }))
}
