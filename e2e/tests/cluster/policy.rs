//! Steps 3, 4 and 5: default deny and a policy that opens the path, what crosses the
//! bridge, probes and a pod outside the mesh, and a quarantine.

use std::time::Duration;

use vigil_e2e::{
    capture::{Capture, frames_containing, tshark},
    node::BRIDGE,
    workloads::{self, APP_PORT, CONTROL_PORT},
};

use crate::steps::{Ctx, SHOP, within};

/// The Service as an app in the mesh addresses it (CoreDNS, then kube-proxy's ClusterIP).
pub(crate) fn orders_url(path: &str) -> String {
    format!("http://orders.{SHOP}.svc.cluster.local:{APP_PORT}{path}")
}

const FRONTEND_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

/// The AccessPolicy of the path: frontend may call orders' `/orders…` with `methods`, and
/// its gRPC echo.
pub(crate) fn access_policy(methods: &str) -> String {
    format!(
        r#"apiVersion: policy.vigil.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: frontend-reads-orders, namespace: {SHOP}}}
spec:
  target: {{podSelector: {{matchLabels: {{app: orders}}}}}}
  action: Allow
  from: [{{serviceAccount: {SHOP}/frontend}}]
  rules:
    - {{methods: [{methods}], paths: [{{prefix: /orders}}]}}
    - {{grpc: [{{service: vigil.testapp.v1.Echo, method: Echo}}]}}
"#
    )
}

/// Step 3: frontend -> orders through the Service is intercepted on both sides: default deny
/// answers 403 (the app never sees it); an AccessPolicy makes it 200 with the caller's
/// identity; what crosses the bridge is TLS 1.3 and no byte of the request. Returns the
/// capture, still running, for step 4's plaintext control.
pub(crate) async fn default_deny_then_allow(ctx: &Ctx<'_>) -> (Capture, std::path::PathBuf) {
    let (_, fe) = ctx.pod(SHOP, "frontend").await;
    let (_, orders) = ctx.pod(SHOP, "orders").await;
    let pcap = ctx.node.dir.join("bridge.pcap");
    let cap = Capture::start_in(&ctx.node.netns, BRIDGE, &pcap);
    let denied = workloads::call(&fe, "GET", &orders_url("/orders/1")).await;
    assert_eq!(denied.status, Some(403), "default deny: {denied:?}");
    assert_eq!(
        workloads::served(&orders, "/orders/1").await.unwrap(),
        0,
        "a denied request never reaches the app"
    );
    let grpc_denied = workloads::grpc(&fe, &orders_url(""), "not yet").await;
    assert_eq!(
        grpc_denied.http_status,
        Some(403),
        "gRPC, default deny: {grpc_denied:?}"
    );
    ctx.apply(&access_policy("GET"));
    let (allowed, took) = within(
        "the AccessPolicy opens frontend -> orders",
        Duration::from_secs(10),
        || {
            let fe = fe.clone();
            async move {
                let c = workloads::call(&fe, "GET", &orders_url("/orders/1")).await;
                (c.status == Some(200)).then_some(c)
            }
        },
    )
    .await;
    assert!(
        took <= Duration::from_secs(1),
        "the policy applied in {took:?} (expected within 1 s)"
    );
    assert_eq!(allowed.peer().as_deref(), Some(FRONTEND_ID), "{allowed:?}");
    let post = workloads::call(&fe, "POST", &orders_url("/orders/1")).await;
    assert_eq!(post.status, Some(403), "only GET is allowed: {post:?}");
    // gRPC (h2c from the app, HTTP/2 over mTLS between the pods, trailers kept).
    let grpc = workloads::grpc(&fe, &orders_url(""), "echo over the mesh").await;
    assert_eq!(
        (grpc.grpc_status, grpc.message.as_deref()),
        (Some(0), Some("echo over the mesh")),
        "{grpc:?}"
    );
    let secret = "VIGIL-MESH-SECRET-7f3a9c";
    let c = workloads::call(&fe, "GET", &orders_url(&format!("/orders/{secret}"))).await;
    assert_eq!(c.status, Some(200), "{c:?}");
    println!(
        "3. frontend -> orders (Service via DNS): 403 by default deny, 200 {:.0} ms after the AccessPolicy was created, caller {FRONTEND_ID}; POST still 403; a gRPC echo answered with grpc-status 0",
        took.as_secs_f64() * 1e3
    );
    (cap, pcap)
}

