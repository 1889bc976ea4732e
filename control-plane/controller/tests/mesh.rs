//! The controller and real proxies in one process: bootstrap tokens -> SVIDs -> mTLS,
//! live policy edits, JIT expiry, quarantine, controller outages, hostile callers.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use support::*;
use vigil_api::pb::{
    self, certify_request::Proof, identity_client::IdentityClient, policy_client::PolicyClient,
};

/// orders (app + proxy) and web (proxy with a static route to orders). Returns
/// (orders proxy, web proxy, web's route to orders).
async fn shop(plane: &Plane) -> (vigil_proxy::Proxy, vigil_proxy::Proxy, std::net::SocketAddr) {
    let orders_app = app("orders").await;
    let orders = plane
        .proxy("orders", &["--app".into(), orders_app.to_string()])
        .await;
    let route = format!("127.0.0.1:0={},{}", orders.inbound, id("orders"));
    let web = plane
        .proxy("web", &["--outbound-route".into(), route])
        .await;
    plane.write(
        "workloads.yaml",
        &format!(
            "{}---\n{}",
            workload("orders", orders_app),
            workload("web", "127.0.0.1:1".parse().unwrap())
        ),
    );
    let via = web.routes[0];
    (orders, web, via)
}

async fn ready(p: &vigil_proxy::Proxy) -> bool {
    http_get(p.admin, "/ready")
        .await
        .map(|r| r.0 == StatusCode::OK)
        .unwrap_or(false)
}

