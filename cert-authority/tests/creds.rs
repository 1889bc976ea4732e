//! The credential store publishes only credentials that pass every check, and keeps the
//! last good ones when a renewal is bad.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime};

use support::*;
use vigil_cert_authority::{
    creds::{CredentialStore, CredsError},
    tls,
};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

#[test]
fn bad_renewals_never_replace_the_last_good_certificate() {
    let now = SystemTime::now();
    let (_d, ca) = new_ca_at(now - 2 * HOUR);
    let (_d2, foreign) = new_ca();
    let store = CredentialStore::new(id(WEB));
    let mut rx = store.subscribe();
    assert!(store.current().is_none());

    let (key, csr1) = csr();
    let good = ca.issue_at(&csr1, &id(WEB), None, now).unwrap();
    let first = store
        .publish(
            good.cert_chain(),
            private_key(&key),
            ca.bundle(),
            &tls::provider(),
            now,
        )
        .unwrap();
    assert!(rx.has_changed().unwrap());
    rx.borrow_and_update();
    assert_eq!(first.info.id.as_str(), WEB);

    let (other_key, _) = csr_claiming("x:y");
    let (k2, csr2) = csr();
    type Check<'a> = &'a dyn Fn(&CredsError) -> bool;
    let cases: Vec<(&str, Raw, Check<'_>)> = vec![
        (
            "another identity",
            raw_svid(&ca, "spiffe://cluster.local/ns/shop/sa/db", HOUR, now),
            &|e| matches!(e, CredsError::WrongIdentity { .. }),
        ),
        (
            "key does not match",
            Raw {
                chain: good.cert_chain(),
                key: private_key(&other_key),
            },
            &|e| matches!(e, CredsError::Invalid(_)),
        ),
        (
            "expired",
            {
                let svid = ca
                    .issue_at(&csr2, &id(WEB), Some(Duration::from_secs(300)), now - HOUR)
                    .unwrap();
                Raw {
                    chain: svid.cert_chain(),
                    key: private_key(&k2),
                }
            },
            &|e| {
                matches!(
                    e,
                    CredsError::Invalid(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ExpiredContext { .. }
                    ))
                )
            },
        ),
        ("foreign CA", raw_svid(&foreign, WEB, HOUR, now), &|e| {
            matches!(
                e,
                CredsError::Invalid(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            )
        }),
        (
            "empty chain",
            Raw {
                chain: vec![],
                key: private_key(&key),
            },
            &|e| matches!(e, CredsError::EmptyChain),
        ),
    ];
    for (label, raw, want) in cases {
        let err = store
            .publish(raw.chain, raw.key, ca.bundle(), &tls::provider(), now)
            .expect_err(label);
        assert!(want(&err), "{label}: {err}");
        assert!(!rx.has_changed().unwrap(), "{label}: nothing published");
        assert!(
            std::sync::Arc::ptr_eq(&store.current().unwrap(), &first),
            "{label}: last good kept"
        );
    }

    // A good renewal (new key, as every renewal must have) replaces it.
    let (k3, csr3) = csr();
    let renewed = ca.issue_at(&csr3, &id(WEB), None, now).unwrap();
    let second = store
        .publish(
            renewed.cert_chain(),
            private_key(&k3),
            ca.bundle(),
            &tls::provider(),
            now,
        )
        .unwrap();
    assert!(rx.has_changed().unwrap());
    assert_ne!(second.info.serial, first.info.serial);
    assert!(std::sync::Arc::ptr_eq(&store.current().unwrap(), &second));
}
