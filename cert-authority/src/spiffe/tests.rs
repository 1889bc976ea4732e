use super::*;

#[test]
fn workload_ids_round_trip() {
    for s in [
        "spiffe://cluster.local/ns/shop/sa/web",
        "spiffe://example.org",
        "spiffe://td-1.example_org/a/B/c.d/e-f/g_h",
        "spiffe://x/..a/a..",
        "spiffe://1.2.3.4/ns/n/sa/s",
    ] {
        let id = SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(id.to_string(), s);
        assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        // serde round trip too
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
    }
}

#[test]
fn parts() {
    let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
    assert_eq!(id.trust_domain_name(), "cluster.local");
    assert_eq!(
        id.trust_domain(),
        TrustDomain::new("cluster.local").unwrap()
    );
    assert_eq!(id.path(), "/ns/shop/sa/web");
    assert_eq!(id.namespace_and_service_account(), Some(("shop", "web")));
    assert!(!id.is_trust_domain_id());

    let td = SpiffeId::parse("spiffe://cluster.local").unwrap();
    assert!(td.is_trust_domain_id());
    assert_eq!(td.path(), "");
    assert_eq!(td.namespace_and_service_account(), None);
    assert!(matches!(
        td.clone().require_workload(),
        Err(SpiffeIdError::NoPath(_))
    ));
    assert_eq!(TrustDomain::default().id(), td);

    let other = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web/extra").unwrap();
    assert_eq!(other.namespace_and_service_account(), None);
    let other = SpiffeId::parse("spiffe://cluster.local/ns/shop/xx/web").unwrap();
    assert_eq!(other.namespace_and_service_account(), None);
}

#[test]
fn workload_constructor_validates_segments() {
    let td = TrustDomain::default();
    assert_eq!(
        SpiffeId::workload(&td, "shop", "web").unwrap().as_str(),
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    assert_eq!(
        SpiffeId::workload(&td, "shop/../kube-system", "web"),
        Err(SpiffeIdError::DotSegment)
    );
    assert_eq!(
        SpiffeId::workload(&td, "", "web"),
        Err(SpiffeIdError::EmptySegment)
    );
    assert_eq!(
        SpiffeId::workload(&td, "shop", "w%20b"),
        Err(SpiffeIdError::BadPathChar('%'))
    );
}

#[test]
fn rejects_bad_ids() {
    use SpiffeIdError::*;
    let long_td = format!("spiffe://{}/a", "a".repeat(256));
    let long_id = format!("spiffe://td/{}", "a".repeat(MAX_ID_LEN));
    let cases: &[(&str, SpiffeIdError)] = &[
        ("", Empty),
        ("spiffe://", MissingTrustDomain),
        ("spiffe:///ns/a/sa/b", MissingTrustDomain),
        ("SPIFFE://cluster.local/ns/a/sa/b", WrongScheme),
        ("Spiffe://cluster.local/ns/a/sa/b", WrongScheme),
        ("https://cluster.local/ns/a/sa/b", WrongScheme),
        ("spiffe:/cluster.local/ns/a", WrongScheme),
        ("cluster.local/ns/a/sa/b", WrongScheme),
        (" spiffe://cluster.local/a", WrongScheme),
        ("spiffe://Cluster.local/ns/a/sa/b", BadTrustDomainChar('C')),
        (
            "spiffe://cluster.local:8443/ns/a/sa/b",
            BadTrustDomainChar(':'),
        ),
        (
            "spiffe://user@cluster.local/ns/a/sa/b",
            BadTrustDomainChar('@'),
        ),
        ("spiffe://user:pw@cluster.local/a", BadTrustDomainChar(':')),
        ("spiffe://clu%73ter.local/a", BadTrustDomainChar('%')),
        ("spiffe://[::1]/a", BadTrustDomainChar('[')),
        ("spiffe://cluster.local?x=1", BadTrustDomainChar('?')),
        ("spiffe://cluster.local#frag", BadTrustDomainChar('#')),
        ("spiffe://cluster.local/", EmptySegment),
        ("spiffe://cluster.local/ns/a/sa/b/", EmptySegment),
        ("spiffe://cluster.local//ns/a", EmptySegment),
        ("spiffe://cluster.local/ns//sa/b", EmptySegment),
        ("spiffe://cluster.local/ns/./sa/b", DotSegment),
        ("spiffe://cluster.local/ns/../sa/b", DotSegment),
        ("spiffe://cluster.local/..", DotSegment),
        ("spiffe://cluster.local/ns/a%2Fb/sa/c", BadPathChar('%')),
        ("spiffe://cluster.local/ns/a/sa/b?x=1", BadPathChar('?')),
        ("spiffe://cluster.local/ns/a/sa/b#f", BadPathChar('#')),
        ("spiffe://cluster.local/ns/a b/sa/c", BadPathChar(' ')),
        ("spiffe://cluster.local/ns/a\\b", BadPathChar('\\')),
        ("spiffe://cluster.local/ns/ä/sa/b", BadPathChar('ä')),
        ("spiffe://cluster.local/ns/a/sa/b\n", BadPathChar('\n')),
        ("spiffe://cluster.local/ns/a:b", BadPathChar(':')),
        (&long_td, TrustDomainTooLong),
        (&long_id, TooLong),
    ];
    assert!(cases.len() >= 25);
    for (input, want) in cases {
        assert_eq!(
            SpiffeId::parse(input).as_ref().map(SpiffeId::as_str),
            Err(want),
            "input {input:?}"
        );
    }
}

#[test]
fn trust_domain_names() {
    assert!(TrustDomain::new("cluster.local").is_ok());
    assert!(TrustDomain::new("a_b-c.d9").is_ok());
    assert_eq!(TrustDomain::new(""), Err(SpiffeIdError::MissingTrustDomain));
    assert_eq!(
        TrustDomain::new("Example.org"),
        Err(SpiffeIdError::BadTrustDomainChar('E'))
    );
    assert_eq!(
        TrustDomain::new("td/x"),
        Err(SpiffeIdError::BadTrustDomainChar('/'))
    );
    assert_eq!(
        TrustDomain::new(&"a".repeat(256)),
        Err(SpiffeIdError::TrustDomainTooLong)
    );
}

#[test]
fn deserialize_rejects_invalid() {
    let err = serde_json::from_str::<SpiffeId>("\"spiffe://td/a/../b\"").unwrap_err();
    assert!(err.to_string().contains("`.` or `..`"), "{err}");
}
