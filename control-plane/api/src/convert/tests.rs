use super::*;

const FULL: &str = r#"
generation: 9
workload: spiffe://cluster.local/ns/shop/sa/orders
defaultPolicy: audit
quarantined: true
inbound:
  - policy: shop/a
    rule: 2
    action: deny
    mode: audit
    ports: [8080, 9090]
    from: [{id: "spiffe://cluster.local/ns/ops/sa/*"}, authenticated, unauthenticated, {cidr: 10.0.0.0/8}]
    http:
      methods: [GET]
      paths: [{exact: /a}, {prefix: /b}, {glob: "/c/*"}]
      headers: [{name: x, exact: y}, {name: z, regex: "a+"}, {name: w, present: false}]
      grpc: [{service: s.v1.S}, {service: s.v1.S, method: M}]
    validFrom: 10
    validUntil: 20
  - {policy: shop/b, action: allow, from: [authenticated], rateLimit: {requestsPerSecond: 3, burst: 4}}
revoked: {ids: ["spiffe://cluster.local/ns/x/sa/y"], serials: ["0a0b"]}
outbound:
  passthrough: true
  destinations:
    - {address: "10.0.0.1:80", identities: ["spiffe://cluster.local/ns/a/sa/b"]}
    - {address: "127.0.0.1:9000", proxy: "127.0.0.1:9443", identities: ["spiffe://cluster.local/ns/a/sa/c"]}
    - {address: "10.96.0.5:80", identities: ["spiffe://cluster.local/ns/a/sa/d"], endpoints: ["10.244.0.5:8080", "[fd00::5]:8080"]}
"#;

#[test]
fn every_field_round_trips() {
    let model: ProxyPolicy = serde_saphyr::from_str(FULL).unwrap();
    let wire = pb::WorkloadPolicy::from(&model);
    // Through the actual encoding, too.
    let bytes = prost::Message::encode_to_vec(&wire);
    let decoded: pb::WorkloadPolicy = prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(ProxyPolicy::try_from(decoded).unwrap(), model);
}

#[test]
fn unspecified_or_malformed_fails_closed() {
    let model: ProxyPolicy = serde_saphyr::from_str(FULL).unwrap();
    let good = pb::WorkloadPolicy::from(&model);
    type Breakage = Box<dyn Fn(&mut pb::WorkloadPolicy)>;
    let cases: Vec<(&str, Breakage)> = vec![
        ("default_policy", Box::new(|p| p.default_policy = 0)),
        ("default_policy", Box::new(|p| p.default_policy = 99)),
        ("action", Box::new(|p| p.inbound[0].action = 0)),
        ("mode", Box::new(|p| p.inbound[0].mode = 7)),
        ("ports", Box::new(|p| p.inbound[0].ports.push(70000))),
        (
            "from",
            Box::new(|p| p.inbound[0].from.push(pb::Source { kind: None })),
        ),
        (
            "from",
            Box::new(|p| {
                p.inbound[0].from.push(pb::Source {
                    kind: Some(pb::source::Kind::Authenticated(false)),
                })
            }),
        ),
        (
            "from",
            Box::new(|p| {
                p.inbound[0].from.push(pb::Source {
                    kind: Some(pb::source::Kind::Cidr("nope".into())),
                })
            }),
        ),
        (
            "http.paths",
            Box::new(|p| {
                p.inbound[0]
                    .http
                    .as_mut()
                    .unwrap()
                    .paths
                    .push(pb::PathMatch { kind: None })
            }),
        ),
        (
            "http.headers",
            Box::new(|p| p.inbound[0].http.as_mut().unwrap().headers[0].kind = None),
        ),
        (
            "outbound.destinations[0]",
            Box::new(|p| p.outbound.as_mut().unwrap().destinations[0].address = "x".into()),
        ),
        (
            "outbound.destinations[2].endpoints[1]",
            Box::new(|p| {
                p.outbound.as_mut().unwrap().destinations[2].endpoints[1] = "10.0.0.1".into()
            }),
        ),
    ];
    for (want, break_it) in cases {
        let mut p = good.clone();
        break_it(&mut p);
        let err = ProxyPolicy::try_from(p).unwrap_err();
        assert!(err.what.contains(want), "{want}: {err}");
    }
}

#[test]
fn bundles_are_validated() {
    let wire = pb::TrustBundle {
        trust_domain: "cluster.local".into(),
        roots: vec![b"not a certificate".to_vec()],
        sequence: 1,
    };
    assert!(bundle_from_wire(wire).is_err());
    let wire = pb::TrustBundle {
        trust_domain: "Bad".into(),
        roots: vec![],
        sequence: 1,
    };
    assert!(bundle_from_wire(wire).is_err());
}
