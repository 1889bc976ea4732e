//! The decision function against policies written the way users and the controller write
//! them (YAML), one behaviour per test.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use http::HeaderMap;
use vigil_cert_authority::SpiffeId;
use vigil_policy::{
    Decision, HttpRequest, Peer, Policy, PolicyError, ProxyPolicy, Reason, Request,
    model::DefaultPolicy,
};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db";
const OPS: &str = "spiffe://cluster.local/ns/ops/sa/admin";
const NOW: u64 = 1_800_000_000;

fn policy(yaml: &str) -> Policy {
    let model: ProxyPolicy = serde_saphyr::from_str(yaml).unwrap();
    Policy::compile(model).unwrap()
}

fn compile_err(yaml: &str) -> PolicyError {
    let model: ProxyPolicy = serde_saphyr::from_str(yaml).unwrap();
    Policy::compile(model).unwrap_err()
}

struct Req {
    id: Option<SpiffeId>,
    ip: Option<IpAddr>,
    port: u16,
    http: Option<(String, String, HeaderMap)>,
}

fn from(id: &str) -> Req {
    Req {
        id: Some(SpiffeId::parse(id).unwrap()),
        ip: None,
        port: 8080,
        http: Some(("GET".into(), "/".into(), HeaderMap::new())),
    }
}

fn plaintext(ip: &str) -> Req {
    Req {
        id: None,
        ip: Some(ip.parse().unwrap()),
        port: 8080,
        http: Some(("GET".into(), "/".into(), HeaderMap::new())),
    }
}

impl Req {
    fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.parse().unwrap());
        self
    }
    fn req(mut self, method: &str, path: &str) -> Self {
        let headers = self.http.take().map(|h| h.2).unwrap_or_default();
        self.http = Some((method.into(), path.into(), headers));
        self
    }
    fn header(mut self, k: &'static str, v: &str) -> Self {
        let h = self.http.as_mut().unwrap();
        h.2.append(k, v.parse().unwrap());
        self
    }
    fn tcp(mut self) -> Self {
        self.http = None;
        self
    }
    fn eval(&self, p: &Policy) -> Decision {
        self.eval_at(p, NOW)
    }
    fn eval_at(&self, p: &Policy, now: u64) -> Decision {
        let peer = match &self.id {
            Some(id) => Peer::Authenticated(id),
            None => Peer::Unauthenticated,
        };
        let http = self.http.as_ref().map(|(m, path, h)| HttpRequest {
            method: m,
            path,
            headers: h,
        });
        p.evaluate(
            &Request {
                peer,
                source_ip: self.ip,
                port: self.port,
                http,
            },
            now,
        )
    }
}

fn allowed_by(d: Decision, rule: u32) {
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.reason, Reason::Rule(rule), "{d:?}");
}

fn denied(d: Decision, reason: Reason) {
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.reason, reason, "{d:?}");
}

const BASIC: &str = r#"
generation: 3
workload: spiffe://cluster.local/ns/shop/sa/orders
inbound:
  - policy: shop/web-to-orders
    action: allow
    ports: [8080]
    from: [{id: "spiffe://cluster.local/ns/shop/sa/web"}]
    http:
      methods: [GET, POST]
      paths: [{prefix: /orders}, {exact: /health}, {glob: "/v1/*/items"}]
  - policy: shop/ops
    action: allow
    from: [{id: "spiffe://cluster.local/ns/ops/sa/*"}]
  - policy: shop/no-delete
    action: deny
    from: [authenticated]
    http:
      methods: [DELETE]
"#;

