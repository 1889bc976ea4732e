//! Copying an opaque TCP connection both ways without per-connection buffers.
//!
//! `tokio::io::copy_bidirectional` gives every connection two 8 KiB buffers for its whole
//! life, idle or not: at 10,000 idle connections that is 160 MB of a sidecar's memory.
//! Here each read goes into one 64 KiB buffer per *thread* (borrowed only for the
//! duration of a synchronous `poll_read` + `poll_write`, never across an await) and is
//! written straight to the other side. Only bytes the writer cannot take yet are copied
//! into a per-connection buffer, which is freed as soon as they are written. An idle
//! connection holds no copy buffer at all, and bulk transfers move 64 KiB per read
//! (fewer reads, writes and TLS records than 8 KiB).
//!
//! Semantics follow `copy_bidirectional`: EOF on one side shuts down the write half of
//! the other (after flushing); the copy ends when both directions have; the first error
//! ends it. Writes are flushed whenever the reader has nothing more for now.

use std::{
    cell::RefCell,
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of each thread's read buffer (and so the largest single read).
pub const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// One direction's state.
#[derive(Debug, Default)]
struct Direction {
    /// Bytes read but not yet written (only while the writer pushes back).
    pending: Vec<u8>,
    /// How much of `pending` is written.
    pos: usize,
    /// The reader reached EOF.
    eof: bool,
    /// Something was written since the last flush.
    unflushed: bool,
    /// Bytes written.
    total: u64,
}

/// What one read did.
enum Read {
    /// Nothing to read now.
    Pending,
    /// EOF.
    Eof,
    /// Read and (at least partly) written.
    Moved,
}

impl Direction {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            // Bytes the writer refused earlier go first.
            while self.pos < self.pending.len() {
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, &self.pending[self.pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.total += n as u64;
                self.unflushed = true;
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new(); // freed: an idle connection holds nothing
                self.pos = 0;
            }
            if self.eof {
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                return Poll::Ready(Ok(self.total));
            }
            match self.read_and_write(cx, reader, writer)? {
                Read::Moved => {}
                Read::Eof => self.eof = true,
                Read::Pending => {
                    if self.unflushed {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads into the thread's buffer and writes what the writer takes; keeps the rest.
    fn read_and_write<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> io::Result<Read>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.read_into(cx, reader, writer, &mut scratch),
            // Only reachable if a stream's poll re-entered a copy on this thread; stay
            // correct with a buffer of its own.
            Err(_) => self.read_into(cx, reader, writer, &mut vec![0; SCRATCH_SIZE]),
        })
    }

    fn read_into<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        scratch: &mut [u8],
    ) -> io::Result<Read>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let mut rb = ReadBuf::new(scratch);
        match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
            Poll::Pending => return Ok(Read::Pending),
            Poll::Ready(r) => r?,
        }
        let data = rb.filled();
        if data.is_empty() {
            return Ok(Read::Eof);
        }
        let mut off = 0;
        while off < data.len() {
            match Pin::new(&mut *writer).poll_write(cx, &data[off..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => off += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if off > 0 {
            self.unflushed = true;
        }
        self.total += off as u64;
        if off < data.len() {
            self.pending = data[off..].to_vec();
            self.pos = 0;
        }
        Ok(Read::Moved)
    }
}

/// Copies `a` to `b` and `b` to `a` until both reach EOF (or an error); the bytes copied
/// each way, `(a to b, b to a)`.
pub async fn bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut ab, mut ba) = (Direction::default(), Direction::default());
    let (mut ab_done, mut ba_done) = (None, None);
    poll_fn(|cx| {
        if ab_done.is_none()
            && let Poll::Ready(r) = ab.poll_copy(cx, a, b)
        {
            ab_done = Some(r?);
        }
        if ba_done.is_none()
            && let Poll::Ready(r) = ba.poll_copy(cx, b, a)
        {
            ba_done = Some(r?);
        }
        match (ab_done, ba_done) {
            (Some(x), Some(y)) => Poll::Ready(Ok((x, y))),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_with_half_close_and_backpressure() {
        // Small duplex pipes make the writer push back, exercising the pending buffer.
        let (client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, server) = tokio::io::duplex(1024);
        let copy = tokio::spawn(async move { bidirectional(&mut proxy_a, &mut proxy_b).await });
        let up: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let client_task = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(client);
            let writer = tokio::spawn(async move {
                w.write_all(&up2).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            got
        });
        let (mut sr, mut sw) = tokio::io::split(server);
        let server_writer = tokio::spawn(async move {
            sw.write_all(&down2).await.unwrap();
            sw.shutdown().await.unwrap();
        });
        let mut got_up = Vec::new();
        sr.read_to_end(&mut got_up).await.unwrap();
        server_writer.await.unwrap();
        let got_down = client_task.await.unwrap();
        assert_eq!(got_up, up, "client to server, byte for byte");
        assert_eq!(got_down, down, "server to client, byte for byte");
        let (a_to_b, b_to_a) = copy.await.unwrap().unwrap();
        assert_eq!((a_to_b, b_to_a), (300_000, 200_000));
    }

    #[tokio::test]
    async fn a_write_error_ends_the_copy() {
        let (client, mut proxy_a) = tokio::io::duplex(64);
        let (mut proxy_b, server) = tokio::io::duplex(64);
        drop(server); // writes to b fail
        let (_r, mut w) = tokio::io::split(client);
        w.write_all(b"hello").await.unwrap();
        let r = bidirectional(&mut proxy_a, &mut proxy_b).await;
        assert!(r.is_err(), "{r:?}");
    }
}
