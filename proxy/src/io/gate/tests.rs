use std::{future::poll_fn, sync::atomic::AtomicUsize, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    net::{TcpListener, TcpStream},
};

use super::*;

/// Counts the reads that reach the stream.
struct Counting {
    inner: DuplexStream,
    reads: Arc<AtomicUsize>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// A task waker that counts its wake-ups.
#[derive(Default)]
struct Task(AtomicUsize);

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn gated() -> (ReadGate<Counting>, DuplexStream, Arc<AtomicUsize>) {
    let (a, b) = tokio::io::duplex(1024);
    let reads = Arc::new(AtomicUsize::new(0));
    let gate = ReadGate::new(Counting {
        inner: a,
        reads: reads.clone(),
    });
    (gate, b, reads)
}

fn read_once(gate: &mut ReadGate<Counting>, waker: &Waker, out: &mut [u8]) -> Poll<usize> {
    let mut buf = ReadBuf::new(out);
    match Pin::new(gate).poll_read(&mut Context::from_waker(waker), &mut buf) {
        Poll::Ready(r) => {
            r.unwrap();
            Poll::Ready(buf.filled().len())
        }
        Poll::Pending => Poll::Pending,
    }
}

#[tokio::test]
async fn a_read_after_nothing_changed_does_not_reach_the_stream() {
    let (mut gate, mut peer, reads) = gated();
    let task = Arc::new(Task::default());
    let waker = Waker::from(task.clone());
    let mut out = [0u8; 16];

    assert!(read_once(&mut gate, &waker, &mut out).is_pending());
    assert_eq!(reads.load(Ordering::Relaxed), 1);
    // Nothing arrived: answered by the gate.
    for _ in 0..5 {
        assert!(read_once(&mut gate, &waker, &mut out).is_pending());
    }
    assert_eq!(reads.load(Ordering::Relaxed), 1);
    assert_eq!(task.0.load(Ordering::Relaxed), 0);

    // Data arrives: the stream wakes the gate, the gate wakes the task, and the next read
    // reaches the stream and gets it.
    peer.write_all(b"hello").await.unwrap();
    assert_eq!(task.0.load(Ordering::Relaxed), 1);
    assert_eq!(read_once(&mut gate, &waker, &mut out), Poll::Ready(5));
    assert_eq!(&out[..5], b"hello");
    assert_eq!(reads.load(Ordering::Relaxed), 2);

    // After data, the next read asks the stream again (it has not promised anything).
    assert!(read_once(&mut gate, &waker, &mut out).is_pending());
    assert_eq!(reads.load(Ordering::Relaxed), 3);

    // The end of the stream is seen the same way.
    drop(peer);
    assert_eq!(task.0.load(Ordering::Relaxed), 2);
    assert_eq!(read_once(&mut gate, &waker, &mut out), Poll::Ready(0));
}

#[tokio::test]
async fn another_task_reading_goes_to_the_stream_and_is_the_one_woken() {
    let (mut gate, mut peer, reads) = gated();
    let (first, second) = (Arc::new(Task::default()), Arc::new(Task::default()));
    let mut out = [0u8; 16];

    assert!(read_once(&mut gate, &Waker::from(first.clone()), &mut out).is_pending());
    // A read from another task is not answered from the first task's wait.
    assert!(read_once(&mut gate, &Waker::from(second.clone()), &mut out).is_pending());
    assert_eq!(reads.load(Ordering::Relaxed), 2);

    peer.write_all(b"x").await.unwrap();
    assert_eq!(first.0.load(Ordering::Relaxed), 0);
    assert_eq!(second.0.load(Ordering::Relaxed), 1);
    assert_eq!(
        read_once(&mut gate, &Waker::from(second.clone()), &mut out),
        Poll::Ready(1)
    );
}

#[tokio::test]
async fn a_wake_up_before_the_read_ends_is_not_lost() {
    let (mut gate, mut peer, reads) = gated();
    let task = Arc::new(Task::default());
    let waker = Waker::from(task.clone());
    let mut out = [0u8; 16];

    assert!(read_once(&mut gate, &waker, &mut out).is_pending());
    // Woken by data; the task reads only part of it, and more comes before the next read.
    peer.write_all(b"abcd").await.unwrap();
    assert_eq!(read_once(&mut gate, &waker, &mut out[..2]), Poll::Ready(2));
    peer.write_all(b"ef").await.unwrap();
    assert_eq!(read_once(&mut gate, &waker, &mut out), Poll::Ready(4));
    assert_eq!(&out[..4], b"cdef");
    assert_eq!(reads.load(Ordering::Relaxed), 3);
}

/// Real sockets on a runtime with several threads: a ping-pong of many small messages
/// through gated streams on both ends, where a lost wake-up would hang the exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_tcp_ping_pong_on_two_threads() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = ReadGate::new(tcp);
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    let mut c = ReadGate::new(TcpStream::connect(addr).await.unwrap());
    let exchange = async {
        for i in 0u32..2_000 {
            let msg = i.to_be_bytes();
            c.write_all(&msg).await.unwrap();
            let mut back = [0u8; 4];
            c.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg);
            if i.is_multiple_of(7) {
                // Poll without data now and then: answered by the gate.
                let mut b = [0u8; 1];
                let mut rb = ReadBuf::new(&mut b);
                let p = poll_fn(|cx| Poll::Ready(Pin::new(&mut c).poll_read(cx, &mut rb))).await;
                assert!(p.is_pending());
            }
        }
        c.shutdown().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .expect("no wake-up lost");
    echo.await.unwrap();
}
