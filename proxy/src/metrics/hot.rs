//! The per-request series, resolved once: looking a labelled child up in its vector
//! hashes the label values and takes the vector's lock, which each request paid twice.
//! Here each `(direction, decision, status class)` counter and each direction's latency
//! histogram is looked up on first use and kept, so a request's count is an index and an
//! atomic add. The authorization counter, labelled by policy name, keeps the children it
//! looked up last ([`AUTHZ_RECENT`]) and finds one by comparing the name. A series still
//! appears in `/metrics` only once it was first counted.

use std::sync::{Mutex, OnceLock, PoisonError};

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use super::labels::{Decision, Direction};

/// The `status` label values, by [`status_index`].
const STATUS: [&str; 6] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    crate::request_log::CANCELLED,
];
const DIRECTIONS: usize = 2;
const DECISIONS: usize = 4;
/// Authorization counters kept, the last ones looked up in the vector (first in, first
/// out: a hit does not reorder them). The policies a proxy's requests are judged by in a
/// stretch of time are few (one, per connection, nearly always); any other is looked up
/// in the vector as before.
pub(super) const AUTHZ_RECENT: usize = 8;

/// The resolved children of `requests` and `request_duration`, and the recent ones of
/// `authz_decisions`.
#[derive(Debug)]
pub(super) struct HotSeries {
    requests: [OnceLock<IntCounter>; DIRECTIONS * DECISIONS * STATUS.len()],
    duration: [OnceLock<Histogram>; DIRECTIONS],
    /// The most recently looked up last.
    authz: Mutex<Vec<AuthzChild>>,
}

/// One `vigil_proxy_authz_decisions_total{direction, policy, decision}` child.
#[derive(Debug)]
struct AuthzChild {
    direction: Direction,
    decision: Decision,
    policy: Box<str>,
    counter: IntCounter,
}

impl Default for HotSeries {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| OnceLock::new()),
            duration: std::array::from_fn(|_| OnceLock::new()),
            authz: Mutex::default(),
        }
    }
}

impl HotSeries {
    /// `vigil_proxy_requests_total{direction, decision, status}`, `status` by
    /// [`status_index`].
    pub(super) fn request(
        &self,
        vec: &IntCounterVec,
        direction: Direction,
        decision: Decision,
        status: usize,
    ) -> &IntCounter {
        let i = (direction_index(direction) * DECISIONS + decision_index(decision)) * STATUS.len()
            + status;
        self.requests[i].get_or_init(|| {
            vec.with_label_values(&[direction.as_str(), decision.as_str(), STATUS[status]])
        })
    }

    /// `vigil_proxy_request_duration_seconds{direction}`.
    pub(super) fn duration(&self, vec: &HistogramVec, direction: Direction) -> &Histogram {
        self.duration[direction_index(direction)]
            .get_or_init(|| vec.with_label_values(&[direction.as_str()]))
    }

    /// Counts one decision in `vec` (`vigil_proxy_authz_decisions_total`).
    pub(super) fn count_authz(
        &self,
        vec: &IntCounterVec,
        direction: Direction,
        policy: &str,
        decision: Decision,
    ) {
        let mut recent = self.authz.lock().unwrap_or_else(PoisonError::into_inner);
        let found = recent.iter().rposition(|c| {
            c.direction == direction && c.decision == decision && *c.policy == *policy
        });
        match found {
            Some(i) => recent[i].counter.inc(),
            None => {
                let counter =
                    vec.with_label_values(&[direction.as_str(), policy, decision.as_str()]);
                counter.inc();
                if recent.len() == AUTHZ_RECENT {
                    recent.remove(0); // the least recently added
                }
                recent.push(AuthzChild {
                    direction,
                    decision,
                    policy: policy.into(),
                    counter,
                });
            }
        }
    }
}

/// The index of a status code's class in [`STATUS`]: `2xx` for 200–299 and so on, `5xx`
/// for anything outside 100–499.
pub(super) fn status_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The index of `cancelled` in [`STATUS`].
pub(super) const CANCELLED_INDEX: usize = 5;

/// The status class label of [`status_index`].
pub(super) fn status_label(index: usize) -> &'static str {
    STATUS[index]
}

