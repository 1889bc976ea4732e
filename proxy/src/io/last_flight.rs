//! [`LastFlight`]: the TLS server's last handshake flight — its session ticket — held
//! back to go out with the connection's first write instead of in a segment of its own.
//!
//! A TLS 1.3 server with client authentication can only seal a ticket once it has the
//! client's `Finished`, so the ticket is a flight of its own after the handshake: a
//! `writev`, a TCP segment and a wake-up of the client for 200 bytes it does not need
//! yet (it needs them for its *next* connection). On a connection that answers a request
//! at once, the response can carry it. Measured on the inbound (`vigil-bench --only
//! new-conn`, `benches/RESULTS.md` 43): sending no ticket at all would save ~12 µs of its
//! ~150 µs of CPU per new connection, ~3 µs of it the ticket's crypto; the ticket riding
//! with the response saves ~5 µs and one system call.
//!
//! The adapter sits between rustls' handshake driver (`tokio_rustls`' `Accept`) and the
//! socket:
//!
//! - **During the handshake** every write is gathered and sent when the handshake next
//!   reads: the driver always reads after writing a flight, *except* after the last one,
//!   which so stays here when the handshake completes. (A flight is still one `writev`;
//!   flushes are answered at once, the read that follows sends.) A handshake that fails
//!   leaves its last alert here: [`LastFlight::send_now`] sends it.
//! - **After** ([`LastFlight::established`]): the held flight goes out in front of the
//!   connection's first write, in the same `writev`, or before its shutdown, or at the
//!   latest [`HOLD_MAX`] after the handshake (sent by the first read after the deadline:
//!   the deadline wakes the reader). What can be held then is only what a TLS 1.3
//!   server writes after its `Finished` — tickets, an answer to a key update — which the
//!   client never waits for, so holding them cannot stall a connection.
//! - Then the adapter passes everything through.
//!
//! Flushes while holding do not send: hyper flushes on every turn of its dispatch loop,
//! also with nothing written, and would send the ticket alone. A read after the deadline
//! sends without waiting for the socket to be writable (a read below a `ReadGate` must
//! not wait for write readiness): if it cannot, the next write carries the flight.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// The longest the last flight waits for a write to carry it. Short: a client that
/// opens its next connection before the ticket arrives makes a full handshake again.
pub const HOLD_MAX: Duration = Duration::from_millis(2);

/// Most bytes gathered during a handshake before they are sent whatever the reads say
/// (a flight with a long chain is a few KiB): a bound, not a tuning.
const CAP: usize = 64 * 1024;

/// A server-side stream under rustls' handshake whose last flight waits for the
/// connection's first write (see the module's doc).
#[derive(Debug)]
pub struct LastFlight<T> {
    inner: T,
    /// `None` once nothing is held and the handshake is over: everything passes through.
    held: Option<Box<Held>>,
}

#[derive(Debug)]
struct Held {
    /// Written by rustls, not yet to `inner`, from `sent` on.
    buf: Vec<u8>,
    sent: usize,
    /// The handshake is still under way.
    handshaking: bool,
    /// When a read sends the held flight (after the handshake; `None` once a write waits
    /// to carry it).
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> LastFlight<T> {
    /// Wraps `inner` for a server handshake.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            held: Some(Box::new(Held {
                buf: Vec::new(),
                sent: 0,
                handshaking: true,
                deadline: None,
            })),
        }
    }

    /// The handshake completed: what it left here is held for the first write (at most
    /// [`HOLD_MAX`]). Needs a Tokio runtime with time enabled when something is held.
    pub fn established(&mut self) {
        match &mut self.held {
            Some(h) if h.sent < h.buf.len() => {
                h.handshaking = false;
                h.deadline = Some(Box::pin(tokio::time::sleep(HOLD_MAX)));
            }
            _ => self.held = None,
        }
    }

    /// Bytes held, not yet sent.
    pub fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.buf.len() - h.sent)
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> LastFlight<T> {
    /// Sends what is held now if the socket takes it without waiting — a failed
    /// handshake's last alert, before the connection is dropped — and reports whether
    /// nothing is left.
    pub fn send_now(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.poll_send_held(&mut cx), Poll::Ready(Ok(())))
    }

    /// Writes the held bytes out; `Ready(Ok)` once none are left (and the adapter passes
    /// through, unless the handshake is still under way).
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(h) = &mut self.held else {
            return Poll::Ready(Ok(()));
        };
        while h.sent < h.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &h.buf[h.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            h.sent += n;
        }
        if h.handshaking {
            h.buf.clear();
            h.sent = 0;
        } else {
            self.held = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for LastFlight<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // The common case (nothing held) stays small enough to inline into rustls' reads.
        if this.held.is_some() {
            ready!(this.before_read(cx))?;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> LastFlight<T> {
    /// What a read does first while something is held.
    #[inline(never)]
    fn before_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(h) = &mut self.held else {
            return Poll::Ready(Ok(()));
        };
        if h.handshaking {
            // The handshake reads after a flight: send it first (waiting for the socket
            // if need be; nothing sits above during the handshake).
            return self.poll_send_held(cx);
        }
        if let Some(deadline) = &mut h.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            // No write came in time. Not waiting for write readiness here: if the
            // socket cannot take it now, the next write carries it.
            h.deadline = None;
            let _ = self.send_now();
        }
        Poll::Ready(Ok(()))
    }

    /// A write while something is held (see the module's doc).
    #[inline(never)]
    fn write_held(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(h) = &mut self.held else {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        };
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if h.handshaking {
            if h.buf.len() + len <= CAP {
                h.buf.reserve(len);
                for b in bufs {
                    h.buf.extend_from_slice(b);
                }
                return Poll::Ready(Ok(len));
            }
            ready!(self.poll_send_held(cx))?;
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        // The first write after the handshake: the held flight in front, one `writev`.
        // This write now carries it: a read after the deadline no longer sends it.
        h.deadline = None;
        let mut slices = [IoSlice::new(&[]); 16];
        slices[0] = IoSlice::new(&h.buf[h.sent..]);
        let mut n_slices = 1;
        for b in bufs.iter().take(slices.len() - 1) {
            slices[n_slices] = *b;
            n_slices += 1;
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..n_slices]))?;
        let left = h.buf.len() - h.sent;
        if n == 0 && (left > 0 || len > 0) {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        if n < left {
            h.sent += n;
            // Not one byte of the caller's yet: wait for the socket, then go on (the
            // caller retries this write).
            ready!(self.poll_send_held(cx))?;
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        self.held = None;
        if n == left && len > 0 {
            // The flight went out whole, nothing of the caller's: write theirs now.
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        Poll::Ready(Ok(n - left))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LastFlight<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.held {
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            Some(_) => this.write_held(cx, bufs),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.held {
            // Sent by the handshake's next read, or by the first write after it.
            Some(_) => Poll::Ready(Ok(())),
            None => Pin::new(&mut self.inner).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_held(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
