//! IPv6 through the mesh end to end, in controller mode on real kernel networking (root;
//! CI runs as root): dual-stack pods (`web`, `orders`) and an IPv6-only pod (`solo`, which
//! reaches the controller at its IPv6 address) on the test bridge. The apps call pod
//! addresses of either family knowing nothing of the mesh; `vigil-proxy init` programs
//! iptables and ip6tables, the controller learns each workload's addresses of both
//! families and pushes them as destinations. Asserted: every allowed call arrives with the
//! caller's verified identity whichever family it used, a call no policy allows is denied
//! by identity over IPv6 too, plaintext from an IPv6 pod outside the mesh is denied,
//! callers are logged in their own family, and no byte of a mesh request crosses the
//! bridge in the clear over IPv6 (while the outside pod's plaintext is seen: the control).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::{net::SocketAddr, time::Duration};

use http::StatusCode;
use vigil_e2e::{
    apps::{self, get},
    capture::{Capture, frames_containing},
    mesh::{Mesh, app_segments, id, workloads},
    netns::{Pod, root_or_skip},
};

/// web and solo may GET /orders* on orders; web may GET anything on solo. Nobody may call
/// web.
const POLICIES: &str = "\
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: read-orders, namespace: shop}
spec:
  target: {segment: orders, ports: [8080]}
  action: Allow
  from: [{segment: web}, {segment: solo}]
  rules: [{methods: [GET], paths: [{prefix: /orders}]}]
---
apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web-reads-solo, namespace: shop}
spec:
  target: {segment: solo, ports: [8080]}
  action: Allow
  from: [{segment: web}]
";

/// `from` calls `to` with a GET of `path`; returns the status and the peer the app saw.
fn call(from: &Pod, to: SocketAddr, path: &str) -> (StatusCode, Option<String>) {
    let path = path.to_string();
    let (status, body) = from.run(move || async move { get(to, &path).await.unwrap() });
    let peer = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["peer"].as_str().map(str::to_string));
    (status, peer)
}

#[test]
fn ipv6_only_and_dual_stack_pods_in_controller_mode() {
    if !root_or_skip("ipv6_only_and_dual_stack_pods_in_controller_mode") {
        return;
    }
    let mut mesh = Mesh::new(244);
    let ctl = mesh.ctl_pod.clone();
    mesh.net.add_ipv6(&ctl);
    let web = mesh.net.pod("web", 10);
    let orders = mesh.net.pod("orders", 11);
    let solo = mesh.net.pod("solo", 12);
    let outside = mesh.net.pod("outside", 13);
    for p in [&web, &orders, &solo, &outside] {
        mesh.net.add_ipv6(p);
    }
    mesh.net.ipv6_only(&solo);
    mesh.net.ipv6_only(&outside);
    orders.spawn(|| apps::http_app("orders", 8080));
    solo.spawn(|| apps::http_app("solo", 8080));
    web.spawn(|| apps::http_app("web", 8080));
    mesh.write(
        "workloads.yaml",
        &workloads(&[
            ("web", "app: web", &[web.addr(8080), web.addr6(8080)]),
            (
                "orders",
                "app: orders",
                &[orders.addr(8080), orders.addr6(8080)],
            ),
            ("solo", "app: solo", &[solo.addr6(8080)]),
        ]),
    );
    mesh.write("segments.yaml", &app_segments(&["web", "orders", "solo"]));
    mesh.write("policies.yaml", POLICIES);
    mesh.start_controller();
    mesh.enroll(&orders, "orders", &[]);
    mesh.enroll(&web, "web", &[]);
    let ctl6 = SocketAddr::from((ctl.ip6(), 8443)).to_string();
    mesh.enroll_via(&solo, "solo", &ctl6, &[]);

    let secret = format!("e2e-v6-secret-{}", std::process::id());
    let pcap = mesh.dir.path().join("bridge6.pcap");
    let cap = Capture::start(&mesh.net.node, "any", &pcap);
    // Dual stack: web reaches orders over either family, as itself.
    for to in [orders.addr6(8080), orders.addr(8080)] {
        assert_eq!(
            call(&web, to, &format!("/orders/{secret}")),
            (StatusCode::OK, Some(id("web"))),
            "web -> orders at {to}"
        );
    }
    // IPv6 only, both ways.
    assert_eq!(
        call(&web, solo.addr6(8080), &format!("/x/{secret}")),
        (StatusCode::OK, Some(id("web"))),
        "web -> solo (IPv6 only)"
    );
    assert_eq!(
        call(&solo, orders.addr6(8080), &format!("/orders/{secret}")),
        (StatusCode::OK, Some(id("solo"))),
        "solo (IPv6 only) -> orders"
    );
    // Denied by identity over IPv6: nobody may call web.
    assert_eq!(
        call(&solo, web.addr6(8080), &format!("/orders/{secret}")).0,
        StatusCode::FORBIDDEN,
        "solo -> web is denied"
    );
    // The control: plaintext over IPv6 from outside the mesh is visible in the capture
    // (and denied: unauthenticated callers are not allowed).
    let control = format!("e2e-v6-plain-{}", std::process::id());
    assert_eq!(
        call(&outside, orders.addr6(8080), &format!("/orders/{control}")).0,
        StatusCode::FORBIDDEN,
        "plaintext outside -> orders is denied"
    );
    let pcap = cap.stop();
    assert!(
        frames_containing(&pcap, &control) > 0,
        "the capture sees IPv6 plaintext when there is plaintext (control)"
    );
    assert_eq!(
        frames_containing(&pcap, &secret),
        0,
        "no byte of a mesh request crosses the bridge in the clear"
    );

    // Callers are logged in their own family (IPv4 through the dual-stack inbound is
    // IPv4, not ::ffff:…), and the proxies kept the original destinations.
    let callers = [
        web.ip6().to_string(),
        web.ip.to_string(),
        solo.ip6().to_string(),
    ];
    let from = |log: &[serde_json::Value], caller: &str| {
        log.iter().any(|l| {
            l["direction"] == "inbound"
                && l["status"] == 200
                && l["src_addr"]
                    .as_str()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    .is_some_and(|src| src.ip().to_string() == caller)
        })
    };
    let inbound = mesh.access_log_when("orders", Duration::from_secs(5), |log| {
        callers.iter().all(|c| from(log, c))
    });
    for caller in &callers {
        assert!(
            from(&inbound, caller),
            "orders logged a call from {caller}: {inbound:#?}"
        );
    }
    let dsts = [orders.addr6(8080), orders.addr(8080), solo.addr6(8080)];
    let to = |log: &[serde_json::Value], dst: &SocketAddr| {
        log.iter()
            .any(|l| l["direction"] == "outbound" && l["dst_addr"] == dst.to_string())
    };
    let outbound = mesh.access_log_when("web", Duration::from_secs(5), |log| {
        dsts.iter().all(|d| to(log, d))
    });
    for dst in &dsts {
        assert!(
            to(&outbound, dst),
            "web's outbound logged {dst}: {outbound:#?}"
        );
    }
}
