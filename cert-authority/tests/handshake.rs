//! Real mTLS handshakes over loopback with the SPIFFE verifiers: what must pass and every
//! way a peer certificate must fail.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    io,
    sync::Arc,
    time::{Duration, SystemTime},
};

use support::*;
use vigil_cert_authority::{
    CertificateAuthority, SpiffeIdError,
    svid::{SvidError, SvidInfo},
    tls,
    verify::{NoRevocation, PeerError, Revocation},
};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db";

/// Presents `client` to a server holding a `DB` SVID from `ca`; returns the server's error.
async fn refused_by_server(ca: &CertificateAuthority, client: Option<&Raw>) -> io::Error {
    let server = server_config(&creds(ca, DB), Arc::new(NoRevocation));
    let out = handshake(server, raw_client_config(client, ca, &[DB])).await;
    assert!(out.client.is_err(), "the client sees the refusal too");
    out.server.expect_err("the server must refuse this client")
}

/// A server presenting `server`; a `WEB` client from `ca` expecting `expected`. Returns the
/// client's error.
async fn refused_by_client(
    ca: &CertificateAuthority,
    server: &Raw,
    expected: &[&str],
) -> io::Error {
    let client = client_config(&creds(ca, WEB), expected);
    let out = handshake(raw_server_config(server, ca), client).await;
    out.client.expect_err("the client must refuse this server")
}

#[tokio::test]
async fn mutual_tls_carries_both_identities_over_tls13_with_hybrid_pq_kx() {
    let (_d, ca) = new_ca();
    let out = handshake(
        server_config(&creds(&ca, DB), Arc::new(NoRevocation)),
        client_config(&creds(&ca, WEB), &[DB]),
    )
    .await;
    let client_peer = out
        .server
        .expect("server accepts the client")
        .expect("client identity");
    assert_eq!(client_peer.id.as_str(), WEB);
    let Negotiated {
        server: server_peer,
        group,
        suite,
        alpn,
    } = out.client.expect("client accepts the server");
    assert_eq!(server_peer.unwrap().id.as_str(), DB);
    assert_eq!(group, "X25519MLKEM768");
    assert_eq!(suite, "TLS13_AES_256_GCM_SHA384");
    assert_eq!(alpn.as_deref(), Some(tls::ALPN_MESH));
}

/// A provider with every group and the named suites, in that order.
fn suites(names: &[&str]) -> Arc<rustls::crypto::CryptoProvider> {
    let suites: Vec<_> = names
        .iter()
        .map(|n| tls::cipher_suite(n).unwrap())
        .collect();
    tls::provider_with(tls::KX_GROUPS, &suites)
}

#[tokio::test]
async fn the_connecting_side_orders_the_cipher_suites_both_support() {
    let (_d, ca) = new_ca();
    let (web, db) = (creds(&ca, WEB), creds(&ca, DB));
    let server = |names: &[&str]| {
        tls::server_config(
            &db,
            suites(names),
            Arc::new(NoRevocation),
            &[tls::ALPN_MESH],
        )
        .unwrap()
    };
    for (server_suites, client_suites, expected) in [
        (
            tls::CIPHER_SUITE_NAMES,
            &["TLS_AES_128_GCM_SHA256"][..],
            "TLS13_AES_128_GCM_SHA256",
        ),
        (
            &["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"][..],
            &["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_256_GCM_SHA384"][..],
            "TLS13_CHACHA20_POLY1305_SHA256",
        ),
        (
            &["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"][..],
            tls::CIPHER_SUITE_NAMES,
            "TLS13_AES_256_GCM_SHA384",
        ),
    ] {
        let out = handshake(
            server(server_suites),
            client_config_with(&web, &[DB], suites(client_suites)),
        )
        .await;
        let client = out
            .server
            .expect("server accepts")
            .expect("client identity");
        assert_eq!(client.id.as_str(), WEB);
        let suite = out.client.expect("client accepts").suite;
        assert_eq!(
            suite, expected,
            "server {server_suites:?}, client {client_suites:?}"
        );
    }
}

