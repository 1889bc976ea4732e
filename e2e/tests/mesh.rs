//! The mesh end to end on real kernel networking (root; CI runs as root).
//!
//! Each pod is a network namespace on a test bridge; the controller (local mode) has a
//! namespace of its own. Enrolled pods get the iptables rules of `vigil-proxy init` and a
//! `vigil-proxy` in controller mode running as uid 1337. The apps know nothing of the mesh:
//! they call `pod-ip:port` in plain HTTP or TCP.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::StatusCode;
use vigil_e2e::{
    apps::{self, echo, get, http},
    capture::{Capture, frames_containing, tshark},
    mesh::{Mesh, app_segments, id, workloads},
    netns::root_or_skip,
};

/// web may GET /orders* on orders:8080 and use the opaque TCP service on orders:9000;
/// anyone outside the mesh may GET /public* on orders:8080.
const POLICIES: &str = "\
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web-reads-orders, namespace: shop}
spec:
  target: {segment: orders, ports: [8080]}
  action: Allow
  from: [{segment: web}]
  rules: [{methods: [GET], paths: [{prefix: /orders}]}]
---
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web-uses-echo, namespace: shop}
spec:
  target: {segment: orders, ports: [9000]}
  action: Allow
  from: [{segment: web}]
---
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: public, namespace: shop}
spec:
  target: {segment: orders, ports: [8080]}
  action: Allow
  from: [{unauthenticated: true}]
  rules: [{methods: [GET], paths: [{prefix: /public}]}]
";

fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn status_of(r: anyhow::Result<apps::Reply>) -> Option<StatusCode> {
    r.ok().map(|r| r.0)
}

