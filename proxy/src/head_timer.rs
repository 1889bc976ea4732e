//! The HTTP/1.1 servers' header read timeout on one timer per connection.
//!
//! hyper's server arms a deadline each time it begins to wait for a request head (the
//! wait for the next request on a keep-alive connection counts; serving one does not) and
//! drops it when the head is parsed. With hyper-util's `TokioTimer` that is a fresh tokio
//! timer per request: registered in the runtime's timer wheel (under its lock) when first
//! polled, removed again (under the lock) when dropped — measured ~800 instructions per
//! request per sidecar, while the deadline almost never fires.
//!
//! [`ConnTimer`] keeps hyper's deadlines exact and registers lazily instead. Each
//! connection owns one tokio timer. A deadline hyper asks for ([`Deadline`]) is a value
//! (the instant) until it is polled; polling it polls the connection's timer, which is
//! armed at an instant *no later* than the deadline. When that timer fires and the
//! deadline is still ahead (it was armed for an earlier request's deadline), it is moved
//! to this one and polled again; when it fires at or past the deadline, the deadline has
//! passed. A deadline dropped unfired leaves the timer where it is: it fires at most once
//! per timeout period on a busy connection (a spurious wake-up of the connection's task)
//! and is moved then.
//!
//! The invariant — the timer is armed no later than the deadline being polled — holds
//! because hyper's deadlines never move backwards on a connection (each is "now plus the
//! timeout"); a deadline earlier than the timer (any other use of the trait) moves the
//! timer down to it before the timer is polled.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::rt::{Sleep, Timer};

/// A [`hyper::rt::Timer`] for one HTTP/1.1 server connection (see the module docs):
/// build one per connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnTimer {
    timer: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl ConnTimer {
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

impl Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(Deadline {
            at: deadline,
            timer: self.timer.clone(),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Deadline>() {
            Some(d) => d.get_mut().at = new_deadline,
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    fn now(&self) -> Instant {
        // The runtime's clock (the same instant as std's, unless a test paused it).
        tokio::time::Instant::now().into_std()
    }
}

/// One deadline on a [`ConnTimer`]: ready once `at` has passed.
#[derive(Debug)]
pub(crate) struct Deadline {
    at: Instant,
    timer: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let at = tokio::time::Instant::from_std(self.at);
        let mut slot = self.timer.lock().unwrap_or_else(PoisonError::into_inner);
        let timer = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() > at {
            timer.as_mut().reset(at);
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if timer.deadline() >= at {
                return Poll::Ready(());
            }
            // It fired for an earlier deadline: move it to this one.
            timer.as_mut().reset(at);
        }
    }
}

impl Sleep for Deadline {}

#[cfg(test)]
mod tests;
