#![allow(clippy::unwrap_used)]

use super::*;

fn id(name: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/shop/sa/{name}")).unwrap()
}

#[test]
fn counts_connections_per_peer_and_direction() {
    let peers = Peers::new(8);
    peers.seen(Direction::Outbound, &id("orders"), 100);
    peers.seen(Direction::Outbound, &id("orders"), 105);
    peers.seen(Direction::Inbound, &id("orders"), 103);
    peers.seen(Direction::Inbound, &id("web"), 101);
    let r = peers.report();
    assert_eq!((r.max, r.evicted), (8, 0));
    let lines: Vec<(String, Direction, Seen)> = r
        .peers
        .into_iter()
        .map(|p| (p.id, p.direction, p.seen))
        .collect();
    let orders = id("orders").to_string();
    assert_eq!(
        lines,
        vec![
            (
                orders.clone(),
                Direction::Outbound,
                Seen {
                    first_seen: 100,
                    last_seen: 105,
                    connections: 2
                }
            ),
            (
                orders,
                Direction::Inbound,
                Seen {
                    first_seen: 103,
                    last_seen: 103,
                    connections: 1
                }
            ),
            (
                id("web").to_string(),
                Direction::Inbound,
                Seen {
                    first_seen: 101,
                    last_seen: 101,
                    connections: 1
                }
            ),
        ],
        "most recent first"
    );
}

#[test]
fn a_full_record_replaces_the_peer_seen_least_recently() {
    let peers = Peers::new(3);
    // All in the same second: recency is the order they were seen in.
    for name in ["a", "b", "c"] {
        peers.seen(Direction::Inbound, &id(name), 10);
    }
    // `a` is seen again: `b` is now the least recent.
    peers.seen(Direction::Outbound, &id("a"), 10);
    for name in ["d", "e"] {
        peers.seen(Direction::Inbound, &id(name), 10);
    }
    let r = peers.report();
    let ids: std::collections::BTreeSet<String> = r.peers.iter().map(|p| p.id.clone()).collect();
    assert_eq!(r.evicted, 2);
    assert_eq!(
        ids,
        ["a", "d", "e"].map(|n| id(n).to_string()).into(),
        "bounded at 3 peers; the re-seen `a` kept, `b` and `c` replaced"
    );
}

#[test]
fn a_record_of_zero_keeps_nothing() {
    let peers = Peers::new(0);
    peers.seen(Direction::Inbound, &id("a"), 1);
    let r = peers.report();
    assert!(r.peers.is_empty() && r.evicted == 0);
}
