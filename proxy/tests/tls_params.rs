//! `--tls-cipher-suites` and `--tls-groups` between two real proxies: the connecting
//! proxy's order decides among what both allow, the accepting proxy counts what was
//! negotiated, and proxies without a suite or a group in common do not connect and say
//! why.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;

use support::*;

async fn metrics(admin: SocketAddr) -> String {
    http_get(admin, "/metrics").await.unwrap().1
}

fn negotiated(suite: &str, group: &str) -> String {
    format!("vigil_proxy_tls_negotiated_total{{cipher_suite=\"{suite}\",kx_group=\"{group}\"}} 1")
}

/// A tunnel from a `web` proxy (`caller` flags) to an `orders` proxy (`callee` flags) in
/// front of an echo server: whether it carried data, and the callee's metrics.
async fn tunnel(caller_flags: &[&str], callee_flags: &[&str]) -> (bool, String) {
    let mesh = Mesh::new();
    let echo = tcp_echo().await;
    let (b, _) = callee(&mesh, "orders", ALLOW_WEB, echo, callee_flags).await;
    let (a, _) = caller(&mesh, "web", b.inbound, "orders", caller_flags).await;
    let ok = tunnel_echoes(a.routes[0], b"\x00hello").await;
    (ok, metrics(b.admin).await)
}

#[tokio::test]
async fn defaults_negotiate_aes_256_over_the_hybrid_post_quantum_group() {
    let (ok, m) = tunnel(&[], &[]).await;
    assert!(ok);
    assert!(
        m.contains(&negotiated("TLS_AES_256_GCM_SHA384", "x25519mlkem768")),
        "{m}"
    );
}

#[tokio::test]
async fn the_callers_order_decides_among_what_both_allow() {
    let (ok, m) = tunnel(
        &[
            "--tls-cipher-suites",
            "tls_aes_128_gcm_sha256,TLS_CHACHA20_POLY1305_SHA256",
            "--tls-groups",
            "x25519,p256",
        ],
        &[
            "--tls-cipher-suites",
            "TLS_CHACHA20_POLY1305_SHA256,TLS_AES_128_GCM_SHA256",
            "--tls-groups",
            "p256,x25519",
        ],
    )
    .await;
    assert!(ok);
    assert!(
        m.contains(&negotiated("TLS_AES_128_GCM_SHA256", "x25519")),
        "{m}"
    );
    assert!(!m.contains("TLS_CHACHA20_POLY1305_SHA256\""), "{m}");
}

#[tokio::test]
async fn proxies_without_a_common_suite_or_group_do_not_connect() {
    for (caller, callee) in [
        (
            ["--tls-cipher-suites", "TLS_AES_128_GCM_SHA256"],
            ["--tls-cipher-suites", "TLS_AES_256_GCM_SHA384"],
        ),
        (["--tls-groups", "p256"], ["--tls-groups", "x25519mlkem768"]),
    ] {
        let (ok, m) = tunnel(&caller, &callee).await;
        assert!(
            !ok,
            "{caller:?} / {callee:?}: nothing in common, the tunnel must not carry data"
        );
        assert!(
            m.contains(
                "vigil_proxy_tls_handshake_failures_total{direction=\"inbound\",reason=\"incompatible\"} 1"
            ),
            "{caller:?} / {callee:?}: {m}"
        );
        assert!(!m.contains("vigil_proxy_tls_negotiated_total{"), "{m}");
    }
}
