//! Prometheus metrics. Every label has a bounded set of values: the typed ones of
//! [`labels`] (directions, decisions, rejections, close reasons, flows), status classes,
//! protocol names, TLS failure reasons from a fixed list ([`crate::tls_errors`]), and
//! policy names (bounded by the number of policies that apply to this workload).
//!
//! Counters are private: code records through the methods below, which take those types.

mod hot;
pub mod labels;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use self::{
    hot::HotSeries,
    labels::{Closed, Decision, Direction, Flow, Rejected},
};

/// All of the proxy's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Connections closed since the process started (what a burst leaves behind is
    /// judged by it: [`crate::memory`]).
    closed_connections: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// `vigil_proxy_requests_total{direction, decision, status}`.
    requests: IntCounterVec,
    /// `vigil_proxy_request_duration_seconds{direction}`.
    request_duration: HistogramVec,
    /// The children of the two above, resolved on first use.
    hot: std::sync::Arc<HotSeries>,
    /// `vigil_proxy_authz_decisions_total{direction, policy, decision}`.
    authz: IntCounterVec,
    /// `vigil_proxy_authz_audit_total{policy, would}` ("would deny"/"would allow").
    audit: IntCounterVec,
    /// `vigil_proxy_tls_handshakes_total{direction, result}`.
    tls_handshakes: IntCounterVec,
    /// `vigil_proxy_tls_handshake_failures_total{direction, reason}`.
    tls_failures: IntCounterVec,
    /// `vigil_proxy_tls_resumed_total{direction}`: successful handshakes that resumed.
    tls_resumed: IntCounterVec,
    /// `vigil_proxy_tls_negotiated_total{cipher_suite, kx_group}`: successful inbound
    /// handshakes by what they negotiated (names as `--tls-cipher-suites` and
    /// `--tls-groups` spell them). Every mesh connection has one inbound end, so the mesh's
    /// sum counts each connection once.
    tls_negotiated: IntCounterVec,
    /// `vigil_proxy_connections_total{direction, protocol}`.
    connections: IntCounterVec,
    /// `vigil_proxy_open_connections{direction}`.
    open_connections: IntGaugeVec,
    /// `vigil_proxy_connections_closed_total{direction, reason}` (revoked, policy, drain...).
    closed: IntCounterVec,
    /// `vigil_proxy_bytes_total{direction, flow}` (`flow` = `rx` from the peer, `tx` to it).
    bytes: IntCounterVec,
    /// `vigil_proxy_cert_expiry_timestamp_seconds`.
    pub cert_expiry: IntGauge,
    /// `vigil_proxy_policy_generation`.
    pub policy_generation: IntGauge,
    /// `vigil_proxy_rejected_total{direction, reason}`: refused before authorization
    /// (malformed HTTP, ambiguous path, connection limit, plaintext refused...).
    rejected: IntCounterVec,
    /// Per-request metrics on (`--request-metrics`): [`Self::record_request`] and
    /// [`Self::record_authz`] do nothing when off.
    per_request: bool,
}

