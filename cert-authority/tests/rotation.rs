//! Issuer and root rotation, seen from workloads: nothing that was valid stops working
//! before it should, and retired roots really leave.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use support::*;
use vigil_cert_authority::{
    CertificateAuthority, authority::Maintenance, creds::Credentials, tls, ttl::TtlPolicy,
    verify::NoRevocation,
};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db";
const DAY: Duration = Duration::from_secs(86_400);

fn state_files(ca_dir: &std::path::Path, prefix: &str) -> usize {
    std::fs::read_dir(ca_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(prefix)
        })
        .count()
}

#[test]
fn issuer_rotates_before_half_life_and_old_leaves_keep_verifying() {
    let start = SystemTime::now() - 4 * DAY;
    let (d, mut ca) = new_ca_at(start);
    let dir = d.path().join("ca");
    let old_issuer = ca.issuer_cert().clone();

    // At 3 of 7 days (43 %): nothing happens.
    assert_eq!(
        ca.maintain(start + 3 * DAY).unwrap(),
        Maintenance::default()
    );
    assert_eq!(ca.issuer_cert(), &old_issuer);

    let (key, csr) = csr();
    let old_leaf = ca
        .issue_at(&csr, &id(WEB), Some(DAY), start + 3 * DAY)
        .unwrap();

    // Two minutes short of 45 % (the issuer starts 1 minute backdated): still nothing.
    let just_before = start + DAY.mul_f64(7.0 * 0.45) - Duration::from_secs(120);
    assert_eq!(ca.maintain(just_before).unwrap(), Maintenance::default());

    // Past 45 % of 7 days (3.15 d + the 1-minute backdate), still before half life.
    let now = start + DAY.mul_f64(7.0 * 0.45) + Duration::from_secs(61);
    assert!(now < start + DAY.mul_f64(3.5));
    let report = ca.maintain(now).unwrap();
    assert_eq!(
        report,
        Maintenance {
            issuer_rotated: true,
            roots_retired: 0
        }
    );
    assert_ne!(ca.issuer_cert(), &old_issuer);
    assert_eq!(state_files(&dir, "issuer-"), 2, "old issuer files removed");
    assert_eq!(ca.bundle().roots().len(), 1, "the root is unchanged");

    // The leaf signed by the old issuer still verifies against the (unchanged) bundle.
    Credentials::new(
        old_leaf.cert_chain(),
        private_key(&key),
        ca.bundle(),
        &id(WEB),
        &tls::provider(),
        now,
    )
    .expect("old-issuer SVID still valid");
    // New leaves chain to the new issuer.
    let fresh = ca.issue_at(&csr, &id(WEB), None, now).unwrap();
    assert_eq!(fresh.chain, vec![ca.issuer_cert().clone()]);

    // A second maintain right after is a no-op.
    assert_eq!(ca.maintain(now).unwrap(), Maintenance::default());
}

#[test]
fn concurrent_instances_do_not_double_rotate() {
    let start = SystemTime::now() - 4 * DAY;
    let (d, mut a) = new_ca_at(start);
    let mut b = CertificateAuthority::open(&d.path().join("ca"), TtlPolicy::default()).unwrap();
    let now = start + 4 * DAY;
    assert!(a.maintain(now).unwrap().issuer_rotated);
    // `b` still holds the old issuer in memory, but rotates from what is on disk.
    assert!(b.issuer_needs_rotation(now));
    assert!(!b.maintain(now).unwrap().issuer_rotated);
    assert_eq!(a.issuer_cert(), b.issuer_cert());
}

#[tokio::test]
async fn root_rotation_overlap_then_retirement() {
    // The old-root SVID below (issued at t1, one day) is used in a real handshake, judged
    // at the real time: it must outlive the test, not expire the second it starts.
    let t0 = SystemTime::now() - 2 * DAY + Duration::from_secs(600);
    let (d, mut ca) = new_ca_at(t0);
    let dir = d.path().join("ca");
    let old_root = ca.bundle().roots()[0].clone();
    assert_eq!(ca.bundle().sequence(), 1);

    // A client renewed just before the rotation: its SVID chains to the old root.
    let t1 = t0 + DAY;
    let (old_key, csr) = csr();
    let old_svid = ca.issue_at(&csr, &id(WEB), Some(DAY), t1).unwrap();

    ca.rotate_root(None, t1).unwrap();
    let bundle = ca.bundle();
    assert_eq!(bundle.roots().len(), 2);
    assert_eq!(
        bundle.roots()[1],
        old_root,
        "old root stays during the overlap"
    );
    assert_ne!(bundle.roots()[0], old_root);
    assert_eq!(bundle.sequence(), 2);
    assert_eq!(
        state_files(&dir, "root-"),
        3,
        "new root cert+key, old root cert only"
    );

    // The rotation survives a restart.
    let reopened = CertificateAuthority::open(&dir, TtlPolicy::default().allow_short()).unwrap();
    assert_eq!(reopened.bundle(), bundle);

    // Real handshake now: old-root client <-> new-root server, both holding the new bundle.
    let now = SystemTime::now();
    let client = Credentials::new(
        old_svid.cert_chain(),
        private_key(&old_key),
        bundle.clone(),
        &id(WEB),
        &tls::provider(),
        now,
    )
    .expect("old-root SVID verifies against the overlap bundle");
    let server = creds(&ca, DB);
    let out = handshake(
        server_config(&server, Arc::new(NoRevocation)),
        client_config(&client, &[DB]),
    )
    .await;
    assert_eq!(out.server.unwrap().unwrap().id.as_str(), WEB);
    assert_eq!(out.client.unwrap().server.unwrap().id.as_str(), DB);
    // ...and the other way round.
    let out = handshake(
        server_config(&client, Arc::new(NoRevocation)),
        client_config(&server, &[WEB]),
    )
    .await;
    assert!(out.server.is_ok() && out.client.is_ok());

    // Before one max SVID TTL has passed, the old root stays.
    assert_eq!(
        ca.maintain(t1 + DAY - Duration::from_secs(1))
            .unwrap()
            .roots_retired,
        0
    );
    // After it, the old root leaves the bundle and its file is removed.
    let report = ca.maintain(t1 + DAY).unwrap();
    assert_eq!(report.roots_retired, 1);
    assert_eq!(ca.bundle().roots().len(), 1);
    assert_eq!(ca.bundle().sequence(), 3);
    assert_eq!(state_files(&dir, "root-"), 2);

    // An old-root SVID no longer verifies against the bundle.
    let err = Credentials::new(
        old_svid.cert_chain(),
        private_key(&old_key),
        ca.bundle(),
        &id(WEB),
        &tls::provider(),
        now,
    )
    .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}
