//! The verified-chain cache inside both SPIFFE verifiers: a hit skips only the chain's
//! signature checks; validity, revocation, the expected identity and every byte of the
//! chain are checked on every handshake, and nothing that failed is remembered.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use rustls::{
    CertificateError, Error,
    client::danger::ServerCertVerifier,
    server::{ParsedCertificate, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use support::*;
use vigil_cert_authority::{
    svid, tls,
    verify::{Revocation, SpiffeClientVerifier, SpiffeServerVerifier},
};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db";

fn client_verifier(
    ca: &vigil_cert_authority::CertificateAuthority,
    revocation: Arc<dyn Revocation>,
) -> SpiffeClientVerifier {
    SpiffeClientVerifier::new(&ca.bundle(), tls::provider(), revocation).unwrap()
}

fn verify_client(
    v: &SpiffeClientVerifier,
    chain: &[CertificateDer<'static>],
    now: UnixTime,
) -> Result<(), Error> {
    v.verify_client_cert(&chain[0], &chain[1..], now)
        .map(|_| ())
}

fn verify_server(
    v: &SpiffeServerVerifier,
    chain: &[CertificateDer<'static>],
    now: UnixTime,
) -> Result<(), Error> {
    let name = ServerName::try_from("mesh.invalid").unwrap();
    v.verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
        .map(|_| ())
}

#[test]
fn a_chain_verified_once_is_answered_from_the_cache_after() {
    let (_d, ca) = new_ca();
    let v = client_verifier(&ca, Arc::new(Switch::default()));
    let web = raw_svid(&ca, WEB, HOUR, SystemTime::now());
    let now = UnixTime::now();

    verify_client(&v, &web.chain, now).unwrap();
    assert_eq!(
        (v.verified_chains().len(), v.verified_chains().hits()),
        (1, 0)
    );
    verify_client(&v, &web.chain, now).unwrap();
    verify_client(&v, &web.chain, now).unwrap();
    assert_eq!(
        (v.verified_chains().len(), v.verified_chains().hits()),
        (1, 2)
    );

    // Another peer is another entry.
    let db = raw_svid(&ca, DB, HOUR, SystemTime::now());
    verify_client(&v, &db.chain, now).unwrap();
    assert_eq!(
        (v.verified_chains().len(), v.verified_chains().hits()),
        (2, 2)
    );
}

#[test]
fn revocation_and_quarantine_apply_to_cached_chains_at_once() {
    let (_d, ca) = new_ca();
    let revoke = Arc::new(Switch::default());
    let v = client_verifier(&ca, revoke.clone());
    let web = raw_svid(&ca, WEB, HOUR, SystemTime::now());
    let now = UnixTime::now();
    verify_client(&v, &web.chain, now).unwrap();

    revoke.0.store(true, Ordering::SeqCst);
    let err = verify_client(&v, &web.chain, now).unwrap_err();
    assert_eq!(err, Error::InvalidCertificate(CertificateError::Revoked));
    assert_eq!(v.verified_chains().hits(), 1, "refused on the cached path");

    revoke.0.store(false, Ordering::SeqCst);
    verify_client(&v, &web.chain, now).unwrap();

    // A peer revoked at its first handshake is refused then, and on the cached path after.
    let (_d2, ca2) = new_ca();
    let revoke = Arc::new(Switch(AtomicBool::new(true)));
    let v = client_verifier(&ca2, revoke.clone());
    let db = raw_svid(&ca2, DB, HOUR, SystemTime::now());
    for _ in 0..2 {
        let err = verify_client(&v, &db.chain, now).unwrap_err();
        assert_eq!(err, Error::InvalidCertificate(CertificateError::Revoked));
    }
}

#[test]
fn a_cached_chain_is_refused_outside_its_validity() {
    let (_d, ca) = new_ca();
    let v = client_verifier(&ca, Arc::new(Switch::default()));
    let issued = SystemTime::now();
    let web = raw_svid(&ca, WEB, HOUR, issued);
    let info = svid::inspect_leaf(&web.chain[0]).unwrap();
    verify_client(&v, &web.chain, UnixTime::now()).unwrap();

    let expired = unix(info.not_after + Duration::from_secs(1));
    let err = verify_client(&v, &web.chain, expired).unwrap_err();
    assert!(is_expired(&err), "{err:?}");

    let early = unix(info.not_before - Duration::from_secs(1));
    let err = verify_client(&v, &web.chain, early).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            )
        ),
        "{err:?}"
    );

    // The last valid second is still valid, as webpki has it.
    verify_client(&v, &web.chain, unix(info.not_after)).unwrap();
    assert_eq!(v.verified_chains().hits(), 1);
}

