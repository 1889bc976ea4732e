//! SVID issuance: what the CA writes into a leaf, and every request it refuses.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;
use vigil_cert_authority::{IssueError, csr::CsrError, issuer::BACKDATE, svid, ttl::TtlError};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn leaf_has_exactly_the_authenticated_identity_and_svid_shape() {
    let (_d, ca) = new_ca();
    // The CSR claims to be the payments service, with a DNS SAN and a CN to boot.
    let (key, csr) = csr_claiming("spiffe://cluster.local/ns/pay/sa/payments");
    let now = SystemTime::now();
    let svid = ca.issue_at(&csr, &id(WEB), None, now).unwrap();

    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&svid.leaf).unwrap();
    let sans = &cert.subject_alternative_name().unwrap().unwrap();
    assert!(sans.critical, "empty subject => SAN must be critical");
    assert_eq!(sans.value.general_names, vec![GeneralName::URI(WEB)]);
    assert_eq!(
        cert.subject().iter_attributes().count(),
        0,
        "CSR subject is ignored"
    );
    assert!(!cert.is_ca());
    assert!(
        cert.basic_constraints().unwrap().is_some(),
        "cA:false written explicitly"
    );
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign() && !ku.value.key_encipherment());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any && !eku.code_signing);
    // The public key is the CSR's.
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        rcgen::PublicKeyData::der_bytes(&key)
    );
    // Validity: backdated one minute, default TTL 1 h, whole seconds.
    assert_eq!(secs(svid.not_before), secs(now) - BACKDATE.as_secs());
    assert_eq!(secs(svid.not_after), secs(now) + 3600);
    assert_eq!(
        cert.validity().not_before.timestamp() as u64,
        secs(svid.not_before)
    );
    assert_eq!(
        cert.validity().not_after.timestamp() as u64,
        secs(svid.not_after)
    );
    // Serial: random, positive, at least 64 bits.
    assert!(svid.serial.len() >= 8 && svid.serial[0] & 0x80 == 0);
    assert_eq!(cert.raw_serial(), svid.serial.as_slice());
    // Chain is the current issuer; the SVID module reads it back identically.
    assert_eq!(svid.chain, vec![ca.issuer_cert().clone()]);
    assert_eq!(svid::inspect_leaf(&svid.leaf).unwrap().id.as_str(), WEB);
}

#[test]
fn serials_are_unique() {
    let (_d, ca) = new_ca();
    let mut serials = std::collections::HashSet::new();
    for _ in 0..200 {
        let (_, csr) = csr();
        assert!(serials.insert(ca.issue(&csr, &id(WEB), None).unwrap().serial));
    }
}

#[test]
fn ttl_is_bounded() {
    let (_d, ca) = new_ca(); // allow_short: 1 min .. 24 h
    let (_, csr) = csr();
    let now = SystemTime::now();
    for ok in [60, 300, 86_400] {
        let svid = ca
            .issue_at(&csr, &id(WEB), Some(Duration::from_secs(ok)), now)
            .unwrap();
        assert_eq!(secs(svid.not_after), secs(now) + ok);
    }
    for bad in [0, 59, 86_401, 7 * 86_400] {
        let err = ca
            .issue_at(&csr, &id(WEB), Some(Duration::from_secs(bad)), now)
            .unwrap_err();
        assert!(
            matches!(err, IssueError::Ttl(TtlError { requested, .. }) if requested == Duration::from_secs(bad))
        );
    }
}

#[test]
fn short_ttls_need_explicit_permission() {
    let (d, _) = new_ca();
    let strict = vigil_cert_authority::CertificateAuthority::open(
        &d.path().join("ca"),
        vigil_cert_authority::ttl::TtlPolicy::default(),
    )
    .unwrap();
    let (_, csr) = csr();
    assert!(matches!(
        strict.issue(&csr, &id(WEB), Some(Duration::from_secs(120))),
        Err(IssueError::Ttl(_))
    ));
    assert!(
        strict
            .issue(&csr, &id(WEB), Some(Duration::from_secs(300)))
            .is_ok()
    );
}

#[test]
fn leaf_never_outlives_its_issuer() {
    let now = SystemTime::now();
    // Issuer lives 7 days; issue 6.5 days in, asking for 24 h.
    let (_d, ca) = new_ca_at(now);
    let late = now + Duration::from_secs(6 * 86_400 + 12 * 3600);
    let (_, csr) = csr();
    let svid = ca
        .issue_at(&csr, &id(WEB), Some(Duration::from_secs(86_400)), late)
        .unwrap();
    assert_eq!(svid.not_after, ca.issuer_not_after());
    assert!(svid.not_after < late + Duration::from_secs(86_400));
    // After the issuer expired, nothing is signed.
    let err = ca
        .issue_at(
            &csr,
            &id(WEB),
            None,
            ca.issuer_not_after() + Duration::from_secs(1),
        )
        .unwrap_err();
    assert!(matches!(err, IssueError::IssuerNotValid));
}

