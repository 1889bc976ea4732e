//! `--mesh-http1 auto`, the default: an app's HTTP/1.1 requests take HTTP/1.1 mesh
//! connections while fewer than 4 requests to the destination are in flight (out on
//! them, or awaiting their answer on its HTTP/2 connection), and streams of the HTTP/2
//! connection from then on and for 100 ms after (or until 16 requests in a row found
//! fewer). The far side's access log says which
//! hop each request took; an app that holds requests until enough have arrived makes
//! the number in flight exact.

use super::*;

/// A held path of [`gated_app`]: requests under `prefix` are answered once `n` of them
/// have arrived (so that all `n` are in flight at once however slowly they come).
struct Gate {
    prefix: &'static str,
    open: tokio::sync::Barrier,
    arrived: AtomicUsize,
}

/// An HTTP/1.1 app with the paths `gates` (prefix, requests) held, see [`Gate`], which
/// answers anything else at once; and its gates, to see how many requests arrived.
async fn gated_app(gates: &[(&'static str, usize)]) -> (SocketAddr, Arc<Vec<Gate>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let gates: Arc<Vec<Gate>> = Arc::new(
        (gates.iter())
            .map(|&(prefix, n)| Gate {
                prefix,
                open: tokio::sync::Barrier::new(n),
                arrived: AtomicUsize::new(0),
            })
            .collect(),
    );
    let all = gates.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let gates = all.clone();
            let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                let gates = gates.clone();
                async move {
                    let path = req.uri().path();
                    if let Some(g) = gates.iter().find(|g| path.starts_with(g.prefix)) {
                        g.arrived.fetch_add(1, Ordering::SeqCst);
                        g.open.wait().await;
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(hyper::body::Bytes::from("ok")),
                    ))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
            );
        }
    });
    (addr, gates)
}

/// `n` requests under `prefix` (`{prefix}{i}`), each on an app connection of its own,
/// sent now; they answer `ok`.
fn fire(route: SocketAddr, prefix: &str, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let path = format!("{prefix}{i}");
            tokio::spawn(async move { assert_eq!(get_ok(route, &path).await, "ok") })
        })
        .collect()
}

async fn all_answered(requests: Vec<tokio::task::JoinHandle<()>>) {
    for r in requests {
        r.await.unwrap();
    }
}

/// Longer than `--mesh-http1 auto` keeps a destination that was busy on streams (100 ms).
const HOLD: std::time::Duration = std::time::Duration::from_millis(300);