const fn direction_index(d: Direction) -> usize {
    match d {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

const fn decision_index(d: Decision) -> usize {
    match d {
        Decision::Allow => 0,
        Decision::Deny => 1,
        Decision::Forward => 2,
        Decision::None => 3,
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{HistogramOpts, Opts};

    use super::*;

    /// Each decision lands in its own child, whether the child is among the recent ones or
    /// was evicted and looked up again; names that share a prefix stay apart.
    #[test]
    fn authz_decisions_are_counted_by_their_own_labels() {
        let authz =
            IntCounterVec::new(Opts::new("a", "a"), &["direction", "policy", "decision"]).unwrap();
        let hot = HotSeries::default();
        let mut want = std::collections::HashMap::<(Direction, String, Decision), u64>::new();
        let policies: Vec<String> = (0..AUTHZ_RECENT * 2 + 3)
            .map(|i| "p".repeat(i % 5 + 1) + &(i / 5).to_string())
            .collect();
        let mut seed = 7u64;
        for _ in 0..5_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (seed >> 33) as usize;
            // Mostly a few policies, now and then any of them (evicting the recent ones).
            let policy = &policies[if r.is_multiple_of(4) {
                r % policies.len()
            } else {
                r % 3
            }];
            let direction = [Direction::Inbound, Direction::Outbound][r / 7 % 2];
            let decision = [Decision::Allow, Decision::Deny, Decision::None][r / 11 % 3];
            hot.count_authz(&authz, direction, policy, decision);
            *want
                .entry((direction, policy.clone(), decision))
                .or_default() += 1;
        }
        for ((direction, policy, decision), n) in &want {
            let got = authz
                .with_label_values(&[direction.as_str(), policy, decision.as_str()])
                .get();
            assert_eq!(got, *n, "{direction:?} {policy} {decision:?}");
        }
        let families = prometheus::core::Collector::collect(&authz);
        assert_eq!(families[0].get_metric().len(), want.len());
        assert!(hot.authz.lock().unwrap().len() <= AUTHZ_RECENT);
    }

    #[test]
    fn each_series_is_its_own_labelled_child_and_appears_once_counted() {
        let requests =
            IntCounterVec::new(Opts::new("r", "r"), &["direction", "decision", "status"]).unwrap();
        let duration = HistogramVec::new(HistogramOpts::new("d", "d"), &["direction"]).unwrap();
        let hot = HotSeries::default();
        let (inb, out) = (Direction::Inbound, Direction::Outbound);
        hot.request(&requests, inb, Decision::Allow, status_index(204))
            .inc();
        hot.request(&requests, inb, Decision::Allow, status_index(200))
            .inc();
        hot.request(&requests, out, Decision::Forward, CANCELLED_INDEX)
            .inc();
        hot.request(&requests, inb, Decision::Deny, status_index(403))
            .inc();
        hot.request(&requests, out, Decision::None, status_index(99))
            .inc();
        hot.duration(&duration, out).observe(0.5);
        let get = |l: [&str; 3]| requests.with_label_values(&l).get();
        assert_eq!(get(["inbound", "allow", "2xx"]), 2);
        assert_eq!(get(["outbound", "forward", "cancelled"]), 1);
        assert_eq!(get(["inbound", "deny", "4xx"]), 1);
        assert_eq!(get(["outbound", "none", "5xx"]), 1);
        assert_eq!(get(["inbound", "deny", "2xx"]), 0);
        assert_eq!(
            duration.with_label_values(&["outbound"]).get_sample_count(),
            1
        );
        // Only what was counted is exported (plus the one read above at 0).
        let families = prometheus::core::Collector::collect(&requests);
        assert_eq!(families[0].get_metric().len(), 5);
        assert_eq!(
            prometheus::core::Collector::collect(&duration)[0]
                .get_metric()
                .len(),
            1
        );
        for (status, label) in [
            (100, "1xx"),
            (302, "3xx"),
            (499, "4xx"),
            (500, "5xx"),
            (600, "5xx"),
        ] {
            assert_eq!(status_label(status_index(status)), label);
        }
    }
}
