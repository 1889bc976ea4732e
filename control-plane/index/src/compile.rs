//! Resources -> one [`ProxyPolicy`] per workload.
//!
//! ```text
//!   Workload ── identity spiffe://<td>/ns/<ns>/sa/<sa>, labels, addresses
//!   Segment  ── members: workloads matching its selectors
//!   AccessPolicy ── targets (segment / pod selector) x sources (segment members, IDs,
//!                   namespaces, service accounts, (un)authenticated, CIDRs) x rules
//!                   -> rules in each target's `inbound`
//!   Quarantine ── members -> `quarantined: true` on them, their identities revoked everywhere
//!   outbound ── for each workload, the destinations whose policy admits it
//!   addresses ── every workload address -> its identity (on-demand discovery, so a call
//!                to a mesh workload outside the table still goes over mTLS)
//!   services ── ClusterIP:port -> the identities of its backends (services.rs)
//! ```
//!
//! One step per concern, in this order (each file says what it owns): `workloads`
//! (identities, the label index, assembly), `segments`, `quarantine`, `policies`
//! (targets, rejected deny policies) with `translate` (one AccessPolicy in the proxy's
//! model), then `outbound` (destination tables with `reachability` and `services`, and
//! the address table).
//!
//! [`compile`] is the reference: everything from the resources. When only AccessPolicies
//! changed, `incremental` recompiles those policies and the workloads they touch from
//! what the last compile kept ([`Compiled`]'s cache); the index's tests check, over
//! random sequences of changes, that both give the same result.
//!
//! A policy that does not compile is rejected (its status says why) — and if it is a
//! **deny** policy, its targets get a deny-all rule in its place, because silently dropping
//! a deny would open what it was meant to close (fail closed).

use std::collections::{BTreeMap, BTreeSet};

use vigil_cert_authority::{SpiffeId, TrustDomain};
use vigil_policy::model::{DefaultPolicy, Destination, ProxyPolicy};

use crate::resources::{Kind, ObjectKey, Resources};

mod incremental;
mod outbound;
mod policies;
mod quarantine;
mod reachability;
mod segments;
mod services;
mod translate;
mod workloads;

/// Controller-wide settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Trust domain of every identity.
    pub trust_domain: TrustDomain,
    /// Default policy where neither workload nor namespace says.
    pub default_policy: DefaultPolicy,
    /// Whether traffic to non-mesh destinations passes through, where the workload does not say.
    pub egress_passthrough: bool,
}

/// What compiling produced.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// Policy per workload (generation 0; the index assigns generations).
    pub workloads: BTreeMap<ObjectKey, CompiledWorkload>,
    /// Verdict per resource.
    pub verdicts: BTreeMap<(Kind, ObjectKey), Verdict>,
    /// The next time (unix seconds) a validity window opens or closes.
    pub next_change: Option<u64>,
    /// Every workload address, to the destination it is (answers `Policy.Resolve`).
    pub addresses: BTreeMap<std::net::SocketAddr, Destination>,
    /// What the incremental path reuses.
    pub(crate) cache: Cache,
}

/// Intermediate results of the last compile that an AccessPolicy change leaves as they
/// are (see `incremental.rs`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Cache {
    /// Set by a full compile: the rest is valid.
    pub(crate) ready: bool,
    /// The `now` the parts were compiled at.
    pub(crate) at: u64,
    /// Each policy's part.
    pub(crate) parts: BTreeMap<ObjectKey, policies::PolicyPart>,
    /// Each workload's identity (those that have one).
    pub(crate) identities: BTreeMap<ObjectKey, SpiffeId>,
    /// Each segment's members.
    pub(crate) segments: BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Who may reach whom.
    pub(crate) reachability: reachability::Reachability,
    /// The services' destinations, by backend.
    pub(crate) service_dests: BTreeMap<ObjectKey, Vec<Destination>>,
}

/// One workload's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledWorkload {
    /// Its identity.
    pub identity: SpiffeId,
    /// Its policy.
    pub policy: ProxyPolicy,
}

/// Accepted or not, and what it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `Err(reason)` if rejected.
    pub accepted: Result<(), String>,
    /// Notes for the operator that do not reject (e.g. an unknown segment).
    pub warnings: Vec<String>,
    /// Workloads it applies to.
    pub targets: BTreeSet<ObjectKey>,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            accepted: Ok(()),
            warnings: Vec::new(),
            targets: BTreeSet::new(),
        }
    }
}

/// Compiles every resource at time `now` (unix seconds).
pub fn compile(res: &Resources, settings: &Settings, now: u64) -> Compiled {
    let mut out = Compiled::default();
    let ids = workloads::identities(res, &settings.trust_domain, &mut out.verdicts);
    let infos = workloads::infos(res, &ids);
    let pods = workloads::PodIndex::new(&infos);
    let segments = segments::members(res, &pods, &mut out.verdicts);
    let quarantined = quarantine::members(res, &infos, &mut out.verdicts);
    let revoked = quarantine::revoked(&quarantined, &infos);
    let inputs = policies::Inputs {
        td: &settings.trust_domain,
        pods: &pods,
        infos: &infos,
        segments: &segments,
    };
    let inbound = policies::inbound_rules(res, &inputs, now, &mut out);
    out.workloads = workloads::assemble(res, settings, &infos, inbound, &quarantined, &revoked);
    outbound::destinations(res, &infos, &mut out);
    outbound::addresses(&infos, &mut out);
    drop(infos);
    out.cache.identities = ids;
    out.cache.segments = segments;
    out.cache.at = now;
    out.cache.ready = true;
    out
}

pub(crate) use incremental::policies_changed;
