//! The load generator's accounting, against a real hyper server on loopback: the rate
//! it keeps, latency measured from the intended send time (a server stall shows up as the
//! queueing behind it, not as one slow request), failures and runs that cannot keep the
//! rate are invalid. No assertion is about how fast anything is.

#![allow(clippy::unwrap_used)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use vigil_benches::load::{LoadSpec, Protocol, Target, run};

/// How the test server behaves for the n-th request (0-based).
type Behaviour = Arc<dyn Fn(u64) -> (u16, Duration) + Send + Sync>;

async fn server(behaviour: Behaviour) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let (behaviour, count) = (behaviour.clone(), count.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let (behaviour, count) = (behaviour.clone(), count.clone());
                    async move {
                        let (status, delay) = behaviour(count.fetch_add(1, Ordering::SeqCst));
                        tokio::time::sleep(delay).await;
                        let mut r = hyper::Response::new(Full::new(Bytes::from(vec![b'x'; 1024])));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn spec(addr: SocketAddr, rate: Option<f64>, conns: usize, secs: f64) -> LoadSpec {
    LoadSpec {
        target: Target {
            addr,
            path: "/".into(),
            authority: addr.to_string(),
            protocol: Protocol::Http1,
            tls: None,
        },
        rate,
        conns,
        streams: 1,
        duration: Duration::from_secs_f64(secs),
        warmup: Duration::from_millis(100),
        fresh_connections: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_schedule_and_counts_every_request() {
    let addr = server(Arc::new(|_| (200, Duration::ZERO))).await;
    let r = run(&spec(addr, Some(200.0), 4, 1.0)).await;
    assert_eq!(r.errors, 0, "{r:?}");
    // 200 requests are scheduled in the window; allow a couple at the edges.
    assert!((195..=205).contains(&r.ok), "{r:?}");
    assert!(
        r.p50_us > 0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us,
        "{r:?}"
    );

    let mut h2 = spec(addr, Some(200.0), 2, 1.0);
    h2.target.protocol = Protocol::Http2;
    h2.streams = 4;
    let r = run(&h2).await;
    assert_eq!(r.errors, 0, "{r:?}");
    assert!((195..=205).contains(&r.ok), "{r:?}");
}

/// One connection at 100 req/s; the server stalls 400 ms on one request. Every request
/// scheduled during the stall waits behind it, and the report says so (a closed-loop
/// measurement would show one slow request and 99 fast ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_as_the_queueing_behind_it() {
    let addr = server(Arc::new(|n| {
        (
            200,
            if n == 40 {
                Duration::from_millis(400)
            } else {
                Duration::ZERO
            },
        )
    }))
    .await;
    let r = run(&spec(addr, Some(100.0), 1, 1.5)).await;
    assert_eq!(r.errors, 0, "{r:?}");
    // ~40 of ~150 requests were intended during the stall: well over 10 % waited ≥ 100 ms.
    let slow_share = r
        .percentiles
        .iter()
        .find(|(p, _)| *p >= 90.0)
        .map(|(_, us)| *us)
        .unwrap();
    assert!(
        slow_share >= 100_000,
        "p90 {slow_share} µs should include the queue behind the stall: {r:?}"
    );
    assert!(r.max_us >= 390_000, "{r:?}");
    // That queueing is the server's: the generator's own lateness counts only sends a
    // lane was free for, so the stall does not show in it.
    assert!(r.send_late_p99_us < 100_000, "{r:?}");
}

/// A generator that sends late puts its own delay into every path's latency: an open-loop
/// run whose sends left more than the limit after their intended times does not count; a
/// closed loop has no intended times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_that_sends_late_makes_a_run_invalid() {
    use vigil_benches::load::report::SEND_LATE_LIMIT_US;
    let addr = server(Arc::new(|_| (200, Duration::ZERO))).await;
    let mut r = run(&spec(addr, Some(100.0), 2, 0.5)).await;
    assert_eq!(r.errors, 0, "{r:?}");
    r.achieved_rate = 100.0; // on time, whatever this machine's load did to the window
    r.send_late_p50_us = 40;
    r.send_late_p99_us = SEND_LATE_LIMIT_US;
    assert!(r.valid().is_ok(), "{r:?}");
    r.send_late_p99_us = SEND_LATE_LIMIT_US + 1;
    let why = r.valid().unwrap_err();
    assert!(
        why.contains("sent late") && why.contains("p50 40 µs"),
        "{why}"
    );

    let mut closed = run(&spec(addr, None, 2, 0.3)).await;
    assert_eq!(closed.send_late_p99_us, 0, "{closed:?}");
    closed.send_late_p99_us = SEND_LATE_LIMIT_US + 1;
    assert!(closed.valid().is_ok(), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_a_missed_rate_make_a_run_invalid() {
    let failing = server(Arc::new(|n| {
        (if n % 10 == 0 { 503 } else { 200 }, Duration::ZERO)
    }))
    .await;
    let r = run(&spec(failing, Some(100.0), 2, 0.5)).await;
    assert!(r.errors > 0, "{r:?}");
    let why = r.valid().unwrap_err();
    assert!(
        why.contains("failed requests") && why.contains("503"),
        "{why}"
    );

    // 20 ms per request on one connection: at most ~50 req/s against a target of 200.
    let slow = server(Arc::new(|_| (200, Duration::from_millis(20)))).await;
    let r = run(&spec(slow, Some(200.0), 1, 0.5)).await;
    let why = r.valid().unwrap_err();
    assert!(why.contains("target of 200.0"), "{why}");

    // Nothing listening: every request fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = run(&spec(closed, Some(50.0), 1, 0.3)).await;
    assert_eq!(r.ok, 0);
    assert!(r.valid().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_measures_throughput() {
    let addr = server(Arc::new(|_| (200, Duration::ZERO))).await;
    let r = run(&spec(addr, None, 2, 0.5)).await;
    assert_eq!((r.errors, r.target_rate), (0, None), "{r:?}");
    assert!(r.ok > 0 && r.achieved_rate > 0.0, "{r:?}");
    assert!(r.valid().is_ok());
}

/// A new connection per request: the server accepts one connection per request sent
/// (warm-up included), and every one is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_connections_open_one_connection_per_request() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let mut fresh = spec(addr, Some(100.0), 2, 0.5);
    fresh.fresh_connections = true;
    let r = run(&fresh).await;
    assert_eq!(r.errors, 0, "{r:?}");
    assert!(r.ok >= 45, "{r:?}");
    let n = accepted.load(Ordering::SeqCst);
    // Warm-up (0.1 s at 100 req/s) plus the measured requests, each on its own connection.
    assert!(n >= r.ok + 5, "{n} connections for {} requests", r.ok);

    // Kept-alive connections for comparison: just the two.
    accepted.store(0, Ordering::SeqCst);
    let r = run(&spec(addr, Some(100.0), 2, 0.5)).await;
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
