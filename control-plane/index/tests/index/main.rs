//! The index without any server: apply resources, take receivers, assert what each workload
//! would enforce (through the real evaluator). One test binary, a module per concern.

#![allow(clippy::unwrap_used)]

mod incremental;
mod outbound;
mod overlay;
mod policies;
mod quarantine;
mod support;
mod watch;
