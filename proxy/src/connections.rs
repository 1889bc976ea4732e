//! The connection manager: one registry of the live connections whose right to stay
//! open depends on policy, each with what it must be re-checked against, and one task
//! that re-checks them all when policy, revocation or quarantine changes.
//!
//! ```text
//! handler ── track(recheck, judged under P) ──► registry ◄── one watcher: on every new policy,
//!    ▲                                             │         check each entry; a reason closes it
//!    └────── Live::closed() resolves with it ◄─────┘
//! ```
//!
//! A connection is registered with the policy its decision was made under: if another
//! policy is already in force when it registers, it is checked against that one at once,
//! so a change that lands between a decision and the registration is never missed. The
//! entry leaves the registry when its [`Live`] handle drops (the connection ended).
//!
//! What is re-checked ([`Recheck`]) is the class of connection, not the code path that
//! opened it: inbound HTTP connections by their peer, inbound opaque connections and
//! upgraded tunnels by the decision that let them in ([`crate::authz::Judged`]), outbound
//! connections by this workload's quarantine, mesh connections by the server's identity,
//! and plaintext passthrough by the policy's egress switch.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use tokio::sync::{Notify, watch};
use vigil_cert_authority::svid::SvidInfo;
use vigil_policy::Policy;

use crate::{
    authz::{Judged, peer_closes},
    metrics::labels::Closed,
    shared::Source,
};

/// The registry (cheap to clone; clones share it).
#[derive(Clone, Debug)]
pub struct Connections {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    policy: watch::Receiver<Arc<Policy>>,
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Entry>>>,
}

/// One live connection: what it is re-checked against, and why it must close once it
/// must. One allocation per connection, shared by the registry and the [`Live`] handle.
#[derive(Debug)]
struct Entry {
    recheck: Recheck,
    /// Set once, when the connection must close.
    reason: OnceLock<Closed>,
    /// Wakes [`Entry::closed`] when `reason` is set.
    closing: Notify,
}

/// What a live connection is re-checked against.
#[derive(Debug)]
pub(crate) enum Recheck {
    /// An inbound HTTP connection (each request is judged on its own): closes on
    /// quarantine or when the peer's certificate is revoked.
    Peer(Source),
    /// An inbound opaque connection or upgraded tunnel: closes when the decision that let
    /// it in, made again, is a deny (or on quarantine, or revocation of the peer).
    Decision(Box<Judged>),
    /// Outbound traffic of the app: closes when this workload is quarantined.
    Quarantine,
    /// A mesh connection to a server: closes on quarantine or when the server's
    /// certificate is revoked.
    Server(SvidInfo),
    /// Plaintext passthrough: closes when policy turns passthrough off.
    Passthrough,
}

/// A registered connection. Dropping it unregisters the connection.
#[derive(Debug)]
pub struct Live {
    id: u64,
    inner: Arc<Inner>,
    entry: Arc<Entry>,
}

// === impl Connections ===