#[test]
fn interception_identity_wire_encryption_policy_and_quarantine() {
    if !root_or_skip("interception_identity_wire_encryption_policy_and_quarantine") {
        return;
    }
    assert!(
        vigil_e2e::mesh::have("tcpdump") && vigil_e2e::mesh::have("tshark"),
        "tcpdump and tshark are needed (apt-get install tcpdump tshark; .ci/run does)"
    );
    let mut mesh = Mesh::new(241);
    let web = mesh.net.pod("web", 10);
    let orders = mesh.net.pod("orders", 11);
    let outside = mesh.net.pod("outside", 12);
    let intruder = mesh.net.pod("intruder", 13);
    orders.spawn(|| apps::http_app("orders", 8080));
    orders.spawn(|| apps::echo_app(9000));
    web.spawn(|| apps::http_app("web", 8080));
    intruder.spawn(|| apps::http_app("intruder", 8080));
    mesh.write(
        "workloads.yaml",
        &workloads(&[
            ("web", "app: web", &[web.addr(8080)]),
            (
                "orders",
                "app: orders",
                &[orders.addr(8080), orders.addr(9000)],
            ),
            ("intruder", "app: intruder", &[intruder.addr(8080)]),
        ]),
    );
    mesh.write("segments.yaml", &app_segments(&["web", "orders"]));
    mesh.write("policies.yaml", POLICIES);
    mesh.start_controller();
    mesh.enroll(
        &orders,
        "orders",
        &["--opaque-ports", "9000", "--probe-route", "8080:/healthz"],
    );
    mesh.enroll(&web, "web", &[]);
    mesh.enroll(&intruder, "intruder", &[]);
    // Every proxy on the controller's current snapshot: each one knows who serves which
    // address before the first call (a proxy still on an older snapshot refuses a mesh
    // destination it does not know yet on its own, without a handshake to count).
    mesh.wait_all_applied(0, Duration::from_secs(10));

    // --- The app in web calls orders' IP:port; what crosses the bridge is TLS 1.3. ---
    let secret = format!("e2e-secret-{}", std::process::id());
    let control = format!("e2e-plain-{}", std::process::id());
    let pcap = mesh.dir.path().join("bridge.pcap");
    // Every port of the bridge (the veths of all pods): `any` in the bridge namespace.
    let cap = Capture::start(&mesh.net.node, "any", &pcap);
    let (to_orders, to_echo) = (orders.addr(8080), orders.addr(9000));
    let path = format!("/orders/{secret}");
    let (status, body) = {
        let (path, secret) = (path.clone(), secret.clone());
        web.run(move || async move {
            http(to_orders, "GET", &path, &[("x-e2e-secret", &secret)])
                .await
                .unwrap()
        })
    };
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["peer"],
        id("web"),
        "orders' app sees web's verified identity"
    );
    assert_eq!(seen["path"], path);
    let opaque = format!("opaque-{secret}");
    let msg = opaque.clone();
    assert_eq!(
        web.run(move || async move { echo(to_echo, &msg).await }),
        Some(opaque),
        "opaque TCP web -> orders:9000 is allowed (L4)"
    );
    // A mesh workload no policy names: its call still goes over mTLS (the controller tells
    // its proxy who serves that address), and orders denies it by identity.
    let probe_path = format!("/orders/intruder-{secret}");
    let (status, _) = {
        let p = probe_path.clone();
        intruder.run(move || async move { get(to_orders, &p).await.unwrap() })
    };
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "intruder -> orders is denied"
    );
    // The control: plaintext from outside the mesh is visible in the capture.
    let public = format!("/public/{control}");
    let (status, body) = outside.run(move || async move { get(to_orders, &public).await.unwrap() });
    assert_eq!(
        status,
        StatusCode::OK,
        "unauthenticated allowed on /public: {body}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["peer"],
        serde_json::Value::Null
    );
    let pcap = cap.stop();
    if std::env::var_os("VIGIL_E2E_DEBUG").is_some() {
        eprintln!("{}", tshark(&pcap, &[]).join("\n"));
    }
    assert!(
        frames_containing(&pcap, &control) > 0,
        "the capture sees plaintext when there is plaintext (control)"
    );
    assert_eq!(
        frames_containing(&pcap, &secret),
        0,
        "no byte of the mesh request (path, header, TCP payload) crosses the wire in the clear"
    );
    let decode = [
        "-d",
        "tcp.port==8080,tls",
        "-d",
        "tcp.port==9000,tls",
        "-T",
        "fields",
    ];
    let server_hellos = tshark(
        &pcap,
        &[
            &decode[..],
            &[
                "-Y",
                &format!("tls.handshake.type == 2 && ip.src == {}", orders.ip),
                "-e",
                "tls.handshake.extensions.supported_version",
            ],
        ]
        .concat(),
    );
    assert!(
        server_hellos.len() >= 3,
        "a TLS handshake for each connection (web:8080, web:9000, intruder:8080): {server_hellos:?}"
    );
    assert!(
        server_hellos.iter().all(|v| v.contains("0x0304")),
        "every ServerHello selects TLS 1.3: {server_hellos:?}"
    );
    let client_hellos = tshark(
        &pcap,
        &[
            &decode[..],
            &[
                "-Y",
                &format!("tls.handshake.type == 1 && ip.dst == {}", orders.ip),
                "-e",
                "tls.handshake.extensions_alpn_str",
            ],
        ]
        .concat(),
    );
    assert!(
        !client_hellos.is_empty() && client_hellos.iter().all(|a| a.contains("vigil/1")),
        "the callers' proxies open mesh TLS (ALPN vigil/1): {client_hellos:?}"
    );
    println!(
        "wire: {} TLS 1.3 handshakes to orders, 0 frames with a mesh request's bytes",
        server_hellos.len()
    );

    // --- L7 and L4 authorization. ---
    let l7 = web.run(move || async move {
        (
            status_of(http(to_orders, "DELETE", "/orders/1", &[]).await),
            status_of(get(to_orders, "/admin").await),
            status_of(get(to_orders, "/orders/1").await),
        )
    });
    assert_eq!(
        l7,
        (
            Some(StatusCode::FORBIDDEN),
            Some(StatusCode::FORBIDDEN),
            Some(StatusCode::OK)
        ),
        "(DELETE /orders/1, GET /admin, GET /orders/1) from web"
    );
    let from_intruder = intruder.run(move || async move {
        (
            status_of(get(to_orders, "/orders/1").await),
            echo(to_echo, "ping").await,
        )
    });
    assert_eq!(
        from_intruder,
        (Some(StatusCode::FORBIDDEN), None),
        "a mesh identity no policy names: 403 at L7, connection refused at L4"
    );
    let denied = |log: &[serde_json::Value], protocol: &str| {
        log.iter().any(|e| {
            e["src_id"] == id("intruder") && e["protocol"] == protocol && e["decision"] == "deny"
        })
    };
    // The intruder's app spoke HTTP/1.1, and so did its proxy to orders' (`--mesh-http1`'s
    // default, for a request alone in flight): orders' inbound logs the protocol it received.
    let log = mesh.access_log_when("orders", Duration::from_secs(5), |log| {
        denied(log, "http1") && denied(log, "tcp")
    });
    for protocol in ["http1", "tcp"] {
        assert!(
            denied(&log, protocol),
            "orders logged the denied {protocol} call with the caller's verified identity: {log:#?}"
        );
    }
    assert!(
        log.iter()
            .any(|e| e["path"] == probe_path.as_str() && e["src_id"] == id("intruder")),
        "{log:#?}"
    );

    // --- A pod outside the mesh, and kubelet-style probes from the node. ---
    let from_outside = outside.run(move || async move {
        (
            status_of(get(to_orders, "/orders/1").await),
            echo(to_echo, "ping").await,
        )
    });
    assert_eq!(
        from_outside,
        (Some(StatusCode::FORBIDDEN), None),
        "plaintext from outside the mesh is refused under default deny"
    );
    let probes = mesh.net.node.run(move || async move {
        (
            get(to_orders, "/healthz").await.unwrap(),
            status_of(get(to_orders, "/orders/1").await),
        )
    });
    assert_eq!(
        probes.0,
        (StatusCode::OK, "ok".to_string()),
        "the declared probe route"
    );
    assert_eq!(
        probes.1,
        Some(StatusCode::FORBIDDEN),
        "only the probe route"
    );

    // --- A policy change reaches every proxy. ---
    let generation = mesh.generation();
    mesh.write(
        "intruder.yaml",
        &format!(
            "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: intruder-reads, namespace: shop}}\nspec:\n  target: {{segment: orders}}\n  action: Allow\n  from: [{{spiffeId: '{}'}}]\n  rules: [{{methods: [GET], paths: [{{prefix: /orders}}]}}]\n",
            id("intruder")
        ),
    );
    let applied = mesh.wait_all_applied(generation, Duration::from_secs(10));
    assert_eq!(
        intruder.run(move || async move { status_of(get(to_orders, "/orders/1").await) }),
        Some(StatusCode::OK),
        "the new policy is in force"
    );
    println!("policy change: every proxy acknowledged it {applied:?} after the file was written");
    eprintln!("policy change propagated to every proxy in {applied:?}");

    // --- Quarantine web: its open connection is cut, mesh-wide, and then restored. ---
    let (tx, rx) = std::sync::mpsc::channel::<(&'static str, Instant)>();
    web.spawn(move || async move {
        let stream = tokio::net::TcpStream::connect(to_orders).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let req = http::Request::get("/orders/1")
            .header("host", "orders")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let ok = sender
            .send_request(req)
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        let _ = tx.send((if ok { "ok" } else { "failed" }, Instant::now()));
        let _ = conn.await;
        let _ = tx.send(("closed", Instant::now()));
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap().0, "ok");
    let generation = mesh.generation();
    let policy_dir = mesh.policy_dir().display().to_string();
    let start = Instant::now();
    mesh.vigil(&[
        "quarantine",
        "--dir",
        &policy_dir,
        "-n",
        "shop",
        "--workload",
        "web",
        "--reason",
        "e2e: suspected compromise",
    ]);
    let (event, at) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(event, "closed");
    let contained = at.duration_since(start);
    mesh.wait_all_applied(generation, Duration::from_secs(10));
    let everywhere = start.elapsed();
    let after = web.run(move || async move { status_of(get(to_orders, "/orders/1").await) });
    assert_ne!(
        after,
        Some(StatusCode::OK),
        "new calls from web are refused"
    );
    assert_eq!(
        intruder.run(move || async move { status_of(get(to_orders, "/orders/1").await) }),
        Some(StatusCode::OK),
        "others are not affected"
    );
    println!(
        "quarantine: web's open connection closed after {contained:?}; every proxy applied it after {everywhere:?}"
    );
    eprintln!("quarantine contained web in {contained:?} (all proxies: {everywhere:?})");
    mesh.vigil(&["unquarantine", "--dir", &policy_dir, "-n", "shop", "web"]);
    let restored = eventually(Duration::from_secs(10), "web reaches orders again", || {
        web.run(move || async move { status_of(get(to_orders, "/orders/1").await) })
            == Some(StatusCode::OK)
    });
    println!("quarantine lifted: web reaches orders again after {restored:?}");
}

#[test]
fn rotation_under_traffic_and_a_controller_outage() {
    if !root_or_skip("rotation_under_traffic_and_a_controller_outage") {
        return;
    }
    let mut mesh = Mesh::new(242);
    let web = mesh.net.pod("web", 10);
    let orders = mesh.net.pod("orders", 11);
    orders.spawn(|| apps::http_app("orders", 8080));
    mesh.write(
        "workloads.yaml",
        &workloads(&[
            ("web", "app: web", &[web.addr(8080)]),
            ("orders", "app: orders", &[orders.addr(8080)]),
        ]),
    );
    mesh.write("segments.yaml", &app_segments(&["web", "orders"]));
    mesh.write("policies.yaml", POLICIES);
    mesh.start_controller();
    mesh.enroll(&orders, "orders", &[]);
    mesh.enroll(&web, "web", &[]);
    let to_orders = orders.addr(8080);
    let serials = [Mesh::serial(&web), Mesh::serial(&orders)];
    assert!(serials.iter().all(|s| !s.is_empty()), "{serials:?}");

    // Continuous traffic from web's app: a new connection per request, every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_failure = Arc::new(Mutex::new(None::<String>));
    {
        let (stop, ok, failed, first_failure) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            first_failure.clone(),
        );
        web.spawn(move || async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match get(to_orders, &format!("/orders/{n}")).await {
                    Ok((StatusCode::OK, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut f = first_failure.lock().unwrap();
                        f.get_or_insert_with(|| format!("request {n}: {other:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    eventually(Duration::from_secs(10), "traffic flows", || {
        ok.load(Ordering::Relaxed) > 20
    });

    // The controller goes away: traffic continues under the last policy.
    mesh.stop_controller();
    let during = ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        ok.load(Ordering::Relaxed) > during + 50,
        "allowed traffic continues while the controller is down"
    );
    assert_eq!(
        web.run(
            move || async move { status_of(http(to_orders, "DELETE", "/orders/1", &[]).await) }
        ),
        Some(StatusCode::FORBIDDEN),
        "and the last policy still denies what it denied"
    );

    // It comes back: both proxies reconnect, and a change made now reaches them.
    mesh.start_controller();
    let reconnected = mesh.wait_all_applied(0, Duration::from_secs(30));
    println!("controller restarted: both proxies reconnected and in sync after {reconnected:?}");
    mesh.write(
        "deletes.yaml",
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: web-deletes, namespace: shop}\nspec:\n  target: {segment: orders}\n  action: Allow\n  from: [{segment: web}]\n  rules: [{methods: [DELETE], paths: [{prefix: /orders}]}]\n",
    );
    eventually(
        Duration::from_secs(10),
        "a change after the restart applies",
        || {
            web.run(
                move || async move { status_of(http(to_orders, "DELETE", "/orders/1", &[]).await) },
            ) == Some(StatusCode::OK)
        },
    );

    // Certificates (1 minute) rotate under the traffic.
    let started = Instant::now();
    let rotated = eventually(Duration::from_secs(80), "both certificates rotated", || {
        std::thread::sleep(Duration::from_millis(500));
        Mesh::serial(&web) != serials[0] && Mesh::serial(&orders) != serials[1]
    });
    // A little more traffic on the new certificates.
    let at = ok.load(Ordering::Relaxed);
    eventually(Duration::from_secs(10), "traffic after rotation", || {
        ok.load(Ordering::Relaxed) > at + 50
    });
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "rotation: both proxies renewed within {:?} of waiting; {ok} requests succeeded, {failed} failed",
        rotated.max(started.elapsed())
    );
    assert_eq!(
        failed,
        0,
        "no request failed across the outage, the restart and the rotations; first: {:?}",
        first_failure.lock().unwrap()
    );
    assert!(ok > 500, "{ok} requests");
}
