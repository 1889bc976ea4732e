//! [`Body`]: the body of every response the proxy sends, whichever of its servers sends
//! it — an enum of the bodies it forwards, so that a response's body is not boxed per
//! request.
//!
//! A response crossing a sidecar has one of a few bodies: the app's or the far proxy's
//! answer as an HTTP/1.1 client received it (its connection going back to its pool at
//! the end: `Checkin`, `checkin.rs`), as an HTTP/2 client received it (`RecvBody`), or
//! one the proxy made (an error, a HEAD's empty body). A boxed body (`UnsyncBoxBody`)
//! cost one allocation per response on each sidecar (benches/RESULTS.md change 49); the
//! enum costs none. Anything else — rare paths, tests — is still boxed ([`Body::boxed`]).
//! Failures of any kind surface as [`BoxError`], as from the boxed body before.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::{checkin::Checkin, h2_body::RecvBody, http_util::BoxError};

/// A response's body (see the module docs).
#[derive(Debug)]
pub struct Body(Kind);

#[derive(Debug)]
enum Kind {
    /// Made by the proxy: its data, until sent (`None` also for an empty body).
    Full(Option<Bytes>),
    /// The app's answer to the inbound, over HTTP/1.1.
    App(Checkin<crate::inbound::AppBack>),
    /// The far proxy's answer to the outbound, over an HTTP/1.1 mesh connection.
    Mesh(Checkin<crate::outbound::MeshBack>),
    /// An answer over HTTP/2 (the app's or the far proxy's).
    Http2(RecvBody),
    /// Anything else.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// A body of these bytes (none: an empty body).
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Body(Kind::Full((!data.is_empty()).then_some(data)))
    }

    /// Any other body, boxed.
    pub fn boxed<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body(Kind::Boxed(body.map_err(Into::into).boxed_unsync()))
    }

    pub(crate) fn app(body: Checkin<crate::inbound::AppBack>) -> Self {
        Body(Kind::App(body))
    }

    pub(crate) fn mesh(body: Checkin<crate::outbound::MeshBack>) -> Self {
        Body(Kind::Mesh(body))
    }

    pub(crate) fn http2(body: RecvBody) -> Self {
        Body(Kind::Http2(body))
    }
}

impl From<UnsyncBoxBody<Bytes, BoxError>> for Body {
    fn from(body: UnsyncBoxBody<Bytes, BoxError>) -> Self {
        Body(Kind::Boxed(body))
    }
}

/// A polled frame with its error as a [`BoxError`].
fn box_err<E: Into<BoxError>>(
    polled: Poll<Option<Result<Frame<Bytes>, E>>>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    polled.map(|frame| frame.map(|f| f.map_err(Into::into)))
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every kind is `Unpin`.
        match &mut self.get_mut().0 {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::App(b) => box_err(Pin::new(b).poll_frame(cx)),
            Kind::Mesh(b) => box_err(Pin::new(b).poll_frame(cx)),
            Kind::Http2(b) => box_err(Pin::new(b).poll_frame(cx)),
            Kind::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(data) => data.is_none(),
            Kind::App(b) => b.is_end_stream(),
            Kind::Mesh(b) => b.is_end_stream(),
            Kind::Http2(b) => b.is_end_stream(),
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::App(b) => b.size_hint(),
            Kind::Mesh(b) => b.size_hint(),
            Kind::Http2(b) => b.size_hint(),
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests;
