//! Reading X.509 certificates as SPIFFE SVIDs.
//!
//! [`uri_sans`] is the *only* place in Vigil that extracts subject alternative names from a
//! certificate; every verifier and the CA go through [`inspect_leaf`] or [`inspect_ca`].
//! The checks here are the [X.509-SVID] rules for a leaf, beyond what chain validation
//! (webpki) already enforces:
//!
//! - exactly one URI SAN, and it is a SPIFFE ID with a path;
//! - `basicConstraints` is absent or `cA: false`;
//! - a critical `keyUsage` with `digitalSignature` and without `keyCertSign` / `cRLSign`.
//!
//! [X.509-SVID]: https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// What a valid leaf SVID says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvidInfo {
    /// The workload identity (the single URI SAN).
    pub id: SpiffeId,
    /// The certificate serial number, big-endian bytes as encoded.
    pub serial: Vec<u8>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// Why a certificate is not an acceptable SVID (or CA certificate).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// Not DER X.509 at all.
    #[error("certificate cannot be parsed: {0}")]
    Parse(String),
    /// Bytes after the certificate.
    #[error("certificate has trailing data after the DER structure")]
    TrailingData,
    /// No URI SAN, so no SPIFFE ID.
    #[error("certificate has no URI SAN, so it carries no SPIFFE ID")]
    NoUriSan,
    /// More than one URI SAN: an X.509-SVID has exactly one.
    #[error("certificate has {0} URI SANs; an X.509-SVID has exactly one")]
    MultipleUriSans(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("certificate URI SAN is not a valid SPIFFE ID: {0}")]
    BadSpiffeId(#[from] SpiffeIdError),
    /// Leaf certificate is a CA.
    #[error("leaf certificate has basicConstraints cA:true; a CA certificate cannot be an SVID")]
    LeafIsCa,
    /// Leaf lacks keyUsage or digitalSignature.
    #[error("leaf certificate lacks a critical keyUsage with digitalSignature")]
    MissingDigitalSignature,
    /// Leaf may sign certificates or CRLs.
    #[error("leaf certificate has keyCertSign or cRLSign key usage")]
    LeafCanSign,
    /// CA certificate without cA:true.
    #[error("certificate is not a CA (basicConstraints cA:true is missing)")]
    NotCa,
    /// A duplicated or malformed extension.
    #[error("certificate has a duplicated or malformed extension: {0}")]
    BadExtension(String),
}

/// What a CA certificate (root or issuer) says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCertInfo {
    /// The trust-domain SPIFFE ID in the certificate, if it has one (Vigil's always do;
    /// user-supplied roots may not).
    pub trust_domain_id: Option<SpiffeId>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// Parses a DER certificate, rejecting trailing bytes.
pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, SvidError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| SvidError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SvidError::TrailingData);
    }
    Ok(cert)
}

/// The URI SANs of a certificate. The one SAN extraction function in Vigil.
pub(crate) fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, SvidError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::BadExtension(e.to_string()))?;
    Ok(san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Checks a leaf certificate against the X.509-SVID rules and returns its identity.
///
/// Chain, signature and validity period are *not* checked here (the verifiers run webpki
/// for that first); this is the SPIFFE-specific part.
pub fn inspect_leaf(der: &[u8]) -> Result<SvidInfo, SvidError> {
    let cert = parse(der)?;
    let id = single_spiffe_id(&cert)?.require_workload()?;

    let bc = cert
        .basic_constraints()
        .map_err(|e| SvidError::BadExtension(e.to_string()))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::LeafIsCa);
    }
    let ku = cert
        .key_usage()
        .map_err(|e| SvidError::BadExtension(e.to_string()))?
        .ok_or(SvidError::MissingDigitalSignature)?;
    if !ku.critical || !ku.value.digital_signature() {
        return Err(SvidError::MissingDigitalSignature);
    }
    if ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(SvidError::LeafCanSign);
    }

    Ok(SvidInfo {
        id,
        serial: cert.raw_serial().to_vec(),
        not_before: to_system_time(cert.validity().not_before.timestamp()),
        not_after: to_system_time(cert.validity().not_after.timestamp()),
    })
}

/// Checks that a certificate is a CA certificate and reads its trust-domain ID, if any.
pub fn inspect_ca(der: &[u8]) -> Result<CaCertInfo, SvidError> {
    let cert = parse(der)?;
    if !cert.is_ca() {
        return Err(SvidError::NotCa);
    }
    let trust_domain_id = match uri_sans(&cert)?.as_slice() {
        [] => None,
        [uri] => Some(SpiffeId::parse(uri)?),
        many => return Err(SvidError::MultipleUriSans(many.len())),
    };
    Ok(CaCertInfo {
        trust_domain_id,
        not_before: to_system_time(cert.validity().not_before.timestamp()),
        not_after: to_system_time(cert.validity().not_after.timestamp()),
    })
}

fn single_spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    match uri_sans(cert)?.as_slice() {
        [] => Err(SvidError::NoUriSan),
        [uri] => Ok(SpiffeId::parse(uri)?),
        many => Err(SvidError::MultipleUriSans(many.len())),
    }
}

/// Seconds since the epoch (as X.509 encodes them) to `SystemTime`; pre-1970 clamps to 0.
pub(crate) fn to_system_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}