#[test]
fn default_deny_and_allow_by_identity_method_and_path() {
    let p = policy(BASIC);
    assert_eq!(p.generation(), 3);
    allowed_by(from(WEB).req("GET", "/orders").eval(&p), 0);
    allowed_by(from(WEB).req("POST", "/orders/17").eval(&p), 0);
    allowed_by(from(WEB).req("GET", "/health").eval(&p), 0);
    allowed_by(from(WEB).req("GET", "/v1/abc/items").eval(&p), 0);
    // Prefix is segment-aware; exact is exact; glob `*` stays within one segment.
    denied(
        from(WEB).req("GET", "/ordersx").eval(&p),
        Reason::Default(DefaultPolicy::Deny),
    );
    denied(
        from(WEB).req("GET", "/health/x").eval(&p),
        Reason::Default(DefaultPolicy::Deny),
    );
    denied(
        from(WEB).req("GET", "/v1/a/b/items").eval(&p),
        Reason::Default(DefaultPolicy::Deny),
    );
    // Wrong method, wrong port, other identity.
    denied(
        from(WEB).req("PUT", "/orders").eval(&p),
        Reason::Default(DefaultPolicy::Deny),
    );
    denied(
        from(WEB).req("GET", "/orders").port(9090).eval(&p),
        Reason::Default(DefaultPolicy::Deny),
    );
    denied(
        from(DB).req("GET", "/orders").eval(&p),
        Reason::Default(DefaultPolicy::Deny),
    );
    // Pattern source, any port, any request.
    allowed_by(from(OPS).req("PUT", "/anything").port(9999).eval(&p), 1);
    assert!(
        !from("spiffe://cluster.local/ns/ops/sa/admin/x")
            .eval(&p)
            .allowed
    );
    // Plaintext is never "authenticated".
    denied(
        plaintext("10.1.2.3").eval(&p),
        Reason::Default(DefaultPolicy::Deny),
    );
}

#[test]
fn deny_wins() {
    let p = policy(BASIC);
    denied(from(OPS).req("DELETE", "/x").eval(&p), Reason::Rule(2));
    denied(from(WEB).req("DELETE", "/orders").eval(&p), Reason::Rule(2));
}

#[test]
fn l4_connections_skip_l7_allows_but_not_l7_denies() {
    let p = policy(BASIC);
    // The L7 "no DELETE" deny cannot be checked on an opaque stream, so it applies to
    // every opaque connection from an authenticated peer: even ops' L4 allow loses.
    denied(from(OPS).tcp().eval(&p), Reason::Rule(2));
    denied(from(WEB).tcp().eval(&p), Reason::Rule(2));
    // Without that deny, web's L7-only allow does not admit an opaque connection.
    let no_deny = policy(BASIC.split("  - policy: shop/no-delete").next().unwrap());
    denied(
        from(WEB).tcp().eval(&no_deny),
        Reason::Default(DefaultPolicy::Deny),
    );
    allowed_by(from(OPS).tcp().eval(&no_deny), 1);
    let l4 = policy(
        r#"
inbound:
  - {policy: a/tcp, action: allow, ports: [5432], from: [{id: "spiffe://cluster.local/ns/shop/sa/web"}]}
"#,
    );
    allowed_by(from(WEB).tcp().port(5432).eval(&l4), 0);
    allowed_by(from(WEB).port(5432).req("GET", "/").eval(&l4), 0);
    denied(
        from(WEB).tcp().port(5433).eval(&l4),
        Reason::Default(DefaultPolicy::Deny),
    );
}

#[test]
fn headers() {
    let p = policy(
        r#"
inbound:
  - policy: a/tenant
    action: allow
    from: [authenticated]
    http:
      headers:
        - {name: X-Tenant, exact: acme}
        - {name: x-debug, present: false}
        - {name: user-agent, regex: "curl/[0-9.]+"}
"#,
    );
    let ok = || {
        from(WEB)
            .header("x-tenant", "acme")
            .header("user-agent", "curl/8.1")
    };
    allowed_by(ok().eval(&p), 0);
    assert!(
        !ok().header("x-debug", "1").eval(&p).allowed,
        "present:false"
    );
    assert!(
        !from(WEB).header("x-tenant", "acme").eval(&p).allowed,
        "missing header"
    );
    assert!(
        !from(WEB)
            .header("x-tenant", "ACME")
            .header("user-agent", "curl/8")
            .eval(&p)
            .allowed
    );
    // The regex is anchored.
    assert!(
        !from(WEB)
            .header("x-tenant", "acme")
            .header("user-agent", "xcurl/8")
            .eval(&p)
            .allowed
    );
    // A duplicate header cannot satisfy the rule ("acme,evil" != "acme").
    assert!(!ok().header("x-tenant", "evil").eval(&p).allowed);
}

