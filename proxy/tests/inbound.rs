//! Inbound authorization over real mTLS: by identity, method, path, header; TLS refusals;
//! plaintext and probes; audit mode; rate limits; logs and metrics.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::time::{Duration, SystemTime};

use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORDERS_POLICY: &str = r#"
generation: 1
inbound:
  - policy: shop/web-reads
    action: allow
    from: [{id: "spiffe://cluster.local/ns/shop/sa/web"}]
    http: {methods: [GET], paths: [{prefix: /orders}]}
  - policy: shop/web-tenant
    action: allow
    from: [{id: "spiffe://cluster.local/ns/shop/sa/web"}]
    http:
      methods: [POST]
      paths: [{exact: /orders/new}]
      headers: [{name: x-tenant, exact: acme}]
  - policy: shop/no-admin
    action: deny
    from: [authenticated]
    http: {paths: [{prefix: /admin}]}
"#;

async fn orders(
    mesh: &Mesh,
    policy: &str,
    extra: &[&str],
) -> (vigil_proxy::Proxy, LogSink, std::net::SocketAddr) {
    let app = http_app().await;
    let (p, log) = callee(mesh, "orders", policy, app, extra).await;
    (p, log, app)
}

#[tokio::test]
async fn allow_and_deny_by_identity_method_path_and_header() {
    let mesh = Mesh::new();
    let (p, _log, _) = orders(&mesh, ORDERS_POLICY, &[]).await;
    let web = mesh.client_creds("web");
    let mut c = h1_over_mtls(p.inbound, &web, &[&wid("orders")])
        .await
        .unwrap();

    let (status, _, body) = send(&mut c, get("/orders/17?x=1")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/orders/17");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(
        seen["peer"],
        wid("web"),
        "the app learns the verified caller"
    );
    assert_eq!(seen["host"], "orders.shop", "Host is preserved");

    for (req, want) in [
        (get("/admin/users"), StatusCode::FORBIDDEN),
        (get("/orders/../admin"), StatusCode::FORBIDDEN), // normalised before matching
        (get("/payments"), StatusCode::FORBIDDEN),
        (
            Request::delete("/orders/1").body(Full::default()).unwrap(),
            StatusCode::FORBIDDEN,
        ),
        (
            Request::post("/orders/new").body(Full::default()).unwrap(),
            StatusCode::FORBIDDEN,
        ),
        (
            Request::post("/orders/new")
                .header("x-tenant", "acme")
                .body(Full::default())
                .unwrap(),
            StatusCode::OK,
        ),
        (
            Request::post("/orders/new")
                .header("x-tenant", "evil")
                .body(Full::default())
                .unwrap(),
            StatusCode::FORBIDDEN,
        ),
        (get("/orders%2F..%2Fadmin"), StatusCode::BAD_REQUEST),
        (get("/orders/%2e%2e/admin"), StatusCode::BAD_REQUEST),
    ] {
        let what = format!("{} {}", req.method(), req.uri());
        let (status, headers, body) = send(&mut c, req).await.unwrap();
        assert_eq!(status, want, "{what}: {body}");
        if status == StatusCode::FORBIDDEN {
            let rid = headers
                .get("x-vigil-request-id")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            assert!(body.contains(&rid), "body names the request id: {body}");
            assert!(
                !body.contains("shop/"),
                "policy names never leak to the caller: {body}"
            );
        }
    }

    // A client cannot forge the identity header the app trusts.
    let forged = Request::get("/orders/1")
        .header("x-vigil-peer-id", wid("admin"))
        .body(Full::default())
        .unwrap();
    let (_, _, body) = send(&mut c, forged).await.unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["peer"],
        wid("web")
    );

    // Another identity gets nothing.
    let db = mesh.client_creds("db");
    let mut c = h1_over_mtls(p.inbound, &db, &[&wid("orders")])
        .await
        .unwrap();
    assert_eq!(
        send(&mut c, get("/orders/1")).await.unwrap().0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn bad_peers_are_refused_at_the_handshake() {
    let mesh = Mesh::new();
    let (p, _log, _) = orders(&mesh, ORDERS_POLICY, &[]).await;

    // No client certificate, a foreign CA (same trust domain name), an expired SVID:
    // the server refuses each at the handshake and says why in its metrics.
    let other = Mesh::new();
    let expired = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let svid = mesh
            .ca
            .issue_at(
                csr.der(),
                &id(&wid("web")),
                Some(Duration::from_secs(120)),
                SystemTime::now() - Duration::from_secs(600),
            )
            .unwrap();
        (
            svid.cert_chain(),
            vigil_cert_authority::pemfile::decode_private_key(&key.serialize_pem()).unwrap(),
        )
    };
    for (label, client) in [
        ("no client cert", None),
        ("foreign CA", Some(raw_creds(&other, "web"))),
        ("expired", Some(expired)),
    ] {
        let out = match mtls_raw(p.inbound, client, &mesh, &[&wid("orders")]).await {
            Ok(mut s) => {
                // TLS 1.3: the client's handshake ends before the server has checked its
                // certificate; the refusal is what its first read finds.
                let _ = s
                    .write_all(b"GET /orders/1 HTTP/1.1\r\nhost: x\r\n\r\n")
                    .await;
                let mut got = Vec::new();
                match tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got)).await {
                    Ok(Err(e)) => format!("read error: {e}"),
                    _ => String::from_utf8_lossy(&got).into_owned(),
                }
            }
            Err(e) => format!("handshake error: {e}"),
        };
        assert!(
            !out.contains("200 OK"),
            "{label}: must not be served: {out}"
        );
        // The inbound says why (its last alert is not lost with the connection).
        assert!(
            out.contains("received fatal alert"),
            "{label}: no alert: {out}"
        );
    }
    let metrics = http_get(p.admin, "/metrics").await.unwrap().1;
    for reason in ["no_client_cert", "unknown_issuer", "expired"] {
        let want = format!(
            "vigil_proxy_tls_handshake_failures_total{{direction=\"inbound\",reason=\"{reason}\"}} 1"
        );
        assert!(metrics.contains(&want), "{want}\n{metrics}");
    }

    // The wrong server identity: the client expects `payments`, the server is `orders`.
    let web = mesh.client_creds("web");
    let err = h1_over_mtls(p.inbound, &web, &[&wid("payments")])
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("UnexpectedIdentity"), "{err:?}");

    let metrics = http_get(p.admin, "/metrics").await.unwrap().1;
    assert!(metrics.contains("vigil_proxy_tls_handshake_failures_total{direction=\"inbound\",reason=\"unknown_issuer\"}"), "{metrics}");
    assert!(metrics.contains("reason=\"expired\""), "{metrics}");
}

