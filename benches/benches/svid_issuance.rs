//! B11 (in process): SVID issuance throughput against the raw cryptographic limit.
//!
//! Issuing an SVID costs at least one ECDSA P-256 verification (the CSR's proof of
//! possession) and one ECDSA P-256 signature (the certificate). The baseline does exactly
//! that with the same primitives (aws-lc-rs) on messages of the same size; the ratio
//! `t(verify + sign) / t(issue)` says how much of the issuance cost is anything else
//! (parsing, encoding, policy). Target: >= 0.5.

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::{hint::black_box, path::PathBuf, time::Duration};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey},
};
use criterion::Criterion;
use vigil_benches::{Goal, Ratio, criterion_median, throughput_ratio};
use vigil_cert_authority::{
    CertificateAuthority, InitOptions, SpiffeId, TrustDomain, ttl::TtlPolicy,
};

const GROUP: &str = "svid_issuance";

fn target_dir() -> PathBuf {
    // Benches get CARGO_TARGET_TMPDIR = <target>/tmp at build time.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("..")
}

fn main() {
    let criterion_dir = target_dir().join("criterion");
    let mut c = Criterion::default()
        .output_directory(&criterion_dir)
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(
        dir.path(),
        InitOptions::new(TrustDomain::default()),
        TtlPolicy::default(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let csr = csr.der().to_vec();
    let leaf_len = ca.issue(&csr, &id, None).unwrap().leaf.len();

    // Baseline inputs: a P-256 key pair, a CSR-sized message and its signature to verify,
    // and a certificate-sized message to sign.
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let signer =
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
            .unwrap();
    let csr_msg = vec![7u8; csr.len()];
    let csr_sig = signer.sign(&rng, &csr_msg).unwrap();
    let verifier = UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        signer.public_key().as_ref().to_vec(),
    );
    let tbs = vec![9u8; leaf_len];

    let mut g = c.benchmark_group(GROUP);
    g.bench_function("issue", |b| {
        b.iter(|| ca.issue(black_box(&csr), &id, None).unwrap())
    });
    g.bench_function("raw_verify_sign", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&csr_msg), csr_sig.as_ref())
                .unwrap();
            signer.sign(&rng, black_box(&tbs)).unwrap()
        })
    });
    g.finish();
    c.final_summary();

    // Only report when both benchmarks ran (not under a name filter or --list).
    let (Ok(issue), Ok(raw)) = (
        criterion_median(&criterion_dir, GROUP, "issue"),
        criterion_median(&criterion_dir, GROUP, "raw_verify_sign"),
    ) else {
        return;
    };
    let (ratio, min, max) = throughput_ratio(issue, raw);
    let r = Ratio {
        id: "B11".into(),
        name: "svid-issuance-in-process".into(),
        ratio,
        min,
        max,
        target: 0.5,
        goal: Goal::AtLeast,
        unit: "",
    };
    println!(
        "issue {:.1} us/op ({:.0}/s), raw verify+sign {:.1} us/op ({:.0}/s)",
        issue.point / 1e3,
        1e9 / issue.point,
        raw.point / 1e3,
        1e9 / raw.point
    );
    println!("{}", r.line());
    r.record(&target_dir().join("bench-results")).unwrap();
}
