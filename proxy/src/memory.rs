//! Giving memory back after a burst. When many connections have closed since the last
//! look, the heap holds pages nothing uses any more; glibc keeps them resident unless
//! asked ([`vigil_malloc_trim::trim`]). Every few seconds: if [`CLOSED`] or more
//! connections closed since the last look, trim once. Idle or steady long-lived traffic
//! never trims; heavy churn trims at most every [`EVERY`], and a trim costs a walk of the
//! heap and a short-lived thread — well under a millisecond at the sizes a sidecar
//! reaches. The trim empties glibc's cache of the thread it runs on: with the default
//! single-threaded runtime that is the thread that served the burst; with `--threads` > 1
//! the other workers' caches (up to ~450 small chunks each) stay.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the gauge is read.
const EVERY: Duration = Duration::from_secs(5);
/// Connections closed since the last look that make a trim worth it.
const CLOSED: u64 = 64;

/// Runs until `stop`.
pub(crate) async fn trim_after_bursts(metrics: Metrics, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    let mut seen = metrics.closed_total();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let closed = metrics.closed_total();
        if closed - seen >= CLOSED {
            let released = vigil_malloc_trim::trim();
            tracing::debug!(
                closed = closed - seen,
                released,
                "connections closed since the last look: heap trimmed"
            );
        }
        seen = closed;
    }
}