impl Metrics {
    /// Registers every metric (plus process metrics: RSS, CPU, fds); `per_request` turns
    /// the per-request ones on.
    pub fn new(per_request: bool) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| bad_metric(name, e));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| bad_metric(name, e));
            c
        };
        let requests = counter(
            "vigil_proxy_requests_total",
            "HTTP requests by direction, authorization decision and response status class",
            &["direction", "decision", "status"],
        );
        let authz = counter(
            "vigil_proxy_authz_decisions_total",
            "Authorization decisions by deciding policy (or default/quarantine/revoked)",
            &["direction", "policy", "decision"],
        );
        let audit = counter(
            "vigil_proxy_authz_audit_total",
            "Audit-mode findings: decisions audit rules would have changed",
            &["policy", "would"],
        );
        let tls_handshakes = counter(
            "vigil_proxy_tls_handshakes_total",
            "mTLS handshakes by direction and result",
            &["direction", "result"],
        );
        let tls_failures = counter(
            "vigil_proxy_tls_handshake_failures_total",
            "Failed mTLS handshakes by reason",
            &["direction", "reason"],
        );
        let tls_resumed = counter(
            "vigil_proxy_tls_resumed_total",
            "Successful mTLS handshakes that resumed an earlier session (also counted as successes)",
            &["direction"],
        );
        let tls_negotiated = counter(
            "vigil_proxy_tls_negotiated_total",
            "Successful inbound mTLS handshakes by negotiated cipher suite and key-exchange group",
            &["cipher_suite", "kx_group"],
        );
        let connections = counter(
            "vigil_proxy_connections_total",
            "Accepted connections by direction and detected protocol",
            &["direction", "protocol"],
        );
        let closed = counter(
            "vigil_proxy_connections_closed_total",
            "Connections closed by the proxy, by reason",
            &["direction", "reason"],
        );
        let bytes = counter(
            "vigil_proxy_bytes_total",
            "Bytes proxied, by direction and flow (rx from the peer, tx to it)",
            &["direction", "flow"],
        );
        let rejected = counter(
            "vigil_proxy_rejected_total",
            "Traffic refused before authorization, by reason",
            &["direction", "reason"],
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "vigil_proxy_request_duration_seconds",
                "HTTP request latency through the proxy (until response headers)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["direction"],
        )
        .unwrap_or_else(|e| bad_metric("duration", e));
        registry
            .register(Box::new(request_duration.clone()))
            .unwrap_or_else(|e| bad_metric("duration", e));
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "vigil_proxy_open_connections",
                "Open connections by direction",
            ),
            &["direction"],
        )
        .unwrap_or_else(|e| bad_metric("open", e));
        registry
            .register(Box::new(open_connections.clone()))
            .unwrap_or_else(|e| bad_metric("open", e));
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|e| bad_metric(name, e));
            registry
                .register(Box::new(g.clone()))
                .unwrap_or_else(|e| bad_metric(name, e));
            g
        };
        let cert_expiry = gauge(
            "vigil_proxy_cert_expiry_timestamp_seconds",
            "Expiry of the current workload certificate (unix seconds)",
        );
        let policy_generation = gauge(
            "vigil_proxy_policy_generation",
            "Generation of the policy in force",
        );
        // Process metrics (RSS, CPU, open fds) are what B8 measures; failure to register
        // them only costs those metrics.
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Self {
            registry,
            requests,
            request_duration,
            hot: std::sync::Arc::default(),
            authz,
            audit,
            tls_handshakes,
            tls_failures,
            tls_resumed,
            tls_negotiated,
            connections,
            open_connections,
            closed_connections: std::sync::Arc::default(),
            closed,
            bytes,
            cert_expiry,
            policy_generation,
            rejected,
            per_request,
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Counts one HTTP request and observes its latency.
    pub fn record_request(
        &self,
        direction: Direction,
        decision: Decision,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        if !self.per_request {
            return;
        }
        self.count_request(direction, decision, hot::status_index(status), elapsed);
    }

    /// Counts one request the client abandoned before its response head
    /// (`status="cancelled"`).
    pub fn record_cancelled(
        &self,
        direction: Direction,
        decision: Decision,
        elapsed: std::time::Duration,
    ) {
        if !self.per_request {
            return;
        }
        self.count_request(direction, decision, hot::CANCELLED_INDEX, elapsed);
    }

    fn count_request(
        &self,
        direction: Direction,
        decision: Decision,
        status: usize,
        elapsed: std::time::Duration,
    ) {
        self.hot
            .request(&self.requests, direction, decision, status)
            .inc();
        self.hot
            .duration(&self.request_duration, direction)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one authorization decision of `policy` (a policy name or a fixed word).
    /// Requests are counted when per-request metrics are on; connections always.
    pub fn record_authz(&self, direction: Direction, policy: &str, decision: Decision, of: Judged) {
        if self.per_request || of == Judged::Connection {
            self.hot
                .count_authz(&self.authz, direction, policy, decision);
        }
    }

    /// Counts an audit finding: what audit-mode rules `would` have decided, by `policy`.
    pub fn record_audit(&self, policy: &str, would_allow: bool) {
        let would = if would_allow {
            "would_allow"
        } else {
            "would_deny"
        };
        self.audit.with_label_values(&[policy, would]).inc();
    }

    /// Counts traffic refused before (or instead of) authorization.
    pub fn reject(&self, direction: Direction, reason: Rejected) {
        self.rejected
            .with_label_values(&[direction.as_str(), reason.as_str()])
            .inc();
    }

    /// Counts a connection the proxy closed.
    pub fn close(&self, direction: Direction, reason: Closed) {
        self.closed
            .with_label_values(&[direction.as_str(), reason.as_str()])
            .inc();
    }

    /// Counts an accepted connection by the protocol detected on it.
    pub fn connection(&self, direction: Direction, protocol: crate::detect::Proto) {
        self.connections
            .with_label_values(&[direction.as_str(), protocol.as_str()])
            .inc();
    }

    /// Counts a finished mTLS handshake; a failure with its reason
    /// ([`crate::tls_errors::reason`], `no_credentials`, `timeout`).
    pub fn handshake(&self, direction: Direction, failure: Option<&'static str>) {
        let result = if failure.is_some() {
            "failure"
        } else {
            "success"
        };
        self.tls_handshakes
            .with_label_values(&[direction.as_str(), result])
            .inc();
        if let Some(reason) = failure {
            self.tls_failures
                .with_label_values(&[direction.as_str(), reason])
                .inc();
        }
    }

    /// Counts a successful handshake that resumed a session (after [`Self::handshake`]).
    pub fn resumed(&self, direction: Direction) {
        self.tls_resumed
            .with_label_values(&[direction.as_str()])
            .inc();
    }

    /// Counts what a successful inbound handshake negotiated (after [`Self::handshake`]).
    pub fn negotiated(&self, conn: &rustls::CommonState) {
        use vigil_cert_authority::tls;
        let suite = (conn.negotiated_cipher_suite())
            .and_then(|s| tls::name_of_suite(s.suite()))
            .unwrap_or("other");
        let group = (conn.negotiated_key_exchange_group())
            .and_then(|g| tls::name_of_group(g.name()))
            .unwrap_or("other");
        self.tls_negotiated.with_label_values(&[suite, group]).inc();
    }

    /// Counts a handshake that could not start (`no_credentials`): a failure reason
    /// without a handshake.
    pub fn tls_unavailable(&self, direction: Direction, reason: &'static str) {
        self.tls_failures
            .with_label_values(&[direction.as_str(), reason])
            .inc();
    }

    /// Adds proxied bytes.
    pub fn bytes(&self, direction: Direction, flow: Flow, n: u64) {
        self.bytes
            .with_label_values(&[direction.as_str(), flow.as_str()])
            .inc_by(n);
    }

    /// Connections closed since start, both directions.
    pub fn closed_total(&self) -> u64 {
        self.closed_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An open-connection guard: increments now, decrements on drop.
    pub fn open(&self, direction: Direction) -> OpenGuard {
        let g = self
            .open_connections
            .with_label_values(&[direction.as_str()]);
        g.inc();
        OpenGuard(g, self.closed_connections.clone())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(true)
    }
}

/// What an authorization decision was about (see [`Metrics::record_authz`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    /// One HTTP request.
    Request,
    /// An opaque connection (or its re-check).
    Connection,
}

/// Decrements the open-connection gauge when dropped.
#[derive(Debug)]
pub struct OpenGuard(IntGauge, std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Status class label: `2xx`, `4xx`, ...
pub fn status_class(status: u16) -> &'static str {
    hot::status_label(hot::status_index(status))
}

#[allow(clippy::panic)]
fn bad_metric(name: &str, e: prometheus::Error) -> ! {
    // Only reachable through a programming error in the definitions above.
    panic!("metric {name} is malformed: {e}")
}
