//! TLS session resumption between two real proxies: a caller's second connection resumes
//! (and still carries its identity to policy), and a caller revoked or quarantined since
//! its first connection cannot get back in with its session ticket.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::net::SocketAddr;

use support::*;

async fn metric(admin: SocketAddr, line: &str) -> bool {
    http_get(admin, "/metrics").await.unwrap().1.contains(line)
}

const RESUMED_ONCE: &str = "vigil_proxy_tls_resumed_total{direction=\"inbound\"} 1";

/// The caller's current SVID serial, as its admin endpoint reports it.
async fn serial(admin: SocketAddr) -> String {
    let cfg: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/config").await.unwrap().1).unwrap();
    cfg["identity"]["serial"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_second_connection_resumes_and_a_revoked_or_quarantined_caller_cannot() {
    // Two ways a caller loses its standing between connections: its identity is revoked
    // (which is also what quarantine does on every other proxy: the index lists a
    // quarantined workload's identity in `revoked.ids`), or its certificate's serial is
    // (a compromised key).
    for by_serial in [false, true] {
        let mesh = Mesh::new();
        let echo = tcp_echo().await;
        let (a, b, _) = pair(&mesh, echo, &[]).await;

        assert!(tunnel_echoes(a.routes[0], b"\x00first").await);
        assert!(
            !metric(b.admin, RESUMED_ONCE).await,
            "the first handshake is full"
        );
        assert!(tunnel_echoes(a.routes[0], b"\x00second").await);
        assert!(
            metric(b.admin, RESUMED_ONCE).await,
            "the second connection resumed the first one's session"
        );

        let revoked = match by_serial {
            false => format!("ids: [\"{}\"]", wid("web")),
            true => format!("serials: [\"{}\"]", serial(a.admin).await),
        };
        let policy = format!("{ALLOW_WEB}revoked:\n  {revoked}\n");
        mesh.write_policy("orders", &policy.replace("generation: 1", "generation: 2"));
        wait_for(
            async || metric(b.admin, "vigil_proxy_policy_generation 2").await,
            "gen 2",
        )
        .await;
        // The caller still holds a ticket from `orders`; offering it gets it nowhere.
        assert!(!tunnel_echoes(a.routes[0], b"\x00third").await, "{revoked}");
        wait_for(
            async || {
                metric(
                    b.admin,
                    "vigil_proxy_tls_handshake_failures_total{direction=\"inbound\",reason=\"revoked\"} 1",
                )
                .await
            },
            "the resumed session refused as revoked",
        )
        .await;
        assert!(
            metric(b.admin, RESUMED_ONCE).await,
            "not counted as resumed"
        );
    }
}
