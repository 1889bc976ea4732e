//! One HTTP request's access-log line and request metrics, written exactly once: when
//! its response head is ready ([`RequestLog::finish`]), or — when the client goes away
//! first (a reset HTTP/2 stream, a closed connection) and hyper drops the request — on
//! drop, as `cancelled`. A request that reached the app is always logged and counted,
//! with how it ended; before, a cancelled one left no trace although the app served it.

use std::time::Instant;

use crate::{
    access_log::{Entry, Note},
    metrics::labels::Direction,
    shared::Shared,
};

/// The `status` label of requests the client abandoned before the response.
pub const CANCELLED: &str = "cancelled";

/// An open request's record.
#[derive(Debug)]
pub(crate) struct RequestLog<'a> {
    shared: &'a Shared,
    direction: Direction,
    start: Instant,
    /// The line being built; `decision` is the decision as far as it got.
    pub(crate) entry: Entry,
    done: bool,
}

impl<'a> RequestLog<'a> {
    pub(crate) fn new(
        shared: &'a Shared,
        direction: Direction,
        start: Instant,
        entry: Entry,
    ) -> Self {
        Self {
            shared,
            direction,
            start,
            entry,
            done: false,
        }
    }

    /// The response head is ready: count and log it with `status`. Inlined, so that
    /// taking `self` by value does not copy the record (and its 352-byte line) per request.
    #[inline]
    pub(crate) fn finish(mut self, status: u16, bytes_tx: u64) {
        self.finish_here(status, bytes_tx);
    }

    fn finish_here(&mut self, status: u16, bytes_tx: u64) {
        self.done = true;
        let elapsed = self.start.elapsed();
        self.shared
            .metrics
            .record_request(self.direction, self.entry.decision, status, elapsed);
        if !self.shared.log.enabled() {
            // The line (352 bytes) is not moved out only to be dropped unwritten.
            return;
        }
        let mut entry = std::mem::take(&mut self.entry);
        entry.status = Some(status);
        entry.latency_ms = elapsed.as_secs_f64() * 1e3;
        entry.bytes_tx = bytes_tx;
        self.shared.log.log(entry);
    }
}

impl Drop for RequestLog<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let elapsed = self.start.elapsed();
        let decision = self.entry.decision;
        self.shared
            .metrics
            .record_cancelled(self.direction, decision, elapsed);
        if !self.shared.log.enabled() {
            return;
        }
        let mut entry = std::mem::take(&mut self.entry);
        entry.status = None;
        entry.latency_ms = elapsed.as_secs_f64() * 1e3;
        entry.reason.note(Note::Cancelled);
        self.shared.log.log(entry);
    }
}
