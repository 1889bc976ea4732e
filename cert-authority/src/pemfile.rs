//! PEM encoding and decoding for certificates and keys (the `pem` crate, one way for all).

use rcgen::KeyPair;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM text could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// The text is not PEM.
    #[error("not valid PEM: {0}")]
    Syntax(String),
    /// No block of the wanted kind.
    #[error("no {0} block found in PEM input")]
    Missing(&'static str),
    /// A private key block that cannot be used.
    #[error("private key is not a supported ECDSA key (PKCS#8 or SEC1): {0}")]
    BadKey(String),
}

const CERTIFICATE: &str = "CERTIFICATE";

/// Encodes certificates as consecutive `CERTIFICATE` blocks.
pub fn encode_certs<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    let blocks: Vec<pem::Pem> = certs
        .into_iter()
        .map(|c| pem::Pem::new(CERTIFICATE, c.as_ref().to_vec()))
        .collect();
    pem::encode_many(&blocks)
}

/// Decodes every `CERTIFICATE` block, in order. Other blocks are ignored; none at all is
/// an error.
pub fn decode_certs(text: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<_> = pem::parse_many(text)
        .map_err(|e| PemError::Syntax(e.to_string()))?
        .into_iter()
        .filter(|p| p.tag() == CERTIFICATE)
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(PemError::Missing(CERTIFICATE));
    }
    Ok(certs)
}

/// Decodes the first private key block (`PRIVATE KEY` or `EC PRIVATE KEY`) as a signing
/// key pair. Blocks such as `EC PARAMETERS` before it are skipped.
pub fn decode_key_pair(text: &str) -> Result<KeyPair, PemError> {
    let block = first_key_block(text)?;
    KeyPair::try_from(block.contents()).map_err(|e| PemError::BadKey(e.to_string()))
}

/// Decodes the first private key block for use with rustls.
pub fn decode_private_key(text: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    let block = first_key_block(text)?;
    let der = block.into_contents();
    match PrivateKeyDer::try_from(der) {
        Ok(key) => Ok(key),
        Err(e) => Err(PemError::BadKey(e.to_owned())),
    }
}

fn first_key_block(text: &str) -> Result<pem::Pem, PemError> {
    pem::parse_many(text)
        .map_err(|e| PemError::Syntax(e.to_string()))?
        .into_iter()
        .find(|p| p.tag().ends_with("PRIVATE KEY"))
        .ok_or(PemError::Missing("PRIVATE KEY"))
}