#[test]
fn grpc_services_and_methods() {
    let p = policy(
        r#"
inbound:
  - policy: a/grpc
    action: allow
    from: [authenticated]
    http:
      grpc: [{service: orders.v1.Orders, method: Get}, {service: health.v1.Health}]
"#,
    );
    allowed_by(from(WEB).req("POST", "/orders.v1.Orders/Get").eval(&p), 0);
    assert!(
        !from(WEB)
            .req("POST", "/orders.v1.Orders/Delete")
            .eval(&p)
            .allowed
    );
    allowed_by(from(WEB).req("POST", "/health.v1.Health/Check").eval(&p), 0);
    assert!(
        !from(WEB)
            .req("POST", "/health.v1.HealthX/Check")
            .eval(&p)
            .allowed
    );
}

#[test]
fn unauthenticated_and_cidr_sources() {
    let p = policy(
        r#"
inbound:
  - {policy: a/public, action: allow, ports: [80], from: [unauthenticated]}
  - {policy: a/lan, action: allow, ports: [81], from: [{cidr: 10.0.0.0/8}]}
  - {policy: a/block, action: deny, from: [{cidr: 10.66.0.0/16}]}
"#,
    );
    allowed_by(plaintext("192.0.2.1").port(80).eval(&p), 0);
    assert!(
        !from(WEB).port(80).eval(&p).allowed,
        "unauthenticated never matches an SVID holder"
    );
    allowed_by(plaintext("10.1.1.1").port(81).eval(&p), 1);
    allowed_by(from(WEB).ip("10.1.1.1").port(81).eval(&p), 1);
    assert!(!plaintext("11.1.1.1").port(81).eval(&p).allowed);
    denied(plaintext("10.66.1.1").port(80).eval(&p), Reason::Rule(2));
}

#[test]
fn quarantine_and_revocation() {
    let q = policy(&format!("quarantined: true\n{BASIC}"));
    denied(from(OPS).eval(&q), Reason::Quarantined);
    assert!(!q.passthrough());

    let r = policy(&format!(
        "revoked:\n  ids: [{OPS}]\n  serials: [0a0b]\n{BASIC}"
    ));
    denied(from(OPS).eval(&r), Reason::Revoked);
    let ops = SpiffeId::parse(OPS).unwrap();
    let web = SpiffeId::parse(WEB).unwrap();
    assert!(r.is_revoked(&ops, &[1]));
    assert!(r.is_revoked(&web, &[0x0a, 0x0b]));
    assert!(!r.is_revoked(&web, &[0x0a]));
}

#[test]
fn audit_mode_reports_but_never_blocks() {
    let p = policy(
        r#"
inbound:
  - {policy: a/allow-all, action: allow, from: [authenticated]}
  - {policy: a/try-deny-db, action: deny, mode: audit, from: [{id: "spiffe://cluster.local/ns/shop/sa/db"}]}
  - {policy: a/try-allow-plain, action: allow, mode: audit, from: [unauthenticated]}
"#,
    );
    let d = from(DB).eval(&p);
    allowed_by(d, 0);
    let finding = d.audit.unwrap();
    assert!(!finding.would_allow);
    assert_eq!(finding.reason, Reason::Rule(1));
    assert_eq!(
        p.describe(finding.reason),
        "denied by policy a/try-deny-db rule 0 (audit mode)"
    );

    let d = plaintext("192.0.2.1").eval(&p);
    denied(d, Reason::Default(DefaultPolicy::Deny));
    assert!(d.audit.unwrap().would_allow);

    assert_eq!(from(WEB).eval(&p).audit, None, "nothing to report");
}

