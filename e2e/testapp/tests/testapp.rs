//! The test app as the real-node tests use it, run as its own binary on loopback: the echo,
//! probes, streams, slow answers, its control port's calls (HTTP/1.1 and gRPC over h2c)
//! and a graceful SIGTERM.

#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

struct App {
    child: Child,
    app: SocketAddr,
    control: SocketAddr,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> App {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-testapp"))
        .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
        .env("POD_NAME", "orders-1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    // Keep reading what it says, so its stderr stays open.
    std::thread::spawn(move || {
        let mut rest = String::new();
        while stderr.read_line(&mut rest).is_ok_and(|n| n > 0) {
            rest.clear();
        }
    });
    // "vigil-testapp orders-1: app on 127.0.0.1:P, control on 127.0.0.1:Q"
    let addr = |after: &str| -> SocketAddr {
        line.split(after)
            .nth(1)
            .and_then(|r| r.split([',', '\n']).next())
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    App {
        app: addr("app on "),
        control: addr("control on "),
        child,
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[tokio::test]
async fn echo_probes_streams_and_slow_answers() {
    let app = start();
    let (status, body) = request(app.app, "POST", "/orders/7?x=1", "").await;
    assert_eq!(status, 200);
    let echo = json(&body);
    assert_eq!(echo["instance"], "orders-1");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/orders/7");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(
        echo["peer"],
        serde_json::Value::Null,
        "no proxy, no verified caller"
    );
    assert_eq!(
        request(app.app, "GET", "/healthz", "").await,
        (200, "ok".into())
    );

    let t = Instant::now();
    let (status, _) = request(app.app, "GET", "/x?delay_ms=300", "").await;
    assert_eq!(status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    // A stream: chunks keep coming.
    let stream = tokio::net::TcpStream::connect(app.app).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            Request::get("/feed?stream=1")
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut lines = 0;
    while lines < 3 {
        let frame = body.frame().await.unwrap().unwrap();
        if frame.is_data() {
            lines += 1;
        }
    }
    let (_, stats) = request(app.control, "GET", "/stats", "").await;
    let stats = json(&stats);
    assert_eq!(stats["by_path"]["/healthz"], 1);
    assert!(stats["requests"].as_u64().unwrap() >= 4);
}

#[tokio::test]
async fn the_control_port_calls_out_over_http_and_grpc() {
    let app = start();
    let call = format!(r#"{{"url": "http://{}/orders/1"}}"#, app.app);
    let (status, body) = request(app.control, "POST", "/call", &call).await;
    assert_eq!(status, 200);
    let c = json(&body);
    assert_eq!(c["status"], 200);
    assert_eq!(json(c["body"].as_str().unwrap())["path"], "/orders/1");

    let refused = r#"{"url": "http://127.0.0.1:1/x", "timeout_ms": 2000}"#;
    let c = json(&request(app.control, "POST", "/call", refused).await.1);
    assert_eq!(c["status"], serde_json::Value::Null);
    assert!(c["error"].as_str().unwrap().contains("onnect"), "{c}");

    let grpc = format!(
        r#"{{"url": "http://{}", "message": "hello, gRPC"}}"#,
        app.app
    );
    let g = json(&request(app.control, "POST", "/grpc", &grpc).await.1);
    assert_eq!(g["http_status"], 200, "{g}");
    assert_eq!(g["grpc_status"], 0, "{g}");
    assert_eq!(g["message"], "hello, gRPC", "{g}");

    let (status, _) = request(app.control, "POST", "/call", "not json").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut app = start();
    let addr = app.app;
    let slow = tokio::spawn(async move { request(addr, "GET", "/x?delay_ms=600", "").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(app.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let (status, _) = slow.await.unwrap();
    assert_eq!(status, 200, "the request in flight at SIGTERM was answered");
    let exit = app.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
