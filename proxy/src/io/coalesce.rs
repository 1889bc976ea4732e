//! [`Coalesce`]: writes gathered in a buffer and sent together, one `write` for what a
//! connection's task produced in a turn of the runtime.
//!
//! `h2` flushes its frame buffer whenever it holds a DATA frame it chained rather than
//! copied (payloads of 256 bytes and more), so an HTTP/2 connection answering many
//! streams at once made a system call (and, under TLS, a record) per response. Below
//! `h2`, this adapter copies each write into its buffer and puts the flushes off to the
//! connection task's next turn: the first flush after new data wakes the task and
//! reports success, so do the others of the same turn, and the first of the next turn —
//! after the runtime has run the other tasks that were ready, whose frames join the
//! buffer — writes everything out. The connection's driver marks its turns
//! ([`Streams::next_turn`]). Only while more than one stream is in flight on the
//! connection ([`InFlight`]): with one, nothing could join, and putting the flush off
//! would cost a turn of the task for nothing.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes gathered before they are written whatever the flushes say: four TLS
/// records' worth.
const CAP: usize = 64 * 1024;

/// The buffer's capacity kept once written out; a larger one (a burst's) is freed, so
/// that an idle connection does not hold it.
const KEEP: usize = 16 * 1024;

/// A stream whose writes are gathered and sent together (see the module's doc). Reads go
/// straight to the inner stream.
#[derive(Debug)]
pub struct Coalesce<T> {
    inner: T,
    /// Bytes written to this adapter and not yet to `inner`, from `sent` on.
    buf: Vec<u8>,
    sent: usize,
    /// A flush was put off in this turn of the connection's task (which has been woken
    /// to do it in its next).
    deferred: Option<u32>,
    /// The connection's streams in flight.
    streams: Streams,
}

/// A connection's streams in flight (counted by [`InFlight`] guards) and its task's
/// turns (marked by its driver), read by the connection's [`Coalesce`].
#[derive(Clone, Debug, Default)]
pub struct Streams(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    in_flight: AtomicUsize,
    turn: AtomicU32,
}

impl Streams {
    /// One more stream in flight, until the guard drops.
    pub fn start(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.0.clone())
    }

    /// The connection's task begins a turn (a poll of the connection).
    pub fn next_turn(&self) {
        self.0.turn.fetch_add(1, Ordering::Relaxed);
    }

    /// The streams in flight now.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Relaxed)
    }

    fn turn(&self) -> u32 {
        self.0.turn.load(Ordering::Relaxed)
    }

    fn busy(&self) -> bool {
        self.in_flight() > 1
    }
}

/// A stream in flight (see [`Streams`]).
#[derive(Debug)]
pub struct InFlight(Arc<Counts>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> Coalesce<T> {
    /// Gathers the writes to `inner` while more than one of `streams` is in flight.
    pub fn new(inner: T, streams: Streams) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            sent: 0,
            deferred: None,
            streams,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes out what is gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.buf.capacity() > KEEP {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: writes out what is gathered if they would not fit.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.buf.len() + len > CAP {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_room(cx, data.len()))?;
        if data.len() > CAP {
            // Larger than the buffer: as it comes (the buffer is empty now).
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        ready!(this.poll_room(cx, len))?;
        if len > CAP {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.sent < this.buf.len() && this.streams.busy() {
            let turn = this.streams.turn();
            match this.deferred {
                // Put off to the task's next turn: what the tasks ready before it write
                // meanwhile goes out with this.
                None => {
                    this.deferred = Some(turn);
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(()));
                }
                Some(t) if t == turn => return Poll::Ready(Ok(())),
                Some(_) => {}
            }
        }
        ready!(this.poll_drain(cx))?;
        this.deferred = None;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
