//! Certificate templates and signing: roots, issuers (intermediates) and leaf SVIDs.
//!
//! ```text
//!   root  (self-signed, cA, pathlen 1, URI SAN spiffe://<td>, ~10 years)
//!    └── issuer (cA, pathlen 0, URI SAN spiffe://<td>, days; rotated before half life)
//!         └── leaf SVID (not cA, URI SAN = the authenticated identity, 5 min .. 24 h)
//! ```
//!
//! This module knows nothing of files or policy; [`crate::authority`] decides *when* and
//! *for whom* to sign, this module decides *what* a certificate looks like.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::{keys, spiffe::SpiffeId, spiffe::TrustDomain};

/// Clock skew allowance: every certificate starts this long before "now".
pub const BACKDATE: Duration = Duration::from_secs(60);

/// A CA certificate together with its signing key.
pub struct SigningCa {
    /// The CA certificate (DER).
    pub cert: CertificateDer<'static>,
    /// The CA's signing key with the subject/key-id data needed to sign (parsed once).
    pub signer: Issuer<'static, KeyPair>,
    /// End of the CA certificate's validity (nothing it signs may outlive it).
    pub not_after: SystemTime,
    /// Start of the CA certificate's validity.
    pub not_before: SystemTime,
}

impl SigningCa {
    /// Pairs a CA certificate with its key. The caller has checked that they match.
    pub(crate) fn new(
        cert: CertificateDer<'static>,
        key: KeyPair,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self, rcgen::Error> {
        let signer = Issuer::from_ca_cert_der(&cert, key)?;
        Ok(Self {
            cert,
            signer,
            not_before,
            not_after,
        })
    }

    /// The CA's private key.
    pub fn key(&self) -> &KeyPair {
        self.signer.key()
    }
}

impl std::fmt::Debug for SigningCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningCa")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Creates a self-signed root for a trust domain.
pub(crate) fn new_root(
    td: &TrustDomain,
    alg: keys::KeyAlgorithm,
    now: SystemTime,
    ttl: Duration,
) -> Result<SigningCa, rcgen::Error> {
    let key = alg.generate()?;
    let (not_before, not_after) = window(now, ttl, None);
    let params = ca_params(td, "Vigil root CA", 1, not_before, not_after)?;
    let cert = params.self_signed(&key)?;
    SigningCa::new(cert.der().clone(), key, not_before, not_after)
}

/// Creates an issuer (intermediate CA) signed by `root`. Its validity is capped at the
/// root's, so it never outlives what it chains to.
pub(crate) fn new_issuer(
    td: &TrustDomain,
    root: &SigningCa,
    now: SystemTime,
    ttl: Duration,
) -> Result<SigningCa, rcgen::Error> {
    let key = keys::KeyAlgorithm::P256.generate()?;
    let (not_before, not_after) = window(now, ttl, Some(root.not_after));
    let params = ca_params(td, "Vigil issuer CA", 0, not_before, not_after)?;
    let cert = params.signed_by(&key, &root.signer)?;
    SigningCa::new(cert.der().clone(), key, not_before, not_after)
}

/// Signs a leaf SVID for `id` over `public_key`, valid `[not_before, not_after]`.
///
/// The caller has already bounded the window (TTL policy, issuer expiry).
pub(crate) fn sign_leaf(
    issuer: &SigningCa,
    public_key: &impl PublicKeyData,
    id: &SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(CertificateDer<'static>, Vec<u8>), rcgen::Error> {
    let mut params = CertificateParams::default();
    // X.509-SVID: the identity lives in the URI SAN only; an empty subject makes rcgen
    // mark the SAN extension critical, as RFC 5280 requires.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let serial = keys::random_serial();
    let serial_bytes = serial.to_bytes();
    params.serial_number = Some(serial);
    params.not_before = OffsetDateTime::from(not_before);
    params.not_after = OffsetDateTime::from(not_after);
    let cert = params.signed_by(public_key, &issuer.signer)?;
    Ok((cert.der().clone(), serial_bytes))
}

/// A TLS server leaf for DNS names / IP addresses (no SPIFFE ID, so no mesh peer accepts
/// it as a workload): the controller's admission-webhook certificate, which the
/// kube-apiserver verifies against the CA root in the webhook's `caBundle`.
pub(crate) fn sign_server(
    issuer: &SigningCa,
    public_key: &impl PublicKeyData,
    names: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateDer<'static>, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(keys::random_serial());
    params.not_before = OffsetDateTime::from(not_before);
    params.not_after = OffsetDateTime::from(not_after);
    Ok(params.signed_by(public_key, &issuer.signer)?.der().clone())
}

fn ca_params(
    td: &TrustDomain,
    common_name: &str,
    path_len: u8,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Vigil");
    // A random suffix gives every root and issuer generation a distinct name, so chain
    // building never confuses an old CA with its successor.
    let suffix = crate::token::hex(&keys::random_bytes::<4>(false));
    dn.push(DnType::CommonName, format!("{common_name} {td} {suffix}"));
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(td.id().as_str().try_into()?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = path_len == 0;
    params.serial_number = Some(keys::random_serial());
    params.not_before = OffsetDateTime::from(not_before);
    params.not_after = OffsetDateTime::from(not_after);
    Ok(params)
}

/// `[now - BACKDATE, min(now + ttl, cap)]`, truncated to whole seconds as X.509 encodes them.
pub(crate) fn window(
    now: SystemTime,
    ttl: Duration,
    cap: Option<SystemTime>,
) -> (SystemTime, SystemTime) {
    let not_before = truncate(now - BACKDATE);
    let mut not_after = truncate(now + ttl);
    if let Some(cap) = cap {
        not_after = not_after.min(cap);
    }
    (not_before, not_after)
}

/// Truncates to whole seconds since the epoch.
pub(crate) fn truncate(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}
