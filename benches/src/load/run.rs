//! Running a load: the schedule, the lanes that follow it, and the measurements.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    client::{self, Protocol, Target},
    report::Report,
};

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Where.
    pub target: Target,
    /// Requests per second (open loop), or `None` for as fast as possible (closed loop).
    pub rate: Option<f64>,
    /// Connections.
    pub conns: usize,
    /// Requests in flight per connection (HTTP/2 only; HTTP/1.1 is always 1).
    pub streams: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it (connections warm, caches filled).
    pub warmup: Duration,
    /// A new connection (TCP, TLS handshake) for every request; its latency includes
    /// connecting.
    pub fresh_connections: bool,
}

/// One lane's results.
struct Lane {
    hist: hdrhistogram::Histogram<u64>,
    ok: u64,
    errors: u64,
    last_error: Option<String>,
    /// When its last measured request completed.
    last_done: Option<Instant>,
    /// How late the generator itself sent (open loop): for each measured request whose
    /// lane was free before its intended time, how long after that time it left.
    late: hdrhistogram::Histogram<u64>,
}

/// Runs `spec` and reports. Connections are opened before the clock starts; a
/// connection that fails is reopened (its failed requests count as errors).
pub async fn run(spec: &LoadSpec) -> Report {
    let streams = if spec.target.protocol == Protocol::Http1 {
        1
    } else {
        spec.streams.max(1)
    };
    let lanes = spec.conns.max(1) * streams;
    let mut senders = Vec::with_capacity(spec.conns);
    for _ in 0..spec.conns.max(1) {
        senders.push(if spec.fresh_connections {
            None
        } else {
            client::connect(&spec.target).await.ok()
        });
    }
    let results = Arc::new(Mutex::new(Vec::<Lane>::new()));
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let mut tasks = Vec::with_capacity(lanes);
    for lane in 0..lanes {
        // HTTP/1.1: one lane per connection (lanes == conns); HTTP/2: lanes share it.
        let slot = lane % senders.len();
        let sender = match senders[slot].as_ref().and_then(client::Sender::share) {
            Some(shared) => Some(shared),
            None => senders[slot].take(),
        };
        let target = spec.target.clone();
        let results = results.clone();
        let rate = spec.rate;
        let fresh = spec.fresh_connections;
        tasks.push(tokio::spawn(async move {
            let mut out = Lane {
                hist: new_histogram(),
                ok: 0,
                errors: 0,
                last_error: None,
                last_done: None,
                late: new_histogram(),
            };
            let mut sender = sender;
            let mut k = lane as u64; // this lane sends requests k, k + lanes, k + 2 lanes, ...
            loop {
                let intended = match rate {
                    Some(r) => start + Duration::from_secs_f64(k as f64 / r),
                    None => Instant::now().max(start),
                };
                if intended >= end {
                    break;
                }
                let free_in_time = Instant::now() < intended;
                wait_until(intended).await;
                if rate.is_some() && free_in_time && intended >= measure_from {
                    // Only sends the lane was ready for: a lane still busy with the
                    // request before is the server's queueing, which the latency counts.
                    let us = Instant::now().duration_since(intended).as_micros();
                    out.late
                        .saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
                }
                if fresh {
                    sender = None; // connected below, inside the measured time
                }
                let mut result = match &mut sender {
                    Some(s) => s.get(&target).await,
                    None => Err(client::LoadError::Closed),
                };
                if matches!(result, Err(client::LoadError::Closed)) {
                    // Closed while idle (or never connected): reconnect and send it now.
                    result = match client::connect(&target).await {
                        Ok(s) => sender.insert(s).get(&target).await,
                        Err(e) => {
                            sender = None;
                            Err(e)
                        }
                    };
                }
                let result = result.map_err(|e| e.to_string());
                let done = Instant::now();
                let measured = intended >= measure_from;
                if measured {
                    out.last_done = Some(done);
                }
                match result {
                    Ok(_) => {
                        if measured {
                            let us = u64::try_from(done.duration_since(intended).as_micros())
                                .unwrap_or(u64::MAX);
                            out.hist.saturating_record(us.max(1));
                            out.ok += 1;
                        }
                    }
                    Err(e) => {
                        if measured {
                            out.errors += 1;
                            out.last_error = Some(e);
                        }
                        sender = client::connect(&target).await.ok();
                    }
                }
                k += lanes as u64;
                if rate.is_none() && done >= end {
                    break;
                }
            }
            results.lock().unwrap_or_else(|p| p.into_inner()).push(out);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let lanes = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    let (mut hist, mut late) = (new_histogram(), new_histogram());
    let (mut ok, mut errors, mut last_error) = (0, 0, None);
    let mut finished = end;
    for l in lanes {
        finished = finished.max(l.last_done.unwrap_or(end));
        let _ = hist.add(&l.hist);
        let _ = late.add(&l.late);
        ok += l.ok;
        errors += l.errors;
        last_error = last_error.or(l.last_error);
    }
    // Until the last measured request completed (at least the scheduled window): a target
    // that cannot keep up stretches the window, and the achieved rate shows it.
    let window = finished.duration_since(measure_from);
    Report::new(spec, hist, &late, ok, errors, last_error, window)
}

fn new_histogram() -> hdrhistogram::Histogram<u64> {
    // 1 µs .. 60 s with 3 significant digits; the bounds are constants, so this cannot fail.
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
        hdrhistogram::Histogram::new(3).unwrap_or_else(|_| unreachable_histogram())
    })
}

#[allow(clippy::panic)]
fn unreachable_histogram() -> hdrhistogram::Histogram<u64> {
    panic!("hdrhistogram rejected constant bounds")
}

/// How long before a send time a lane stops sleeping and starts yielding. tokio's timer
/// rounds a deadline up to its next 1 ms tick and the runtime parks for whole
/// milliseconds, so a sleep ends up to ~2 ms after the instant asked for: with a 1 ms
/// margin (until 2026-12-07) sends left up to a millisecond late and every path's latency
/// carried it — direct's HTTP/1.1 p50 at 1,000 req/s read 180–406 µs, 39–40 µs with this
/// one. The report's lateness figure (`Report::send_late_p99_us`) checks it on every run.
const SPIN_MARGIN: Duration = Duration::from_millis(3);

/// Sleeps until `SPIN_MARGIN` before `t`, then yields until `t` has really passed.
async fn wait_until(t: Instant) {
    if let Some(coarse) = t.checked_sub(SPIN_MARGIN)
        && coarse > Instant::now()
    {
        tokio::time::sleep_until(coarse).await;
    }
    while Instant::now() < t {
        tokio::task::yield_now().await;
    }
}
