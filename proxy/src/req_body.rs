//! [`ReqBody`]: the body of a request the proxy received, from either of its HTTP
//! servers — hyper's HTTP/1 server, or the HTTP/2 server on `h2` ([`crate::h2_server`]).
//! The handlers and both clients take this one type.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::h2_body::RecvBody;

/// A received request's body.
#[derive(Debug)]
pub enum ReqBody {
    /// From an HTTP/1 connection.
    Http1(Incoming),
    /// From an HTTP/2 stream.
    Http2(RecvBody),
}

/// Why reading a request's body failed.
#[derive(Debug, thiserror::Error)]
pub enum ReqBodyError {
    /// The HTTP/1 connection failed, or the body broke its framing.
    #[error(transparent)]
    Http1(#[from] hyper::Error),
    /// The stream was reset or the HTTP/2 connection failed.
    #[error(transparent)]
    Http2(#[from] h2::Error),
}

impl From<Incoming> for ReqBody {
    fn from(body: Incoming) -> Self {
        ReqBody::Http1(body)
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = ReqBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReqBodyError>>> {
        // Both are `Unpin`.
        match self.get_mut() {
            ReqBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(ReqBodyError::from),
            ReqBody::Http2(b) => Pin::new(b).poll_frame(cx).map_err(ReqBodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Http1(b) => b.is_end_stream(),
            ReqBody::Http2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Http1(b) => b.size_hint(),
            ReqBody::Http2(b) => b.size_hint(),
        }
    }
}
