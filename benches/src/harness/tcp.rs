//! Opaque TCP throughput (B5): a sink that counts what it receives and answers the count,
//! and a client that streams into an entry for a fixed time.
//!
//! The client writes 64 KiB buffers for the duration, half-closes, and waits for the
//! sink's 8-byte count: the throughput is what *arrived*, over the time until it did.
//!
//! And B5's floor, the `relay` path: a pair of plain relays that copy each direction
//! through a 256 KiB buffer in user space, without TLS — the socket work any user-space
//! TLS proxy pair does at least (it cannot `splice`: its bytes are encrypted on the way),
//! so what a pair with crypto can reach on the same core is bounded by it and the
//! crypto ceiling together.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Serves the sink on `addr` until the process ends: per connection, reads to EOF and
/// writes the number of bytes read (u64, big endian).
pub async fn sink(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&total.to_be_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

/// Serves a plain relay on `listen` to `upstream` until the process ends: per connection,
/// connects upstream and copies both ways through 256 KiB buffers, with `TCP_NODELAY` on
/// both sides as the proxies set it.
pub async fn relay(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (mut down, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut up) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let _ =
                tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, RELAY_BUF, RELAY_BUF)
                    .await;
        });
    }
}

/// The relay's read size. The fastest tried: with 64 KiB (the sidecar's read size,
/// `vigil_proxy::copy::SCRATCH_SIZE`) a relay pair moved 6.9–7.5 Gbit/s here, with
/// 256 KiB 7.3–9.4 — while the sidecar pair moved the same with either (5.1–5.6), so the
/// floor is the faster one.
const RELAY_BUF: usize = 256 * 1024;

/// One stream's outcome.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Throughput {
    /// Bytes the sink received.
    pub bytes: u64,
    /// Seconds from the first write to the sink's answer.
    pub seconds: f64,
}

impl Throughput {
    /// Gigabits per second.
    pub fn gbit_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds.max(1e-9) / 1e9
    }
}

/// Why a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The sink got less than was written (a proxy lost data).
    #[error("wrote {written} bytes, the sink received {received}")]
    Lost {
        /// Written by the client.
        written: u64,
        /// Counted by the sink.
        received: u64,
    },
}

/// Streams into `entry` for `duration`.
pub async fn stream(entry: SocketAddr, duration: Duration) -> Result<Throughput, StreamError> {
    let mut s = TcpStream::connect(entry).await?;
    s.set_nodelay(true)?;
    // Non-HTTP first bytes: sidecars that detect protocols see opaque TCP at once.
    let buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let mut written = 0u64;
    while start.elapsed() < duration {
        s.write_all(&buf).await?;
        written += buf.len() as u64;
    }
    s.shutdown().await?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await?;
    let seconds = start.elapsed().as_secs_f64();
    let received = u64::from_be_bytes(count);
    if received != written {
        return Err(StreamError::Lost { written, received });
    }
    Ok(Throughput {
        bytes: received,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], super::super::topology::free_port()))
    }

    /// A 100 ms stream into `entry` once something listens there. `stream` fails unless
    /// the sink's count (sent back the way the bytes came) equals what went in.
    async fn stream_when_up(entry: SocketAddr) -> Throughput {
        for _ in 0..50 {
            if let Ok(r) = stream(entry, Duration::from_millis(100)).await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stream(entry, Duration::from_millis(100)).await.unwrap()
    }

    #[tokio::test]
    async fn sink_counts_every_byte() {
        let addr = local();
        tokio::spawn(sink(addr));
        let t = stream_when_up(addr).await;
        assert!(t.bytes >= 64 * 1024 && t.bytes % (64 * 1024) == 0, "{t:?}");
        assert!(t.gbit_s() > 0.0);
    }

    #[tokio::test]
    async fn relay_passes_every_byte_both_ways() {
        let (sink_addr, relay_addr) = (local(), local());
        tokio::spawn(sink(sink_addr));
        tokio::spawn(relay(relay_addr, sink_addr));
        let t = stream_when_up(relay_addr).await;
        assert!(t.bytes >= 64 * 1024, "{t:?}");
    }
}
