//! Logging that cannot flood: at most one line per interval per call site, saying how
//! many were left out. A failure that repeats thousands of times a second (accept errors
//! while descriptors are exhausted, say) must not turn into hundreds of megabytes of
//! stderr and a busy core.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// One call site's limiter.
#[derive(Debug)]
pub(crate) struct LogLimit {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimit {
    /// At most one line per `every`.
    pub(crate) const fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now (`n` lines were left out since the last
    /// one), `None` when this one is left out.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let l = LogLimit::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(l.allow_at(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(l.allow_at(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(l.allow_at(t0 + Duration::from_millis(1001)), Some(500));
        assert_eq!(l.allow_at(t0 + Duration::from_millis(1002)), None);
    }
}
