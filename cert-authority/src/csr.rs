//! Certificate signing requests: the only thing the CA takes from a CSR is its public key.
//!
//! The CA verifies that the requester holds the private key (the CSR's self-signature) and
//! that the key is ECDSA P-256; everything else in the CSR — subject, SANs, requested
//! extensions — is ignored, because the identity written into the SVID is the one the
//! caller *authenticated*, never the one it *claims*.

use rcgen::{PKCS_ECDSA_P256_SHA256, SubjectPublicKeyInfo};
use x509_parser::{certification_request::X509CertificationRequest, prelude::FromDer};

/// Why a CSR is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Not a DER PKCS#10 request.
    #[error("CSR is not a DER-encoded PKCS#10 certification request: {0}")]
    Malformed(String),
    /// Bytes after the request.
    #[error("CSR has trailing data after the DER structure")]
    TrailingData,
    /// The self-signature does not verify with the CSR's own public key.
    #[error("CSR signature does not verify against its public key (proof of possession failed)")]
    BadSignature,
    /// Not an ECDSA P-256 key.
    #[error("CSR key must be ECDSA P-256; got {0}")]
    UnsupportedKey(String),
}

/// Verifies a CSR's proof of possession and returns its P-256 public key.
pub fn public_key(der: &[u8]) -> Result<SubjectPublicKeyInfo, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData);
    }
    let spki = &csr.certification_request_info.subject_pki;
    let key = SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| {
        CsrError::UnsupportedKey(format!("key algorithm {}", spki.algorithm.algorithm))
    })?;
    if rcgen::PublicKeyData::algorithm(&key) != &PKCS_ECDSA_P256_SHA256 {
        return Err(CsrError::UnsupportedKey(format!(
            "{:?}",
            rcgen::PublicKeyData::algorithm(&key)
        )));
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    Ok(key)
}
