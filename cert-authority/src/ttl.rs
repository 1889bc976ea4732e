//! How long an SVID may live: the CA's TTL policy.

use std::time::Duration;

/// Shortest TTL the CA ever signs (only when short TTLs are explicitly allowed).
pub const ABSOLUTE_MIN_TTL: Duration = Duration::from_secs(60);
/// Shortest TTL by default.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(5 * 60);
/// Longest TTL the CA ever signs; also how long a retiring root stays in the bundle.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// TTL when the caller asks for none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);

/// The TTL bounds the CA enforces on every SVID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    default: Duration,
    min: Duration,
    max: Duration,
}

/// A requested TTL outside the policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("SVID TTL {requested:?} is outside the allowed range {min:?} ..= {max:?}")]
pub struct TtlError {
    /// What was asked for.
    pub requested: Duration,
    /// Lower bound.
    pub min: Duration,
    /// Upper bound.
    pub max: Duration,
}

impl Default for TtlPolicy {
    /// 1 h default, 5 min .. 24 h.
    fn default() -> Self {
        Self {
            default: DEFAULT_TTL,
            min: DEFAULT_MIN_TTL,
            max: MAX_TTL,
        }
    }
}

impl TtlPolicy {
    /// Lowers the minimum to one minute. For tests and demos that exercise rotation;
    /// production SVIDs below five minutes only add load.
    pub fn allow_short(mut self) -> Self {
        self.min = ABSOLUTE_MIN_TTL;
        self
    }

    /// Sets the default TTL (used when a request names none). Must lie within the bounds.
    pub fn with_default(mut self, default: Duration) -> Result<Self, TtlError> {
        self.default = self.check(default)?;
        Ok(self)
    }

    /// The longest TTL this policy signs.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The TTL to use for a request: the default if none, else the request if in bounds.
    pub fn resolve(&self, requested: Option<Duration>) -> Result<Duration, TtlError> {
        requested.map_or(Ok(self.default), |ttl| self.check(ttl))
    }

    fn check(&self, ttl: Duration) -> Result<Duration, TtlError> {
        if ttl < self.min || ttl > self.max {
            return Err(TtlError {
                requested: ttl,
                min: self.min,
                max: self.max,
            });
        }
        Ok(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn bounds() {
        let p = TtlPolicy::default();
        assert_eq!(p.resolve(None), Ok(DEFAULT_TTL));
        assert_eq!(p.resolve(Some(5 * MIN)), Ok(5 * MIN));
        assert_eq!(p.resolve(Some(24 * 60 * MIN)), Ok(24 * 60 * MIN));
        assert!(p.resolve(Some(4 * MIN)).is_err());
        assert!(
            p.resolve(Some(24 * 60 * MIN + Duration::from_secs(1)))
                .is_err()
        );
        let short = p.allow_short();
        assert_eq!(short.resolve(Some(MIN)), Ok(MIN));
        assert!(short.resolve(Some(Duration::from_secs(59))).is_err());
        assert!(p.with_default(2 * MIN).is_err());
        assert_eq!(
            short.with_default(2 * MIN).unwrap().resolve(None),
            Ok(2 * MIN)
        );
    }
}
