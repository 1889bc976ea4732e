//! Token buckets per (policy rule, source identity): rate limits from `rateLimit`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use vigil_policy::model::RateLimit;

/// Most buckets kept; beyond this, idle (full) buckets are forgotten.
const MAX_BUCKETS: usize = 100_000;

/// Rate limiter state for the whole proxy.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// Takes one token from the bucket `key` (created full); false if it is empty.
    pub fn allow(&self, key: String, limit: RateLimit, now: Instant) -> bool {
        let rate = f64::from(limit.requests_per_second);
        let burst = f64::from(limit.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            // Forget buckets that have refilled completely; they carry no state.
            buckets
                .retain(|_, b| b.tokens + rate * now.duration_since(b.last).as_secs_f64() < burst);
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last);
        b.tokens = (b.tokens + rate * elapsed.as_secs_f64()).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Time until the bucket `key` has a token again (for `retry-after`), rounded up.
    pub fn retry_after(limit: RateLimit) -> Duration {
        Duration::from_secs_f64((1.0 / f64::from(limit.requests_per_second.max(1))).max(1.0))
            .max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let rl = RateLimiter::default();
        let limit = RateLimit {
            requests_per_second: 10,
            burst: 3,
        };
        let t0 = Instant::now();
        let key = || "p#0#spiffe://td/a".to_string();
        assert!(rl.allow(key(), limit, t0));
        assert!(rl.allow(key(), limit, t0));
        assert!(rl.allow(key(), limit, t0));
        assert!(!rl.allow(key(), limit, t0), "burst exhausted");
        // 100 ms at 10/s refills one token.
        assert!(rl.allow(key(), limit, t0 + Duration::from_millis(100)));
        assert!(!rl.allow(key(), limit, t0 + Duration::from_millis(100)));
        // Another source has its own bucket.
        assert!(rl.allow("p#0#spiffe://td/b".into(), limit, t0));
        // Refill is capped at the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(rl.allow(key(), limit, later));
        }
        assert!(!rl.allow(key(), limit, later));
    }
}