/// Step 4: kubelet's HTTP probes reach the app through the proxy (declared probe routes); a
/// pod without the annotation is not injected and its plaintext calls to orders get 403;
/// the bridge capture: TLS 1.3 (ALPN vigil/1) between the meshed pods, the plaintext
/// control visible, the mesh request's bytes not.
pub(crate) async fn probes_and_the_unenrolled(
    ctx: &Ctx<'_>,
    capture: (Capture, std::path::PathBuf),
) {
    let (cap, _) = capture;
    let (orders_pod, orders) = ctx.pod(SHOP, "orders").await;
    let before = workloads::served(&orders, "/healthz").await.unwrap();
    let (after, _) = within(
        "kubelet probes reach the app",
        Duration::from_secs(10),
        || {
            let orders = orders.clone();
            async move {
                let n = workloads::served(&orders, "/healthz").await.ok()?;
                (n > before).then_some(n)
            }
        },
    )
    .await;
    let logs = ctx.kubectl(&["-n", SHOP, "logs", &orders_pod, "-c", "vigil-proxy"]);
    let probe_lines = logs
        .lines()
        .filter(|l| l.contains("\"probe route\"") && l.contains("/healthz"))
        .count();
    assert!(
        probe_lines > 0,
        "the proxy's access log shows the probes it let through:\n{logs}"
    );

    ctx.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: outside}\n");
    ctx.apply(&workloads::deployment("outside", "outsider", 1, &[]));
    ctx.deployment_ready("outside", "outsider", Duration::from_secs(120))
        .await;
    let (name, outsider) = ctx.pod("outside", "outsider").await;
    let containers = ctx.kubectl(&[
        "-n",
        "outside",
        "get",
        "pod",
        &name,
        "-o",
        "jsonpath={.spec.initContainers[*].name}|{.spec.containers[*].name}",
    ]);
    assert_eq!(containers.trim(), "|app", "not injected: {containers}");
    let control = "VIGIL-PLAINTEXT-CONTROL-51d2";
    let plain = workloads::call(&outsider, "GET", &orders_url(&format!("/orders/{control}"))).await;
    assert_eq!(
        plain.status,
        Some(403),
        "plaintext from outside the mesh: {plain:?}"
    );

    let pcap = cap.stop();
    // The test's own requests to the pods' control ports carry the markers too: only
    // traffic between pods counts.
    let between_pods = |needle: &str| {
        tshark(
            &pcap,
            &[
                "-Y",
                &format!("frame contains \"{needle}\" && !(tcp.port == {CONTROL_PORT})"),
            ],
        )
        .len()
    };
    assert!(
        between_pods(control) > 0,
        "the capture sees plaintext between pods when there is plaintext (control)"
    );
    assert_eq!(
        between_pods("VIGIL-MESH-SECRET-7f3a9c"),
        0,
        "no byte of the mesh request crosses the bridge in the clear"
    );
    assert!(
        frames_containing(&pcap, "VIGIL-MESH-SECRET-7f3a9c") > 0,
        "the marker was sent (on the control port)"
    );
    let decode = ["-d", &format!("tcp.port=={APP_PORT},tls"), "-T", "fields"];
    let server_hellos = tshark(
        &pcap,
        &[
            &decode[..],
            &[
                "-Y",
                &format!("tls.handshake.type == 2 && ip.src == {orders}"),
                "-e",
                "tls.handshake.extensions.supported_version",
            ],
        ]
        .concat(),
    );
    assert!(
        !server_hellos.is_empty() && server_hellos.iter().all(|v| v.contains("0x0304")),
        "TLS 1.3 from orders: {server_hellos:?}"
    );
    let alpn = tshark(
        &pcap,
        &[
            &decode[..],
            &[
                "-Y",
                &format!("tls.handshake.type == 1 && ip.dst == {orders}"),
                "-e",
                "tls.handshake.extensions_alpn_str",
            ],
        ]
        .concat(),
    );
    assert!(
        !alpn.is_empty() && alpn.iter().all(|a| a.contains("vigil/1")),
        "mesh TLS (ALPN vigil/1): {alpn:?}"
    );
    println!(
        "4. probes: kubelet's probes reach orders through its proxy ({} more while we watched; {probe_lines} probe-route lines in its access log); the unenrolled pod is not injected and gets 403; bridge capture: {} TLS 1.3 handshakes to orders, ALPN vigil/1, 0 frames with the mesh request's bytes, the plaintext control seen",
        after - before,
        server_hellos.len()
    );
}

/// Step 5: A Quarantine of frontend cuts its open connection and new calls within a second;
/// deleting it restores them.
pub(crate) async fn quarantine(ctx: &Ctx<'_>) {
    let (_, fe) = ctx.pod(SHOP, "frontend").await;
    let id = workloads::open_stream(&fe, &orders_url("/orders/feed?stream=1"))
        .await
        .unwrap();
    within("the stream flows", Duration::from_secs(5), || {
        let fe = fe.clone();
        async move {
            let s = workloads::stream_status(&fe, id).await.ok()?;
            (s.open && s.chunks >= 3).then_some(())
        }
    })
    .await;
    let q = format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Quarantine\nmetadata: {{name: frontend, namespace: {SHOP}}}\nspec: {{podSelector: {{matchLabels: {{app: frontend}}}}, reason: \"e2e: suspected compromise\"}}\n"
    );
    ctx.apply(&q);
    let (status, cut) = within(
        "the quarantine closes the open stream",
        Duration::from_secs(10),
        || {
            let fe = fe.clone();
            async move {
                let s = workloads::stream_status(&fe, id).await.ok()?;
                (!s.open).then_some(s)
            }
        },
    )
    .await;
    let (refused, refused_in) = within("new calls are refused", Duration::from_secs(10), || {
        let fe = fe.clone();
        async move {
            let c = workloads::call(&fe, "GET", &orders_url("/orders/1")).await;
            (c.status != Some(200)).then_some(c)
        }
    })
    .await;
    // The second wait starts when the first ends: both are measured from the create.
    let refused_in = cut + refused_in;
    let contained = refused_in;
    assert!(
        contained <= Duration::from_secs(1),
        "contained in {contained:?} (expected within 1 s)"
    );
    ctx.kubectl(&["-n", SHOP, "delete", "quarantine", "frontend"]);
    let (_, restored) = within(
        "deleting the Quarantine restores access",
        Duration::from_secs(10),
        || {
            let fe = fe.clone();
            async move {
                let c = workloads::call(&fe, "GET", &orders_url("/orders/1")).await;
                (c.status == Some(200)).then_some(())
            }
        },
    )
    .await;
    println!(
        "5. quarantine: open stream closed after {} chunks in {:.0} ms ({}), new calls refused in {:.0} ms ({}); restored {:.0} ms after the Quarantine was deleted",
        status.chunks,
        cut.as_secs_f64() * 1e3,
        status.error.unwrap_or_default(),
        refused_in.as_secs_f64() * 1e3,
        refused
            .status
            .map_or_else(|| refused.error.unwrap_or_default(), |s| s.to_string()),
        restored.as_secs_f64() * 1e3
    );
}
