//! Opaque TCP throughput (B5): a sink that counts what it receives and answers the count,
//! and a client that streams into an entry for a fixed time.
//!
//! The client writes 64 KiB buffers for the duration, half-closes, and waits for the
//! sink's 8-byte count: the throughput is what *arrived*, over the time until it did.

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

    #[tokio::test]
    async fn sink_counts_every_byte() {
        let port = super::super::topology::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        tokio::spawn(sink(addr));
        let mut t = None;
        for _ in 0..50 {
            if let Ok(r) = stream(addr, Duration::from_millis(100)).await {
                t = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = t.unwrap();
        assert!(t.bytes >= 64 * 1024 && t.bytes % (64 * 1024) == 0, "{t:?}");
        assert!(t.gbit_s() > 0.0);
    }
}
