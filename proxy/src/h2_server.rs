//! The proxy's HTTP/2 server, on the `h2` crate: the outbound's HTTP/2 connections from
//! its app and the inbound's mesh (and plaintext) HTTP/2 connections.
//!
//! The connection's task accepts streams; each stream runs in a task of its own, which
//! calls the service, sends the response's head and streams its body — the shape of
//! hyper's HTTP/2 server, without its layers (hyper's I/O traits over tokio's, a body
//! type of its own per request, its executor's boxing; counted, ~0.7 k instructions per
//! request on each side that serves HTTP/2, benches/RESULTS.md change 33). A task per
//! stream, not the streams polled in the connection's own task: that was measured
//! twice and counted worse (each stream's wake-up then also polls the connection).
//!
//! What hyper did besides, done here too: a request whose client resets its stream
//! before the answer is dropped (the handler's future with it, so whatever it was
//! waiting for is cancelled); connection-specific headers are removed from responses
//! (`h2` refuses them); a response gets a `Date` if it has none, and a
//! `Content-Length` when its body's length is known; a response that cannot be sent
//! resets its stream; a graceful shutdown sends GOAWAY and lets open streams finish.
//! The connection writes through [`Coalesce`]: while several streams are in flight,
//! the frames of a turn of the runtime go out in one write (benches/RESULTS.md change 36).
//! What hyper did that this does not: HTTP/2 `CONNECT` tunnels (the inbound refuses
//! `CONNECT`, so no tunnel could cross the mesh either way) and keep-alive pings (never
//! configured).

use std::{
    convert::Infallible,
    future::poll_fn,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use h2::{Reason, server::SendResponse};
use http::{HeaderValue, Request, Response, header};
use hyper::{body::Body as _, service::Service};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    h2_body::{RecvBody, pipe},
    http_util::{Body, strip_hop_by_hop},
    io::{Coalesce, InFlight, Streams},
    req_body::ReqBody,
};

/// The settings a connection is served with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Streams the client may have open at once.
    pub(crate) max_concurrent_streams: u32,
    /// The receive window of each stream.
    pub(crate) stream_window: u32,
    /// The receive window of the connection as a whole.
    pub(crate) connection_window: u32,
    /// The largest header list a request may carry (`SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub(crate) max_header_list: u32,
}

/// hyper's server defaults for what [`Settings`] does not set, and the reset bounds
/// against rapid-reset floods (streams reset by the client before they were accepted,
/// and streams this side reset for the client's errors).
const MAX_FRAME: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_PENDING_ACCEPT_RESETS: usize = 32;
const MAX_LOCAL_ERROR_RESETS: usize = 256;

/// A connection being served: a future that ends when the connection does.
pub(crate) struct Connection<I, S> {
    state: State<I>,
    service: S,
    /// A graceful shutdown was asked for during the handshake.
    graceful: bool,
    /// The streams whose answers are still being sent: while there are several, the
    /// connection's writes are gathered ([`Coalesce`]).
    streams: Streams,
}

enum State<I> {
    Handshaking(h2::server::Handshake<Coalesce<I>, Bytes>),
    Serving(h2::server::Connection<Coalesce<I>, Bytes>),
}

/// Serves HTTP/2 on `io` (the client's preface not yet read) with `service`.
pub(crate) fn serve_connection<I, S>(io: I, settings: Settings, service: S) -> Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let streams = Streams::default();
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(settings.max_concurrent_streams)
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_header_list_size(settings.max_header_list)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .handshake(Coalesce::new(io, streams.clone()));
    Connection {
        state: State::Handshaking(handshake),
        service,
        graceful: false,
        streams,
    }
}

impl<I, S> Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends GOAWAY (now, or once the handshake is done): no new streams; the
    /// connection ends when its open streams have.
    pub(crate) fn graceful_shutdown(&mut self) {
        match &mut self.state {
            State::Handshaking(_) => self.graceful = true,
            State::Serving(conn) => conn.graceful_shutdown(),
        }
    }
}

impl<I, S> Future for Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<ReqBody>, Response = Response<Body>, Error = Infallible> + Unpin,
    S::Future: Send + 'static,
{
    type Output = Result<(), h2::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.streams.next_turn();
        loop {
            match &mut this.state {
                State::Handshaking(handshake) => {
                    let mut conn = ready!(Pin::new(handshake).poll(cx))?;
                    if this.graceful {
                        conn.graceful_shutdown();
                    }
                    this.state = State::Serving(conn);
                }
                State::Serving(conn) => match ready!(conn.poll_accept(cx)) {
                    Some(Ok((req, respond))) => {
                        let (parts, recv) = req.into_parts();
                        let body = ReqBody::Http2(RecvBody::new(recv, &parts.headers));
                        let answer = this.service.call(Request::from_parts(parts, body));
                        // Boxed: the task then holds a pointer, not the handler's state,
                        // which is thousands of bytes and would be copied whole into it.
                        let in_flight = this.streams.start();
                        tokio::spawn(respond_to(Box::pin(answer), respond, in_flight));
                    }
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    None => return Poll::Ready(Ok(())),
                },
            }
        }
    }
}

/// Awaits the service's answer to a stream's request (dropping it if the client resets
/// the stream first) and sends it.
async fn respond_to<F>(mut answer: Pin<Box<F>>, mut tx: SendResponse<Bytes>, _in_flight: InFlight)
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    let answered = poll_fn(|cx| {
        if let Poll::Ready(Ok(resp)) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        // No answer yet: a reset (or the connection's end) cancels the request.
        tx.poll_reset(cx).map(|_| None)
    })
    .await;
    drop(answer);
    let Some(resp) = answered else {
        tracing::debug!("the client reset the stream before its answer");
        return;
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let header::Entry::Vacant(e) = parts.headers.entry(header::DATE)
        && let Some(now) = crate::date::now()
    {
        e.insert(now);
    }
    let eos = body.is_end_stream();
    if !eos
        && let Some(length) = body.size_hint().exact()
        && let header::Entry::Vacant(e) = parts.headers.entry(header::CONTENT_LENGTH)
    {
        e.insert(HeaderValue::from(length));
    }
    match tx.send_response(Response::from_parts(parts, ()), eos) {
        Ok(stream) if !eos => pipe(body, stream).await,
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(error = %e, "sending the response failed");
            tx.send_reset(Reason::INTERNAL_ERROR);
        }
    }
}

#[cfg(test)]
mod tests;
