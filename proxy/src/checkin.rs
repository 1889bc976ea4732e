//! The way a pooled HTTP/1.1 connection goes back to its pool: the response body
//! ([`Checkin`]) that, once the response has ended, hands the connection back
//! ([`Return`]). The inbound's connections to the app and the outbound's HTTP/1.1 mesh
//! connections are both kept this way.
//!
//! An HTTP/1.1 connection carries one response at a time: it can take the next request
//! only once this one's body has been read to its end. A body abandoned midway, or one
//! that failed, does not give its connection back (hyper closes it).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// What gives a connection back to its pool.
pub(crate) trait Return {
    /// Hands the connection back; called at most once, when its response has ended.
    fn check_in(self);
}

/// A response body that gives its connection back (`R`) once it has ended.
#[derive(Debug)]
pub(crate) struct Checkin<R: Return> {
    body: Incoming,
    back: Option<R>,
}

impl<R: Return> Checkin<R> {
    /// `body`, whose connection goes back through `back` at its end (never, for `None`).
    pub(crate) fn new(body: Incoming, back: Option<R>) -> Self {
        let mut c = Self { body, back };
        // An empty body may never be polled: done already.
        if c.body.is_end_stream() {
            c.check_in();
        }
        c
    }

    fn check_in(&mut self) {
        if let Some(b) = self.back.take() {
            b.check_in();
        }
    }
}

impl<R: Return> Drop for Checkin<R> {
    fn drop(&mut self) {
        // Read to its end by someone who did not ask for more after the last byte.
        if self.body.is_end_stream() {
            self.check_in();
        }
    }
}

impl<R: Return + Unpin> Body for Checkin<R> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            // A body of known length ends with its last byte: its reader may not poll again.
            Poll::Ready(None) => self.check_in(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.check_in(),
            // hyper does not reuse a connection whose response failed midway.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
