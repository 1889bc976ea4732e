//! What a proxy's acknowledgement records — the one place for `Policy.Ack` and the acks
//! on a `Policy.Sync` stream alike: the propagation time (if the generation is the
//! workload's current one and the proxy could apply it), the applied-generation gauge,
//! the proxy's certificate expiry (for status), and a loud log line for a snapshot the
//! proxy could not apply.
//!
//! A Sync stream keeps one [`Acks`] for its life, so an ack there costs no index lock (it
//! records through the workload's [`Acker`]: a change holds that lock for tens of
//! milliseconds at 10,000 workloads, and acks waiting on it stalled the runtime's
//! threads) and no allocation beyond decoding it: the gauge's label is resolved at its first ack,
//! and the expiry map is written only when the reported expiry changes (after a
//! renewal). A unary Ack builds its `Acks` per call (label, map write, as before).

use prometheus::IntGauge;
use vigil_api::pb;
use vigil_index::{Acker, ObjectKey};

use crate::state::State;

/// Records one workload's acks (its caller was authorized for it).
pub(super) struct Acks {
    key: ObjectKey,
    /// The workload's acker, on a Sync stream (a unary Ack goes through the index).
    acker: Option<Acker>,
    /// `vigil_controller_proxy_applied_generation{workload=key}`, from the first ack on
    /// (a stream refused or closed before any ack writes no gauge).
    applied: Option<IntGauge>,
    /// The certificate expiry this recorder last wrote to `State::cert_expiry`. Nothing
    /// else removes or writes the workload's entry but another stream or unary ack for the
    /// same workload, which writes its own (current) value.
    cert_not_after: Option<i64>,
}

impl Acks {
    /// For one unary Ack.
    pub(super) fn new(key: ObjectKey) -> Self {
        Self {
            key,
            acker: None,
            applied: None,
            cert_not_after: None,
        }
    }

    /// For the acks of one Sync stream.
    pub(super) fn on_stream(key: ObjectKey, acker: Acker) -> Self {
        Self {
            acker: Some(acker),
            ..Self::new(key)
        }
    }

    /// Records `ack` (whose workload the caller has checked is this recorder's).
    pub(super) fn record(&mut self, state: &State, ack: &pb::AckRequest) {
        if !ack.valid {
            tracing::error!(workload = %self.key, generation = ack.generation, error = %ack.error, "proxy could not apply its policy (it denies all affected traffic)");
        }
        // A snapshot the proxy could not apply is not "enforced".
        let latency = match &self.acker {
            _ if !ack.valid => None,
            Some(acker) => acker.ack(ack.generation),
            None => state.index().ack(&self.key, ack.generation),
        };
        if let Some(d) = latency {
            state.metrics.propagation.observe(d.as_secs_f64());
        }
        self.applied
            .get_or_insert_with(|| {
                state
                    .metrics
                    .applied
                    .with_label_values(&[&self.key.to_string()])
            })
            .set(i64::try_from(ack.generation).unwrap_or(i64::MAX));
        if self.cert_not_after != Some(ack.cert_not_after_unix) {
            state
                .cert_expiry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.key.clone(), ack.cert_not_after_unix);
            self.cert_not_after = Some(ack.cert_not_after_unix);
        }
    }
}
