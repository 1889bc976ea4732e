//! SVID inspection and peer verification on arbitrary DER: never panics; an SVID that
//! inspects as valid has exactly one SPIFFE ID, and the verifier (a real root) refuses a
//! leaf that does not chain to it.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use rustls::{
    pki_types::{CertificateDer, UnixTime},
    server::danger::ClientCertVerifier,
};
use vigil_cert_authority::{
    bundle::TrustBundle,
    spiffe::TrustDomain,
    svid, tls,
    verify::{self, NoRevocation, SpiffeClientVerifier},
};

static VERIFIER: LazyLock<(SpiffeClientVerifier, TrustDomain)> = LazyLock::new(|| {
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://fuzz.local".try_into().unwrap(),
    ));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let root = params.self_signed(&key).unwrap();
    let td = TrustDomain::new("fuzz.local").unwrap();
    let bundle = TrustBundle::from_pem(td.clone(), &root.pem()).unwrap();
    let v = SpiffeClientVerifier::new(&bundle, tls::provider(), Arc::new(NoRevocation)).unwrap();
    (v, td)
});

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = svid::inspect_leaf(data) {
        assert!(info.id.as_str().starts_with("spiffe://"));
    }
    let _ = svid::inspect_ca(data);
    let (verifier, td) = &*VERIFIER;
    let der = CertificateDer::from(data.to_vec());
    let _ = verify::check_peer(&der, td, &NoRevocation);
    let chained = verifier.verify_client_cert(&der, &[], UnixTime::now());
    assert!(chained.is_err(), "arbitrary bytes chained to a fresh root");
});
