//! Bodies over `h2` streams, for the HTTP/2 client ([`crate::h2_client`]) and server
//! ([`crate::h2_server`]) alike: [`RecvBody`], a body received on a stream, and [`pipe`],
//! which sends one.

use std::{
    future::poll_fn,
    pin::{Pin, pin},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, header};
use hyper::body::{Body, Frame, SizeHint};

use crate::http_util::BoxError;

/// Streams `body` (a request's or a response's) into `tx`, as hyper does (its
/// `PipeToSendStream`): the next frame is read before any send capacity is claimed (a
/// claim held while the body has nothing to send could starve the connection's other
/// streams), then one byte of capacity is asked for and
/// the chunk sent whole once there is some (`h2` buffers it and asks the peer for the
/// rest). Ends when the body does, the peer resets the stream, or either fails — a body
/// that fails resets the stream.
pub(crate) async fn pipe<B>(body: B, mut tx: SendStream<Bytes>)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError> + Send,
{
    let mut body = pin!(body);
    loop {
        let next = poll_fn(|cx| match tx.poll_reset(cx) {
            // The peer reset the stream (or it is gone): nothing more to send.
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => body.as_mut().poll_frame(cx).map(Some),
        })
        .await;
        let frame = match next {
            None => return,
            Some(None) => {
                let _ = tx.send_data(Bytes::new(), true);
                return;
            }
            Some(Some(Err(e))) => {
                let e: BoxError = e.into();
                tracing::debug!(error = %e, "body failed; resetting the stream");
                tx.send_reset(Reason::INTERNAL_ERROR);
                return;
            }
            Some(Some(Ok(frame))) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    tx.reserve_capacity(0);
                    let _ = tx.send_trailers(trailers);
                    return;
                }
                continue; // a frame kind this does not know
            }
        };
        let eos = body.is_end_stream();
        if !frame.is_empty() {
            tx.reserve_capacity(1);
            if !has_capacity(&mut tx).await {
                return;
            }
        }
        if tx.send_data(frame, eos).is_err() || eos {
            return;
        }
    }
}

/// Waits for send capacity on `tx`; `false` if the stream was reset or closed meanwhile.
async fn has_capacity(tx: &mut SendStream<Bytes>) -> bool {
    poll_fn(|cx| {
        loop {
            if tx.capacity() > 0 {
                return Poll::Ready(true);
            }
            if tx.poll_reset(cx).is_ready() {
                return Poll::Ready(false);
            }
            match ready!(tx.poll_capacity(cx)) {
                Some(Ok(0)) => {}
                Some(Ok(_)) => return Poll::Ready(true),
                Some(Err(_)) | None => return Poll::Ready(false),
            }
        }
    })
    .await
}

/// A body received on an `h2` stream (a response's, or a request's): data, then
/// trailers if any.
#[derive(Debug)]
pub struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    /// What is left of the `Content-Length` the message declared (`h2` holds the
    /// stream to it), for size hints.
    length: Option<u64>,
}

impl RecvBody {
    /// The body of a message with these headers. A message that ended with its headers
    /// has a known length of zero, declared or not (as hyper's bodies say too: an
    /// HTTP/1.1 hop then sends `Content-Length: 0` where a request had one).
    pub(crate) fn new(recv: RecvStream, headers: &HeaderMap) -> Self {
        let length = match content_length(headers) {
            None if recv.is_end_stream() => Some(0),
            length => length,
        };
        RecvBody {
            recv,
            data_done: false,
            length,
        }
    }
}

/// `Content-Length`, when there is exactly one and it is a number.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    v.to_str().ok()?.parse().ok()
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut this.length {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(early_end(e)),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) => Poll::Ready(early_end(e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// A reset with `NO_ERROR` ends the body (the peer had answered in full); anything else
/// fails it.
fn early_end(e: h2::Error) -> Option<Result<Frame<Bytes>, h2::Error>> {
    (e.reason() != Some(Reason::NO_ERROR)).then_some(Err(e))
}
