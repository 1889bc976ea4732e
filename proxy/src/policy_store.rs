//! The policy in force, published on a `watch` channel.
//!
//! Whoever produces policy (the file loader here, the controller client later) calls
//! [`PolicyStore::apply`]; an invalid document is replaced by a deny-all policy (fail
//! closed) and reported loudly. Consumers read the current `Arc<Policy>` per request.

use std::{path::Path, sync::Arc};

use tokio::sync::watch;
use vigil_policy::{Policy, ProxyPolicy};

/// Publishes the current policy.
#[derive(Debug)]
pub struct PolicyStore {
    tx: watch::Sender<Arc<Policy>>,
    loaded: watch::Sender<bool>,
}

impl PolicyStore {
    /// A store that denies everything until a policy is applied.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(Arc::new(Policy::deny_all(0, "no policy loaded yet"))),
            loaded: watch::Sender::new(false),
        }
    }

    /// Compiles and publishes `model`. An invalid model publishes a deny-all policy
    /// instead and returns the error.
    pub fn apply(&self, model: ProxyPolicy) -> Result<Arc<Policy>, vigil_policy::PolicyError> {
        let generation = model.generation;
        match Policy::compile(model) {
            Ok(p) => {
                let p = Arc::new(p);
                self.tx.send_replace(p.clone());
                self.loaded.send_replace(true);
                Ok(p)
            }
            Err(e) => {
                tracing::error!(error = %e, generation, "INVALID POLICY: denying all traffic until it is fixed");
                self.tx
                    .send_replace(Arc::new(Policy::deny_all(generation, e.to_string())));
                Err(e)
            }
        }
    }

    /// Like [`Self::apply`] for a document that could not even be parsed.
    pub fn apply_unparseable(&self, reason: String) {
        let generation = self.current().generation();
        tracing::error!(error = %reason, "INVALID POLICY: denying all traffic until it is fixed");
        self.tx
            .send_replace(Arc::new(Policy::deny_all(generation, reason)));
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Policy> {
        self.tx.borrow().clone()
    }

    /// Sees every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Policy>> {
        self.tx.subscribe()
    }

    /// True once a valid policy has been applied.
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }
}

impl Default for PolicyStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses a policy file: JSON if it looks like JSON, else YAML.
pub fn parse_file(path: &Path, text: &str) -> Result<ProxyPolicy, String> {
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    if is_json {
        serde_json::from_str(text).map_err(|e| format!("{}: {e}", path.display()))
    } else {
        serde_saphyr::from_str(text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Loads `path` into `store` (fail closed on any error).
pub fn load_file(store: &PolicyStore, path: &Path) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return store.apply_unparseable(format!("{}: {e}", path.display())),
    };
    match parse_file(path, &text) {
        Ok(model) => {
            if let Ok(p) = store.apply(model) {
                tracing::info!(generation = p.generation(), path = %path.display(), "policy applied");
            }
        }
        Err(e) => store.apply_unparseable(e),
    }
}
