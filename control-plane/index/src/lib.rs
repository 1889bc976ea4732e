//! The policy index: from resources to one compiled policy per workload.
//!
//! - [`resources`]: what sources feed in (CRDs, workloads, namespace metadata);
//! - [`mod@compile`]: resources -> a [`vigil_policy::ProxyPolicy`] per workload, plus a
//!   verdict (accepted / rejected with reason / targets) per resource;
//! - [`index`]: the live index: generations, a `watch` channel per workload, acks and
//!   status (an [`Acker`] records a stream's acks without the index lock). Sources call
//!   [`Index::apply`] / [`Index::delete`] / [`Index::replace`]; the gRPC server hands out
//!   [`Index::watch`] receivers. A change that touches only AccessPolicies recompiles
//!   those policies and the workloads they affect (`compile/incremental.rs`); anything
//!   else recompiles everything ([`compile()`], the reference the incremental path is
//!   tested against).
//!
//! No I/O and no Kubernetes client here: everything is testable synchronously.

mod acks;
mod change;
pub mod compile;
pub mod index;
mod publish;
pub mod resources;
pub mod selector;
mod sorted;

pub use acks::Acker;
pub use compile::{Compiled, Settings, Verdict, compile};
pub use index::{Index, Snapshot, WorkloadStatus};
pub use resources::{Kind, NamespaceMeta, ObjectKey, Resource, Resources, ServiceBackends};
