//! The controller's Prometheus metrics (labels bounded by workloads and fixed reasons).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every controller metric.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// `vigil_controller_connected_proxies`: open policy streams.
    pub connected: IntGauge,
    /// `vigil_controller_policy_generation`.
    pub generation: IntGauge,
    /// `vigil_controller_proxy_applied_generation{workload}`.
    pub applied: IntGaugeVec,
    /// `vigil_controller_propagation_seconds`: snapshot published -> acknowledged.
    pub propagation: Histogram,
    /// `vigil_controller_certificates_issued_total{kind}` (bootstrap, renewal).
    pub issued: IntCounterVec,
    /// `vigil_controller_certificate_requests_refused_total{reason}`.
    pub refused: IntCounterVec,
    /// `vigil_controller_issuer_expiry_timestamp_seconds`.
    pub issuer_expiry: IntGauge,
    /// `vigil_controller_source_errors`: files currently rejected.
    pub source_errors: IntGauge,
    /// `vigil_controller_source_reloads_total`: times the source (the local policy
    /// directory, or the Kubernetes API caches) was re-read because something in it changed.
    pub source_reloads: IntCounter,
    /// `vigil_controller_policy_watch_refused_total{reason}`.
    pub watch_refused: IntCounterVec,
    /// `vigil_controller_resolves_total{result}`: `Policy.Resolve` answers (`mesh`,
    /// `not_mesh`).
    pub resolves: IntCounterVec,
}

impl Metrics {
    /// Registers everything.
    pub fn new() -> Self {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.unwrap_or_else(|e| bad_metric(e));
                registry
                    .register(Box::new(m.clone()))
                    .unwrap_or_else(|e| bad_metric(e));
                m
            }};
        }
        let connected = reg!(IntGauge::new(
            "vigil_controller_connected_proxies",
            "Proxies with an open policy stream"
        ));
        let generation = reg!(IntGauge::new(
            "vigil_controller_policy_generation",
            "Current policy generation"
        ));
        let applied = reg!(IntGaugeVec::new(
            Opts::new(
                "vigil_controller_proxy_applied_generation",
                "Generation each workload's proxy last applied"
            ),
            &["workload"]
        ));
        let propagation = reg!(Histogram::with_opts(
            HistogramOpts::new(
                "vigil_controller_propagation_seconds",
                "Time from publishing a workload's snapshot to its proxy acknowledging it"
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
            ])
        ));
        let issued = reg!(IntCounterVec::new(
            Opts::new("vigil_controller_certificates_issued_total", "SVIDs issued"),
            &["kind"]
        ));
        let refused = reg!(IntCounterVec::new(
            Opts::new(
                "vigil_controller_certificate_requests_refused_total",
                "Certify requests refused, by reason"
            ),
            &["reason"]
        ));
        let issuer_expiry = reg!(IntGauge::new(
            "vigil_controller_issuer_expiry_timestamp_seconds",
            "Expiry of the current issuer certificate (unix seconds)"
        ));
        let source_errors = reg!(IntGauge::new(
            "vigil_controller_source_errors",
            "Policy files currently rejected"
        ));
        let source_reloads = reg!(IntCounter::new(
            "vigil_controller_source_reloads_total",
            "Times the policy source (directory or Kubernetes caches) was re-read after a change in it"
        ));
        let watch_refused = reg!(IntCounterVec::new(
            Opts::new(
                "vigil_controller_policy_watch_refused_total",
                "Policy service calls (Watch, Ack, Resolve) refused, by reason"
            ),
            &["reason"]
        ));
        let resolves = reg!(IntCounterVec::new(
            Opts::new(
                "vigil_controller_resolves_total",
                "Policy.Resolve answers: mesh (a workload serves the address) or not_mesh"
            ),
            &["result"]
        ));
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Self {
            registry,
            connected,
            generation,
            applied,
            propagation,
            issued,
            refused,
            issuer_expiry,
            source_errors,
            source_reloads,
            watch_refused,
            resolves,
        }
    }

    /// Text exposition.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(clippy::panic)]
fn bad_metric(e: prometheus::Error) -> ! {
    panic!("malformed metric definition: {e}")
}
