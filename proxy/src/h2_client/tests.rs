#![allow(clippy::unwrap_used)]

use std::{convert::Infallible, time::Duration};

use h2::Reason;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

use super::*;
use crate::h2_body::content_length;

type Item = Result<Frame<Bytes>, BoxError>;
type Frames = mpsc::Sender<Item>;

/// A request body fed frame by frame through the returned sender (ends when it drops).
fn streamed() -> (Frames, StreamBody<impl futures_util::Stream<Item = Item>>) {
    let (tx, mut rx) = mpsc::channel(4);
    let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    (tx, body)
}

/// A body of these frames.
fn framed(frames: Vec<Item>) -> crate::http_util::Body {
    StreamBody::new(futures_util::stream::iter(frames))
        .boxed_unsync()
        .into()
}

/// The app: a real hyper HTTP/2 server.
/// - `/echo` reads the whole body and answers its length, then the request's trailers
///   (`x-trailer`) as its own;
/// - `/early` answers at once without reading the body;
/// - `/big` answers [`BIG`] bytes;
/// - `/headers` answers the request's header names, sorted;
/// - `/fail` sends its head and some data, then fails its body (the stream is reset).
async fn app(req: Request<Incoming>) -> Result<Response<crate::http_util::Body>, Infallible> {
    Ok(match req.uri().path() {
        "/echo" => {
            let Ok(collected) = req.into_body().collect().await else {
                let mut r = Response::new(crate::http_util::full(""));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return Ok(r);
            };
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let len = collected.to_bytes().len();
            Response::new(framed(vec![
                Ok(Frame::data(Bytes::from(len.to_string()))),
                Ok(Frame::trailers(trailers)),
            ]))
        }
        "/early" => Response::new(crate::http_util::full("early")),
        "/big" => Response::new(crate::http_util::full(vec![7u8; BIG])),
        "/headers" => {
            let mut names: Vec<&str> = req.headers().keys().map(|n| n.as_str()).collect();
            names.sort_unstable();
            Response::new(crate::http_util::full(names.join(",")))
        }
        "/fail" => {
            // The head and some data go out first; the failure comes later.
            let (tx, body) = streamed();
            tokio::spawn(async move {
                let data = Frame::data(Bytes::from_static(b"partial"));
                tx.send(Ok(data)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx.send(Err("app body failed".into())).await;
            });
            Response::new(body.boxed_unsync().into())
        }
        _ => {
            let mut r = Response::new(crate::http_util::full(""));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
}

/// Ten times the windows below.
const BIG: usize = 10 * 65_535;

/// Small windows, so that a body of a few hundred KiB waits on flow control many times.
const SMALL: Settings = Settings {
    max_send_streams: 100,
    stream_window: 65_535,
    connection_window: 65_535,
};

/// A client connected to [`app`] over an in-memory pipe; the server stops when the
/// returned sender is dropped.
async fn client() -> (SendRequest, tokio::sync::oneshot::Sender<()>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let serve = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .serve_connection(TokioIo::new(server), hyper::service::service_fn(app));
        tokio::select! {
            _ = serve => {}
            _ = stopped => {}
        }
    });
    let (sender, conn) = handshake(client, SMALL).await.unwrap();
    tokio::spawn(conn);
    (sender, stop)
}

fn request<B>(method: Method, path: &str, body: B) -> Request<B> {
    Request::builder()
        .method(method)
        .uri(format!("http://app.local{path}"))
        .body(body)
        .unwrap()
}

async fn get(sender: &mut SendRequest, path: &str) -> String {
    let req = request(Method::GET, path, Empty::<Bytes>::new());
    text(sender.send(req).await.unwrap()).await
}

async fn text(resp: Response<RecvBody>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn a_body_larger_than_the_windows_arrives_whole_with_its_trailers() {
    let (mut sender, _stop) = client().await;
    let (tx, body) = streamed();
    tokio::spawn(async move {
        // 40 chunks of 16 KiB: ten times the stream and connection windows.
        for i in 0..40u8 {
            tx.send(Ok(Frame::data(Bytes::from(vec![i; 16 * 1024]))))
                .await
                .unwrap();
        }
        let mut t = HeaderMap::new();
        t.insert("x-trailer", HeaderValue::from_static("sent"));
        tx.send(Ok(Frame::trailers(t))).await.unwrap();
    });
    let resp = sender
        .send(request(Method::POST, "/echo", body))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(collected.to_bytes(), (40 * 16 * 1024).to_string());
    assert_eq!(trailers.get("x-trailer").unwrap(), "sent");
}

#[tokio::test]
async fn bodies_ending_with_the_headers_or_with_an_empty_frame_are_complete() {
    let (mut sender, _stop) = client().await;
    assert_eq!(get(&mut sender, "/echo").await, "0");
    let resp = sender
        .send(request(
            Method::POST,
            "/echo",
            Full::new(Bytes::from_static(b"abc")),
        ))
        .await
        .unwrap();
    assert_eq!(text(resp).await, "3");
    // A body that ends without saying so beforehand: an empty end-of-stream frame.
    let (tx, body) = streamed();
    tx.send(Ok(Frame::data(Bytes::from_static(b"ab"))))
        .await
        .unwrap();
    drop(tx);
    let resp = sender
        .send(request(Method::POST, "/echo", body))
        .await
        .unwrap();
    assert_eq!(text(resp).await, "2");
}

#[tokio::test]
async fn a_response_larger_than_the_windows_is_read_whole() {
    let (mut sender, _stop) = client().await;
    // Twice at once on the one connection: each gives back the window it read.
    let mut other = sender.clone();
    let (a, b) = tokio::time::timeout(Duration::from_secs(10), async {
        let big = || request(Method::GET, "/big", Empty::<Bytes>::new());
        let (a, b) = tokio::join!(sender.send(big()), other.send(big()));
        let collect = |r: Response<RecvBody>| async move {
            r.into_body().collect().await.unwrap().to_bytes()
        };
        tokio::join!(collect(a.unwrap()), collect(b.unwrap()))
    })
    .await
    .expect("flow control lets both responses through");
    assert_eq!(a.len(), BIG);
    assert_eq!(b.len(), BIG);
    assert!(a.iter().chain(b.iter()).all(|&x| x == 7));
}

#[tokio::test]
async fn the_response_declares_its_length_and_ends_with_it() {
    let (mut sender, _stop) = client().await;
    let resp = sender
        .send(request(Method::GET, "/early", Empty::<Bytes>::new()))
        .await
        .unwrap();
    assert_eq!(resp.body().size_hint().exact(), Some(5));
    let mut body = resp.into_body();
    let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(data, "early");
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
}

#[tokio::test]
async fn an_early_response_stops_the_upload_without_failing() {
    let (mut sender, _stop) = client().await;
    let (tx, body) = streamed();
    tx.send(Ok(Frame::data(Bytes::from_static(b"never read"))))
        .await
        .unwrap();
    // The body never ends on its own: only the server's answer and reset end it.
    let resp = sender
        .send(request(Method::POST, "/early", body))
        .await
        .unwrap();
    assert_eq!(text(resp).await, "early");
    // The server reset the stream (NO_ERROR): the upload stops and its body is dropped.
    tokio::time::timeout(Duration::from_secs(5), tx.closed())
        .await
        .expect("the pipe let go of the request body");
    // The connection is still good.
    assert_eq!(get(&mut sender, "/early").await, "early");
}

#[tokio::test]
async fn a_request_body_that_fails_resets_its_stream_only() {
    let (mut sender, _stop) = client().await;
    let (tx, body) = streamed();
    tx.send(Ok(Frame::data(Bytes::from_static(b"some"))))
        .await
        .unwrap();
    tx.send(Err("client went away".into())).await.unwrap();
    let sent = sender.send(request(Method::POST, "/echo", body)).await;
    let err = sent.expect_err("the stream was reset").into_error();
    assert_eq!(err.reason(), Some(Reason::INTERNAL_ERROR), "{err}");
    assert_eq!(
        get(&mut sender, "/echo").await,
        "0",
        "the connection is still good"
    );
}

#[tokio::test]
async fn a_response_the_server_fails_midway_is_an_error_not_an_end() {
    let (mut sender, _stop) = client().await;
    let resp = sender
        .send(request(Method::GET, "/fail", Empty::<Bytes>::new()))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(f)) => got.extend_from_slice(&f.into_data().unwrap()),
            Some(Err(e)) => break e,
            None => panic!("a failed response ended cleanly after {got:?}"),
        }
    };
    assert_eq!(got, b"partial", "what came before the failure");
    assert_ne!(err.reason(), Some(Reason::NO_ERROR), "{err}");
}

