//! Tests of the counted figures: ratios, table, targets, warm-up.

use super::*;
use crate::harness::report::counts_table;

fn counted(path: &str, workload: Workload, instructions: f64) -> Counted {
    Counted {
        path: path.into(),
        workload,
        instructions,
        allocations: instructions / 1000.0,
        error: None,
    }
}

#[test]
fn ratios_pair_the_right_paths_and_workloads() {
    let counts = vec![
        counted("vigil", Workload::H1, 200.0),
        counted("vigil", Workload::H2, 300.0),
        counted("vigil", Workload::Conn, 4000.0),
        counted("vigil-nometrics", Workload::H1, 100.0),
        counted("envoy", Workload::Conn, 10000.0),
        counted("vigil", Workload::Resume, 600.0),
        counted("envoy", Workload::Resume, 1000.0),
        counted("nginx", Workload::H1, 400.0),
        counted("nginx", Workload::H2, 100.0),
        counted("haproxy", Workload::H1, 100.0),
        counted("vigil-h1app", Workload::H2, 50.0),
    ];
    let all = ratios(&counts);
    let (b13, rest): (Vec<_>, Vec<_>) = all.iter().partition(|r| r.id == "B13");
    let got: Vec<(String, f64, bool)> = rest
        .iter()
        .map(|r| (r.id.clone(), r.ratio, r.pass()))
        .collect();
    assert_eq!(
        got,
        [
            ("B2".to_string(), 0.5, true),
            ("B4".to_string(), 3.0, false),
            ("B6".to_string(), 0.4, true),
            ("B6".to_string(), 0.6, false),
            ("B12".to_string(), 2.0, false),
        ]
    );
    // B13: each path against nginx and HAProxy, instructions and allocations
    // (`counted` makes allocations a thousandth of the instructions).
    let b13: Vec<(&str, f64, bool)> = b13
        .iter()
        .filter(|r| !r.ratio.is_nan())
        .map(|r| (r.name.as_str(), (r.ratio * 1e6).round() / 1e6, r.pass()))
        .collect();
    assert_eq!(
        b13,
        [
            ("h1 instructions vigil/nginx", 0.5, true),
            ("h1 allocations vigil/nginx", 0.5, true),
            ("h1 instructions vigil/haproxy", 2.0, false),
            ("h1 allocations vigil/haproxy", 2.0, false),
            ("h2 instructions vigil/nginx", 3.0, false),
            ("h2 allocations vigil/nginx", 3.0, false),
            ("h2 instructions vigil-h1app/nginx", 0.5, true),
            ("h2 allocations vigil-h1app/nginx", 0.5, true),
        ]
    );
    assert_eq!(all.iter().filter(|r| r.id == "B13").count(), 16);
    // A missing count is NaN, which passes nothing.
    let r = ratios(&counts[..1]);
    assert!(r.iter().all(|r| r.ratio.is_nan() && !r.pass()), "{r:?}");
}

/// A real HTTP/1.1 server on loopback that answers 503 to its first `failing`
/// requests and 200 after; returns its target and how many requests it answered.
async fn flaky_server(failing: u32) -> (Target, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let status = if n < failing { 503 } else { 200 };
                    async move {
                        http::Response::builder()
                            .status(status)
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let target = Target {
        addr,
        path: "/".into(),
        authority: "localhost".into(),
        protocol: crate::load::Protocol::Http1,
        tls: None,
    };
    (target, seen)
}

#[tokio::test]
async fn a_warm_up_retries_a_few_failed_requests_and_no_more() {
    use std::sync::atomic::Ordering;
    // Three 503s (a proxy whose upstream is still connecting), then ten answered.
    let (t, seen) = flaky_server(3).await;
    let mut sender = client::connect(&t).await.unwrap();
    warm_up(&t, &mut sender, 10, false).await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 13);
    // The counted requests after it retry nothing: a failure fails the count.
    let (t, seen) = flaky_server(1).await;
    let mut sender = client::connect(&t).await.unwrap();
    let e = requests(&t, &mut sender, 10, false).await.unwrap_err();
    assert!(
        format!("{e:#}").contains("request 1 of 10: status 503"),
        "{e:#}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // A path that keeps failing is an error once the retries are spent.
    let (t, seen) = flaky_server(u32::MAX).await;
    let mut sender = client::connect(&t).await.unwrap();
    let e = warm_up(&t, &mut sender, 10, false).await.unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("status 503") && e.contains("after 5 failed"),
        "{e}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), WARMUP_FAILURES + 1);
}

#[test]
fn a_path_counts_only_the_workloads_it_has_processes_for() {
    use crate::harness::{
        bench_provider,
        certs::Certs,
        topology::{InboundTls, PathDef},
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::create(dir.path()).unwrap();
    let client = certs.dns_client(bench_provider()).unwrap();
    let tls = TlsClients {
        vigil: client.clone(),
        spiffe: client.clone(),
        dns: client,
    };
    let a = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let path = |sidecars: Vec<usize>, h2_sidecars: Vec<usize>, inbound| PathDef {
        name: "p",
        http: a(1),
        h2: a(2),
        tcp: None,
        inbound,
        sidecars,
        h2_sidecars,
        inbound_proc: inbound.map(|_| 7),
        tcp_sidecars: vec![],
    };
    let got = |p: &PathDef| -> Vec<(Workload, u16, Vec<usize>)> {
        Workload::ALL
            .into_iter()
            .filter_map(|w| target(p, w, &tls).map(|(t, procs)| (w, t.addr.port(), procs)))
            .collect()
    };
    // vigil-h1app: HTTP/2 only, through its own pair.
    assert_eq!(
        got(&path(vec![], vec![3, 4], None)),
        [(Workload::H2, 2, vec![3, 4])]
    );
    // vigil-nometrics: HTTP/1.1 only.
    assert_eq!(
        got(&path(vec![1, 2], vec![], None)),
        [(Workload::H1, 1, vec![1, 2])]
    );
    // A full path: handshakes go to the inbound alone.
    assert_eq!(
        got(&path(
            vec![1, 2],
            vec![1, 2],
            Some((a(9), InboundTls::Vigil))
        )),
        [
            (Workload::H1, 1, vec![1, 2]),
            (Workload::H2, 2, vec![1, 2]),
            (Workload::Conn, 9, vec![7]),
            (Workload::Resume, 9, vec![7]),
        ]
    );
}

#[test]
fn the_table_has_a_row_per_path_and_names_what_failed() {
    let mut failed = counted("envoy", Workload::H2, f64::NAN);
    failed.error = Some("callgrind_control -d 7: not detected".into());
    let md = counts_table(&[
        counted("vigil", Workload::H1, 192_209.4),
        counted("vigil", Workload::Conn, 3_630_887.0),
        failed,
    ]);
    assert!(
        md.contains("| vigil | 192209 | 192.2 | – | – | 3630887 | 3630.9 | – | – |"),
        "{md}"
    );
    assert!(
        md.contains("| envoy | – | – | – | – | – | – | – | – |"),
        "{md}"
    );
    assert!(
        md.contains("- envoy H2: callgrind_control -d 7: not detected"),
        "{md}"
    );
}
