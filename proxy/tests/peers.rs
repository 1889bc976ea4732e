//! `/peers`: each proxy's own record of the peers it had verified mTLS connections with —
//! what `vigil verify` reads to say an edge is mTLS. Real proxies, a real CA, real mTLS.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use support::*;

/// `/peers` of the proxy whose admin port is `admin`.
async fn peers(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(admin, "/peers").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The entry for `id` in `direction`, if recorded.
fn entry(peers: &serde_json::Value, id: &str, direction: &str) -> Option<serde_json::Value> {
    peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id && p["direction"] == direction)
        .cloned()
}

#[tokio::test]
async fn both_proxies_record_the_edge_once_per_connection() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (a, b, via) = pair(&mesh, app, &[]).await;
    assert!(
        peers(a.admin).await["peers"].as_array().unwrap().is_empty(),
        "nothing before the first connection"
    );
    // Three requests on one keep-alive connection from the app: one pooled mesh
    // connection between the proxies.
    for _ in 0..3 {
        let (status, _) = http_get(via, "/orders/1").await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    let orders = wid("orders");
    let web = wid("web");
    wait_for(
        async || entry(&peers(b.admin).await, &web, "inbound").is_some(),
        "orders' proxy records web's inbound connection",
    )
    .await;
    let out = entry(&peers(a.admin).await, &orders, "outbound").unwrap();
    let inb = entry(&peers(b.admin).await, &web, "inbound").unwrap();
    for e in [&out, &inb] {
        let first = e["first_seen"].as_u64().unwrap();
        let last = e["last_seen"].as_u64().unwrap();
        let now = vigil_policy::unix_now();
        assert!(first <= last && now - last < 60, "{e}");
        assert!(
            (1..3).contains(&e["connections"].as_u64().unwrap()),
            "counted per connection, not per request: {e}"
        );
    }
    assert!(entry(&peers(a.admin).await, &orders, "inbound").is_none());
    let text = serde_json::to_string(&peers(b.admin).await).unwrap();
    assert!(
        !text.contains("PRIVATE") && !text.contains("CERTIFICATE"),
        "no key or certificate material: {text}"
    );
}

#[tokio::test]
async fn the_record_stays_bounded_keeping_the_most_recent_peers() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (b, _) = callee(&mesh, "orders", ALLOW_WEB, app, &["--peer-record-max", "3"]).await;
    let names: Vec<String> = (0..8).map(|i| format!("client-{i}")).collect();
    for name in &names {
        let creds = mesh.client_creds(name);
        let mut c = h1_over_mtls(b.inbound, &creds, &[&wid("orders")])
            .await
            .unwrap();
        // A request makes sure the server finished its side of the handshake; the
        // policy denies these clients, which does not matter to the record.
        let _ = send(&mut c, get("/orders/1")).await.unwrap();
    }
    let last = wid(&names[7]);
    wait_for(
        async || entry(&peers(b.admin).await, &last, "inbound").is_some(),
        "the last client is recorded",
    )
    .await;
    let p = peers(b.admin).await;
    assert_eq!(p["max"], 3, "{p}");
    assert_eq!(p["peers"].as_array().unwrap().len(), 3, "bounded: {p}");
    assert_eq!(p["evicted"], 5, "{p}");
    let off = callee(&mesh, "orders", ALLOW_WEB, app, &["--peer-record-max", "0"]).await;
    let creds = mesh.client_creds("client-x");
    let mut c = h1_over_mtls(off.0.inbound, &creds, &[&wid("orders")])
        .await
        .unwrap();
    let _ = send(&mut c, get("/orders/1")).await.unwrap();
    let p = peers(off.0.admin).await;
    assert!(
        p["peers"].as_array().unwrap().is_empty(),
        "0 turns it off: {p}"
    );
}