#[test]
fn softer_defaults() {
    let audit = policy("defaultPolicy: audit\n");
    let d = from(WEB).eval(&audit);
    assert!(d.allowed);
    assert_eq!(
        d.audit.unwrap().reason,
        Reason::Default(DefaultPolicy::Deny)
    );

    let authn = policy("defaultPolicy: allow-authenticated\n");
    assert!(from(WEB).eval(&authn).allowed);
    denied(
        plaintext("192.0.2.1").eval(&authn),
        Reason::Default(DefaultPolicy::AllowAuthenticated),
    );
}

#[test]
fn jit_windows_open_and_close_by_themselves() {
    let p = policy(&format!(
        r#"
inbound:
  - {{policy: a/jit, action: allow, from: [authenticated], validFrom: {}, validUntil: {}}}
"#,
        NOW,
        NOW + 600
    ));
    assert!(!from(WEB).eval_at(&p, NOW - 1).allowed);
    allowed_by(from(WEB).eval_at(&p, NOW), 0);
    allowed_by(from(WEB).eval_at(&p, NOW + 599), 0);
    assert!(!from(WEB).eval_at(&p, NOW + 600).allowed);
    assert_eq!(p.next_change_after(NOW - 5), Some(NOW));
    assert_eq!(p.next_change_after(NOW), Some(NOW + 600));
    assert_eq!(p.next_change_after(NOW + 600), None);
}

#[test]
fn rate_limit_comes_with_the_deciding_allow() {
    let p = policy(
        r#"
inbound:
  - {policy: a/rl, action: allow, from: [authenticated], rateLimit: {requestsPerSecond: 5}}
"#,
    );
    let d = from(WEB).eval(&p);
    let (rule, rl) = d.rate_limit.unwrap();
    assert_eq!(rule, 0);
    assert_eq!(
        (rl.requests_per_second, rl.burst),
        (5, 5),
        "burst defaults to the rate"
    );
    assert_eq!(plaintext("192.0.2.1").eval(&p).rate_limit, None);
}

