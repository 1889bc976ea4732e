//! When to renew an SVID and how long to wait after a failure: pure functions.
//!
//! Renewal happens at 50 % of the certificate's lifetime, moved by up to ±10 % of the
//! lifetime (jitter), so a fleet started together does not renew together. Failures back
//! off exponentially with a cap; the current certificate stays in use meanwhile (see
//! [`crate::creds::CredentialStore`]). Randomness is an argument (`jitter` in `-1.0..=1.0`)
//! so every function here is deterministic and tested as such.

use std::time::{Duration, SystemTime};

/// Fraction of the lifetime at which renewal is due, before jitter.
pub const RENEW_AT: f64 = 0.5;
/// Largest jitter, as a fraction of the lifetime.
pub const JITTER: f64 = 0.1;
/// Never schedule a renewal sooner than this from now (avoids hot loops on odd clocks).
pub const MIN_DELAY: Duration = Duration::from_secs(1);

/// How long from `now` until the certificate valid `[not_before, not_after]` should be
/// renewed, for a `jitter` in `-1.0..=1.0` (clamped).
///
/// The target is `not_before + lifetime * (0.5 + 0.1 * jitter)`, clamped into
/// `[now + MIN_DELAY, not_after]`; an expired certificate is due after `MIN_DELAY`.
pub fn renewal_delay(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let fraction = RENEW_AT + JITTER * jitter.clamp(-1.0, 1.0);
    let target = not_before + lifetime.mul_f64(fraction);
    let until_expiry = not_after.duration_since(now).unwrap_or_default();
    let until_target = target.duration_since(now).unwrap_or_default();
    until_target.min(until_expiry).max(MIN_DELAY)
}

/// Capped exponential backoff for retrying a failed renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 1 s doubling up to 60 s.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0 for the first retry): `base * 2^attempt`,
    /// capped at `max`, then scaled by `1 + 0.1 * jitter` (jitter clamped to `-1..=1`)
    /// and capped again.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(31)));
        let capped = exp.min(self.max);
        capped
            .mul_f64(1.0 + JITTER * jitter.clamp(-1.0, 1.0))
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renews_at_half_life_with_bounded_jitter() {
        let nb = t(1_000_000);
        let na = nb + H;
        assert_eq!(renewal_delay(nb, na, nb, 0.0), H / 2);
        assert_eq!(renewal_delay(nb, na, nb, 1.0), H.mul_f64(0.6));
        assert_eq!(renewal_delay(nb, na, nb, -1.0), H.mul_f64(0.4));
        // Jitter beyond the range is clamped.
        assert_eq!(renewal_delay(nb, na, nb, 7.0), H.mul_f64(0.6));
        assert_eq!(renewal_delay(nb, na, nb, f64::NEG_INFINITY), H.mul_f64(0.4));
        // Measured from now, not from not_before.
        assert_eq!(renewal_delay(nb, na, nb + H / 4, 0.0), H / 4);
    }

    #[test]
    fn renewal_is_clamped() {
        let nb = t(1_000_000);
        let na = nb + H;
        // Past the target: renew almost immediately, never with zero delay.
        assert_eq!(renewal_delay(nb, na, nb + H.mul_f64(0.9), 0.0), MIN_DELAY);
        // Expired: same.
        assert_eq!(renewal_delay(nb, na, na + H, 0.0), MIN_DELAY);
        // Degenerate certificate (not_after before not_before).
        assert_eq!(renewal_delay(na, nb, nb, 0.0), MIN_DELAY);
        // The delay never exceeds the time to expiry.
        for j in [-1.0, 0.0, 1.0] {
            for off in [0, 600, 1800, 3000] {
                let now = nb + Duration::from_secs(off);
                assert!(now + renewal_delay(nb, na, now, j) <= na.max(now + MIN_DELAY));
            }
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..9).map(|a| b.delay(a, 0.0).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.delay(u32::MAX, 0.0), b.max);
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(1100));
        assert_eq!(b.delay(0, -1.0), Duration::from_millis(900));
        // Jitter never pushes past the cap.
        assert_eq!(b.delay(10, 1.0), b.max);
        assert_eq!(b.delay(10, -1.0), b.max.mul_f64(0.9));
    }
}
