//! `Policy.Sync` over real mTLS against a real controller: snapshots and acks on one
//! stream, the same observable effects as `Policy.Watch` + `Policy.Ack`, and every way a
//! caller can get the protocol wrong refused with a clear status and no state change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming, transport::Channel};
use vigil_api::pb::{self, policy_client::PolicyClient, sync_request::Kind};

fn watch(workload: &str) -> pb::SyncRequest {
    pb::SyncRequest {
        kind: Some(Kind::Watch(pb::WatchRequest {
            workload: workload.into(),
        })),
    }
}

fn ack(workload: &str, generation: u64, cert_not_after_unix: i64) -> pb::AckRequest {
    pb::AckRequest {
        workload: workload.into(),
        generation,
        valid: true,
        error: String::new(),
        cert_not_after_unix,
    }
}

fn sync_ack(workload: &str, generation: u64, cert_not_after_unix: i64) -> pb::SyncRequest {
    pb::SyncRequest {
        kind: Some(Kind::Ack(ack(workload, generation, cert_not_after_unix))),
    }
}

/// Opens a Sync stream whose requests are `first`, then whatever is sent on the
/// returned sender (dropping it ends the requests).
async fn open(
    client: &mut PolicyClient<Channel>,
    first: Option<pb::SyncRequest>,
) -> (
    mpsc::Sender<pb::SyncRequest>,
    Result<Streaming<pb::Snapshot>, Status>,
) {
    let (tx, rx) = mpsc::channel(4);
    if let Some(first) = first {
        tx.send(first).await.unwrap();
    }
    let r = client.sync(ReceiverStream::new(rx)).await;
    (tx, r.map(tonic::Response::into_inner))
}

async fn metrics(plane: &Plane) -> String {
    http_get(plane.admin, "/metrics").await.unwrap().1
}