/// Over which protocol `orders`' inbound received the requests under `prefix`, once it
/// has logged `n` of them: (HTTP/1.1, HTTP/2).
async fn hops(log: &LogSink, prefix: &str, n: usize) -> (usize, usize) {
    let count = |ls: &[serde_json::Value], protocol: &str| {
        ls.iter()
            .filter(|e| {
                e["protocol"] == protocol
                    && e["path"].as_str().is_some_and(|p| p.starts_with(prefix))
            })
            .count()
    };
    let lines = log
        .when(|ls| count(ls, "http1") + count(ls, "http2") >= n)
        .await;
    (count(&lines, "http1"), count(&lines, "http2"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_takes_http1_connections_for_a_few_requests_and_http2_streams_for_many() {
    // `--mesh-http1 auto`, the default.
    let mesh = Mesh::new();
    let (app, _) = gated_app(&[("/gate/", 12)]).await;
    let (orders, log) = callee(&mesh, "orders", ALLOW_WEB, app, &[]).await;
    let relay = Relay::start(orders.inbound).await;
    let (web, _) = caller(&mesh, "web", relay.addr, "orders", &[]).await;
    let route = web.routes[0];
    for i in 0..3 {
        get_ok(route, &format!("/seq/{i}")).await;
    }
    assert_eq!(
        relay.accepted(),
        1,
        "one request at a time: one HTTP/1.1 connection"
    );

    // 12 at once: the first 4 on HTTP/1.1 connections (the idle one and 3 new), the other 8
    // as streams of one new HTTP/2 connection.
    all_answered(fire(route, "/gate/", 12)).await;
    assert_eq!(relay.accepted(), 5, "4 HTTP/1.1 connections and 1 HTTP/2");
    assert_eq!(hops(&log, "/gate/", 12).await, (4, 8));

    // The burst over (and the hold after it, see the pool's unit tests): one request at a
    // time takes the HTTP/1.1 connections again.
    tokio::time::sleep(HOLD).await;
    for i in 0..3 {
        get_ok(route, &format!("/after/{i}")).await;
    }
    assert_eq!(relay.accepted(), 5, "no new connection");
    assert_eq!(hops(&log, "/after/", 3).await, (3, 0));
    let m = http_get(orders.admin, "/metrics").await.unwrap().1;
    for (protocol, n) in [("http1", 4), ("http2", 1)] {
        assert!(
            m.contains(&format!(
                r#"vigil_proxy_connections_total{{direction="inbound",protocol="{protocol}"}} {n}"#
            )),
            "{m}"
        );
    }
}

/// A burst, then requests one at a time at once: the hold keeps the first of them on
/// streams, but `AUTO_QUIET` in a row that found fewer in flight end it before its time
/// (a destination busy for a moment does not stay on streams for all of the hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ends_the_hold_after_enough_requests_found_the_destination_quiet() {
    let quiet = vigil_proxy::outbound::AUTO_QUIET as usize;
    let mesh = Mesh::new();
    let (app, _) = gated_app(&[("/gate/", 8)]).await;
    let (orders, log) = callee(&mesh, "orders", ALLOW_WEB, app, &[]).await;
    let (web, _) = caller(&mesh, "web", orders.inbound, "orders", &[]).await;
    let route = web.routes[0];
    all_answered(fire(route, "/gate/", 8)).await;
    let started = std::time::Instant::now();
    let n = quiet + 4;
    for i in 0..n {
        get_ok(route, &format!("/one/{i:02}")).await;
    }
    let within_hold = started.elapsed() < std::time::Duration::from_millis(100);
    let lines = log
        .when(|ls| {
            ls.iter()
                .filter(|e| e["path"].as_str().is_some_and(|p| p.starts_with("/one/")))
                .count()
                >= n
        })
        .await;
    let hop = |i: usize| {
        let path = format!("/one/{i:02}");
        let e = lines.iter().find(|e| e["path"] == path.as_str()).unwrap();
        e["protocol"].as_str().unwrap().to_string()
    };
    let hops: Vec<String> = (0..n).map(hop).collect();
    let streams = hops.iter().take_while(|p| *p == "http2").count();
    assert!(
        hops[streams..].iter().all(|p| p == "http1"),
        "streams first, then HTTP/1.1 connections: {hops:?}"
    );
    assert!(
        streams < quiet,
        "at most AUTO_QUIET - 1 quiet requests on streams: {hops:?}"
    );
    if within_hold {
        // All sent within the 100 ms: the count, not the clock, ended the hold.
        assert_eq!(streams, quiet - 1, "{hops:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_counts_the_streams_in_flight_too() {
    let mesh = Mesh::new();
    let (app, gates) = gated_app(&[("/a/", 5), ("/b/", 5)]).await;
    let (orders, log) = callee(&mesh, "orders", ALLOW_WEB, app, &[]).await;
    let (web, _) = caller(&mesh, "web", orders.inbound, "orders", &[]).await;
    let route = web.routes[0];
    let arrived = |g: usize, n: usize| {
        let gates = gates.clone();
        async move {
            wait_for(
                async || gates[g].arrived.load(Ordering::SeqCst) >= n,
                "the requests to reach the app",
            )
            .await
        }
    };
    // 4 held on HTTP/1.1 connections, then 4 as streams.
    let a = fire(route, "/a/", 4);
    arrived(0, 4).await;
    let b = fire(route, "/b/", 4);
    arrived(1, 4).await;
    // A fifth `/a/` (a stream too) lets the `/a/` ones go: no HTTP/1.1 connection is out
    // now, but 4 streams still await their answer — so a request after the hold is a
    // stream too.
    let mut a5 = fire(route, "/a/4-", 1);
    a5.extend(a);
    all_answered(a5).await;
    tokio::time::sleep(HOLD).await;
    let mut b5 = fire(route, "/b/4-", 1);
    b5.extend(b);
    all_answered(b5).await;
    assert_eq!(hops(&log, "/a/", 5).await, (4, 1));
    assert_eq!(hops(&log, "/b/", 5).await, (0, 5));
}