#[test]
fn the_same_leaf_with_other_intermediates_is_verified_in_full() {
    let (_d, ca) = new_ca();
    let v = client_verifier(&ca, Arc::new(Switch::default()));
    let web = raw_svid(&ca, WEB, HOUR, SystemTime::now());
    let now = UnixTime::now();
    verify_client(&v, &web.chain, now).unwrap();

    // Without its intermediate the leaf does not chain to the roots: cached or not.
    let err = verify_client(&v, &web.chain[..1], now).unwrap_err();
    assert_eq!(
        err,
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );

    // An extra, foreign intermediate makes another chain: verified in full (webpki
    // ignores the extra certificate and the chain passes), then remembered on its own.
    let (_f, foreign) = new_ca();
    let foreign_issuer = raw_svid(&foreign, WEB, HOUR, SystemTime::now()).chain[1].clone();
    let mut longer = web.chain.clone();
    longer.push(foreign_issuer);
    verify_client(&v, &longer, now).unwrap();
    assert_eq!(
        (v.verified_chains().len(), v.verified_chains().hits()),
        (2, 0)
    );
}

#[test]
fn refused_chains_are_never_remembered() {
    let (_d, ca) = new_ca();
    let v = client_verifier(&ca, Arc::new(Switch::default()));
    let now = UnixTime::now();

    // Signed by another CA.
    let (_f, foreign) = new_ca();
    let stranger = raw_svid(&foreign, WEB, HOUR, SystemTime::now());
    // One byte of the signature changed: the same certificate to a parser, but forged.
    let mut forged = raw_svid(&ca, WEB, HOUR, SystemTime::now()).chain;
    let mut leaf = forged[0].to_vec();
    let last = leaf.len() - 1;
    leaf[last] ^= 0x01;
    forged[0] = CertificateDer::from(leaf);
    ParsedCertificate::try_from(&forged[0]).unwrap();
    // Breaks the SVID rules after a good chain: a CA-flagged leaf.
    let ca_leaf = forge_leaf(&_d.path().join("ca"), WEB, |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    });

    for chain in [&stranger.chain, &forged, &ca_leaf.chain] {
        for _ in 0..2 {
            verify_client(&v, chain, now).unwrap_err();
        }
    }
    assert!(v.verified_chains().is_empty());
    assert_eq!(v.verified_chains().hits(), 0);
}

#[test]
fn the_server_verifier_checks_identity_and_revocation_on_every_hit() {
    let (_d, ca) = new_ca();
    let revoke = Arc::new(Switch::default());
    let v = SpiffeServerVerifier::new(&ca.bundle(), [id(DB)], &tls::provider(), revoke.clone())
        .unwrap();
    let db = raw_svid(&ca, DB, HOUR, SystemTime::now());
    let web = raw_svid(&ca, WEB, HOUR, SystemTime::now());
    let now = UnixTime::now();

    verify_server(&v, &db.chain, now).unwrap();
    verify_server(&v, &db.chain, now).unwrap();
    assert_eq!(v.verified_chains().hits(), 1);

    // A verified chain of an unexpected identity: refused the first time and every time.
    for _ in 0..2 {
        let err = verify_server(&v, &web.chain, now).unwrap_err();
        assert!(format!("{err:?}").contains("UnexpectedIdentity"), "{err:?}");
    }
    revoke.0.store(true, Ordering::SeqCst);
    let err = verify_server(&v, &db.chain, now).unwrap_err();
    assert_eq!(err, Error::InvalidCertificate(CertificateError::Revoked));
    assert_eq!(v.verified_chains().hits(), 3);
}

#[tokio::test]
async fn a_new_trust_bundle_starts_with_an_empty_cache() {
    // Verifiers are built from a bundle; the proxy builds new ones when it changes. A
    // chain remembered by the old verifier means nothing to a verifier of another CA.
    let (_d, ca) = new_ca();
    let (_n, next) = new_ca();
    let web = raw_svid(&ca, WEB, HOUR, SystemTime::now());
    let old = client_verifier(&ca, Arc::new(Switch::default()));
    verify_client(&old, &web.chain, UnixTime::now()).unwrap();
    let new = client_verifier(&next, Arc::new(Switch::default()));
    let err = verify_client(&new, &web.chain, UnixTime::now()).unwrap_err();
    assert_eq!(
        err,
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert!(new.verified_chains().is_empty());

    // And real handshakes through the configs the proxy uses still carry identities.
    let out = handshake(
        server_config(&creds(&ca, DB), Arc::new(Switch::default())),
        client_config(&creds(&ca, WEB), &[DB]),
    )
    .await;
    assert_eq!(out.server.unwrap().unwrap().id.as_str(), WEB);
}