#[test]
fn refuses_bad_csrs() {
    let (_d, ca) = new_ca();
    let (_, good) = csr();

    // Tampered: flip a byte inside the signed CertificationRequestInfo (the subject CN).
    let mut tampered = good.clone();
    let pos = tampered.windows(7).position(|w| w == b"spiffe:").unwrap();
    tampered[pos] ^= 0x01;
    assert!(matches!(
        ca.issue(&tampered, &id(WEB), None),
        Err(IssueError::Csr(CsrError::BadSignature))
    ));

    // A well-formed CSR carrying key A but signed by key B: no proof of possession.
    assert!(matches!(
        ca.issue(&csr_signed_by_another_key(&good), &id(WEB), None),
        Err(IssueError::Csr(CsrError::BadSignature))
    ));

    // Not P-256.
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        assert!(matches!(
            ca.issue(csr.der(), &id(WEB), None),
            Err(IssueError::Csr(CsrError::UnsupportedKey(_)))
        ));
    }

    // Garbage and trailing data.
    assert!(matches!(
        ca.issue(b"not der", &id(WEB), None),
        Err(IssueError::Csr(CsrError::Malformed(_)))
    ));
    assert!(matches!(
        ca.issue(&[], &id(WEB), None),
        Err(IssueError::Csr(CsrError::Malformed(_)))
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        ca.issue(&trailing, &id(WEB), None),
        Err(IssueError::Csr(CsrError::TrailingData))
    ));
}

#[test]
fn refuses_identities_it_cannot_vouch_for() {
    let (_d, ca) = new_ca();
    let (_, csr) = csr();
    assert!(matches!(
        ca.issue(&csr, &id("spiffe://other.domain/ns/shop/sa/web"), None),
        Err(IssueError::ForeignTrustDomain { .. })
    ));
    assert!(matches!(
        ca.issue(&csr, &id("spiffe://cluster.local"), None),
        Err(IssueError::Identity(_))
    ));
}

/// Re-signs `csr`'s CertificationRequestInfo (which names key A) with a fresh key B.
fn csr_signed_by_another_key(csr: &[u8]) -> Vec<u8> {
    use rcgen::SigningKey;
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr).unwrap();
    let info = parsed.certification_request_info.raw;
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let sig = other.sign(info).unwrap();
    // AlgorithmIdentifier ecdsa-with-SHA256
    let alg = [
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ];
    let mut bits = vec![0x03];
    bits.extend(der_len(sig.len() + 1));
    bits.push(0);
    bits.extend(&sig);
    let mut content = info.to_vec();
    content.extend(alg);
    content.extend(bits);
    let mut out = vec![0x30];
    out.extend(der_len(content.len()));
    out.extend(content);
    // Sanity: it parses, and carries the original key.
    let (rest, re) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&out).unwrap();
    assert!(rest.is_empty());
    assert_eq!(re.certification_request_info.raw, info);
    out
}

fn der_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7f => vec![n as u8],
        0x80..=0xff => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

/// The webhook certificate: DNS/IP SANs only (never a SPIFFE ID), server auth only, and
/// it chains to the root for the names it carries — as a web PKI client (the
/// kube-apiserver) checks it.
#[test]
fn server_certificates_carry_names_not_identities_and_verify_for_those_names() {
    use rustls::client::{WebPkiServerVerifier, danger::ServerCertVerifier};
    use rustls_pki_types::{ServerName, UnixTime};
    let (_d, ca) = new_ca();
    let names = vec![
        "vigil-controller.vigil-system.svc".to_string(),
        "127.0.0.1".to_string(),
    ];
    let now = SystemTime::now();
    let (chain, key_pem) = ca
        .issue_server_cert(&names, Duration::from_secs(3600), now)
        .unwrap();
    assert!(key_pem.contains("PRIVATE KEY"));
    assert_eq!(chain.len(), 2);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&chain[0]).unwrap();
    let sans = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(sans.len(), 2);
    assert!(matches!(
        sans[0],
        GeneralName::DNSName("vigil-controller.vigil-system.svc")
    ));
    assert!(matches!(sans[1], GeneralName::IPAddress(&[127, 0, 0, 1])));
    assert!(!sans.iter().any(|n| matches!(n, GeneralName::URI(_))));
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);

    let verifier = WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(ca.bundle().root_store()),
        vigil_cert_authority::tls::provider(),
    )
    .build()
    .unwrap();
    let t = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap());
    for ok in ["vigil-controller.vigil-system.svc", "127.0.0.1"] {
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(ok).unwrap(),
                &[],
                t,
            )
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    assert!(
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from("evil.example").unwrap(),
                &[],
                t
            )
            .is_err()
    );
    assert!(
        ca.issue_server_cert(&[], Duration::from_secs(60), now)
            .is_err()
    );
}