#[tokio::test]
async fn connection_specific_headers_are_removed_not_refused() {
    let (mut sender, _stop) = client().await;
    let mut req = request(Method::GET, "/headers", Empty::<Bytes>::new());
    let h = req.headers_mut();
    for (n, v) in [
        ("connection", "x-hop, keep-alive"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
        ("x-end-to-end", "kept"),
    ] {
        h.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    let resp = sender.send(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp).await, "x-end-to-end");
    // `TE: trailers` is end-to-end in HTTP/2 (gRPC needs it).
    let mut req = request(Method::GET, "/headers", Empty::<Bytes>::new());
    req.headers_mut()
        .insert(header::TE, HeaderValue::from_static("trailers"));
    assert_eq!(text(sender.send(req).await.unwrap()).await, "te");
}

#[tokio::test]
async fn a_closed_connection_hands_the_request_back_unsent() {
    let (mut sender, stop) = client().await;
    assert!(!sender.is_closed());
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), async {
        while !sender.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the connection's end is noticed");
    let mut req = request(Method::PUT, "/echo", Full::new(Bytes::from_static(b"keep")));
    req.headers_mut()
        .insert("x-kept", HeaderValue::from_static("yes"));
    match sender.send(req).await {
        Err(SendError::Unsent { request, .. }) => {
            assert_eq!(request.method(), Method::PUT);
            assert_eq!(request.uri().path(), "/echo");
            assert_eq!(request.headers()["x-kept"], "yes");
            let body = request.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "keep", "the body comes back unread");
        }
        Err(SendError::Stream(e)) => panic!("sent on a closed connection: {e}"),
        Ok(resp) => panic!("answered on a closed connection: {}", resp.status()),
    }
}

