#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use futures_util::future::poll_fn;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Notify, oneshot};

use super::*;
use crate::http_util::{BoxError, full};

/// Ten times the windows below.
const BIG: usize = 10 * 65_535;

/// Small windows, so that a body of a few hundred KiB waits on flow control many times.
const SMALL: Settings = Settings {
    max_concurrent_streams: 100,
    stream_window: 65_535,
    connection_window: 65_535,
    max_header_list: 16 * 1024,
};

/// What the service under test saw, for the tests to check.
#[derive(Default)]
struct Seen {
    /// Dropped with the `/hang` handler's future (the client cancelled it).
    hang_dropped: Notify,
    /// `/wait` answers once this is notified.
    release: Notify,
    /// The `/hint` request's body: its exact size hint and whether it had ended.
    hint: std::sync::Mutex<Option<(Option<u64>, bool)>>,
}

/// Notifies `hang_dropped` when dropped.
struct DropSignal(Arc<Seen>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.hang_dropped.notify_one();
    }
}

/// The service under test:
/// - `/echo` reads the whole body and answers its length, then the request's trailers;
/// - `/big` answers [`BIG`] bytes (length known);
/// - `/hop` answers with connection-specific headers and a `Date` of its own;
/// - `/hang` never answers;
/// - `/wait` answers once released;
/// - `/hint` records its body's size hint and end, and answers an empty body;
/// - `/fail` sends some data, then fails its body.
async fn service(req: Request<ReqBody>, seen: Arc<Seen>) -> Result<Response<Body>, Infallible> {
    Ok(match req.uri().path() {
        "/echo" => {
            let collected = req.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let len = collected.to_bytes().len();
            let frames: Vec<Result<_, BoxError>> = vec![
                Ok(Frame::data(Bytes::from(len.to_string()))),
                Ok(Frame::trailers(trailers)),
            ];
            Response::new(
                StreamBody::new(futures_util::stream::iter(frames))
                    .boxed_unsync()
                    .into(),
            )
        }
        "/big" => Response::new(full(vec![7u8; BIG])),
        "/hop" => Response::builder()
            .header(header::CONNECTION, "x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .header(header::TRANSFER_ENCODING, "chunked")
            .header(header::UPGRADE, "websocket")
            .header(header::DATE, "Sun, 06 Nov 1994 08:49:37 GMT")
            .header("x-kept", "yes")
            .body(full("hop"))
            .unwrap(),
        "/hang" => {
            let _signal = DropSignal(seen.clone());
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/wait" => {
            seen.release.notified().await;
            Response::new(full("released"))
        }
        "/hint" => {
            let body = req.body();
            *seen.hint.lock().unwrap() = Some((body.size_hint().exact(), body.is_end_stream()));
            Response::new(full(""))
        }
        "/fail" => {
            // The data goes out first; the failure comes later (a reset drops what `h2`
            // has not sent yet).
            let data: Result<_, BoxError> = Ok(Frame::data(Bytes::from_static(b"partial")));
            let failure = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err::<Frame<Bytes>, BoxError>("the body failed".into())
            });
            let frames =
                futures_util::StreamExt::chain(futures_util::stream::iter([data]), failure);
            Response::new(StreamBody::new(frames).boxed_unsync().into())
        }
        _ => {
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
}

/// The server under test on one end of an in-memory pipe, the other end returned. The
/// server's future is handed back through `done` when it ends.
fn serve(
    seen: &Arc<Seen>,
) -> (
    tokio::io::DuplexStream,
    oneshot::Receiver<Result<(), h2::Error>>,
    tokio::sync::mpsc::Sender<()>,
) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let seen = seen.clone();
    let svc = hyper::service::service_fn(move |req| service(req, seen.clone()));
    let (done_tx, done) = oneshot::channel();
    // A message on `shutdown` starts a graceful shutdown.
    let (shutdown, mut shutdown_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let mut conn = serve_connection(server, SMALL, svc);
        let ended = loop {
            tokio::select! {
                ended = &mut conn => break ended,
                Some(()) = shutdown_rx.recv() => conn.graceful_shutdown(),
            }
        };
        let _ = done_tx.send(ended);
    });
    (client, done, shutdown)
}

/// A hyper HTTP/2 client (an implementation independent of this server) on `io`.
async fn hyper_client(
    io: tokio::io::DuplexStream,
) -> hyper::client::conn::http2::SendRequest<Body> {
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn request(method: Method, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(format!("http://proxy.local{path}"))
        .body(body)
        .unwrap()
}

async fn text(resp: Response<Incoming>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
}

#[tokio::test]
async fn streams_a_large_upload_with_trailers_through_small_windows() {
    let seen = Arc::new(Seen::default());
    let (io, _done, _shutdown) = serve(&seen);
    let mut client = hyper_client(io).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("t"));
    let frames: Vec<Result<_, BoxError>> = (0..10u8)
        .map(|i| Ok(Frame::data(Bytes::from(vec![i; 64 * 1024]))))
        .chain([Ok(Frame::trailers(trailers))])
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(frames))
        .boxed_unsync()
        .into();
    let resp = within(
        "upload",
        client.send_request(request(Method::POST, "/echo", body)),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = within("response", resp.into_body().collect())
        .await
        .unwrap();
    let got_trailers = collected.trailers().cloned().unwrap();
    assert_eq!(collected.to_bytes(), (640 * 1024).to_string());
    assert_eq!(got_trailers.get("x-trailer").unwrap(), "t");
}