#[tokio::test]
async fn peers_without_a_shared_cipher_suite_do_not_connect() {
    let (_d, ca) = new_ca();
    let server = tls::server_config(
        &creds(&ca, DB),
        suites(&["TLS_AES_256_GCM_SHA384"]),
        Arc::new(NoRevocation),
        &[tls::ALPN_MESH],
    )
    .unwrap();
    let client = client_config_with(
        &creds(&ca, WEB),
        &[DB],
        suites(&["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]),
    );
    let out = handshake(server, client).await;
    let err = out.server.expect_err("the server finds no common suite");
    assert!(
        tls_error(&err).contains("NoCipherSuitesInCommon"),
        "{}",
        tls_error(&err)
    );
    let err = out.client.expect_err("the client is refused");
    assert!(
        tls_error(&err).contains("HandshakeFailure"),
        "{}",
        tls_error(&err)
    );
}

#[tokio::test]
async fn server_refuses_a_client_without_certificate() {
    let (_d, ca) = new_ca();
    let err = refused_by_server(&ca, None).await;
    assert!(
        tls_error(&err).contains("NoCertificatesPresented"),
        "{}",
        tls_error(&err)
    );
}

#[tokio::test]
async fn foreign_ca_is_refused_both_ways() {
    let (_d, ca) = new_ca();
    let (_d2, other) = new_ca(); // same trust domain name, different root
    let intruder = raw_svid(&other, WEB, HOUR, SystemTime::now());
    let err = refused_by_server(&ca, Some(&intruder)).await;
    assert!(
        tls_error(&err).contains("UnknownIssuer"),
        "{}",
        tls_error(&err)
    );

    let impostor = raw_svid(&other, DB, HOUR, SystemTime::now());
    let err = refused_by_client(&ca, &impostor, &[DB]).await;
    assert!(
        tls_error(&err).contains("UnknownIssuer"),
        "{}",
        tls_error(&err)
    );
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let now = SystemTime::now();
    let (_d, ca) = new_ca_at(now - 3 * HOUR);
    for (label, at, want) in [
        ("expired", now - 2 * HOUR, "Expired"),
        ("not yet valid", now + HOUR, "NotValidYet"),
    ] {
        let raw = raw_svid(&ca, WEB, Duration::from_secs(300), at);
        let err = refused_by_server(&ca, Some(&raw)).await;
        assert!(
            tls_error(&err).contains(want),
            "{label}: {}",
            tls_error(&err)
        );
        // The same certificate as a *server* certificate is refused by the client.
        let err = refused_by_client(&ca, &raw, &[WEB]).await;
        assert!(
            tls_error(&err).contains(want),
            "{label} (server side): {}",
            tls_error(&err)
        );
    }
}

#[tokio::test]
async fn wrong_trust_domain_is_refused_even_when_signed_by_our_issuer() {
    let (d, ca) = new_ca();
    let forged = forge_leaf(
        &d.path().join("ca"),
        "spiffe://evil.example/ns/shop/sa/web",
        |_| {},
    );
    let err = refused_by_server(&ca, Some(&forged)).await;
    assert_eq!(
        peer_error(&err),
        Some(PeerError::ForeignTrustDomain {
            id: id("spiffe://evil.example/ns/shop/sa/web"),
            expected: td(),
        })
    );
}

#[tokio::test]
async fn client_refuses_a_server_outside_the_expected_set() {
    let (_d, ca) = new_ca();
    let impostor = raw_svid(
        &ca,
        "spiffe://cluster.local/ns/shop/sa/impostor",
        HOUR,
        SystemTime::now(),
    );
    let err = refused_by_client(
        &ca,
        &impostor,
        &[DB, "spiffe://cluster.local/ns/shop/sa/db-replica"],
    )
    .await;
    assert_eq!(
        peer_error(&err),
        Some(PeerError::UnexpectedIdentity {
            id: id("spiffe://cluster.local/ns/shop/sa/impostor")
        })
    );
}

#[tokio::test]
async fn leaf_with_ca_true_is_refused() {
    let (d, ca) = new_ca();
    let forged = forge_leaf(&d.path().join("ca"), WEB, |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages.push(rcgen::KeyUsagePurpose::KeyCertSign);
    });
    // webpki refuses a CA certificate as an end entity before our SVID check runs.
    let err = refused_by_server(&ca, Some(&forged)).await;
    assert!(
        tls_error(&err).contains("CaUsedAsEndEntity"),
        "{}",
        tls_error(&err)
    );
    let err = refused_by_client(&ca, &forged, &[WEB]).await;
    assert!(
        tls_error(&err).contains("CaUsedAsEndEntity"),
        "{}",
        tls_error(&err)
    );
}

#[tokio::test]
async fn svid_rules_beyond_the_chain_are_enforced() {
    let (d, ca) = new_ca();
    let dir = d.path().join("ca");
    let cases: Vec<(&str, Raw, SvidError)> = vec![
        (
            "two URI SANs",
            forge_leaf(&dir, WEB, |p| {
                p.subject_alt_names
                    .push(rcgen::SanType::URI(DB.try_into().unwrap()));
            }),
            SvidError::MultipleUriSans(2),
        ),
        (
            "no URI SAN",
            forge_leaf(&dir, WEB, |p| {
                p.subject_alt_names = vec![rcgen::SanType::DnsName("web.shop".try_into().unwrap())];
            }),
            SvidError::NoUriSan,
        ),
        (
            "no digitalSignature",
            forge_leaf(&dir, WEB, |p| {
                p.key_usages = vec![rcgen::KeyUsagePurpose::KeyAgreement]
            }),
            SvidError::MissingDigitalSignature,
        ),
        (
            "trust-domain ID as leaf",
            forge_leaf(&dir, "spiffe://cluster.local", |_| {}),
            SvidError::BadSpiffeId(SpiffeIdError::NoPath("spiffe://cluster.local".into())),
        ),
        (
            "non-canonical SPIFFE ID",
            forge_leaf(&dir, "spiffe://cluster.local/ns/../sa/x", |_| {}),
            SvidError::BadSpiffeId(SpiffeIdError::DotSegment),
        ),
    ];
    for (label, raw, want) in cases {
        let err = refused_by_server(&ca, Some(&raw)).await;
        assert_eq!(
            peer_error(&err),
            Some(PeerError::Svid(want.clone())),
            "{label}"
        );
        let err = refused_by_client(&ca, &raw, &[WEB]).await;
        assert_eq!(
            peer_error(&err),
            Some(PeerError::Svid(want)),
            "{label} (server side)"
        );
    }
}

#[tokio::test]
async fn missing_intermediate_is_refused() {
    let (_d, ca) = new_ca();
    let mut raw = raw_svid(&ca, WEB, HOUR, SystemTime::now());
    raw.chain.truncate(1); // leaf only: the issuer is not sent
    let err = refused_by_server(&ca, Some(&raw)).await;
    assert!(
        tls_error(&err).contains("UnknownIssuer"),
        "{}",
        tls_error(&err)
    );
    let err = refused_by_client(&ca, &raw, &[WEB]).await;
    assert!(
        tls_error(&err).contains("UnknownIssuer"),
        "{}",
        tls_error(&err)
    );
}

#[derive(Debug)]
struct RevokeId(&'static str);

impl Revocation for RevokeId {
    fn is_revoked(&self, peer: &SvidInfo) -> bool {
        peer.id.as_str() == self.0
    }
}

#[tokio::test]
async fn revocation_hook_refuses_revoked_peers_only() {
    let (_d, ca) = new_ca();
    let server = creds(&ca, DB);
    let revoked = handshake(
        server_config(&server, Arc::new(RevokeId(WEB))),
        client_config(&creds(&ca, WEB), &[DB]),
    )
    .await;
    let err = revoked.server.expect_err("revoked");
    assert!(tls_error(&err).contains("Revoked"), "{}", tls_error(&err));

    let api = "spiffe://cluster.local/ns/shop/sa/api";
    let other = handshake(
        server_config(&server, Arc::new(RevokeId(WEB))),
        client_config(&creds(&ca, api), &[DB]),
    )
    .await;
    assert_eq!(other.server.unwrap().unwrap().id.as_str(), api);
}