#[test]
fn invalid_documents_are_refused_with_their_location() {
    let cases = [
        (
            "inbound: [{policy: a/x, action: allow, from: []}]",
            "inbound[0] (a/x rule 0): `from` is empty",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [{id: 'spiffe://TD/x'}]}]",
            "not a SPIFFE ID pattern",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [{id: 'spiffe://td/ns/web-*'}]}]",
            "whole path segment",
        ),
        (
            "inbound: [{policy: a/x, action: allow, ports: [0], from: [authenticated]}]",
            "port 0",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], validFrom: 5, validUntil: 5}]",
            "validUntil must be after",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], rateLimit: {requestsPerSecond: 0}}]",
            "must be positive",
        ),
        (
            "inbound: [{policy: a/x, action: deny, from: [authenticated], rateLimit: {requestsPerSecond: 1}}]",
            "only applies to allow",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], http: {methods: [get]}}]",
            "uppercase",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], http: {paths: [{exact: x}]}}]",
            "must start with `/`",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], http: {paths: [{prefix: '/a%2F'}]}}]",
            "percent-encoding",
        ),
        (
            "inbound: [{policy: a/x, action: deny, from: [authenticated], http: {paths: [{exact: '/a//b'}]}}]",
            "not in normal form",
        ),
        (
            "inbound: [{policy: a/x, action: deny, from: [authenticated], http: {paths: [{prefix: '/a/../admin'}]}}]",
            "forwards it as \"/admin\"",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], http: {paths: [{prefix: '/a;b'}]}}]",
            "refused by the proxy",
        ),
        (
            "inbound: [{policy: a/x, action: deny, from: [authenticated], http: {paths: [{exact: '/admin.'}]}}]",
            "ends in a dot",
        ),
        (
            "inbound: [{policy: a/x, action: deny, from: [authenticated], http: {paths: [{glob: '/a/../*'}]}}]",
            "dot segment",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], http: {paths: [{glob: '/a/[' }]}}]",
            "glob",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], http: {headers: [{name: x, regex: '('}]}}]",
            "regex",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], http: {headers: [{name: x, exact: a, present: true}]}}]",
            "exactly one of",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], http: {headers: [{name: 'bad name', present: true}]}}]",
            "header name",
        ),
        (
            "inbound: [{policy: a/x, action: allow, from: [authenticated], http: {grpc: [{service: 'a/b'}]}}]",
            "gRPC",
        ),
        ("revoked: {ids: [nope]}", "revoked.ids[0]"),
        ("revoked: {serials: [ZZ]}", "revoked.serials[0]"),
        (
            "outbound: {destinations: [{address: '127.0.0.1:1', identities: []}]}",
            "at least one identity",
        ),
        ("workload: nope", "workload"),
    ];
    for (yaml, want) in cases {
        let err = compile_err(yaml).to_string();
        assert!(err.contains(want), "{yaml}\n  => {err}\n  want {want:?}");
    }
    // Unknown fields and wrong types do not even parse.
    assert!(
        serde_saphyr::from_str::<ProxyPolicy>(
            "inbound: [{policy: a/x, action: allow, from: [authenticated], methods: [GET]}]"
        )
        .is_err()
    );
    assert!(serde_saphyr::from_str::<ProxyPolicy>("defaultPolicy: allow-everything").is_err());
}

#[test]
fn deny_all_stands_in_for_an_invalid_policy() {
    let p = Policy::deny_all(9, "inbound[0]: `from` is empty");
    denied(from(OPS).eval(&p), Reason::InvalidPolicy);
    assert!(
        p.describe(Reason::InvalidPolicy)
            .contains("`from` is empty")
    );
    assert!(!p.passthrough());
    assert_eq!(p.generation(), 9);
}

#[test]
fn outbound_destinations() {
    let p = policy(
        r#"
outbound:
  passthrough: true
  destinations:
    - {address: "10.0.0.5:8080", identities: ["spiffe://cluster.local/ns/shop/sa/orders"]}
    - {address: "127.0.0.1:9000", proxy: "127.0.0.1:9443", identities: ["spiffe://cluster.local/ns/shop/sa/pay"]}
"#,
    );
    assert!(p.passthrough());
    let d = p.destination(&"10.0.0.5:8080".parse().unwrap()).unwrap();
    assert_eq!(d.proxy, "10.0.0.5:8080".parse().unwrap());
    assert_eq!(
        d.identities.iter().next().unwrap().as_str(),
        "spiffe://cluster.local/ns/shop/sa/orders"
    );
    assert_eq!(
        p.destination(&"127.0.0.1:9000".parse().unwrap())
            .unwrap()
            .proxy,
        "127.0.0.1:9443".parse().unwrap()
    );
    assert!(p.destination(&"10.0.0.6:8080".parse().unwrap()).is_none());
}