/// `vigil_controller_propagation_seconds_count`.
async fn propagations(plane: &Plane) -> u64 {
    let m = metrics(plane).await;
    m.lines()
        .find_map(|l| l.strip_prefix("vigil_controller_propagation_seconds_count "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_streams_snapshots_and_records_acks_like_watch_and_ack() {
    let plane = plane().await;
    let web = creds_for(&plane, "web");
    let orders = creds_for(&plane, "orders");
    let mut as_web = PolicyClient::new(channel(&plane, Some(&web)).await);
    let mut as_orders = PolicyClient::new(channel(&plane, Some(&orders)).await);

    // web over Sync, orders over Watch + Ack (an older proxy): both get their snapshot.
    let (acks, stream) = open(&mut as_web, Some(watch("shop/web"))).await;
    let mut stream = stream.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.policy.unwrap().workload_id, id("web").to_string());
    assert!(first.bundle.is_some());
    let mut old = as_orders
        .watch(pb::WatchRequest {
            workload: "shop/orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let old_first = old.message().await.unwrap().unwrap();
    assert_eq!(old_first.generation, first.generation);
    let g0 = first.generation;
    assert_eq!(
        status_of(&plane, "web").await["applied"],
        serde_json::Value::Null
    );
    assert_eq!(status_of(&plane, "web").await["connected"], 1);

    // Acks on the stream and unary acks have the same effects.
    let before = propagations(&plane).await;
    acks.send(sync_ack("shop/web", g0, 1_900_000_000))
        .await
        .unwrap();
    as_orders
        .ack(ack("shop/orders", g0, 1_900_000_001))
        .await
        .unwrap();
    eventually(10, "both acks recorded", async || {
        status_of(&plane, "web").await["up_to_date"] == true
            && status_of(&plane, "orders").await["up_to_date"] == true
    })
    .await;
    for (name, expiry) in [("web", 1_900_000_000), ("orders", 1_900_000_001)] {
        let s = status_of(&plane, name).await;
        assert_eq!(s["applied"], g0, "{name}: {s}");
        assert_eq!(s["cert_not_after"], expiry, "{name}: {s}");
        assert_eq!(s["connected"], 1, "{name}: {s}");
        let m = metrics(&plane).await;
        assert!(
            m.contains(&format!(
                "vigil_controller_proxy_applied_generation{{workload=\"shop/{name}\"}} {g0}"
            )),
            "{m}"
        );
    }
    assert_eq!(
        propagations(&plane).await,
        before + 2,
        "one propagation each"
    );

    // A change reaches the Sync stream; its ack makes web up to date again.
    plane.write("allow.yaml", &allow("web-to-orders", "web", "orders", ""));
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("the change arrives")
        .unwrap()
        .unwrap();
    assert!(next.generation > g0, "{} > {g0}", next.generation);
    assert!(
        !next.policy.as_ref().unwrap().inbound.is_empty(),
        "the allow is in web's inbound policy"
    );
    assert!(
        next.bundle.is_none(),
        "unchanged roots are not sent again on the stream"
    );
    // New roots (here: the same roots at a new sequence) reach the stream at once.
    let rotated = {
        let b = plane.ctl().state.bundle.borrow().clone();
        vigil_cert_authority::TrustBundle::new(
            b.trust_domain().clone(),
            b.roots().to_vec(),
            b.sequence() + 1,
        )
        .unwrap()
    };
    plane.ctl().state.bundle.send_replace(rotated.clone());
    let with_roots = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("the new roots arrive")
        .unwrap()
        .unwrap();
    assert_eq!(with_roots.generation, next.generation);
    assert_eq!(
        with_roots.bundle.as_ref().map(|b| b.sequence),
        Some(rotated.sequence())
    );
    eventually(10, "web behind until it acks", async || {
        status_of(&plane, "web").await["up_to_date"] == false
    })
    .await;
    acks.send(sync_ack("shop/web", next.generation, 1_900_000_100))
        .await
        .unwrap();
    eventually(10, "the new generation acked", async || {
        let s = status_of(&plane, "web").await;
        s["applied"] == next.generation && s["up_to_date"] == true
    })
    .await;
    assert_eq!(
        status_of(&plane, "web").await["cert_not_after"],
        1_900_000_100,
        "a renewed certificate's expiry is reported"
    );
    assert_eq!(propagations(&plane).await, before + 3);

    // An ack of a snapshot the proxy could not apply: the gauge says so, status does not
    // count it as enforced, no propagation is observed (as with a unary ack).
    let mut invalid = ack("shop/web", next.generation + 1, 1_900_000_100);
    invalid.valid = false;
    invalid.error = "test: could not apply".into();
    acks.send(pb::SyncRequest {
        kind: Some(Kind::Ack(invalid)),
    })
    .await
    .unwrap();
    eventually(10, "invalid ack on the gauge", async || {
        metrics(&plane).await.contains(&format!(
            "vigil_controller_proxy_applied_generation{{workload=\"shop/web\"}} {}",
            next.generation + 1
        ))
    })
    .await;
    assert_eq!(status_of(&plane, "web").await["applied"], next.generation);
    assert_eq!(propagations(&plane).await, before + 3);

    // The proxy ends its requests: the controller ends the stream.
    drop(acks);
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    eventually(10, "web disconnected", async || {
        status_of(&plane, "web").await["connected"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_refuses_what_breaks_the_protocol_and_records_nothing() {
    let plane = plane().await;
    let web = creds_for(&plane, "web");
    let mut as_web = PolicyClient::new(channel(&plane, Some(&web)).await);
    let mut anon = PolicyClient::new(channel(&plane, None).await);
    let g = plane.ctl().state.index().generation();

    // Refused at once: (label, client, first request, code).
    let cases: Vec<(
        &str,
        &mut PolicyClient<Channel>,
        Option<pb::SyncRequest>,
        Code,
    )> = vec![
        (
            "no SVID",
            &mut anon,
            Some(watch("shop/web")),
            Code::Unauthenticated,
        ),
        (
            "another workload's policy",
            &mut as_web,
            Some(watch("shop/orders")),
            Code::PermissionDenied,
        ),
    ];
    for (label, client, first, code) in cases {
        let (_tx, r) = open(client, first).await;
        let err = r.err().unwrap_or_else(|| panic!("{label}: refused"));
        assert_eq!(err.code(), code, "{label}: {}", err.message());
    }
    for (label, first, code) in [
        (
            "unknown workload",
            Some(watch("shop/ghost")),
            Code::NotFound,
        ),
        (
            "not namespace/name",
            Some(watch("web")),
            Code::InvalidArgument,
        ),
        (
            "an ack first",
            Some(sync_ack("shop/web", g, 1)),
            Code::InvalidArgument,
        ),
        (
            "an empty request",
            Some(pb::SyncRequest { kind: None }),
            Code::InvalidArgument,
        ),
    ] {
        let (_tx, r) = open(&mut as_web, first).await;
        let err = r.err().unwrap_or_else(|| panic!("{label}: refused"));
        assert_eq!(err.code(), code, "{label}: {}", err.message());
        if label == "an ack first" {
            assert!(
                err.message().contains("must be a watch"),
                "{}",
                err.message()
            );
        }
    }
    // No request at all (the proxy ended its requests at once).
    let (tx, rx) = mpsc::channel::<pb::SyncRequest>(1);
    drop(tx);
    let err = as_web.sync(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());

    // A stream that never says what it watches is not kept open.
    let (_silent, r) = open(&mut as_web, None).await;
    let Err(err) = r else {
        panic!("a silent stream is refused")
    };
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());

    // After the watch: an ack for another workload ends the stream; nothing is recorded.
    let (acks, stream) = open(&mut as_web, Some(watch("shop/web"))).await;
    let mut stream = stream.unwrap();
    let snap = stream.message().await.unwrap().unwrap();
    acks.send(sync_ack("shop/orders", snap.generation, 7))
        .await
        .unwrap();
    let err = next_error(&mut stream).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("shop/web") && err.message().contains("shop/orders"),
        "{}",
        err.message()
    );

    // A second watch on the stream ends it too.
    let (acks, stream) = open(&mut as_web, Some(watch("shop/web"))).await;
    let mut stream = stream.unwrap();
    stream.message().await.unwrap().unwrap();
    acks.send(watch("shop/web")).await.unwrap();
    let err = next_error(&mut stream).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());

    // The proxy goes away mid-stream, without acking.
    let (acks, stream) = open(&mut as_web, Some(watch("shop/web"))).await;
    let mut stream = stream.unwrap();
    stream.message().await.unwrap().unwrap();
    assert_eq!(status_of(&plane, "web").await["connected"], 1);
    drop(stream);
    drop(acks);

    eventually(10, "every refused stream closed", async || {
        status_of(&plane, "web").await["connected"] == 0
    })
    .await;
    for name in ["web", "orders"] {
        let s = status_of(&plane, name).await;
        assert_eq!(s["applied"], serde_json::Value::Null, "{name}: {s}");
        assert_eq!(s["cert_not_after"], serde_json::Value::Null, "{name}: {s}");
    }
    let m = metrics(&plane).await;
    assert!(
        !m.contains("vigil_controller_proxy_applied_generation{"),
        "no gauge written: {m}"
    );
    assert_eq!(propagations(&plane).await, 0);
    for reason in ["no_svid", "wrong_identity", "unknown_workload"] {
        assert!(
            m.contains(&format!(
                "vigil_controller_policy_watch_refused_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {m}"
        );
    }
}

/// The error that ends `stream` (snapshots before it are skipped).
async fn next_error(stream: &mut Streaming<pb::Snapshot>) -> Status {
    let deadline = std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout(deadline, stream.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => return status,
        }
    }
}
