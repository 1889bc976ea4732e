#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use vigil_policy::{Policy, ProxyPolicy};

use super::*;
use std::collections::BTreeSet;

pub(crate) fn connector(policy: &str) -> MeshConnector {
    let model: ProxyPolicy = serde_saphyr::from_str(policy).unwrap();
    let (_, tls) = watch::channel(None);
    let (tx, policy) = watch::channel(Arc::new(Policy::compile(model).unwrap()));
    std::mem::forget(tx);
    MeshConnector::new(
        Vec::new(),
        tls,
        policy.clone(),
        Connections::new(policy),
        Duration::from_secs(1),
        Duration::from_secs(1),
        Arc::new(Discovery::off()),
    )
}

const SERVICE: &str = r#"
outbound:
  destinations:
    - {address: "10.96.0.5:80", identities: ["spiffe://td/ns/shop/sa/orders"], endpoints: ["10.244.0.5:8080", "10.244.0.6:8080"]}
    - {address: "10.244.0.9:8080", identities: ["spiffe://td/ns/shop/sa/pay"]}
"#;

#[test]
fn requests_to_a_virtual_address_rotate_over_its_backends() {
    let c = connector(SERVICE);
    let picks: Vec<String> = (0..4)
        .map(|_| c.backend_for("10.96.0.5:80").unwrap().to_string())
        .collect();
    assert_eq!(
        picks.iter().filter(|p| *p == "10.244.0.5:8080").count(),
        2,
        "{picks:?}"
    );
    assert_eq!(
        picks.iter().filter(|p| *p == "10.244.0.6:8080").count(),
        2,
        "{picks:?}"
    );
    assert!(
        c.backend_for("10.244.0.9:8080").is_none(),
        "a destination without endpoints is sent to as it is"
    );
    assert!(c.backend_for("10.1.2.3:80").is_none(), "unknown");
    assert!(c.backend_for("r0.route.vigil").is_none(), "static route");
}

#[test]
fn a_backend_authority_resolves_to_the_service_identities() {
    let c = connector(SERVICE);
    let t = c.resolve("10.244.0.6:8080").unwrap();
    assert_eq!(t.proxy, "10.244.0.6:8080".parse().unwrap());
    assert_eq!(
        t.identities.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
        ["spiffe://td/ns/shop/sa/orders"]
    );
    assert!(t.endpoints.is_empty(), "a backend is not balanced again");
    let vip = c.resolve("10.96.0.5:80").unwrap();
    assert_eq!(vip.endpoints.len(), 2);
}

#[tokio::test]
async fn a_backend_that_refuses_costs_a_retry_not_the_connection() {
    let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live_addr = live.local_addr().unwrap();
    // A port with nobody listening.
    let dead_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    tokio::spawn(async move {
        loop {
            let _ = live.accept().await;
        }
    });
    let c = connector("{}");
    let target = Target {
        proxy: "10.96.0.5:80".parse().unwrap(),
        identities: BTreeSet::new(),
        endpoints: Arc::from([dead_addr, live_addr]),
    };
    for _ in 0..4 {
        let (addr, _) = c.tcp(&target).await.unwrap();
        assert_eq!(addr, live_addr);
    }
    let all_dead = Target {
        endpoints: Arc::from([dead_addr]),
        ..target
    };
    let e = c.tcp(&all_dead).await.unwrap_err();
    assert!(e.to_string().contains(&dead_addr.to_string()), "{e}");
}