#[tokio::test]
async fn plaintext_needs_unauthenticated_or_a_probe_route() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let probe = format!("{}:/healthz", app.port());
    let args = [
        "--app".to_string(),
        app.to_string(),
        "--probe-route".into(),
        probe,
    ];
    let (p, _log) = proxy(&mesh, "orders", ORDERS_POLICY, &args).await;
    let (status, _) = http_get(p.inbound, "/orders/1").await.unwrap();
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "plaintext is refused under default deny"
    );
    let (status, _) = http_get(p.inbound, "/healthz").await.unwrap();
    assert_eq!(status, StatusCode::OK, "declared probe route");
    let (status, _) = http_get(p.inbound, "/healthz/../orders/1").await.unwrap();
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a probe route is exact, after normalisation"
    );

    let open = format!(
        "{ORDERS_POLICY}  - policy: shop/public\n    action: allow\n    from: [unauthenticated]\n    http: {{methods: [GET], paths: [{{prefix: /public}}]}}\n"
    );
    let (p2, _log, _) = orders(&mesh, &open, &[]).await;
    assert_eq!(
        http_get(p2.inbound, "/public/x").await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(
        http_get(p2.inbound, "/orders/1").await.unwrap().0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn audit_mode_logs_would_deny_and_allows() {
    let mesh = Mesh::new();
    let policy = r#"
inbound:
  - {policy: shop/all, action: allow, from: [authenticated]}
  - {policy: shop/lockdown, action: deny, mode: audit, from: [authenticated], http: {paths: [{prefix: /orders}]}}
"#;
    let (p, log, _) = orders(&mesh, policy, &[]).await;
    let web = mesh.client_creds("web");
    let mut c = h1_over_mtls(p.inbound, &web, &[&wid("orders")])
        .await
        .unwrap();
    assert_eq!(
        send(&mut c, get("/orders/1")).await.unwrap().0,
        StatusCode::OK
    );
    let l = &log.first(|l| l["path"] == "/orders/1").await;
    assert_eq!(l["decision"], "allow");
    assert_eq!(l["policy"], "shop/all");
    assert!(l["audit"].as_str().unwrap().contains("would deny"), "{l}");
    assert!(
        l["audit"].as_str().unwrap().contains("shop/lockdown"),
        "{l}"
    );
    let metrics = http_get(p.admin, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains(
            "vigil_proxy_authz_audit_total{policy=\"shop/lockdown\",would=\"would_deny\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn rate_limits_per_source_identity() {
    let mesh = Mesh::new();
    let policy = r#"
inbound:
  - {policy: shop/limited, action: allow, from: [authenticated], rateLimit: {requestsPerSecond: 1, burst: 2}}
"#;
    let (p, _log, _) = orders(&mesh, policy, &[]).await;
    let web = mesh.client_creds("web");
    let mut c = h1_over_mtls(p.inbound, &web, &[&wid("orders")])
        .await
        .unwrap();
    assert_eq!(send(&mut c, get("/a")).await.unwrap().0, StatusCode::OK);
    assert_eq!(send(&mut c, get("/a")).await.unwrap().0, StatusCode::OK);
    let (status, headers, _) = send(&mut c, get("/a")).await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    // Another identity has its own bucket.
    let db = mesh.client_creds("db");
    let mut c2 = h1_over_mtls(p.inbound, &db, &[&wid("orders")])
        .await
        .unwrap();
    assert_eq!(send(&mut c2, get("/a")).await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn access_log_and_metrics_describe_every_decision() {
    let mesh = Mesh::new();
    let (p, log, app) = orders(&mesh, ORDERS_POLICY, &[]).await;
    let web = mesh.client_creds("web");
    let mut c = h1_over_mtls(p.inbound, &web, &[&wid("orders")])
        .await
        .unwrap();
    send(&mut c, get("/orders/1")).await.unwrap();
    send(&mut c, get("/admin")).await.unwrap();
    let lines = log
        .when(|ls| {
            ["/orders/1", "/admin"]
                .iter()
                .all(|p| ls.iter().any(|l| l["path"] == *p))
        })
        .await;
    let allow = lines.iter().find(|l| l["path"] == "/orders/1").unwrap();
    for field in [
        "time",
        "direction",
        "protocol",
        "src_addr",
        "src_id",
        "dst_addr",
        "dst_id",
        "method",
        "status",
        "decision",
        "reason",
        "latency_ms",
        "request_id",
    ] {
        assert!(!allow[field].is_null(), "{field} missing: {allow}");
    }
    assert_eq!(allow["src_id"], wid("web"));
    assert_eq!(allow["dst_id"], wid("orders"));
    assert_eq!(allow["dst_addr"], app.to_string());
    assert_eq!(allow["status"], 200);
    assert_eq!(allow["rule"], 0);
    let deny = lines.iter().find(|l| l["path"] == "/admin").unwrap();
    assert_eq!(deny["decision"], "deny");
    assert_eq!(deny["policy"], "shop/no-admin");
    assert_eq!(deny["reason"], "denied by policy shop/no-admin rule 0");

    let m = http_get(p.admin, "/metrics").await.unwrap().1;
    for want in [
        "vigil_proxy_requests_total{decision=\"allow\",direction=\"inbound\",status=\"2xx\"} 1",
        "vigil_proxy_requests_total{decision=\"deny\",direction=\"inbound\",status=\"4xx\"} 1",
        "vigil_proxy_authz_decisions_total{decision=\"deny\",direction=\"inbound\",policy=\"shop/no-admin\"} 1",
        "vigil_proxy_tls_handshakes_total{direction=\"inbound\",result=\"success\"} 1",
        "vigil_proxy_policy_generation 1",
        "vigil_proxy_request_duration_seconds_bucket",
        "vigil_proxy_cert_expiry_timestamp_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(m.contains(want), "missing {want}\n{m}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&http_get(p.admin, "/config").await.unwrap().1).unwrap();
    assert_eq!(cfg["identity"]["id"], wid("orders"));
    assert_eq!(cfg["policy"]["generation"], 1);
    assert!(
        !cfg.to_string().contains("PRIVATE KEY"),
        "no key material in /config"
    );
}
