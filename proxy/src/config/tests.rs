use super::*;

#[test]
fn routes_parse() {
    let r: OutboundRoute =
        "127.0.0.1:15001=127.0.0.1:4143,spiffe://td/ns/a/sa/b,spiffe://td/ns/a/sa/c"
            .parse()
            .unwrap();
    assert_eq!(r.listen, "127.0.0.1:15001".parse().unwrap());
    assert_eq!(r.upstream, "127.0.0.1:4143".parse().unwrap());
    assert_eq!(r.identities.len(), 2);
    for bad in [
        "127.0.0.1:1=127.0.0.1:2",
        "127.0.0.1:1",
        "x=127.0.0.1:2,spiffe://td/a",
        "127.0.0.1:1=127.0.0.1:2,notanid",
    ] {
        assert!(bad.parse::<OutboundRoute>().is_err(), "{bad}");
    }
    let p: ProbeRoute = "8080:/healthz".parse().unwrap();
    assert_eq!((p.port, p.path.as_str()), (8080, "/healthz"));
    assert!("8080:/a/../b".parse::<ProbeRoute>().is_err());
    assert!("x:/a".parse::<ProbeRoute>().is_err());
}

fn args(extra: &[&str]) -> RunArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }
    let mut argv = vec![
        "vigil-proxy",
        "--policy",
        "p.yaml",
        "--svid",
        "s.pem",
        "--key",
        "k.pem",
        "--bundle",
        "b.pem",
    ];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().run
}

#[test]
fn tls_groups_and_request_metrics() {
    let cfg = args(&[]).validate().unwrap();
    assert_eq!(cfg.tls_groups, ["x25519mlkem768", "x25519", "p256"]);
    assert!(cfg.request_metrics);
    assert_eq!(cfg.tls_provider().kx_groups.len(), 3);

    let cfg = args(&[
        "--tls-groups",
        "X25519,secp256r1,x25519",
        "--request-metrics",
        "false",
    ])
    .validate()
    .unwrap();
    assert_eq!(cfg.tls_groups, ["x25519", "p256"]);
    assert!(!cfg.request_metrics);
    let names: Vec<_> = cfg
        .tls_provider()
        .kx_groups
        .iter()
        .map(|g| g.name())
        .collect();
    assert_eq!(
        names,
        [rustls::NamedGroup::X25519, rustls::NamedGroup::secp256r1]
    );

    let err = args(&["--tls-groups", "x448"]).validate().unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|e| e.contains("unknown key-exchange group \"x448\"")),
        "{err:?}"
    );
    let err = args(&["--tls-groups", ""]).validate().unwrap_err();
    assert!(!err.0.is_empty(), "an empty group list is refused");
}

#[test]
fn tls_cipher_suites() {
    let cfg = args(&[]).validate().unwrap();
    assert_eq!(
        cfg.tls_cipher_suites,
        [
            "TLS_AES_256_GCM_SHA384",
            "TLS_AES_128_GCM_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256"
        ]
    );
    let suites = |cfg: &crate::config::Config| -> Vec<rustls::CipherSuite> {
        (cfg.tls_provider().cipher_suites.iter())
            .map(|s| s.suite())
            .collect()
    };
    assert_eq!(suites(&cfg).len(), 3);

    let cfg = args(&[
        "--tls-cipher-suites",
        "tls13_aes_128_gcm_sha256, TLS_CHACHA20_POLY1305_SHA256,TLS_AES_128_GCM_SHA256",
    ])
    .validate()
    .unwrap();
    assert_eq!(
        cfg.tls_cipher_suites,
        ["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]
    );
    assert_eq!(
        suites(&cfg),
        [
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        ]
    );

    // TLS 1.2 suites, suites aws-lc-rs lacks, and nonsense are refused by name.
    for bad in [
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "aes",
    ] {
        let err = args(&["--tls-cipher-suites", bad]).validate().unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|e| e.contains("unknown TLS 1.3 cipher suite")
                    && e.contains(bad)
                    && e.contains("TLS_AES_128_GCM_SHA256")),
            "{bad}: {err:?}"
        );
    }
    let err = args(&["--tls-cipher-suites", ""]).validate().unwrap_err();
    assert!(
        err.0.iter().any(|e| e.starts_with("--tls-cipher-suites:")),
        "an empty suite list is refused: {err:?}"
    );
}
