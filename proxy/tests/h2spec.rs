//! HTTP/2 conformance with h2spec (github.com/summerwind/h2spec, built by
//! e2e/h2spec/build.sh; `.ci/setup.sh` exports `VIGIL_H2SPEC`), in strict mode, against
//! the outbound (h2c from the app, prior knowledge) and the inbound (mesh mTLS: h2spec
//! has no client certificates, so a relay of this test's own takes its plaintext
//! connections and opens mesh mTLS with `web`'s SVID to the inbound). Behind them, a
//! real HTTP/1.1 + h2c app.
//!
//! Every case must pass except the ones listed in [`EXCEPTIONS`] with the reason; the
//! test fails if another case fails or if a listed one starts passing (then the list is
//! out of date).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{collections::BTreeSet, convert::Infallible, net::SocketAddr, path::PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpListener;

/// h2spec cases (`section/number` as h2spec numbers them) that fail for a reason that is
/// not the proxy's to fix, per target.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    ("outbound", INVALID_PREFACE, DETECTION),
    ("inbound", INVALID_PREFACE, DETECTION),
];

const INVALID_PREFACE: &str = "http2/3.5: Sends invalid connection preface";
/// Both listeners detect the protocol from the first bytes: h2spec's invalid preface
/// ("INVALID CONNECTION PREFACE") starts like an HTTP/1 request line, so it is answered
/// as HTTP/1 (400, then the connection closes) rather than with an HTTP/2 GOAWAY — right
/// for listeners that also serve HTTP/1.1 (the inbound behind mesh TLS too).
const DETECTION: &str = "protocol detection answers a non-preface that looks like HTTP/1 as HTTP/1";

fn h2spec() -> PathBuf {
    let p = std::env::var_os("VIGIL_H2SPEC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "VIGIL_H2SPEC is not set: build h2spec with e2e/h2spec/build.sh (`make test` does)"
            )
        });
    assert!(p.is_file(), "VIGIL_H2SPEC={} is not a file", p.display());
    p
}

/// The app behind both proxies: reads the whole request body, then answers 200 with a
/// short body (h2spec asks for a non-empty 200 on `GET /` and `POST /`).
///
/// It must read first. Cases such as 8.1.2.6 send HEADERS (`content-length: 1`), then a
/// 4-byte DATA frame, and expect the proxy to reset the stream (PROTOCOL_ERROR) when the
/// DATA arrives. An app that answers without reading lets the proxy stream a complete
/// response before the DATA frame reaches it — through the mTLS relay, a loaded CI
/// machine can hold the DATA back for longer than the app's round trip — and the proxy
/// then rightly ends the stream with RST_STREAM(NO_ERROR) (RFC 9113 §8.1), which h2spec
/// reads as a failure of the proxy. With this app the response cannot exist before the
/// body is complete, so every run tests what the case is about: the malformed body.
async fn read_first_app() -> SocketAddr {
    async fn answer(
        req: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let read = req.into_body().collect().await.map(|b| b.to_bytes().len());
        Ok(hyper::Response::new(Full::new(Bytes::from(format!(
            "read {read:?}\n"
        )))))
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), hyper::service::service_fn(answer))
                    .await;
            });
        }
    });
    addr
}

/// Accepts plaintext and relays each connection over mesh mTLS (as `web`) to `inbound`.
async fn mtls_relay(mesh: &Mesh, inbound: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let creds = std::sync::Arc::new(mesh.client_creds("web"));
    tokio::spawn(async move {
        loop {
            let Ok((mut plain, _)) = l.accept().await else {
                continue;
            };
            let creds = creds.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = mtls(inbound, &creds, &[&wid("orders")], b"vigil/1").await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
            });
        }
    });
    addr
}

/// Runs h2spec (strict) against `addr` — all of it, or the sections in `only` — and
/// returns (cases, failed case ids). Each failure is printed with h2spec's reason.
fn run_h2spec(
    addr: SocketAddr,
    report: &std::path::Path,
    only: &[String],
) -> (usize, BTreeSet<String>) {
    let out = std::process::Command::new(h2spec())
        .args(["-S", "-o", "5", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .arg("-j")
        .arg(report)
        .args(only)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let xml =
        std::fs::read_to_string(report).unwrap_or_else(|e| panic!("no report ({e}):\n{text}"));
    // <testcase package="http2/6.5.3" classname="..." ...> followed by <failure>/<error>.
    let mut cases = 0;
    let mut failed = BTreeSet::new();
    for chunk in xml.split("<testcase").skip(1) {
        cases += 1;
        let body = chunk.split("</testcase>").next().unwrap_or_default();
        if body.contains("<failure") || body.contains("<error") {
            let attr = |name: &str| {
                chunk
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or("?")
                    .to_string()
            };
            let id = format!("{}: {}", attr("package"), attr("classname"));
            let why = body
                .split_once('>')
                .map(|(_, rest)| rest.trim())
                .unwrap_or_default();
            eprintln!("  failed: {id}\n    {why}");
            failed.insert(id);
        }
    }
    eprintln!(
        "h2spec against {addr}{}: {cases} cases, {} failed",
        if only.is_empty() {
            String::new()
        } else {
            format!(" ({})", only.join(" "))
        },
        failed.len()
    );
    (cases, failed)
}

/// Runs the whole suite; a case that fails unexpectedly is run again once, alone with its
/// section, and counts as failed only if it fails again. h2spec waits a fixed time for
/// each expected frame, so on a loaded 2-core CI machine a slow answer can read as a
/// failure; a real conformance bug fails both times (and both failures are printed).
fn run_target(
    target: &'static str,
    addr: SocketAddr,
    dir: &std::path::Path,
) -> (usize, BTreeSet<String>) {
    let (cases, mut failed) = run_h2spec(addr, &dir.join(format!("{target}.xml")), &[]);
    let expected = exceptions(target);
    let again: BTreeSet<String> = failed
        .difference(&expected)
        .filter_map(|id| id.split(':').next().map(str::to_string))
        .collect();
    if !again.is_empty() {
        let sections: Vec<String> = again.into_iter().collect();
        let (_, still) = run_h2spec(addr, &dir.join(format!("{target}-again.xml")), &sections);
        failed.retain(|id| expected.contains(id) || still.contains(id));
    }
    (cases, failed)
}

fn exceptions(target: &str) -> BTreeSet<String> {
    EXCEPTIONS
        .iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, case, _)| case.to_string())
        .collect()
}

fn check(target: &str, cases: usize, failed: &BTreeSet<String>) {
    assert!(cases > 100, "{target}: h2spec ran only {cases} cases");
    let expected = exceptions(target);
    let unexpected: Vec<_> = failed.difference(&expected).collect();
    let now_passing: Vec<_> = expected.difference(failed).collect();
    assert!(
        unexpected.is_empty(),
        "{target}: h2spec cases failed: {unexpected:#?}"
    );
    assert!(
        now_passing.is_empty(),
        "{target}: listed exceptions now pass, remove them: {now_passing:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_strict_outbound_and_inbound() {
    let mesh = Mesh::new();
    let app = read_first_app().await;
    let ((web, _), (orders, _)) = pair_with_logs(&mesh, app, ALLOW_WEB, &[]).await;
    let relay = mtls_relay(&mesh, orders.inbound).await;
    let dir = tempfile::tempdir().unwrap();
    for (target, addr) in [("outbound", web.routes[0]), ("inbound", relay)] {
        let path = dir.path().to_path_buf();
        let (cases, failed) = tokio::task::spawn_blocking(move || run_target(target, addr, &path))
            .await
            .unwrap();
        check(target, cases, &failed);
    }
}
