//! B12 (micro): what the proxy's metrics cost per request, and a scrape.
//!
//! - `update`: everything one allowed HTTP request records — the request counter and
//!   latency histogram (`record_request`) and the authorization counter
//!   (`record_authz`) — on the proxy's own `Metrics`.
//! - `update_off`: the same calls with per-request metrics off (`--request-metrics false`).
//! - `encode`: one Prometheus text scrape with 50 policies' worth of series.
//!
//! The macro harness measures B12 end to end (sidecar CPU per request, metrics on/off,
//! target ≤ 1.03). Here the update is held to an absolute budget: 1 % of a sidecar's CPU
//! per request in the closed-loop HTTP/1.1 run (B3: ~30 µs per sidecar), i.e. ≤ 300 ns.

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::{hint::black_box, path::PathBuf, time::Duration};

use criterion::Criterion;
use vigil_benches::{Goal, Ratio, criterion_median};
use vigil_proxy::metrics::{
    Judged, Metrics,
    labels::{Decision, Direction},
};

const GROUP: &str = "metrics";

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("..")
}

fn main() {
    let criterion_dir = target_dir().join("criterion");
    let mut c = Criterion::default()
        .output_directory(&criterion_dir)
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    let on = Metrics::new(true);
    let off = Metrics::new(false);
    // Series for 50 policies, both directions and decisions, as a busy sidecar has.
    for m in [&on, &off] {
        for p in 0..50 {
            let name = format!("shop/policy-{p}");
            for d in [Decision::Allow, Decision::Deny] {
                m.record_authz(Direction::Inbound, &name, d, Judged::Request);
            }
        }
    }
    let elapsed = Duration::from_micros(420);
    let mut g = c.benchmark_group(GROUP);
    for (name, m) in [("update", &on), ("update_off", &off)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                m.record_request(
                    black_box(Direction::Inbound),
                    Decision::Allow,
                    black_box(200),
                    elapsed,
                );
                m.record_authz(
                    Direction::Inbound,
                    black_box("shop/policy-7"),
                    Decision::Allow,
                    Judged::Request,
                );
            })
        });
    }
    g.bench_function("encode", |b| b.iter(|| black_box(on.encode()).len()));
    g.finish();
    c.final_summary();

    let (Ok(update), Ok(off), Ok(encode)) = (
        criterion_median(&criterion_dir, GROUP, "update"),
        criterion_median(&criterion_dir, GROUP, "update_off"),
        criterion_median(&criterion_dir, GROUP, "encode"),
    ) else {
        return;
    };
    println!(
        "per-request update {:.0} ns (off: {:.1} ns); one scrape {:.1} µs ({} bytes)",
        update.point,
        off.point,
        encode.point / 1e3,
        on.encode().len()
    );
    let r = Ratio {
        id: "B12".into(),
        name: "metrics update per request (micro)".into(),
        ratio: update.point,
        min: update.lower,
        max: update.upper,
        target: 300.0,
        goal: Goal::AtMost,
        unit: "ns",
    };
    println!("{}", r.line());
    r.record(&target_dir().join("bench-results")).unwrap();
}
