//! [`ReadGate`]: a read adapter that answers "still nothing to read" without asking the
//! stream below again.
//!
//! hyper polls a connection's read side on every turn of its dispatch loop — to read
//! ahead, to notice a peer that closed an idle keep-alive connection — and most of those
//! polls find nothing. Each went down the whole stack (the strict HTTP/1.1 reader, TLS,
//! tokio's readiness registration, which locks to store the waker again) only to return
//! `Pending`: ~9 such polls per HTTP/1.1 request on each sidecar (counted, `vigil.h1.*`).
//!
//! The gate hands the stream below a waker of its own. Once the stream has answered a
//! read with `Pending`, it has promised to wake that waker when a read may make progress
//! (the `AsyncRead` contract); until it does, another read from the same task would only
//! find `Pending` again, so the gate answers it with one atomic load. The gate's waker
//! records the wake-up and wakes the task that last read. Writes go straight through.
//!
//! What the gate relies on: a read below it returns `Pending` only after arranging a
//! wake-up of the waker it was given *for that read*. That is the contract, and two
//! things could break it, so neither may sit below a gate: a reader that answers
//! `Pending` counting on its caller to poll again anyway (the strict HTTP/1.1 reader did,
//! while it held the bytes after an upgrade request; its [`UpgradeSwitch`] now wakes
//! it), and a read that waits for write readiness (tokio keeps one writer waker per
//! socket, and a write from above would replace the gate's). What is gated — TCP,
//! rustls' reader (a TLS read writes only a last alert on an error, without waiting),
//! the held session ticket under it (`LastFlight`: a read after its deadline sends it
//! only if the socket takes it at once), replayed prefixes, the strict HTTP/1.1 reader —
//! does neither.
//!
//! [`UpgradeSwitch`]: crate::strict_h1::UpgradeSwitch

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use tokio::io::{AsyncRead, ReadBuf};

/// A stream whose reads skip the stream while it has nothing new to say (see the module
/// docs).
#[derive(Debug)]
pub struct ReadGate<T> {
    inner: T,
    gate: Arc<Gate>,
    /// `gate` as a waker, made once.
    gate_waker: Waker,
    /// The task waker stored in `gate`: the task that reads.
    reader: Option<Waker>,
    /// The last read below answered `Pending`, with `gate_waker`.
    waiting: bool,
}

/// What the stream below wakes.
#[derive(Debug, Default)]
struct Gate {
    /// Woken since the last read below.
    woken: AtomicBool,
    /// The task to wake.
    reader: Mutex<Option<Waker>>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = &*reader {
            w.wake_by_ref();
        }
    }
}

impl<T> ReadGate<T> {
    /// Gates the reads of `inner`.
    pub fn new(inner: T) -> Self {
        let gate = Arc::new(Gate::default());
        Self {
            inner,
            gate_waker: Waker::from(gate.clone()),
            gate,
            reader: None,
            waiting: false,
        }
    }

    /// The stream below.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The stream below, taken out.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadGate<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let same_reader = this
            .reader
            .as_ref()
            .is_some_and(|r| r.will_wake(cx.waker()));
        if this.waiting && same_reader && !this.gate.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        if !same_reader {
            let reader = cx.waker().clone();
            *this
                .gate
                .reader
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(reader.clone());
            this.reader = Some(reader);
        }
        // Cleared before reading: a wake-up from now on is for what this read leaves.
        this.gate.woken.store(false, Ordering::Release);
        let polled =
            Pin::new(&mut this.inner).poll_read(&mut Context::from_waker(&this.gate_waker), buf);
        this.waiting = polled.is_pending();
        polled
    }
}

super::write_through!(ReadGate);

#[cfg(test)]
mod tests;