#[test]
fn content_length_is_read_only_when_single_and_numeric() {
    let mut h = HeaderMap::new();
    assert_eq!(content_length(&h), None);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
    assert_eq!(content_length(&h), Some(42));
    h.append(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
    assert_eq!(content_length(&h), None, "two values");
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("4x"));
    assert_eq!(content_length(&h), None, "not a number");
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("-1"));
    assert_eq!(content_length(&h), None, "negative");
}

#[tokio::test]
async fn the_server_may_not_push() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let mut conn = h2::server::handshake(server).await.unwrap();
        let (req, mut respond) = conn.accept().await.unwrap().unwrap();
        let promise = Request::builder()
            .uri("http://app.local/pushed")
            .body(())
            .unwrap();
        let pushed = respond
            .push_request(promise)
            .map(|_| ())
            .map_err(|e| e.to_string());
        respond.send_response(Response::new(()), true).unwrap();
        drop(req);
        // Drive the connection until the client goes away.
        while conn.accept().await.is_some() {}
        pushed
    });
    let (mut sender, conn) = handshake(client, SMALL).await.unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send(request(Method::GET, "/", Empty::<Bytes>::new()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop((resp, sender));
    let pushed = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert!(pushed.is_err(), "the client's SETTINGS let the server push");
}
