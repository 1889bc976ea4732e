//! HTTP/2 abuse against the real `vigil-proxy` binary, over mesh mTLS with raw frames:
//! PING and SETTINGS floods from a client that never reads, CONTINUATION floods
//! (CVE-2024-27316 class), HPACK header-list bombs, and WINDOW_UPDATE abuse. For each, the
//! proxy's memory stays bounded and a well-behaved client on another connection keeps
//! getting answers. (Rapid reset: hostile.rs.)
//!
//! Why floods stay bounded: the HTTP/2 stack answers a PING or acknowledges SETTINGS
//! before it reads the next frame, so a client that does not read its answers stops
//! being read itself once the socket buffers fill (backpressure, no queue).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame: 24-bit length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

const DATA_HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// HPACK for `GET http://o/` (static table entries and one literal).
fn get_block() -> Vec<u8> {
    vec![0x82, 0x86, 0x84, 0x41, 0x01, b'o']
}

/// A literal header field without indexing, `name: value`.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0x00, u8::try_from(name.len()).unwrap()];
    b.extend(name.as_bytes());
    b.push(u8::try_from(value.len()).unwrap());
    b.extend(value.as_bytes());
    b
}

/// The process's user + system CPU time so far.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based); here 2 are before the split.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 10
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The proxy binary and a mesh client's address book.
struct Target {
    mesh: Mesh,
    guard: ChildGuard,
    inbound: std::net::SocketAddr,
}

async fn target() -> Target {
    let mesh = Mesh::new();
    let app = http_app().await;
    let (guard, inbound, _) = spawn_proxy_binary(&mesh, "orders", ALLOW_WEB, app).await;
    Target {
        mesh,
        guard,
        inbound,
    }
}

impl Target {
    fn pid(&self) -> u32 {
        self.guard.0.as_ref().unwrap().id()
    }

    async fn conn(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        mtls(
            self.inbound,
            &self.mesh.client_creds("web"),
            &[&wid("orders")],
            b"vigil/1",
        )
        .await
        .unwrap()
    }

    /// A well-behaved client: HTTP/1.1 GETs on fresh connections until `stop`; counts
    /// the 200s and everything else.
    fn bystander(
        &self,
        stop: Arc<AtomicBool>,
    ) -> (Arc<[AtomicU64; 2]>, tokio::task::JoinHandle<()>) {
        let counts: Arc<[AtomicU64; 2]> = Arc::default();
        let (inbound, creds, c) = (self.inbound, self.mesh.client_creds("web"), counts.clone());
        let task = tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = tokio::time::timeout(Duration::from_secs(10), async {
                    let mut conn = h1_over_mtls(inbound, &creds, &[&wid("orders")]).await?;
                    send(&mut conn, get("/x")).await
                })
                .await;
                let i = usize::from(!matches!(r, Ok(Ok((StatusCode::OK, _, _)))));
                c[i].fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        (counts, task)
    }
}

