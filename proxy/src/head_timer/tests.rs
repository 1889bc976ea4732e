//! Deadlines on a paused runtime clock: exact instants, however the connection's one
//! timer was armed before.

use std::future::Future;

use futures_util::poll;
use tokio::time::{Instant as TokioInstant, advance};

use super::*;

fn now() -> Instant {
    TokioInstant::now().into_std()
}

/// Awaits `d` (the paused clock jumps to the next timer) and returns when it was ready.
async fn fired_at(d: Pin<Box<dyn Sleep>>) -> Instant {
    d.await;
    now()
}

/// The timer wheel counts whole milliseconds, rounding a deadline up.
fn assert_at(fired: Instant, deadline: Instant) {
    assert!(fired >= deadline, "fired {:?} early", deadline - fired);
    assert!(
        fired < deadline + Duration::from_millis(2),
        "fired {:?} late",
        fired - deadline
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_is_ready_at_its_instant_and_not_before() {
    let timer = ConnTimer::new();
    let at = now() + Duration::from_secs(1);
    let mut d = timer.sleep_until(at);
    assert!(poll!(&mut d).is_pending());
    advance(Duration::from_millis(998)).await;
    assert!(poll!(&mut d).is_pending(), "before its instant");
    assert_at(fired_at(d).await, at);
}

#[tokio::test(start_paused = true)]
async fn sleep_is_a_deadline_a_duration_from_now() {
    let timer = ConnTimer::new();
    let at = now() + Duration::from_millis(250);
    assert_at(fired_at(timer.sleep(Duration::from_millis(250))).await, at);
}

#[tokio::test(start_paused = true)]
async fn a_later_deadline_is_not_cut_short_by_the_timer_an_earlier_one_armed() {
    // hyper's pattern: each request's deadline is polled while the head is awaited,
    // then dropped; the next one is later.
    let timer = ConnTimer::new();
    let mut first = timer.sleep_until(now() + Duration::from_secs(1));
    assert!(poll!(&mut first).is_pending());
    drop(first);
    advance(Duration::from_millis(600)).await;
    let at = now() + Duration::from_secs(1);
    assert_at(fired_at(timer.sleep_until(at)).await, at);
}

#[tokio::test(start_paused = true)]
async fn a_long_lived_connection_times_out_only_a_full_timeout_after_its_last_wait_began() {
    // Twenty requests 300 ms apart with a 1 s timeout: the connection lives 6 s, its
    // timer fires for stale deadlines along the way, and no wait is cut short.
    let timer = ConnTimer::new();
    let timeout = Duration::from_secs(1);
    for _ in 0..20 {
        let mut d = timer.sleep_until(timer.now() + timeout);
        assert!(poll!(&mut d).is_pending());
        advance(Duration::from_millis(300)).await;
        assert!(poll!(&mut d).is_pending(), "a 300 ms wait timed out");
    }
    let at = timer.now() + timeout;
    assert_at(fired_at(timer.sleep_until(at)).await, at);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_after_the_timer_fired_unwatched_waits_its_full_time() {
    let timer = ConnTimer::new();
    let mut first = timer.sleep_until(now() + Duration::from_millis(100));
    assert!(poll!(&mut first).is_pending());
    drop(first);
    advance(Duration::from_secs(2)).await; // the timer fires with no deadline alive
    let at = now() + Duration::from_millis(500);
    let mut d = timer.sleep_until(at);
    assert!(
        poll!(&mut d).is_pending(),
        "the stale firing is not this deadline's"
    );
    assert_at(fired_at(d).await, at);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_moves_the_timer_down() {
    let timer = ConnTimer::new();
    let mut late = timer.sleep_until(now() + Duration::from_secs(5));
    assert!(poll!(&mut late).is_pending());
    drop(late);
    let at = now() + Duration::from_secs(1);
    assert_at(fired_at(timer.sleep_until(at)).await, at);
}

#[tokio::test(start_paused = true)]
async fn reset_moves_a_deadline_either_way() {
    let timer = ConnTimer::new();
    let mut d = timer.sleep_until(now() + Duration::from_secs(1));
    assert!(poll!(&mut d).is_pending());
    let later = now() + Duration::from_secs(3);
    timer.reset(&mut d, later);
    advance(Duration::from_millis(1500)).await;
    assert!(poll!(&mut d).is_pending(), "moved later");
    let sooner = now() + Duration::from_millis(200);
    timer.reset(&mut d, sooner);
    assert_at(fired_at(d).await, sooner);
}

/// A sleep from another timer: never ready.
struct Foreign;

impl Future for Foreign {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Sleep for Foreign {}

#[tokio::test(start_paused = true)]
async fn reset_replaces_a_sleep_from_another_timer() {
    let timer = ConnTimer::new();
    let mut d: Pin<Box<dyn Sleep>> = Box::pin(Foreign);
    let at = now() + Duration::from_millis(700);
    timer.reset(&mut d, at);
    assert_at(fired_at(d).await, at);
}

#[tokio::test(start_paused = true)]
async fn connections_have_their_own_timers() {
    // A connection's stale timer neither delays nor hastens another's deadline.
    let (a, b) = (ConnTimer::new(), ConnTimer::new());
    let mut stale = a.sleep_until(now() + Duration::from_millis(100));
    assert!(poll!(&mut stale).is_pending());
    let at = now() + Duration::from_millis(400);
    let mut db = b.sleep_until(at);
    assert!(poll!(&mut db).is_pending());
    advance(Duration::from_millis(150)).await;
    assert!(poll!(&mut db).is_pending());
    assert_at(fired_at(db).await, at);
}
