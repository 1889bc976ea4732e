//! Where the controller's resources come from, and the one loop that turns "something
//! changed" into a new index.
//!
//! ```text
//!   local: notify events ──┐                                  ┌─► index.replace ─► proxies
//!                          ├─► changes ─► debounce ─► load() ─┤
//!   k8s: reflector events ─┘                                  └─► source errors, metrics
//! ```
//!
//! A [`Source`] knows how to read everything it has now ([`Source::load`]); the local
//! policy directory (`local.rs`) and the Kubernetes API caches (`k8s/`) are the two. Each
//! signals changes on a channel; [`run`] waits for a burst of them to settle, loads and
//! [`publish`]es. The index keeps its generation when what it compiles did not change, so
//! a reload that changes nothing reaches no proxy.

use std::{sync::Arc, time::Duration};

use tokio::{sync::mpsc, time::Instant};
use vigil_index::Resources;
use vigil_policy::unix_now;

use crate::state::State;

/// A place resources come from.
pub trait Source: Send + 'static {
    /// What it is, for logs (`local policy directory`, `Kubernetes API`).
    const WHAT: &'static str;

    /// Everything it holds now, and what it had to reject.
    fn load(&mut self) -> Loaded;
}

/// What a [`Source`] read.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The resources.
    pub resources: Resources,
    /// Problems that rejected part of the input (a file, `file:line:column: message`),
    /// shown in `/status` and counted in `vigil_controller_source_errors`.
    pub errors: Vec<String>,
}

/// How long [`run`] lets a burst of changes settle before it loads.
#[derive(Clone, Copy, Debug)]
pub struct Debounce {
    /// Load once no change arrived for this long...
    pub quiet: Duration,
    /// ...but at the latest this long after the first change of a burst.
    pub max: Duration,
}

/// Replaces the index's resources with `loaded` and publishes the result.
pub fn publish(state: &State, loaded: Loaded) {
    state
        .metrics
        .source_errors
        .set(i64::try_from(loaded.errors.len()).unwrap_or(i64::MAX));
    *state
        .source_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = loaded.errors;
    state.index().replace(loaded.resources, unix_now());
    state.publish_generation();
}

/// Reloads `source` into `state` after each settled burst of `changes`, until the
/// sender goes away.
pub async fn run<S: Source>(
    mut source: S,
    mut changes: mpsc::UnboundedReceiver<()>,
    debounce: Debounce,
    state: Arc<State>,
) {
    while changes.recv().await.is_some() {
        let deadline = Instant::now() + debounce.max;
        loop {
            let wait = debounce
                .quiet
                .min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, changes.recv()).await {
                Ok(Some(())) if Instant::now() < deadline => {}
                Ok(None) => return,
                Ok(Some(())) | Err(_) => break,
            }
        }
        let before = state.index().generation();
        publish(&state, source.load());
        state.metrics.source_reloads.inc();
        let generation = state.index().generation();
        if generation == before {
            tracing::debug!(source = S::WHAT, generation, "reloaded; nothing changed");
        } else {
            tracing::info!(source = S::WHAT, generation, "reloaded; policy recompiled");
        }
    }
}
