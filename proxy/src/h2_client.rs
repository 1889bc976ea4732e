//! The proxy's HTTP/2 client, on the `h2` crate: the inbound's connection to an HTTP/2
//! app and the outbound's HTTP/2 mesh connections.
//!
//! hyper's HTTP/2 client hands each request to its connection's task through a channel;
//! that task opens the stream and spawns a task per request that awaits the response
//! and hands it back through a oneshot — two tasks and two hand-offs per request
//! (counted: ~6 k instructions per request on each side that sends HTTP/2). Here the
//! request's own task opens the stream and awaits the response; the connection task
//! only drives the connection, as in ztunnel. A request body that does not end with the
//! headers is streamed by a task of its own, as in hyper ([`pipe`]).
//!
//! What hyper did besides, done here too: connection-specific headers are removed before
//! sending (`h2` refuses them), server push is refused, the response body hands received
//! bytes' flow-control capacity back as it is read, and a reset with `NO_ERROR` ends it
//! (an early response, RFC 9113 §8.1) instead of failing it.

use std::{
    future::poll_fn,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Request, Response, header};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http_util::{BoxError, strip_hop_by_hop};

/// The settings a connection is made with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Streams this side may open before the server's SETTINGS say how many it takes.
    pub(crate) max_send_streams: usize,
    /// The receive window of each stream.
    pub(crate) stream_window: u32,
    /// The receive window of the connection as a whole.
    pub(crate) connection_window: u32,
}

/// hyper's defaults for what [`Settings`] does not set.
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Why a request got no response.
#[derive(thiserror::Error)]
pub(crate) enum SendError<B> {
    /// The connection could not take a new stream: the request was not sent, and comes
    /// back whole.
    #[error("the HTTP/2 connection takes no new stream: {error}")]
    Unsent {
        /// `h2`'s error.
        error: h2::Error,
        /// The request, untouched.
        request: Box<Request<B>>,
    },
    /// The stream failed (refused, reset, the connection lost) after it was opened.
    #[error(transparent)]
    Stream(#[from] h2::Error),
}

impl<B> std::fmt::Debug for SendError<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unsent { error, .. } => f.debug_tuple("Unsent").field(error).finish(),
            SendError::Stream(error) => f.debug_tuple("Stream").field(error).finish(),
        }
    }
}

impl<B> SendError<B> {
    /// The `h2` error, the request dropped.
    pub(crate) fn into_error(self) -> h2::Error {
        match self {
            SendError::Unsent { error, .. } | SendError::Stream(error) => error,
        }
    }
}

/// The sending half of a connection: cheap to clone, one per request.
#[derive(Debug, Clone)]
pub(crate) struct SendRequest {
    inner: h2::client::SendRequest<Bytes>,
    /// Set when the connection's task ended, or the connection refused a stream, went
    /// away or was lost.
    closed: Arc<AtomicBool>,
}

/// Makes an HTTP/2 connection over `io`: the sender, and the connection's future, which
/// must be polled (spawned) for any request to make progress.
pub(crate) async fn handshake<T>(
    io: T,
    settings: Settings,
) -> Result<(SendRequest, impl Future<Output = Result<(), h2::Error>>), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (inner, conn) = h2::client::Builder::new()
        .initial_max_send_streams(settings.max_send_streams)
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let on_end = Closed(closed.clone());
    let conn = async move {
        // Set however the task ends: finished, failed or dropped with the runtime.
        let _on_end = on_end;
        conn.await
    };
    Ok((SendRequest { inner, closed }, conn))
}

/// Marks its connection closed when dropped.
struct Closed(Arc<AtomicBool>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl SendRequest {
    /// Whether the connection ended, went away, was lost or refused a stream: take
    /// another one.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until the connection can open a stream (its concurrency limit).
    pub(crate) async fn ready(&mut self) -> Result<(), h2::Error> {
        let ready = poll_fn(|cx| self.inner.poll_ready(cx)).await;
        if ready.is_err() {
            self.closed.store(true, Ordering::Release);
        }
        ready
    }

    /// Sends `req` (absolute URI) and waits for the response's head.
    pub(crate) async fn send<B>(
        &mut self,
        req: Request<B>,
    ) -> Result<Response<RecvBody>, SendError<B>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + Send,
    {
        if let Err(error) = self.ready().await {
            return Err(SendError::Unsent {
                error,
                request: Box::new(req),
            });
        }
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let eos = body.is_end_stream();
        let (response, stream) = self
            .inner
            .send_request(Request::from_parts(parts, ()), eos)
            .inspect_err(|_| self.closed.store(true, Ordering::Release))?;
        if !eos {
            tokio::spawn(pipe(body, stream));
        }
        let response = response.await.inspect_err(|e| {
            // A connection going away or lost takes no more requests.
            if e.is_go_away() || e.is_io() {
                self.closed.store(true, Ordering::Release);
            }
        })?;
        let length = content_length(response.headers());
        Ok(response.map(|recv| RecvBody {
            recv,
            data_done: false,
            length,
        }))
    }
}

/// Streams `body` into `tx`, as hyper's client does: the next frame is read before any
/// send capacity is claimed (a claim held while the body has nothing to send could
/// starve the connection's other streams), then one byte of capacity is asked for and
/// the chunk sent whole once there is some (`h2` buffers it and asks the peer for the
/// rest). Ends when the body does, the peer resets the stream, or either fails — a body
/// that fails resets the stream.
async fn pipe<B>(body: B, mut tx: SendStream<Bytes>)
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
                tracing::debug!(error = %e, "request body failed; resetting the stream");
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

/// A response body from the `h2` stream: data, then trailers if any.
#[derive(Debug)]
pub struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    /// What is left of the `Content-Length` the response declared (`h2` holds the
    /// stream to it), for size hints.
    length: Option<u64>,
}

/// `Content-Length`, when there is exactly one and it is a number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
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

#[cfg(test)]
mod tests;