/// Writes `unit` repeatedly (never reading) until the proxy closes the connection;
/// counts the bytes written into `written`. A write the proxy does not read blocks: the
/// caller aborts the task when the attack's time is up (whole chunks only, so the frames
/// stay well-formed).
async fn flood<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, unit: &[u8], written: &AtomicU64) {
    let reps = (65_536 / unit.len()).max(1);
    let chunk: Vec<u8> = unit.repeat(reps);
    while s.write_all(&chunk).await.is_ok() {
        written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}

/// Floods from 4 mesh connections for up to 4 s while a bystander sends requests on
/// others; asserts the proxy's RSS grew by less than 64 MiB, and that every bystander
/// request got its 200 (at least 20 of them, during and just after the attack).
async fn under_attack(name: &str, setup: Vec<u8>, unit: Vec<u8>) {
    let t = target().await;
    let before = rss_kib(t.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let (counts, bystander) = t.bystander(stop.clone());
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(t.conn().await);
    }
    let cpu_before = cpu_ms(t.pid());
    let written = Arc::new(AtomicU64::new(0));
    let mut floods = Vec::new();
    for mut s in conns {
        let (setup, unit, written) = (setup.clone(), unit.clone(), written.clone());
        floods.push(tokio::spawn(async move {
            s.write_all(PREFACE).await.unwrap();
            s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
            s.write_all(&setup).await.unwrap();
            flood(&mut s, &unit, &written).await;
        }));
    }
    // Up to 4 s; a flood ends early when the proxy closes its connection.
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline && floods.iter().any(|f| !f.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = floods.iter().filter(|f| f.is_finished()).count();
    for f in &floods {
        f.abort();
    }
    let attack = started.elapsed();
    let written = written.load(Ordering::Relaxed);
    let cpu = cpu_ms(t.pid()) - cpu_before;
    let during = rss_kib(t.pid());
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts[0].load(Ordering::Relaxed) < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    bystander.await.unwrap();
    let (ok, failed) = (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
    );
    eprintln!(
        "{name}: {} KiB written on 4 connections in {attack:.1?}, {closed} closed by the proxy, the rest no longer read; {cpu} ms of the proxy's CPU; its RSS {before} -> {during} KiB; bystander: {ok} answered, {failed} failed",
        written >> 10,
    );
    assert!(
        during.saturating_sub(before) < 64 * 1024,
        "{name}: the proxy grew from {before} to {during} KiB"
    );
    assert_eq!(failed, 0, "{name}: bystander requests failed");
    assert!(ok >= 20, "{name}: the bystander got only {ok} answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_without_reading() {
    under_attack("PING flood", Vec::new(), frame(PING, 0, 0, &[7; 8])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_without_reading() {
    // SETTINGS_MAX_CONCURRENT_STREAMS = 100, again and again.
    let unit = frame(SETTINGS, 0, 0, &[0x00, 0x03, 0, 0, 0, 100]);
    under_attack("SETTINGS flood", Vec::new(), unit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood() {
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end.
    let setup = frame(DATA_HEADERS, END_STREAM, 1, &get_block());
    let unit = frame(CONTINUATION, 0, 1, &literal("x-flood", "yyyyyyyyyyyyyyyy"));
    under_attack("CONTINUATION flood", setup, unit).await;
}

/// An HPACK string of `len` bytes of `b` (7-bit prefixed length, no Huffman).
fn hpack_string(b: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if len < 127 {
        out.push(u8::try_from(len).unwrap());
    } else {
        out.push(0x7f);
        let mut rest = len - 127;
        while rest >= 128 {
            out.push(u8::try_from(rest % 128).unwrap() | 0x80);
            rest /= 128;
        }
        out.push(u8::try_from(rest).unwrap());
    }
    out.extend(std::iter::repeat_n(b, len));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb() {
    // Each stream: one 4 KiB header put into the dynamic table, then referenced 15,000
    // times with one byte each: ~16 KiB on the wire decode to ~60 MiB of header list.
    let mut block = get_block();
    block.push(0x40); // literal with incremental indexing, new name
    block.extend(hpack_string(b'x', 6));
    block.extend(hpack_string(b'b', 4096));
    block.extend(std::iter::repeat_n(0xbe, 12_000)); // index 62: the entry just added
    let mut unit = Vec::new();
    for stream in (1..200u32).step_by(2) {
        unit.extend(frame(
            DATA_HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &block,
        ));
    }
    under_attack("HPACK bomb", Vec::new(), unit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_update_abuse_is_a_connection_error() {
    let t = target().await;
    for (what, frames) in [
        (
            "connection window past 2^31-1",
            [
                frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
                frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
            ]
            .concat(),
        ),
        (
            "zero increment on the connection",
            frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()),
        ),
    ] {
        let mut s = t.conn().await;
        s.write_all(PREFACE).await.unwrap();
        s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        s.write_all(&frames).await.unwrap();
        // The proxy answers with GOAWAY (type 7) and closes.
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let mut i = 0;
        let mut goaway = false;
        while i + 9 <= out.len() {
            let len =
                usize::from(out[i]) << 16 | usize::from(out[i + 1]) << 8 | usize::from(out[i + 2]);
            goaway |= out[i + 3] == 0x7;
            i += 9 + len;
        }
        assert!(goaway, "{what}: no GOAWAY in {out:?}");
    }
    // And the proxy still serves.
    let mut c = h1_over_mtls(t.inbound, &t.mesh.client_creds("web"), &[&wid("orders")])
        .await
        .unwrap();
    assert_eq!(send(&mut c, get("/x")).await.unwrap().0, StatusCode::OK);
}
