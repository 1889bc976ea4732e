//! The soak's traffic and measurements (e2e/tests/soak.rs): clients that run at a fixed
//! rate until told to stop and record every outcome with its start and end, and samples
//! of a process's memory and open descriptors from /proc.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// One request or exchange: when it started and ended, and how it ended (an HTTP
/// status, 0 for a successful opaque exchange, or the error).
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Sent.
    pub start: Instant,
    /// Answered or failed.
    pub end: Instant,
    /// `Ok(status)`; opaque exchanges use 200 for an intact echo.
    pub result: Result<u16, String>,
}

/// Every outcome of one client.
#[derive(Debug, Default)]
pub struct Record(Mutex<Vec<Outcome>>);

impl Record {
    fn push(&self, start: Instant, result: Result<u16, String>) {
        let o = Outcome {
            start,
            end: Instant::now(),
            result,
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(o);
    }

    /// A copy of what was recorded so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Shared by the clients: set to stop them.
pub type Stop = Arc<AtomicBool>;

/// The kind of traffic a client sends.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// HTTP/1.1 GETs on one keep-alive connection (reopened after an error).
    Http1,
    /// HTTP/2 (prior knowledge) GETs on one connection (reopened after an error).
    Http2,
    /// A new TCP connection per exchange: write, read the echo, close.
    TcpShort,
    /// One TCP connection kept open, an echo exchange on it each tick.
    TcpLong,
}

/// Runs `kind` against `addr` every `every` until `stop`, recording into `record`.
/// HTTP paths are `{path}/{n}`.
pub async fn client(
    kind: Kind,
    addr: SocketAddr,
    path: &'static str,
    every: Duration,
    stop: Stop,
    record: Arc<Record>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut h1 = None;
    let mut h2 = None;
    let mut long: Option<TcpStream> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let start = Instant::now();
        let uri = format!("{path}/{n}");
        let result = match kind {
            Kind::Http1 => http1(&mut h1, addr, &uri).await,
            Kind::Http2 => http2(&mut h2, addr, &uri).await,
            Kind::TcpShort => {
                let mut s = None;
                echo(&mut s, addr, n).await
            }
            Kind::TcpLong => echo(&mut long, addr, n).await,
        };
        record.push(start, result);
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn http1(conn: &mut Option<H1>, addr: SocketAddr, uri: &str) -> Result<u16, String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let s = connect(addr).await?;
        let (sender, c) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(c);
        *conn = Some(sender);
    }
    let Some(sender) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let req = request(addr, uri)?;
    let result = send(sender.send_request(req)).await;
    if result.is_err() {
        *conn = None;
    }
    result
}

async fn http2(conn: &mut Option<H2>, addr: SocketAddr, uri: &str) -> Result<u16, String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let s = connect(addr).await?;
        let (sender, c) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(c);
        *conn = Some(sender);
    }
    let Some(sender) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let req = request(addr, &format!("http://{addr}{uri}"))?;
    let result = send(sender.send_request(req)).await;
    if result.is_err() {
        *conn = None;
    }
    result
}

fn request(addr: SocketAddr, uri: &str) -> Result<Request<Full<Bytes>>, String> {
    Request::get(uri)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())
}

async fn send(
    f: impl Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
) -> Result<u16, String> {
    let resp = tokio::time::timeout(TIMEOUT, f)
        .await
        .map_err(|_| "no answer in 5 s".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    tokio::time::timeout(TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| "body: no end in 5 s".to_string())?
        .map_err(|e| format!("body: {e}"))?;
    Ok(status)
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect: no answer in 5 s".to_string())?
        .map_err(|e| format!("connect: {e}"))
}

/// One echo exchange on `conn` (opened if needed; dropped after an error).
async fn echo(conn: &mut Option<TcpStream>, addr: SocketAddr, n: u64) -> Result<u16, String> {
    if conn.is_none() {
        *conn = Some(connect(addr).await?);
    }
    let Some(s) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let msg = format!("soak-{n:016}\n");
    let exchange = async {
        s.write_all(msg.as_bytes()).await?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let result = match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(Ok(buf)) if buf == msg.as_bytes() => Ok(200),
        Ok(Ok(_)) => Err("echo: other bytes came back".into()),
        Ok(Err(e)) => Err(format!("echo: {e}")),
        Err(_) => Err("echo: no answer in 5 s".into()),
    };
    if result.is_err() {
        *conn = None;
    }
    result
}

/// A process's resident memory (KiB, `VmRSS`) and open descriptors, from /proc.
pub fn sample(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// The median of `v` (0 when empty).
pub fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}
