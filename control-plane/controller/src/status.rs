//! The controller's status report (`/status` on the admin port; `vigil status` prints it).

use serde::{Deserialize, Serialize};

use crate::state::State;

/// Everything `vigil status` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Current policy generation.
    pub generation: u64,
    /// Trust domain.
    pub trust_domain: String,
    /// Issuer expiry (unix seconds).
    pub issuer_not_after: u64,
    /// Roots in the trust bundle.
    pub bundle_roots: usize,
    /// One line per workload.
    pub workloads: Vec<WorkloadReport>,
    /// One line per policy resource.
    pub resources: Vec<ResourceReport>,
    /// Files the local source currently rejects.
    pub source_errors: Vec<String>,
}

/// A workload and its proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadReport {
    /// `namespace/name`.
    pub workload: String,
    /// SPIFFE ID, if known.
    pub identity: Option<String>,
    /// Generation of its current snapshot.
    pub generation: u64,
    /// Generation its proxy last applied.
    pub applied: Option<u64>,
    /// Whether the proxy enforces the current snapshot.
    pub up_to_date: bool,
    /// Open policy streams (0 = its proxy is not connected).
    pub connected: usize,
    /// The proxy's certificate expiry (unix seconds), as it last reported.
    pub cert_not_after: Option<i64>,
}

/// A Segment, AccessPolicy or Quarantine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// Kind.
    pub kind: String,
    /// `namespace/name`.
    pub name: String,
    /// Accepted?
    pub accepted: bool,
    /// Why not, if not.
    pub reason: Option<String>,
    /// Non-fatal notes.
    pub warnings: Vec<String>,
    /// Workloads it applies to.
    pub targets: u32,
    /// How many of those have proxies enforcing the current generation.
    pub enforcing: u32,
}

impl StatusReport {
    /// Collects the report.
    pub fn collect(state: &State) -> Self {
        let (generation, workloads, resources) = {
            let ix = state.index();
            let connected = state
                .connected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let certs = state
                .cert_expiry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let workloads = ix
                .status()
                .into_iter()
                .map(|w| WorkloadReport {
                    workload: w.workload.to_string(),
                    identity: w.identity.map(|i| i.to_string()),
                    generation: w.generation,
                    applied: w.acked,
                    up_to_date: w.up_to_date,
                    connected: connected.get(&w.workload).copied().unwrap_or(0),
                    cert_not_after: certs.get(&w.workload).copied(),
                })
                .collect();
            let resources = ix
                .verdicts()
                .iter()
                .filter(|((k, _), _)| *k != vigil_index::Kind::Workload)
                .map(|((kind, key), v)| ResourceReport {
                    kind: kind.to_string(),
                    name: key.to_string(),
                    accepted: v.accepted.is_ok(),
                    reason: v.accepted.clone().err(),
                    warnings: v.warnings.clone(),
                    targets: u32::try_from(v.targets.len()).unwrap_or(u32::MAX),
                    enforcing: ix.enforcing(*kind, key),
                })
                .collect();
            (ix.generation(), workloads, resources)
        };
        let (td, issuer, roots) = {
            let ca = state.ca();
            let secs = ca
                .issuer_not_after()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            (
                ca.trust_domain().to_string(),
                secs,
                ca.bundle().roots().len(),
            )
        };
        Self {
            generation,
            trust_domain: td,
            issuer_not_after: issuer,
            bundle_roots: roots,
            workloads,
            resources,
            source_errors: state
                .source_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}
