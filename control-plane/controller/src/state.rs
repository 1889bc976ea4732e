//! State shared by the controller's servers and background tasks.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::watch;
use vigil_cert_authority::{CertificateAuthority, SpiffeId, TrustBundle, creds::Credentials};
use vigil_index::{Index, ObjectKey};

use crate::metrics::Metrics;

/// Everything the servers share.
pub struct State {
    /// The policy index.
    pub index: Mutex<Index>,
    /// The certificate authority.
    pub ca: Mutex<CertificateAuthority>,
    /// The trust bundle, published to every policy stream.
    pub bundle: watch::Sender<TrustBundle>,
    /// The controller's own credentials (its gRPC server certificate).
    pub creds: watch::Sender<Arc<Credentials>>,
    /// This controller's SPIFFE ID.
    pub identity: SpiffeId,
    /// Metrics.
    pub metrics: Metrics,
    /// TTL for workload SVIDs (None = the CA's default).
    pub svid_ttl: Option<std::time::Duration>,
    /// Open policy streams per workload.
    pub connected: Mutex<BTreeMap<ObjectKey, usize>>,
    /// Certificate expiry each proxy last reported.
    pub cert_expiry: Mutex<BTreeMap<ObjectKey, i64>>,
    /// What the source currently rejects (`file:line:column: message`), see
    /// [`crate::source::publish`].
    pub source_errors: Mutex<Vec<String>>,
    /// Cancelled when the controller stops: open policy streams end, so proxies notice and
    /// reconnect (to this controller's successor) instead of hanging on a dead one.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl State {
    /// The index (poisoning is ignored: the index is always left consistent).
    pub fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The CA.
    pub fn ca(&self) -> MutexGuard<'_, CertificateAuthority> {
        self.ca.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an open policy stream for `workload`; the guard uncounts it.
    pub fn connect(self: &Arc<Self>, workload: ObjectKey) -> ConnectedGuard {
        *self
            .connected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(workload.clone())
            .or_default() += 1;
        self.metrics.connected.inc();
        ConnectedGuard {
            state: self.clone(),
            workload,
        }
    }

    /// Publishes the index generation gauge.
    pub fn publish_generation(&self) {
        let g = self.index().generation();
        self.metrics
            .generation
            .set(i64::try_from(g).unwrap_or(i64::MAX));
    }
}

/// Uncounts a policy stream when dropped.
pub struct ConnectedGuard {
    state: Arc<State>,
    workload: ObjectKey,
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        let mut c = self
            .state
            .connected
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.workload) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.workload);
            }
        }
        self.state.metrics.connected.dec();
    }
}

pub use vigil_policy::unix_now;
