//! The adapter against a stream that records each write and can refuse to take any.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Wake, Waker},
};

use super::*;

/// Records each write it takes; takes none while `full`.
#[derive(Default)]
struct Recorder {
    writes: Vec<Vec<u8>>,
    full: bool,
    flushed: usize,
    shut: bool,
}

impl AsyncRead for Recorder {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        buf.put_slice(b"in");
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.full {
            return Poll::Pending;
        }
        self.writes.push(data.to_vec());
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flushed += 1;
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut = true;
        Poll::Ready(Ok(()))
    }
}

/// Counts its wake-ups.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Arc<Wakes>, Waker) {
    let wakes = Arc::new(Wakes::default());
    (wakes.clone(), Waker::from(wakes))
}

/// Two streams in flight (guards leaked for the test's length): writes are gathered.
fn busy() -> Streams {
    let streams = Streams::default();
    std::mem::forget(streams.start());
    std::mem::forget(streams.start());
    streams
}

fn write(c: &mut Coalesce<Recorder>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
    Pin::new(c).poll_write(cx, data)
}

fn flush(c: &mut Coalesce<Recorder>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    Pin::new(c).poll_flush(cx)
}

/// Writes and the flush after them are held until the task's next turn, which sends
/// them — and what was written meanwhile — in one write, then flushes the stream.
#[test]
fn writes_of_a_turn_go_out_together_on_the_next() {
    let (wakes, w) = waker();
    let mut cx = Context::from_waker(&w);
    let mut c = Coalesce::new(Recorder::default(), busy());
    assert!(matches!(
        write(&mut c, &mut cx, b"head"),
        Poll::Ready(Ok(4))
    ));
    let two = [IoSlice::new(b"er+"), IoSlice::new(b"data")];
    assert!(matches!(
        Pin::new(&mut c).poll_write_vectored(&mut cx, &two),
        Poll::Ready(Ok(7))
    ));
    assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
    assert!(c.inner.writes.is_empty(), "the first flush is put off");
    assert_eq!(c.inner.flushed, 0);
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        1,
        "and the task woken to do it"
    );
    // The same turn: more frames and flushes, all put off, one wake-up.
    assert!(matches!(
        write(&mut c, &mut cx, b"|same"),
        Poll::Ready(Ok(5))
    ));
    assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
    assert!(
        c.inner.writes.is_empty(),
        "a turn's flushes are all put off"
    );
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    // The next turn: another stream's frame, then the flush that sends all.
    c.streams.next_turn();
    assert!(matches!(
        write(&mut c, &mut cx, b"|more"),
        Poll::Ready(Ok(5))
    ));
    assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!(c.inner.writes, [b"header+data|same|more".to_vec()]);
    assert!(
        c.buf.capacity() > 0,
        "a small buffer is kept for the next turn"
    );
    assert_eq!(c.inner.flushed, 1);
    // Nothing gathered: a flush is the stream's at once, and wakes nobody.
    assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!((c.inner.writes.len(), c.inner.flushed), (1, 2));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    // Reads are the stream's.
    let mut space = [0u8; 8];
    let mut rb = ReadBuf::new(&mut space);
    assert!(matches!(
        Pin::new(&mut c).poll_read(&mut cx, &mut rb),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(rb.filled(), b"in");
}

/// A stream that takes nothing holds the flush (and, past the buffer's size, the
/// writes) pending; nothing is lost, and what was gathered goes out once it takes.
#[test]
fn a_full_stream_holds_writes_back_and_loses_nothing() {
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    let mut c = Coalesce::new(
        Recorder {
            full: true,
            ..Recorder::default()
        },
        busy(),
    );
    let chunk = vec![7u8; CAP / 2];
    assert!(matches!(write(&mut c, &mut cx, &chunk), Poll::Ready(Ok(_))));
    assert!(matches!(write(&mut c, &mut cx, &chunk), Poll::Ready(Ok(_))));
    assert!(
        write(&mut c, &mut cx, b"x").is_pending(),
        "the buffer is full"
    );
    assert!(flush(&mut c, &mut cx).is_ready(), "put off in this turn");
    c.streams.next_turn();
    assert!(
        flush(&mut c, &mut cx).is_pending(),
        "then it waits for the stream"
    );
    c.inner.full = false;
    assert!(matches!(write(&mut c, &mut cx, b"x"), Poll::Ready(Ok(1))));
    assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
    let sent: Vec<u8> = c.inner.writes.concat();
    assert_eq!(sent.len(), CAP + 1);
    assert!(sent[..CAP].iter().all(|&b| b == 7) && sent[CAP] == b'x');
    assert!(c.buf.capacity() < CAP / 2, "a burst's buffer is not kept");
}

/// A write larger than the buffer goes straight to the stream, after what was gathered
/// before it; a shutdown sends what is gathered first.
#[test]
fn large_writes_pass_through_in_order_and_shutdown_drains() {
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    let mut c = Coalesce::new(Recorder::default(), busy());
    assert!(matches!(
        write(&mut c, &mut cx, b"small"),
        Poll::Ready(Ok(5))
    ));
    let big = vec![1u8; CAP + 1];
    assert!(matches!(write(&mut c, &mut cx, &big), Poll::Ready(Ok(n)) if n == CAP + 1));
    assert_eq!(c.inner.writes.len(), 2);
    assert_eq!(c.inner.writes[0], b"small");
    assert_eq!(c.inner.writes[1].len(), CAP + 1);
    assert!(matches!(
        write(&mut c, &mut cx, b"tail"),
        Poll::Ready(Ok(4))
    ));
    assert!(matches!(
        Pin::new(&mut c).poll_shutdown(&mut cx),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(c.inner.writes[2], b"tail");
    assert!(c.inner.shut);
}

/// With at most one stream in flight nothing could join a write: it goes out at the
/// first flush, and nobody is woken.
#[test]
fn one_stream_in_flight_is_written_at_once() {
    let (wakes, w) = waker();
    let mut cx = Context::from_waker(&w);
    let streams = Streams::default();
    let mut c = Coalesce::new(Recorder::default(), streams.clone());
    let one = streams.start();
    assert!(matches!(
        write(&mut c, &mut cx, b"alone"),
        Poll::Ready(Ok(5))
    ));
    assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!(c.inner.writes, [b"alone".to_vec()]);
    // A second stream: gathered again; when it ends, the next flush is immediate.
    let two = streams.start();
    assert!(matches!(write(&mut c, &mut cx, b"a"), Poll::Ready(Ok(1))));
    assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!(c.inner.writes.len(), 1, "put off while two are in flight");
    drop((one, two));
    assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!(c.inner.writes, [b"alone".to_vec(), b"a".to_vec()]);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
}