async fn get(via: std::net::SocketAddr) -> Option<StatusCode> {
    http_get(via, "/orders").await.ok().map(|r| r.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_policy_edits_jit_and_quarantine() {
    let plane = Plane::start().await;
    let (orders, web, via) = shop(&plane).await;
    eventually(
        15,
        "both proxies ready (token -> SVID, policy)",
        async || ready(&orders).await && ready(&web).await,
    )
    .await;
    // Certificates came from the controller's CA.
    let cfg: serde_json::Value =
        serde_json::from_str(&http_get(orders.admin, "/config").await.unwrap().1).unwrap();
    assert_eq!(cfg["identity"]["id"], id("orders").to_string());

    // Default deny, then an allow: web -> orders over mTLS.
    assert_eq!(get(via).await, Some(StatusCode::FORBIDDEN));
    plane.write("allow.yaml", &allow("web-to-orders", "orders", "web", ""));
    eventually(10, "allow applied", async || {
        get(via).await == Some(StatusCode::OK)
    })
    .await;
    let (_, body) = http_get(via, "/orders").await.unwrap();
    assert_eq!(body, "hello from orders");

    // Edit: allow only GET /health -> /orders is now 403; and back.
    plane.write(
        "allow.yaml",
        &allow(
            "web-to-orders",
            "orders",
            "web",
            "  rules: [{methods: [GET], paths: [{exact: /health}]}]\n",
        ),
    );
    eventually(10, "narrowed policy applied", async || {
        get(via).await == Some(StatusCode::FORBIDDEN)
    })
    .await;
    plane.write("allow.yaml", &allow("web-to-orders", "orders", "web", ""));
    eventually(10, "allow restored", async || {
        get(via).await == Some(StatusCode::OK)
    })
    .await;

    // Status: both proxies connected and enforcing the current generation.
    eventually(10, "acks", async || {
        let s = plane.status().await;
        s["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["up_to_date"] == true && w["connected"] == 1)
            .count()
            == 2
    })
    .await;
    let s = plane.status().await;
    let r = s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "shop/web-to-orders")
        .unwrap();
    assert_eq!(r["accepted"], true);
    assert_eq!(r["targets"], 1);
    assert_eq!(r["enforcing"], 1);

    // A malformed file leaves the rest of the policy in force and is reported.
    plane.write("broken.yaml", "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: x, namespace: shop}\nspec: {target: {segment: orders}, action: Deny, from: [{segment: web}], rules: [{paths: [{prefx: /}]}]}\n");
    eventually(10, "error reported", async || {
        !plane.status().await["source_errors"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    assert_eq!(
        get(via).await,
        Some(StatusCode::OK),
        "the rest stays in force"
    );
    let errs = plane.status().await["source_errors"].to_string();
    assert!(
        errs.contains("broken.yaml") && errs.contains("prefx"),
        "{errs}"
    );
    plane.remove("broken.yaml");

    // JIT: access that expires by itself, with no further edit.
    let until = SystemTime::now() + Duration::from_secs(3);
    let until = humantime::format_rfc3339_seconds(until).to_string();
    plane.write(
        "allow.yaml",
        &allow(
            "web-to-orders",
            "orders",
            "web",
            &format!("  validUntil: '{until}'\n"),
        ),
    );
    eventually(10, "JIT allow applied", async || {
        get(via).await == Some(StatusCode::OK)
    })
    .await;
    eventually(10, "JIT access expired by itself", async || {
        get(via).await == Some(StatusCode::FORBIDDEN)
    })
    .await;
    plane.write("allow.yaml", &allow("web-to-orders", "orders", "web", ""));
    eventually(10, "allow again", async || {
        get(via).await == Some(StatusCode::OK)
    })
    .await;

    // Quarantine web: its live connection to orders is cut, new ones refused, mesh-wide.
    let stream = tokio::net::TcpStream::connect(via).await.unwrap();
    let (mut live, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn_task = tokio::spawn(conn);
    let req = || {
        http::Request::get("/orders")
            .header("host", "x")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    // Read to its end: a response dropped unread would close the connection by itself.
    let resp = live.send_request(req()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap();
    assert!(
        !conn_task.is_finished(),
        "the live connection is kept alive"
    );
    let start = Instant::now();
    plane.write("quarantine.yaml", "apiVersion: policy.vigil.dev/v1alpha1\nkind: Quarantine\nmetadata: {name: web, namespace: shop}\nspec: {workload: web, reason: suspected compromise}\n");
    eventually(10, "web's open connection closed", async || {
        conn_task.is_finished()
    })
    .await;
    let contained = start.elapsed();
    println!("quarantine contained web in {contained:?} (file write -> open connection closed)");
    eprintln!("quarantine contained web in {contained:?}");
    assert_ne!(get(via).await, Some(StatusCode::OK));
    plane.remove("quarantine.yaml");
    eventually(10, "quarantine lifted", async || {
        get(via).await == Some(StatusCode::OK)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_survive_a_controller_outage_and_reconnect() {
    let mut plane = Plane::start().await;
    let (orders, web, via) = shop(&plane).await;
    plane.write("allow.yaml", &allow("web-to-orders", "orders", "web", ""));
    eventually(15, "ready and allowed", async || {
        ready(&orders).await && ready(&web).await && get(via).await == Some(StatusCode::OK)
    })
    .await;
    let bundle_before = plane.ctl().state.ca().bundle();

    plane.stop().await;
    // Fail static: traffic continues under the last policy, and it is still enforced.
    for _ in 0..5 {
        assert_eq!(get(via).await, Some(StatusCode::OK));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready(&orders).await,
        "still ready: last good policy and certificate"
    );

    // Edit the policy while the controller is down, then restart it on the same state.
    plane.write(
        "allow.yaml",
        &allow(
            "web-to-orders",
            "orders",
            "web",
            "  rules: [{paths: [{exact: /health}]}]\n",
        ),
    );
    plane.restart().await;
    assert_eq!(
        plane.ctl().state.ca().bundle(),
        bundle_before,
        "same CA after restart"
    );
    eventually(
        30,
        "proxies reconnected and applied the new policy",
        async || get(via).await == Some(StatusCode::FORBIDDEN),
    )
    .await;
    eventually(30, "both proxies acknowledged", async || {
        plane.status().await["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["up_to_date"] == true)
            .count()
            == 2
    })
    .await;
    // Renewal over mTLS with the current SVID (1-minute certificates renew at ~30 s).
    let serial = |p: &vigil_proxy::Proxy| {
        let admin = p.admin;
        async move {
            let cfg: serde_json::Value =
                serde_json::from_str(&http_get(admin, "/config").await.unwrap().1).unwrap();
            cfg["identity"]["serial"].as_str().unwrap().to_string()
        }
    };
    let before = serial(&orders).await;
    eventually(
        60,
        "orders renewed its certificate from the restarted controller",
        async || serial(&orders).await != before,
    )
    .await;
    let metrics = http_get(plane.admin, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains("vigil_controller_certificates_issued_total{kind=\"renewal\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callers_get_nothing() {
    let plane = Plane::start().await;
    plane.load_workloads().await;
    let csr = || {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec()
    };
    let certify = |workload: &str, proof: Option<Proof>| pb::CertifyRequest {
        workload: workload.into(),
        csr: csr(),
        proof,
    };
    let mut client = IdentityClient::new(channel(&plane, None).await);

    // A good token works (control).
    let ok = client
        .certify(certify(
            "shop/web",
            Some(Proof::BootstrapToken(plane.token("web"))),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.spiffe_id, id("web").to_string());

    let other_ca = tempfile::tempdir().unwrap();
    let foreign = vigil_cert_authority::CertificateAuthority::init(
        other_ca.path(),
        vigil_cert_authority::InitOptions::new(vigil_cert_authority::TrustDomain::new(TD).unwrap()),
        Default::default(),
        SystemTime::now(),
    )
    .unwrap();
    // (Each token is minted on its own line: the CA lock must not be held across two.)
    let expired = plane.ctl().state.ca().token_key().mint(
        &id("web"),
        Duration::from_secs(1),
        SystemTime::now() - Duration::from_secs(60),
    );
    let web_token = plane.token("web");
    let cases: Vec<(&str, pb::CertifyRequest, tonic::Code)> = vec![
        (
            "forged token",
            certify(
                "shop/web",
                Some(Proof::BootstrapToken(foreign.token_key().mint(
                    &id("web"),
                    Duration::from_secs(60),
                    SystemTime::now(),
                ))),
            ),
            tonic::Code::Unauthenticated,
        ),
        (
            "expired token",
            certify("shop/web", Some(Proof::BootstrapToken(expired))),
            tonic::Code::Unauthenticated,
        ),
        (
            "other identity's token",
            certify(
                "shop/orders",
                Some(Proof::BootstrapToken(web_token.clone())),
            ),
            tonic::Code::Unauthenticated,
        ),
        (
            "garbage token",
            certify("shop/web", Some(Proof::BootstrapToken("vgt1.x.y".into()))),
            tonic::Code::Unauthenticated,
        ),
        (
            "no proof",
            certify("shop/web", None),
            tonic::Code::Unauthenticated,
        ),
        (
            "unknown workload",
            certify("shop/ghost", Some(Proof::BootstrapToken(web_token.clone()))),
            tonic::Code::NotFound,
        ),
        (
            "bad workload ref",
            certify("web", Some(Proof::BootstrapToken(web_token.clone()))),
            tonic::Code::InvalidArgument,
        ),
        (
            "service-account token in local mode",
            certify("shop/web", Some(Proof::ServiceAccountToken("jwt".into()))),
            tonic::Code::Unimplemented,
        ),
    ];
    for (label, req, want) in cases {
        let err = client.certify(req).await.unwrap_err();
        assert_eq!(err.code(), want, "{label}: {}", err.message());
    }
    // A CSR that is not a CSR.
    let mut bad = certify("shop/web", Some(Proof::BootstrapToken(plane.token("web"))));
    bad.csr = b"not a csr".to_vec();
    assert_eq!(
        client.certify(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    // Renewal with web's SVID cannot get orders' identity.
    let web = creds_for(&plane, "web");
    let mut as_web = IdentityClient::new(channel(&plane, Some(&web)).await);
    let err = as_web
        .certify(certify("shop/orders", None))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    assert_eq!(
        as_web
            .certify(certify("shop/web", None))
            .await
            .unwrap()
            .into_inner()
            .spiffe_id,
        id("web").to_string()
    );

    // Web's proxy cannot read orders' policy, nor can an anonymous caller read any.
    let mut policy = PolicyClient::new(channel(&plane, Some(&web)).await);
    let err = policy
        .watch(pb::WatchRequest {
            workload: "shop/orders".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    let err = policy
        .ack(pb::AckRequest {
            workload: "shop/orders".into(),
            generation: 1,
            valid: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let mut anon = PolicyClient::new(channel(&plane, None).await);
    let err = anon
        .watch(pb::WatchRequest {
            workload: "shop/web".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // Its own policy it can read.
    let mut stream = policy
        .watch(pb::WatchRequest {
            workload: "shop/web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let snap = stream.message().await.unwrap().unwrap();
    assert_eq!(snap.policy.unwrap().workload_id, id("web").to_string());

    // Resolve: which workload serves an address, for enrolled callers only.
    let resolve = |workload: &str, address: &str| pb::ResolveRequest {
        workload: workload.into(),
        address: address.into(),
    };
    let orders_addr = "127.0.0.1:1";
    let found = policy
        .resolve(resolve("shop/web", orders_addr))
        .await
        .unwrap()
        .into_inner()
        .destination
        .expect("orders serves its address");
    assert_eq!(found.identities, vec![id("orders").to_string()]);
    assert_eq!(found.address, orders_addr);
    let none = policy
        .resolve(resolve("shop/web", "127.0.0.1:9"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.destination, None, "no workload there");
    let err = policy
        .resolve(resolve("shop/web", "not-an-address"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = anon
        .resolve(resolve("shop/web", orders_addr))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unauthenticated,
        "no SVID, no answers"
    );
    let err = policy
        .resolve(resolve("shop/orders", orders_addr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "only as itself");

    let metrics = http_get(plane.admin, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains("vigil_controller_resolves_total{result=\"mesh\"} 1")
            && metrics.contains("vigil_controller_resolves_total{result=\"not_mesh\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "vigil_controller_certificate_requests_refused_total{reason=\"bad_token\"} 4"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_controller_policy_watch_refused_total{reason=\"wrong_identity\"}"),
        "{metrics}"
    );
}
