//! Which mesh hop an HTTP/2 app's requests take. A request whose stream ended with its
//! headers (no body, no trailers) and that did not ask for trailers in the answer crosses
//! the HTTP/1.1 hop while the destination is quiet (`--mesh-http1 auto`) and reaches the
//! app as HTTP/2 again — once the destination's HTTP/2 connection (which its first such
//! request opens) has shown that its proxy knows the hop (ALPN `vigil/1+h2+h1h2`); a proxy
//! of an earlier version gets them all as streams. Every other request keeps its HTTP/2
//! stream: a body (streamed, or gRPC's), `te: trailers`. The far side's access log says
//! which hop each took (`protocol`), its metrics which connections it accepted.

use super::*;

/// `(path, protocol)` of every inbound access-log line of `log` once it holds `n` of them.
async fn hops(log: &LogSink, n: usize) -> Vec<(String, String)> {
    let inbound = |ls: &[serde_json::Value]| -> Vec<(String, String)> {
        ls.iter()
            .filter(|l| l["direction"] == "inbound")
            .map(|l| {
                let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
                (s("path"), s("protocol"))
            })
            .collect()
    };
    inbound(&log.when(|ls| inbound(ls).len() >= n).await)
}

/// The app's JSON echo of an HTTP/2 GET to `path` (with `cookie` fields, if any).
async fn seen_by_app(c: &mut Client, path: &str, cookies: &[&str]) -> serde_json::Value {
    let mut req = Request::get(format!("http://orders.shop{path}"));
    for v in cookies {
        req = req.header("cookie", *v);
    }
    let resp = c.send_request(req.body(empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

type Client = hyper::client::conn::http2::SendRequest<TestBody>;

#[tokio::test]
async fn a_quiet_destinations_bodyless_http2_requests_cross_the_http1_hop_as_http2() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let ((web, _), (orders, log)) = pair_with_logs(&mesh, app, ALLOW_WEB, &[]).await;
    let mut c = h2_client(web.routes[0]).await;
    // The first opens the HTTP/2 connection, which says the far proxy knows the hop.
    let seen = seen_by_app(&mut c, "/first", &["a=1", "b=2"]).await;
    assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
    assert_eq!(
        seen["cookies"],
        serde_json::json!(["a=1", "b=2"]),
        "as sent: {seen}"
    );
    for i in 0..4 {
        let seen = seen_by_app(&mut c, &format!("/orders/{i}?q={i}"), &["a=1", "b=2"]).await;
        assert_eq!(seen["version"], "HTTP/2.0", "the app gets HTTP/2: {seen}");
        assert_eq!(
            (seen["path"].as_str(), seen["query"].as_str()),
            (
                Some(format!("/orders/{i}").as_str()),
                Some(format!("q={i}").as_str())
            )
        );
        assert_eq!(seen["peer"], wid("web"), "the verified caller: {seen}");
        assert!(
            seen["orig_proto"].is_null(),
            "no marker reaches the app: {seen}"
        );
        assert!(
            seen["host"].is_null(),
            "HTTP/2 to the app names no Host: {seen}"
        );
        // Joined for the HTTP/1.1 hop (RFC 9113 §8.2.3), one field to the app.
        assert_eq!(seen["cookies"], serde_json::json!(["a=1; b=2"]));
    }
    // HEAD: the head only, its length as the app declared it.
    let resp = c
        .send_request(
            Request::head("http://orders.shop/orders/9")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    let hops = hops(&log, 6).await;
    assert_eq!(
        hops[0].1, "http2",
        "the first opens the HTTP/2 connection: {hops:?}"
    );
    assert!(
        hops[1..].iter().all(|(_, p)| p == "http1"),
        "one request at a time: the others over HTTP/1.1 ({hops:?})"
    );
    let m = http_get(orders.admin, "/metrics").await.unwrap().1;
    for protocol in ["http1", "http2"] {
        assert!(
            m.contains(&format!(
                r#"vigil_proxy_connections_total{{direction="inbound",protocol="{protocol}"}} 1"#
            )),
            "one connection of each: {m}"
        );
    }

    // A deny crosses back the same way: the destination's 403, with its request id.
    let (b, _) = callee(&mesh, "orders", "inbound: []\n", app, &[]).await;
    let (a, _) = caller(&mesh, "web", b.inbound, "orders", &[]).await;
    let mut c = h2_client(a.routes[0]).await;
    let resp = c
        .send_request(Request::get("http://orders.shop/x").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(
        resp.headers().contains_key("x-vigil-request-id"),
        "{resp:?}"
    );
}

#[tokio::test]
async fn http2_requests_with_a_body_or_asking_for_trailers_keep_their_stream() {
    let mesh = Mesh::new();
    let app = http_app().await;
    let ((web, _), (_orders, log)) = pair_with_logs(&mesh, app, ALLOW_WEB, &[]).await;
    let mut c = h2_client(web.routes[0]).await;
    let grpc = |method: http::Method, body: TestBody| {
        Request::builder()
            .method(method)
            .uri("http://orders.shop/grpc.Test/Echo")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap()
    };
    // gRPC unary: a body, and `te: trailers`; its status comes in the trailers.
    let body = BodyExt::boxed(Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x02hi")));
    let resp = c
        .send_request(grpc(http::Method::POST, body))
        .await
        .unwrap();
    let got = resp.into_body().collect().await.unwrap();
    assert_eq!(got.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(&got.to_bytes()[..], b"\x00\x00\x00\x00\x02hi");
    // No body, but it asks for trailers: they arrive.
    let resp = c
        .send_request(grpc(http::Method::GET, empty()))
        .await
        .unwrap();
    let got = resp.into_body().collect().await.unwrap();
    assert_eq!(got.trailers().unwrap()["grpc-message"], "ok");
    // A body still streaming when the request is sent (as a streaming call's is).
    let req = Request::post("http://orders.shop/count")
        .body(BodyExt::boxed(futures_chunks(
            Bytes::from(vec![b'x'; 1000]),
            3,
        )))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(
        &resp.into_body().collect().await.unwrap().to_bytes()[..],
        b"3000"
    );
    // And one that needs none of it.
    seen_by_app(&mut c, "/plain", &[]).await;

    let mut hops = hops(&log, 4).await;
    hops.sort();
    assert_eq!(
        hops,
        [
            ("/count", "http2"),
            ("/grpc.Test/Echo", "http2"),
            ("/grpc.Test/Echo", "http2"),
            ("/plain", "http1"),
        ]
        .map(|(p, h)| (p.to_string(), h.to_string()))
    );
}

/// The HTTP/1.1 hop carries no trailers its request did not ask for (RFC 9110 §6.5.1
/// lets a hop drop those; hyper sends only declared ones): a bodyless request that asks
/// for none gets the answer's data without them over it, and with them over the HTTP/2
/// hop (`--mesh-http1 http2`).
#[tokio::test]
async fn trailers_not_asked_for_are_carried_by_the_http2_hop_only() {
    for (hop, trailers) in [("--mesh-http1=auto", false), ("--mesh-http1=http2", true)] {
        let mesh = Mesh::new();
        let (_a, _b, via) = pair(&mesh, http_app().await, &[hop]).await;
        let mut c = h2_client(via).await;
        seen_by_app(&mut c, "/first", &[]).await; // opens the HTTP/2 connection
        let req = Request::get("http://orders.shop/grpc.Test/Echo")
            .body(empty())
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{hop}");
        assert_eq!(resp.headers()["content-type"], "application/grpc", "{hop}");
        let got = resp.into_body().collect().await.unwrap();
        assert_eq!(got.trailers().is_some(), trailers, "{hop}");
        assert!(got.to_bytes().is_empty(), "{hop}");
    }
}

/// A rolling upgrade: the caller's proxy is new, the callee's older. Its proxy would
/// hand an HTTP/2 request that came over the HTTP/1.1 hop to its app as HTTP/1.1 (an app
/// that speaks HTTP/2 only would fail it), so every one goes as a stream.
#[tokio::test]
async fn a_destination_whose_proxy_does_not_know_the_hop_gets_http2_as_streams() {
    let mesh = Mesh::new();
    // It accepts what proxies before `vigil/1+h2+h1h2` accepted.
    let alpns: [&[u8]; 4] = [b"vigil/1+h1", b"vigil/1+tcp", b"vigil/1+h2", b"vigil/1"];
    let old = earlier_proxy(&mesh, &alpns).await;
    let (web, _) = caller(&mesh, "web", old, "orders", &[]).await;
    let mut c = h2_client(web.routes[0]).await;
    for i in 0..4 {
        let req = Request::get(format!("http://orders.shop/{i}"))
            .body(empty())
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&body),
            "HTTP/2.0 vigil/1+h2",
            "request {i}"
        );
    }
}

/// The marker is the sidecars' own: an HTTP/1.1 app that sends `vigil-orig-proto:
/// HTTP/2` itself has it removed by its proxy, and the far app gets HTTP/1.1 without it.
#[tokio::test]
async fn a_marker_an_app_sends_itself_changes_nothing() {
    let mesh = Mesh::new();
    let (_a, _b, via) = pair(&mesh, http_app().await, &[]).await;
    let stream = TcpStream::connect(via).await.unwrap();
    let (mut c, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..2 {
        let req = Request::get(format!("/forged/{i}"))
            .header("host", "orders.shop")
            .header("vigil-orig-proto", "HTTP/2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = send(&mut c, req).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
        assert!(seen["orig_proto"].is_null(), "{seen}");
    }
}
