//! What a run measured.

use std::time::Duration;

use super::run::LoadSpec;

/// The outcome of one run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// Target rate (requests/s), `None` for closed loop.
    pub target_rate: Option<f64>,
    /// Completed 2xx requests per second in the measured window.
    pub achieved_rate: f64,
    /// 2xx requests measured.
    pub ok: u64,
    /// Failed requests (connect, HTTP, non-2xx) in the measured window.
    pub errors: u64,
    /// One of the errors, for the log.
    pub last_error: Option<String>,
    /// Latency percentiles in microseconds, from each request's intended send time.
    pub p50_us: u64,
    /// p90.
    pub p90_us: u64,
    /// p99.
    pub p99_us: u64,
    /// p99.9.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// The measured window, seconds.
    pub window_s: f64,
    /// Connections.
    pub conns: usize,
    /// Latency distribution for plots: (percentile, microseconds).
    pub percentiles: Vec<(f64, u64)>,
    /// The generator's own lateness (open loop), µs: how long after its intended time a
    /// request left when its lane was ready for it — p50 and p99 (0 in closed loop).
    /// Every path's latency includes it, so it bounds what a latency ratio can show.
    pub send_late_p50_us: u64,
    /// p99 of the same.
    pub send_late_p99_us: u64,
}

/// The p99 of the generator's own lateness above which an open-loop run is invalid: its
/// latencies would be the generator's, not the path's (direct's p50 is ~40 µs here).
pub const SEND_LATE_LIMIT_US: u64 = 100;

impl Report {
    pub(crate) fn new(
        spec: &LoadSpec,
        hist: hdrhistogram::Histogram<u64>,
        late: &hdrhistogram::Histogram<u64>,
        ok: u64,
        errors: u64,
        last_error: Option<String>,
        window: Duration,
    ) -> Self {
        let secs = window.as_secs_f64().max(1e-9);
        let q = |p: f64| hist.value_at_quantile(p);
        let percentiles = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0]
            .into_iter()
            .map(|p| (p * 100.0, q(p)))
            .collect();
        Self {
            target_rate: spec.rate,
            achieved_rate: ok as f64 / secs,
            ok,
            errors,
            last_error,
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: hist.max(),
            mean_us: hist.mean(),
            window_s: secs,
            conns: spec.conns,
            percentiles,
            send_late_p50_us: late.value_at_quantile(0.5),
            send_late_p99_us: late.value_at_quantile(0.99),
        }
    }

    /// A run is valid when nothing failed and, open loop, the achieved rate is within 1 %
    /// of the target (a generator that cannot keep up would hide the server's latency)
    /// and the generator sent on time (p99 of its own lateness within
    /// [`SEND_LATE_LIMIT_US`]).
    pub fn valid(&self) -> Result<(), String> {
        if self.errors > 0 {
            return Err(format!(
                "{} failed requests (e.g. {})",
                self.errors,
                self.last_error.as_deref().unwrap_or("?")
            ));
        }
        if let Some(target) = self.target_rate {
            let miss = (self.achieved_rate - target).abs() / target;
            if miss > 0.01 {
                return Err(format!(
                    "achieved {:.1} req/s against a target of {target:.1} ({:.1} % off; > 1 % makes the run invalid)",
                    self.achieved_rate,
                    miss * 100.0
                ));
            }
            if self.send_late_p99_us > SEND_LATE_LIMIT_US {
                return Err(format!(
                    "the generator sent late: p99 {} µs after the intended time (> {SEND_LATE_LIMIT_US} µs makes the run invalid; p50 {} µs)",
                    self.send_late_p99_us, self.send_late_p50_us
                ));
            }
        }
        Ok(())
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "{:.1} req/s (target {}), p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs, {} ok, {} errors, sent late p50 {} µs p99 {} µs",
            self.achieved_rate,
            self.target_rate
                .map_or("closed loop".to_string(), |r| format!("{r:.0}")),
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.ok,
            self.errors,
            self.send_late_p50_us,
            self.send_late_p99_us
        )
    }
}
