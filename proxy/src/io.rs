//! Stream adapters: replaying bytes read during detection, counting bytes, gating reads
//! that would find nothing new ([`ReadGate`]), gathering writes ([`Coalesce`]) and
//! holding a TLS server's last handshake flight for the first write ([`LastFlight`]).

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that first yields `prefix` (bytes already read while detecting the protocol),
/// then reads from `inner`. Writes go straight to `inner`.
#[derive(Debug)]
pub struct PrefixedIo<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> PrefixedIo<T> {
    /// Replays `prefix` before reading from `inner`.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Replayed: free the detection buffer (an advanced `Bytes` keeps all of
                // it, for as long as the connection lives).
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Implements `AsyncWrite` for an adapter `$ty<T>` by passing every call to its `inner`
/// field: for adapters that change only how a stream is read ([`PrefixedIo`], and
/// `StrictH1`, which checks what the client sends).
macro_rules! write_through {
    ($ty:ident) => {
        impl<T: ::tokio::io::AsyncWrite + Unpin> ::tokio::io::AsyncWrite for $ty<T> {
            fn poll_write(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }
            fn poll_flush(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
            fn poll_write_vectored(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}
pub(crate) use write_through;

write_through!(PrefixedIo);

mod coalesce;
mod gate;
mod last_flight;
pub use coalesce::{Coalesce, InFlight, Streams};
pub use gate::ReadGate;
pub use last_flight::{HOLD_MAX, LastFlight};

/// Bytes read from and written to a stream, shared with whoever reports them.
#[derive(Clone, Debug, Default)]
pub struct ByteCounts {
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl ByteCounts {
    /// Bytes read so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// Counts the bytes through a stream.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    counts: ByteCounts,
}

impl<T> Counted<T> {
    /// Wraps `inner`; `counts` accumulates its traffic.
    pub fn new(inner: T, counts: ByteCounts) -> Self {
        Self { inner, counts }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.counts.read.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn prefix_is_replayed_then_inner_is_read() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let counts = ByteCounts::default();
        let mut io = Counted::new(
            PrefixedIo::new(Bytes::from_static(b"hello"), b),
            counts.clone(),
        );
        let mut s = String::new();
        io.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
        assert_eq!(counts.read(), 11);
    }

    #[tokio::test]
    async fn a_replayed_prefix_frees_the_detection_buffer() {
        let mut detected = bytes::BytesMut::with_capacity(2048);
        detected.extend_from_slice(b"hello");
        let prefix = detected.freeze();
        // A second handle on the same buffer: unique again once the stream let go of it.
        let watch = prefix.clone();
        let (_a, b) = tokio::io::duplex(64);
        let mut io = PrefixedIo::new(prefix, b);
        let mut part = [0u8; 3];
        io.read_exact(&mut part).await.unwrap();
        assert_eq!(&part, b"hel");
        assert!(
            !watch.is_unique(),
            "half replayed: the buffer is still needed"
        );
        let mut rest = [0u8; 2];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"lo");
        assert!(
            watch.is_unique(),
            "replayed: the stream still holds the buffer"
        );
    }
}
