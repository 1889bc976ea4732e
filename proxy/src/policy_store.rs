//! The policy in force, published on a `watch` channel.
//!
//! Whoever produces policy (the file loader here, the controller client in `control/`)
//! calls [`PolicyStore::apply`]; an invalid document is replaced by a deny-all policy
//! (fail closed) and reported loudly. Consumers read the current `Arc<Policy>` per request.

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

/// A policy file (file mode) and what was last read from it.
#[derive(Debug)]
pub struct PolicyFile {
    path: std::path::PathBuf,
    last: Option<Vec<u8>>,
}

/// "Cannot read the policy file" is logged at most every 5 s.
static UNREADABLE: crate::log_limit::LogLimit =
    crate::log_limit::LogLimit::new(std::time::Duration::from_secs(5));

impl PolicyFile {
    /// The file at `path` (nothing read yet).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            last: None,
        }
    }

    /// Reads the file and applies it to `store` when its content changed. Its content
    /// decides fail closed: a document that does not parse or compile is replaced by
    /// deny-all. Not being able to *read* it (descriptors exhausted, the file being
    /// replaced, gone) says nothing about the policy: the one in force stays (fail static)
    /// and the caller retries ([`crate::files::Reloaded::Retry`]).
    pub fn reload(&mut self, store: &PolicyStore) -> crate::files::Reloaded {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                if let Some(left_out) = UNREADABLE.allow() {
                    tracing::warn!(path = %self.path.display(), error = %e, left_out, loaded = store.is_loaded(), "cannot read the policy file; the policy in force stays (retrying)");
                }
                return crate::files::Reloaded::Retry;
            }
        };
        if self.last.as_deref() == Some(bytes.as_slice()) {
            return crate::files::Reloaded::Done;
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.last = Some(bytes);
        match parse_file(&self.path, &text) {
            Ok(model) => {
                if let Ok(p) = store.apply(model) {
                    tracing::info!(generation = p.generation(), path = %self.path.display(), "policy applied");
                }
            }
            Err(e) => store.apply_unparseable(e),
        }
        crate::files::Reloaded::Done
    }
}
