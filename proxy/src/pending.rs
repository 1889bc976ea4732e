//! Bounds on connections that have not finished their handshake yet: per listener and per
//! source address. A client that opens connections and stalls after its first bytes
//! (a TLS ClientHello, say) holds a file descriptor each for up to the handshake timeout;
//! without a bound, enough of them exhaust the process's descriptors and nothing else —
//! not the admin port, not a policy reload — can open a file. Past either bound a new
//! connection is closed at once and counted (`vigil_proxy_rejected_total{reason}`
//! `pending_handshakes` / `pending_per_source`).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of one listener.
#[derive(Debug)]
pub(crate) struct PendingLimits {
    total: Arc<Semaphore>,
    per_source: usize,
    by_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place among the pending ones; released by dropping it (when the
/// handshake is done, or the connection ends).
#[derive(Debug)]
pub(crate) struct Pending {
    _total: OwnedSemaphorePermit,
    source: IpAddr,
    by_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Which bound refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The listener's.
    Total,
    /// The source address's.
    PerSource,
}

impl Refused {
    /// The `reason` label.
    pub(crate) fn label(self) -> crate::metrics::labels::Rejected {
        use crate::metrics::labels::Rejected;
        match self {
            Self::Total => Rejected::PendingHandshakes,
            Self::PerSource => Rejected::PendingPerSource,
        }
    }
}

// === impl PendingLimits ===

impl PendingLimits {
    pub(crate) fn new(total: usize, per_source: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_source,
            by_source: Arc::default(),
        }
    }

    /// A place for a new connection from `source`, if both bounds allow it.
    pub(crate) fn admit(&self, source: IpAddr) -> Result<Pending, Refused> {
        let mut by_source = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = by_source.entry(source).or_insert(0);
        if *n >= self.per_source {
            return Err(Refused::PerSource);
        }
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Total)?;
        *n += 1;
        Ok(Pending {
            _total: permit,
            source,
            by_source: self.by_source.clone(),
        })
    }
}

// === impl Pending ===

impl Drop for Pending {
    fn drop(&mut self) {
        let mut by_source = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn bounds_per_source_and_in_total_and_frees_on_drop() {
        let l = PendingLimits::new(3, 2);
        let a1 = l.admit(ip("10.0.0.1"));
        let a2 = l.admit(ip("10.0.0.1"));
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(l.admit(ip("10.0.0.1")).err(), Some(Refused::PerSource));
        let b1 = l.admit(ip("10.0.0.2"));
        assert!(b1.is_ok());
        assert_eq!(
            l.admit(ip("10.0.0.3")).err(),
            Some(Refused::Total),
            "three pending in total"
        );
        drop(a1);
        assert!(l.admit(ip("10.0.0.3")).is_ok(), "a freed place is reusable");
        drop((a2, b1));
        assert!(
            l.by_source.lock().map(|m| m.len() <= 1).unwrap_or(false),
            "sources with nothing pending are forgotten"
        );
    }
}
