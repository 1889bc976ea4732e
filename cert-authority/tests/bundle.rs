//! Trust bundles: PEM and SPIFFE (JWKS) export, and refusal of unusable roots.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::SystemTime;

use base64::{Engine, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use support::*;
use vigil_cert_authority::{
    InitOptions, TrustBundle, TrustDomain, bundle::BundleError, keys::KeyAlgorithm, ttl::TtlPolicy,
};
use x509_parser::{prelude::FromDer, public_key::PublicKey};

#[test]
fn pem_round_trip() {
    let (_d, mut ca) = new_ca();
    ca.rotate_root(None, SystemTime::now()).unwrap();
    let bundle = ca.bundle();
    let pem = bundle.to_pem();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
    let back = TrustBundle::from_pem(td(), &pem).unwrap();
    assert_eq!(back.roots(), bundle.roots());
}

#[test]
fn spiffe_bundle_is_a_jwk_set_of_the_roots() {
    for alg in [KeyAlgorithm::P256, KeyAlgorithm::P384] {
        let d = tempfile::tempdir().unwrap();
        let mut opts = InitOptions::new(td());
        opts.root = vigil_cert_authority::RootSource::Generate(alg);
        let mut ca = vigil_cert_authority::CertificateAuthority::init(
            d.path(),
            opts,
            TtlPolicy::default(),
            SystemTime::now(),
        )
        .unwrap();
        ca.rotate_root(None, SystemTime::now()).unwrap();
        let bundle = ca.bundle();
        let doc: serde_json::Value =
            serde_json::from_str(&bundle.to_spiffe_json(300).unwrap()).unwrap();
        assert_eq!(doc["spiffe_sequence"], 2);
        assert_eq!(doc["spiffe_refresh_hint"], 300);
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        let (crv, coord_len) = match alg {
            KeyAlgorithm::P256 => ("P-256", 32),
            KeyAlgorithm::P384 => ("P-384", 48),
        };
        for (jwk, root) in keys.iter().zip(bundle.roots()) {
            assert_eq!(jwk["use"], "x509-svid");
            assert_eq!(jwk["kty"], "EC");
            assert_eq!(jwk["crv"], crv);
            let x5c = jwk["x5c"].as_array().unwrap();
            assert_eq!(x5c.len(), 1);
            assert_eq!(
                STANDARD.decode(x5c[0].as_str().unwrap()).unwrap(),
                root.as_ref()
            );
            // x and y are the root's public key coordinates.
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(root).unwrap();
            let PublicKey::EC(point) = cert.public_key().parsed().unwrap() else {
                panic!("EC key")
            };
            let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
            let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
            assert_eq!(x.len(), coord_len);
            assert_eq!([&[4u8][..], &x, &y].concat(), point.data());
        }
    }
}

#[test]
fn refuses_unusable_roots() {
    assert_eq!(TrustBundle::new(td(), vec![], 1), Err(BundleError::Empty));
    // A leaf is not a root.
    let (_d, ca) = new_ca();
    let (_, csr) = csr();
    let leaf = ca
        .issue(&csr, &id("spiffe://cluster.local/ns/a/sa/b"), None)
        .unwrap()
        .leaf;
    assert!(matches!(
        TrustBundle::new(td(), vec![leaf], 1),
        Err(BundleError::BadRoot { index: 0, .. })
    ));
    // Another trust domain's root.
    let other = TrustDomain::new("other.domain").unwrap();
    assert!(matches!(
        TrustBundle::new(other, ca.bundle().roots().to_vec(), 1),
        Err(BundleError::ForeignRoot { .. })
    ));
    // Not PEM / no certificates.
    assert!(TrustBundle::from_pem(td(), "hello").is_err());
    assert!(
        TrustBundle::from_pem(
            td(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err()
    );
}
