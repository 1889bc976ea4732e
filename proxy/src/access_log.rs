//! Access and decision log: one JSON object per line, per HTTP request or TCP connection.
//!
//! Lines are handed to a writer thread through a bounded queue, so a slow log consumer
//! never blocks traffic; if the queue is full the line is dropped and counted.

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{SyncSender, TrySendError, sync_channel},
    },
    time::SystemTime,
};

use serde::{Serialize, Serializer};

pub use self::why::{Answer, Audit, Judgement, Note, What, Why};
use crate::metrics::labels::{Decision, Direction};

mod why;

const QUEUE: usize = 4096;

/// One log line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Entry {
    /// RFC 3339 time the request or connection ended.
    pub time: String,
    /// `inbound` or `outbound`.
    pub direction: Direction,
    /// `http1`, `http2` or `tcp`.
    pub protocol: &'static str,
    /// Source address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_addr: Option<String>,
    /// Source identity, or `unauthenticated`.
    pub src_id: String,
    /// Destination address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_addr: Option<String>,
    /// Destination identity, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_id: Option<String>,
    /// HTTP method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP path (normalised).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP status sent to the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `allow` or `deny` where this proxy decided (inbound authorization, outbound
    /// refusals and plaintext passthrough), or `forward` ([`Decision::Forward`]) where it
    /// sent the traffic on over mTLS and the destination's proxy decides.
    pub decision: Decision,
    /// What decided, e.g. `allowed by policy shop/web rule 0` or `default deny`, and what
    /// happened after; a value, written as text.
    #[serde(serialize_with = "display")]
    pub reason: Why,
    /// The deciding policy (`namespace/name`), if a rule decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The deciding rule's index within its policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// An audit-mode finding ("would deny: ..."), if any.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "display_some"
    )]
    pub audit: Option<Audit>,
    /// Milliseconds from request start to response headers (or connection duration).
    pub latency_ms: f64,
    /// Bytes received from the source.
    pub bytes_rx: u64,
    /// Bytes sent to the source.
    pub bytes_tx: u64,
    /// Request ID (also in the `x-vigil-request-id` response header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn display_some<T: std::fmt::Display, S: Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// Where log lines go.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: Option<SyncSender<Entry>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Logs to standard output.
    pub fn stdout() -> Self {
        Self::to_writer(std::io::stdout())
    }

    /// True when entries go somewhere; with the log off, building one is wasted work
    /// (a handful of allocations per request), so callers skip it.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Logs nowhere.
    pub fn off() -> Self {
        Self {
            tx: None,
            dropped: Arc::default(),
        }
    }

    /// Logs to any writer, from a dedicated thread.
    pub fn to_writer<W: Write + Send + 'static>(mut w: W) -> Self {
        let (tx, rx) = sync_channel::<Entry>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Ok(entry) = rx.recv() {
                    if serde_json::to_writer(&mut w, &entry).is_err() || w.write_all(b"\n").is_err()
                    {
                        break;
                    }
                    let _ = w.flush();
                }
            });
        match spawned {
            Ok(_) => Self {
                tx: Some(tx),
                dropped: Arc::default(),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access log thread; access logging is off");
                Self::off()
            }
        }
    }

    /// Queues a line (stamping the time); drops it if the writer is behind.
    pub fn log(&self, mut entry: Entry) {
        let Some(tx) = &self.tx else { return };
        entry.time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if let Err(TrySendError::Full(_)) = tx.try_send(entry) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