#[tokio::test]
async fn serves_two_large_downloads_at_once_with_their_length() {
    let seen = Arc::new(Seen::default());
    let (io, _done, _shutdown) = serve(&seen);
    let client = hyper_client(io).await;
    let get = |mut c: hyper::client::conn::http2::SendRequest<Body>| async move {
        let empty = Empty::new().map_err(Into::into).boxed_unsync().into();
        let resp = c
            .send_request(request(Method::GET, "/big", empty))
            .await
            .unwrap();
        let length = resp.headers().get(header::CONTENT_LENGTH).cloned();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (length, body)
    };
    let (a, b) = within("downloads", async {
        tokio::join!(get(client.clone()), get(client.clone()))
    })
    .await;
    for (length, body) in [a, b] {
        assert_eq!(length.unwrap(), BIG.to_string().as_str());
        assert_eq!(body.len(), BIG);
        assert!(body.iter().all(|b| *b == 7));
    }
}

#[tokio::test]
async fn removes_connection_specific_headers_and_keeps_the_rest() {
    let seen = Arc::new(Seen::default());
    let (io, _done, _shutdown) = serve(&seen);
    let mut client = hyper_client(io).await;
    let empty = Empty::new().map_err(Into::into).boxed_unsync().into();
    let resp = within(
        "hop",
        client.send_request(request(Method::GET, "/hop", empty)),
    )
    .await
    .unwrap();
    let h = resp.headers();
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(!h.contains_key(gone), "{gone} was sent: {h:?}");
    }
    assert_eq!(h.get("x-kept").unwrap(), "yes");
    // The answer's own `Date` is kept.
    assert_eq!(
        h.get(header::DATE).unwrap(),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    assert_eq!(text(resp).await, "hop");
}

#[tokio::test]
async fn adds_a_date_to_an_answer_without_one() {
    let seen = Arc::new(Seen::default());
    let (io, _done, _shutdown) = serve(&seen);
    let mut client = hyper_client(io).await;
    let empty = Empty::new().map_err(Into::into).boxed_unsync().into();
    let resp = within(
        "404",
        client.send_request(request(Method::GET, "/none", empty)),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let date = resp.headers().get(header::DATE).expect("a Date");
    httpdate::parse_http_date(date.to_str().unwrap()).expect("an HTTP date");
}

#[tokio::test]
async fn a_request_body_says_its_length_and_end() {
    let seen = Arc::new(Seen::default());
    let (io, _done, _shutdown) = serve(&seen);
    let mut client = hyper_client(io).await;
    // Ended with its headers: known to be empty.
    let empty = Empty::new().map_err(Into::into).boxed_unsync().into();
    within(
        "empty",
        client.send_request(request(Method::GET, "/hint", empty)),
    )
    .await
    .unwrap();
    assert_eq!(seen.hint.lock().unwrap().take(), Some((Some(0), true)));
    // A declared length.
    let mut req = request(Method::POST, "/hint", full("12345"));
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
    within("declared", client.send_request(req)).await.unwrap();
    assert_eq!(seen.hint.lock().unwrap().take(), Some((Some(5), false)));
    // Neither: unknown.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let body = StreamBody::new(tokio_stream_like(rx)).boxed_unsync().into();
    within(
        "streamed",
        client.send_request(request(Method::POST, "/hint", body)),
    )
    .await
    .unwrap();
    assert_eq!(seen.hint.lock().unwrap().take(), Some((None, false)));
    drop(tx);
}

/// A stream of what arrives on `rx`.
fn tokio_stream_like<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_client_reset_cancels_the_request_being_answered() {
    let seen = Arc::new(Seen::default());
    let (io, _done, _shutdown) = serve(&seen);
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://proxy.local/hang").body(()).unwrap();
    let (response, mut stream) = client.send_request(req, false).unwrap();
    // The handler is running (it holds the signal) before the reset.
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.send_reset(Reason::CANCEL);
    drop(response);
    within("handler dropped", seen.hang_dropped.notified()).await;
}

#[tokio::test]
async fn a_failing_response_body_resets_its_stream_after_its_data() {
    let seen = Arc::new(Seen::default());
    let (io, _done, _shutdown) = serve(&seen);
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://proxy.local/fail").body(()).unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    let mut body = within("head", response).await.unwrap().into_body();
    let data = within("data", body.data()).await.unwrap().unwrap();
    assert_eq!(&data[..], b"partial");
    let err = within("reset", poll_fn(|cx| body.poll_data(cx)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::INTERNAL_ERROR), "{err}");
}

#[tokio::test]
async fn graceful_shutdown_refuses_new_streams_and_finishes_open_ones() {
    let seen = Arc::new(Seen::default());
    let (io, done, shutdown) = serve(&seen);
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let wait = Request::get("http://proxy.local/wait").body(()).unwrap();
    let (waiting, _) = client.send_request(wait, true).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.send(()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A stream opened after the GOAWAY is not answered.
    let late = Request::get("http://proxy.local/none").body(()).unwrap();
    let refused = match client.send_request(late, true) {
        Err(_) => true,
        Ok((resp, _)) => within("late", resp).await.is_err(),
    };
    assert!(refused, "a stream opened after GOAWAY was answered");
    // The open one is, once its handler answers.
    seen.release.notify_one();
    let resp = within("open stream", waiting).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    assert_eq!(
        &within("body", body.data()).await.unwrap().unwrap()[..],
        b"released"
    );
    // Then the server's connection ends, cleanly, and so does the client's.
    within("server end", done).await.unwrap().unwrap();
    within("client end", conn).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_client_that_is_not_http2_ends_the_connection_with_an_error() {
    let seen = Arc::new(Seen::default());
    let (mut io, done, _shutdown) = serve(&seen);
    tokio::io::AsyncWriteExt::write_all(&mut io, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let ended = within("server end", done).await.unwrap();
    assert!(ended.is_err(), "{ended:?}");
}
