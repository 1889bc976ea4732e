//! B9: authorization decision time at 10 / 1k / 100k rules, and how it scales.
//!
//! Each policy has N allow rules, each for a distinct workload identity with an L7
//! condition (method + path prefix), plus namespace-pattern, CIDR and deny rules so every
//! index path is exercised. The measured request is allowed by one rule in the middle.
//! Targets (BENCHMARKS.md): <= 100 / 250 / 500 ns, and t(100k)/t(10) <= 5.
//! Compile time for 100k rules is reported too.

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::{
    hint::black_box,
    path::PathBuf,
    time::{Duration, Instant},
};

use criterion::Criterion;
use http::HeaderMap;
use vigil_benches::{Goal, Ratio, criterion_median};
use vigil_cert_authority::SpiffeId;
use vigil_policy::{
    HttpRequest, Peer, Policy, ProxyPolicy, Request,
    model::{Action, HttpMatch, Mode, PathMatch, Rule, Source},
};

const GROUP: &str = "policy_decision";
const SIZES: [usize; 3] = [10, 1_000, 100_000];
const NOW: u64 = 1_800_000_000;

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("..")
}

fn id(i: usize) -> String {
    format!("spiffe://cluster.local/ns/ns{}/sa/sa{i}", i % 100)
}

fn model(n: usize) -> ProxyPolicy {
    let mut inbound: Vec<Rule> = (0..n)
        .map(|i| Rule {
            policy: format!("ns{}/allow-{i}", i % 100),
            rule: 0,
            action: Action::Allow,
            mode: Mode::Enforce,
            ports: vec![8080],
            from: vec![Source::Id(id(i))],
            http: Some(HttpMatch {
                methods: vec!["GET".into(), "POST".into()],
                paths: vec![PathMatch::Prefix(format!("/api/{i}"))],
                ..HttpMatch::default()
            }),
            valid_from: None,
            valid_until: None,
            rate_limit: None,
        })
        .collect();
    // A few other kinds of rule, so the other index paths are populated.
    inbound.push(Rule {
        policy: "ops/admins".into(),
        rule: 0,
        action: Action::Allow,
        mode: Mode::Enforce,
        ports: vec![],
        from: vec![Source::Id("spiffe://cluster.local/ns/ops/sa/*".into())],
        http: None,
        valid_from: None,
        valid_until: None,
        rate_limit: None,
    });
    inbound.push(Rule {
        policy: "sec/no-delete".into(),
        rule: 0,
        action: Action::Deny,
        mode: Mode::Enforce,
        ports: vec![],
        from: vec![Source::Authenticated],
        http: Some(HttpMatch {
            methods: vec!["DELETE".into()],
            ..HttpMatch::default()
        }),
        valid_from: None,
        valid_until: None,
        rate_limit: None,
    });
    inbound.push(Rule {
        policy: "sec/block-net".into(),
        rule: 0,
        action: Action::Deny,
        mode: Mode::Enforce,
        ports: vec![],
        from: vec![Source::Cidr("192.0.2.0/24".parse().unwrap())],
        http: None,
        valid_from: None,
        valid_until: None,
        rate_limit: None,
    });
    ProxyPolicy {
        generation: 1,
        inbound,
        ..ProxyPolicy::default()
    }
}

fn main() {
    let criterion_dir = target_dir().join("criterion");
    let mut c = Criterion::default()
        .output_directory(&criterion_dir)
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    let headers = HeaderMap::new();
    let mut compile_100k = Duration::ZERO;
    let mut g = c.benchmark_group(GROUP);
    for n in SIZES {
        let m = model(n);
        let start = Instant::now();
        let policy = Policy::compile(m).unwrap();
        if n == 100_000 {
            compile_100k = start.elapsed();
        }
        let who = SpiffeId::parse(&id(n / 2)).unwrap();
        let path = format!("/api/{}/items", n / 2);
        let req = Request {
            peer: Peer::Authenticated(&who),
            source_ip: Some("10.1.2.3".parse().unwrap()),
            port: 8080,
            http: Some(HttpRequest {
                method: "GET",
                path: &path,
                headers: &headers,
            }),
        };
        assert!(
            policy.evaluate(&req, NOW).allowed,
            "the benchmark request must be allowed"
        );
        g.bench_function(n.to_string(), |b| {
            b.iter(|| policy.evaluate(black_box(&req), NOW))
        });
    }
    g.finish();
    c.final_summary();

    let Ok(times) = SIZES
        .iter()
        .map(|n| criterion_median(&criterion_dir, GROUP, &n.to_string()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let results = target_dir().join("bench-results");
    for (n, (t, target)) in SIZES.iter().zip(times.iter().zip([100.0, 250.0, 500.0])) {
        let r = Ratio {
            id: "B9".into(),
            name: format!("decision-{n}-rules"),
            ratio: t.point,
            min: t.lower,
            max: t.upper,
            target,
            goal: Goal::AtMost,
            unit: "ns",
        };
        println!("{}", r.line());
        r.record(&results).unwrap();
    }
    let (small, large) = (times[0], times[2]);
    let r = Ratio {
        id: "B9".into(),
        name: "decision-scaling-100k-vs-10".into(),
        ratio: large.point / small.point,
        min: large.lower / small.upper,
        max: large.upper / small.lower,
        target: 5.0,
        goal: Goal::AtMost,
        unit: "",
    };
    println!("{}", r.line());
    r.record(&results).unwrap();
    println!(
        "compile 100k rules: {:.0} ms",
        compile_100k.as_secs_f64() * 1e3
    );
}
