//! The proxy's HTTP/2 client, on the `h2` crate: the inbound's connection to an HTTP/2
//! app and the outbound's HTTP/2 mesh connections.
//!
//! hyper's HTTP/2 client hands each request to its connection's task through a channel;
//! that task opens the stream and spawns a task per request that awaits the response
//! and hands it back through a oneshot — two tasks and two hand-offs per request
//! (counted: ~6 k instructions per request on each side that sends HTTP/2). Here the
//! request's own task opens the stream and awaits the response; the connection task
//! only drives the connection, as in ztunnel. A request body that does not end with the
//! headers is streamed by a task of its own, as in hyper ([`crate::h2_body::pipe`]).
//!
//! The connection writes through [`Coalesce`], as the server's does: while several
//! requests await their responses, a turn's frames go out in one write.
//!
//! What hyper did besides, done here too: connection-specific headers are removed before
//! sending (`h2` refuses them), server push is refused, the response body hands received
//! bytes' flow-control capacity back as it is read, and a reset with `NO_ERROR` ends it
//! (an early response, RFC 9113 §8.1) instead of failing it.

use std::{
    future::poll_fn,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) use crate::h2_body::RecvBody;
use crate::{
    h2_body::pipe,
    http_util::{BoxError, strip_hop_by_hop},
    io::{Coalesce, Streams},
};

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

/// The response header lists taken: as large as the HTTP/1.1 clients' heads
/// ([`crate::http_util::H1_CLIENT_BUF`]) as HTTP/2 (the outbound's mesh connections carry
/// HTTP/1.1 apps' answers).
#[allow(clippy::cast_possible_truncation)] // 68 KiB
const MAX_HEADER_LIST: u32 =
    (crate::http_util::H1_CLIENT_BUF + crate::http_util::H2_LIST_SLACK) as u32;
/// hyper's defaults for what [`Settings`] does not set.
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
    /// Requests awaiting their response's head: while there are several, the
    /// connection's writes are gathered ([`Coalesce`]).
    streams: Streams,
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
    let streams = Streams::default();
    let (inner, conn) = h2::client::Builder::new()
        .initial_max_send_streams(settings.max_send_streams)
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_push(false)
        .handshake::<_, Bytes>(Coalesce::new(io, streams.clone()))
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let on_end = Closed(closed.clone());
    let turns = streams.clone();
    let conn = async move {
        // Set however the task ends: finished, failed or dropped with the runtime.
        let _on_end = on_end;
        let mut conn = std::pin::pin!(conn);
        poll_fn(|cx| {
            turns.next_turn();
            conn.as_mut().poll(cx)
        })
        .await
    };
    Ok((
        SendRequest {
            inner,
            closed,
            streams,
        },
        conn,
    ))
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

    /// The requests awaiting their response's head on this connection.
    pub(crate) fn in_flight(&self) -> usize {
        self.streams.in_flight()
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
        let _in_flight = self.streams.start();
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
        let (parts, recv) = response.into_parts();
        let body = RecvBody::new(recv, &parts.headers);
        Ok(Response::from_parts(parts, body))
    }
}

#[cfg(test)]
mod tests;
