use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Body as _, Frame};

use super::Body;
use crate::http_util::BoxError;

#[tokio::test]
async fn a_full_body_sends_its_bytes_once_with_an_exact_length() {
    let mut body = Body::full("hello");
    assert!(!body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(5));
    let frame = body.frame().await.expect("a frame").expect("no error");
    assert_eq!(
        frame.into_data().expect("data"),
        Bytes::from_static(b"hello")
    );
    assert!(body.is_end_stream(), "nothing is left once the data is out");
    assert_eq!(body.size_hint().exact(), Some(0));
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn an_empty_full_body_has_ended_before_it_is_read() {
    // A server sends such a response's headers with END_STREAM (no empty DATA frame)
    // and `Content-Length: 0`.
    for mut body in [
        Body::full(""),
        Body::full(Bytes::new()),
        Body::full(Vec::new()),
    ] {
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
    }
}

#[tokio::test]
async fn a_boxed_body_keeps_its_frames_trailers_and_failure() {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"a"))),
        Ok(Frame::trailers(trailers.clone())),
    ];
    let mut body = Body::boxed(StreamBody::new(futures_util::stream::iter(frames)));
    assert!(!body.is_end_stream());
    assert_eq!(
        body.size_hint().exact(),
        None,
        "a stream's length is not known"
    );
    let collected = (&mut body).collect().await.expect("no error");
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"a"));

    let failing: Vec<Result<Frame<Bytes>, BoxError>> = vec![Err("the app went away".into())];
    let body: Body = StreamBody::new(futures_util::stream::iter(failing))
        .boxed_unsync()
        .into();
    let err = body.collect().await.expect_err("the failure surfaces");
    assert_eq!(err.to_string(), "the app went away");
}