#[test]
fn a_virtual_destination_lists_its_backends() {
    let p = policy(
        r#"
outbound:
  destinations:
    - {address: "10.96.0.5:80", identities: ["spiffe://cluster.local/ns/shop/sa/orders"], endpoints: ["10.244.0.5:8080", "10.244.0.6:8080"]}
    - {address: "10.244.0.9:8080", identities: ["spiffe://cluster.local/ns/shop/sa/pay"]}
"#,
    );
    let vip = p.destination(&"10.96.0.5:80".parse().unwrap()).unwrap();
    assert_eq!(vip.endpoints.len(), 2);
    let owner = p
        .endpoint_owner(&"10.244.0.6:8080".parse().unwrap())
        .unwrap();
    assert_eq!(
        owner, vip,
        "a backend resolves to the Service it is listed under"
    );
    assert!(
        p.endpoint_owner(&"10.244.0.9:8080".parse().unwrap())
            .is_none(),
        "a plain destination is nobody's endpoint"
    );
    assert!(
        p.destination(&"10.244.0.9:8080".parse().unwrap())
            .unwrap()
            .endpoints
            .is_empty()
    );
}

#[test]
fn json_and_yaml_are_the_same_format() {
    let model: ProxyPolicy = serde_saphyr::from_str(BASIC).unwrap();
    let json = serde_json::to_string(&model).unwrap();
    let back: ProxyPolicy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, model);
    assert_eq!(Policy::compile(back).unwrap().model(), &model);
}

/// docs/path-contract.md, "Deny rules match conservatively": the loosest common backend
/// routes case-insensitively, ignores a trailing slash and a format extension, and
/// upper-cases methods; a deny covers all of those. Allows stay exact.
#[test]
fn deny_rules_match_as_the_loosest_backend_routes() {
    let p = policy(
        r#"
inbound:
  - {policy: a/admin, action: deny, from: [authenticated], http: {paths: [{prefix: /admin}]}}
  - {policy: a/login, action: deny, from: [authenticated], http: {paths: [{exact: /login/}]}}
  - {policy: a/glob, action: deny, from: [authenticated], http: {paths: [{glob: "/v1/*/secret"}]}}
  - {policy: a/delete, action: deny, from: [authenticated], http: {methods: [DELETE], paths: [{prefix: /keep}]}}
  - {policy: a/all, action: allow, from: [authenticated]}
"#,
    );
    for (method, path, rule) in [
        ("GET", "/admin", 0),
        ("GET", "/ADMIN", 0),
        ("GET", "/Admin/users", 0),
        ("GET", "/admin/", 0),
        ("GET", "/admin.json", 0),
        ("GET", "/AdMiN.xml", 0),
        ("GET", "/login", 1),
        ("GET", "/login/", 1),
        ("GET", "/LOGIN", 1),
        ("GET", "/login.php", 1),
        ("GET", "/v1/x/secret", 2),
        ("GET", "/V1/x/SECRET/", 2),
        ("DELETE", "/keep/1", 3),
        ("delete", "/keep/1", 3),
        ("Delete", "/KEEP", 3),
    ] {
        denied(from(WEB).req(method, path).eval(&p), Reason::Rule(rule));
    }
    // Neighbours that are other resources everywhere stay allowed.
    for (method, path) in [
        ("GET", "/administrator"),
        ("GET", "/admin-panel"),
        ("GET", "/admin.d/x"),
        ("GET", "/login/x"),
        ("GET", "/v1/x/secrets"),
        ("GET", "/keep/1"),
        ("POST", "/keep/1"),
    ] {
        allowed_by(from(WEB).req(method, path).eval(&p), 4);
    }
    // Allow rules are exact: case, slash and extension variants are other paths.
    let allow = policy(
        r#"
inbound:
  - {policy: a/x, action: allow, from: [authenticated], http: {methods: [GET], paths: [{exact: /report}, {prefix: /public}]}}
"#,
    );
    allowed_by(from(WEB).req("GET", "/report").eval(&allow), 0);
    allowed_by(from(WEB).req("GET", "/public/a").eval(&allow), 0);
    for (method, path) in [
        ("GET", "/Report"),
        ("GET", "/report/"),
        ("GET", "/report.json"),
        ("GET", "/PUBLIC/a"),
        ("get", "/report"),
    ] {
        denied(
            from(WEB).req(method, path).eval(&allow),
            Reason::Default(DefaultPolicy::Deny),
        );
    }
}
