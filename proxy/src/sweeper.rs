//! The idle sweep of the connection pools (the inbound's to the app, the outbound's to
//! the mesh): one task per pool, started on first use, that runs the pool's sweep every
//! half idle timeout (at least every second) and ends once the pool is dropped.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// Starts the sweep of `pool` unless `started` says it runs already: `sweep(pool, now)`
/// every `idle_timeout / 2` (at least every second) while the pool lives.
pub(crate) fn start<T: Send + Sync + 'static>(
    pool: &Arc<T>,
    started: &AtomicBool,
    idle_timeout: Duration,
    sweep: fn(&T, Instant),
) {
    if started.swap(true, Ordering::Relaxed) {
        return;
    }
    let pool: Weak<T> = Arc::downgrade(pool);
    let every = (idle_timeout / 2).max(Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(pool) = pool.upgrade() else { return };
            sweep(&pool, Instant::now());
        }
    });
}
