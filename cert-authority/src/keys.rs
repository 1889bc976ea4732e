//! Key generation and the small key/certificate helpers the CA needs.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rcgen::{KeyPair, PublicKeyData, SerialNumber};
use x509_parser::certificate::X509Certificate;

/// The elliptic curve of a CA key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA over P-256 with SHA-256 (default; what every SVID uses).
    #[default]
    P256,
    /// ECDSA over P-384 with SHA-384 (a root may use it).
    P384,
}

impl KeyAlgorithm {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }

    /// Which algorithm a key pair uses, if it is one the CA accepts.
    pub(crate) fn of(key: &KeyPair) -> Option<Self> {
        [Self::P256, Self::P384]
            .into_iter()
            .find(|a| key.algorithm() == a.rcgen())
    }

    /// Generates a fresh key pair.
    pub(crate) fn generate(self) -> Result<KeyPair, rcgen::Error> {
        KeyPair::generate_for(self.rcgen())
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" => Ok(Self::P256),
            "p384" | "p-384" => Ok(Self::P384),
            other => Err(format!("unknown key algorithm {other:?}; use p256 or p384")),
        }
    }
}

/// True if `key` is the private half of the certificate's public key.
pub(crate) fn matches_cert(key: &KeyPair, cert: &X509Certificate<'_>) -> bool {
    key.der_bytes() == cert.public_key().subject_public_key.data.as_ref()
}

/// A random, positive 128-bit serial number (RFC 5280 allows up to 20 octets).
pub(crate) fn random_serial() -> SerialNumber {
    SerialNumber::from_slice(&random_bytes::<16>(true))
}

/// `N` random bytes from the OS CSPRNG. With `positive`, the top bit is cleared so the
/// bytes read as a positive DER INTEGER and are never shortened by encoding.
pub fn random_bytes<const N: usize>(positive: bool) -> [u8; N] {
    let mut out = [0u8; N];
    // The system RNG failing is unrecoverable for a CA; aws-lc aborts in that case anyway.
    #[allow(clippy::expect_used)]
    SystemRandom::new()
        .fill(&mut out)
        .expect("system random number generator failed");
    if positive {
        out[0] &= 0x7f;
        out[0] |= 0x40; // keep the first byte non-zero so the serial keeps its full length
    }
    out
}