impl Connections {
    /// A registry over the policy in force; [`Self::watch`] must run for changes to be
    /// checked.
    pub fn new(policy: watch::Receiver<Arc<Policy>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy,
                next: AtomicU64::new(0),
                live: Mutex::default(),
            }),
        }
    }

    /// Registers a connection whose decision was made under `judged`.
    pub(crate) fn track(&self, recheck: Recheck, judged: &Arc<Policy>) -> Live {
        self.register(recheck, Some(judged))
    }

    /// Registers a connection judged under the policy in force now: only later changes
    /// are checked.
    pub(crate) fn track_now(&self, recheck: Recheck) -> Live {
        let now = self.inner.policy.borrow().clone();
        self.register(recheck, Some(&now))
    }

    /// Registers a connection whose decision was made under a policy the caller no
    /// longer has: it is checked against the policy in force at once.
    pub(crate) fn track_checked(&self, recheck: Recheck) -> Live {
        self.register(recheck, None)
    }

    fn register(&self, recheck: Recheck, judged: Option<&Arc<Policy>>) -> Live {
        let entry = Arc::new(Entry {
            recheck,
            reason: OnceLock::new(),
            closing: Notify::new(),
        });
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut live = self.inner.lock();
            // Read while holding the lock: a change the watcher checked before this entry
            // was there is the one in force now (or an older one), never a skipped one.
            let current = self.inner.policy.borrow().clone();
            if judged.is_none_or(|j| !Arc::ptr_eq(&current, j))
                && let Some(reason) = entry.recheck.closes(&current)
            {
                entry.close(reason);
            }
            live.insert(id, entry.clone());
        }
        Live {
            id,
            inner: self.inner.clone(),
            entry,
        }
    }

    /// Live connections registered.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// True when no connection is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-checks every live connection whenever a new policy is published, until the
    /// policy's sender goes away.
    pub fn watch(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        // Cloned now, the receiver has seen the policy in force now: a change published
        // before the task first runs is still a change.
        let mut rx = inner.policy.clone();
        async move {
            while rx.changed().await.is_ok() {
                let policy = rx.borrow_and_update().clone();
                let live = inner.lock();
                for e in live.values() {
                    if e.reason.get().is_none()
                        && let Some(reason) = e.recheck.closes(&policy)
                    {
                        e.close(reason);
                    }
                }
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl Entry ===

impl Entry {
    fn close(&self, reason: Closed) {
        if self.reason.set(reason).is_ok() {
            self.closing.notify_waiters();
        }
    }

    async fn closed(&self) -> Closed {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            // Registered before `reason` is read: a close between the two still wakes it.
            notified.as_mut().enable();
            if let Some(&reason) = self.reason.get() {
                return reason;
            }
            notified.await;
        }
    }
}

// === impl Recheck ===

impl Recheck {
    /// Why the connection must close under `p`, if it must.
    fn closes(&self, p: &Policy) -> Option<Closed> {
        match self {
            Self::Peer(source) => peer_closes(p, source),
            Self::Decision(judged) => judged.closes(p),
            Self::Quarantine => p.is_quarantined().then_some(Closed::Quarantine),
            Self::Server(server) => {
                if p.is_quarantined() {
                    Some(Closed::Quarantine)
                } else if p.is_revoked(&server.id, &server.serial) {
                    Some(Closed::Revoked)
                } else {
                    None
                }
            }
            Self::Passthrough => (!p.passthrough()).then_some(Closed::Policy),
        }
    }
}

// === impl Live ===

impl Live {
    /// Resolves when the connection must close, with why.
    pub(crate) fn closed(&self) -> impl Future<Output = Closed> + Send + Sync + 'static {
        let entry = self.entry.clone();
        ClosedFuture {
            entry: self.entry.clone(),
            waiting: async move { entry.closed().await },
            registered: None,
        }
    }

    /// Why it must close, once it must.
    #[cfg(test)]
    pub(crate) fn reason(&self) -> Option<Closed> {
        self.entry.reason.get().copied()
    }
}

pin_project_lite::pin_project! {
    /// [`Live::closed`]: polled on every read and write of a mesh connection and every
    /// wake-up of a connection's task, so a poll with the waker already registered is an
    /// atomic load and a waker comparison, not a poll of the `Notify` (which takes its
    /// lock). Once `waiting` is pending with a waker, `Entry::close` wakes that waker, and
    /// the next poll finds the reason set.
    struct ClosedFuture<F> {
        entry: Arc<Entry>,
        #[pin]
        waiting: F,
        // The waker `waiting` last returned pending with.
        registered: Option<Waker>,
    }
}

impl<F: Future<Output = Closed>> Future for ClosedFuture<F> {
    type Output = Closed;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Closed> {
        let this = self.project();
        if let Some(&reason) = this.entry.reason.get() {
            return Poll::Ready(reason);
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let polled = this.waiting.poll(cx);
        if polled.is_pending() {
            *this.registered = Some(cx.waker().clone());
        }
        polled
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.inner.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests;
