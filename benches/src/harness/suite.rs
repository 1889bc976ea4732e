//! The suite: interleaved rounds over every path, then one [`Ratio`] per target of
//! BENCHMARKS.md, each the median of its per-round ratios with their min..max.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crate::{Goal, Ratio};

use super::{
    crypto,
    measure::{self, Kind, Sample, Timing, TlsClients},
    topology::Topology,
};

/// Which tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Tier {
    /// `make bench`: 3 rounds, short runs (about 5 minutes).
    Quick,
    /// `make bench-full`: 5 rounds, longer runs.
    Full,
}

impl Tier {
    /// Rounds.
    pub fn rounds(self) -> usize {
        match self {
            Self::Quick => 3,
            Self::Full => 5,
        }
    }

    /// Durations.
    pub fn timing(self) -> Timing {
        match self {
            Self::Quick => Timing {
                warmup: Duration::from_secs(1),
                fixed: Duration::from_secs(3),
                closed: Duration::from_secs(2),
                tcp: Duration::from_millis(1500),
                handshakes: 300,
            },
            Self::Full => Timing {
                warmup: Duration::from_secs(2),
                fixed: Duration::from_secs(15),
                closed: Duration::from_secs(8),
                tcp: Duration::from_secs(5),
                handshakes: 1000,
            },
        }
    }
}

/// The paths each kind runs on, in interleaving order.
pub fn paths_for(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::H1Fixed => &[
            "direct",
            "vigil",
            "envoy",
            "haproxy",
            "nginx",
            "vigil-nometrics",
        ],
        Kind::H1Closed | Kind::H2Fixed | Kind::H2Closed => {
            &["direct", "vigil", "envoy", "haproxy", "nginx"]
        }
        Kind::Tcp => &["direct", "relay", "vigil", "envoy", "haproxy"],
        Kind::NewConn => &["vigil", "envoy", "haproxy", "nginx"],
        Kind::Handshake => &["rustls", "vigil", "envoy"],
    }
}

/// Every kind, in round order.
pub const KINDS: &[Kind] = &[
    Kind::H1Fixed,
    Kind::H1Closed,
    Kind::H2Fixed,
    Kind::H2Closed,
    Kind::Tcp,
    Kind::NewConn,
    Kind::Handshake,
];

/// Everything measured: samples per (kind, path), one per round, plus the in-memory
/// baselines per round.
#[derive(Debug, Default, serde::Serialize)]
pub struct Results {
    /// `samples[kind][path][round]`.
    pub samples: BTreeMap<String, BTreeMap<String, Vec<Sample>>>,
    /// B5's ceiling per round, bytes/s.
    pub crypto_ceiling: Vec<f64>,
    /// B7's baseline per round, µs of server CPU per handshake.
    pub bare_handshake_us: Vec<f64>,
    /// Negotiated cipher suite (in-memory baseline; every path is configured for the same
    /// one, `topology::CIPHER_SUITE`).
    pub cipher_suite: String,
    /// Negotiated key-exchange group.
    pub kx_group: String,
}

impl Results {
    pub(super) fn push(&mut self, kind: Kind, path: &str, s: Sample) {
        self.samples
            .entry(format!("{kind:?}"))
            .or_default()
            .entry(path.to_string())
            .or_default()
            .push(s);
    }

    /// The samples of `kind` on `path`, one per round.
    pub fn get(&self, kind: Kind, path: &str) -> &[Sample] {
        self.samples
            .get(&format!("{kind:?}"))
            .and_then(|m| m.get(path))
            .map_or(&[], Vec::as_slice)
    }
}

/// Runs every round, printing a line per measurement to stderr.
pub async fn run(
    topo: &mut Topology,
    tier: Tier,
    only: &[Kind],
    tls: &TlsClients,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<Results> {
    let timing = tier.timing();
    let mut results = Results::default();
    for round in 0..tier.rounds() {
        for &kind in KINDS.iter().filter(|k| only.is_empty() || only.contains(k)) {
            for &path in paths_for(kind) {
                let s = measure::measure(topo, path, kind, &timing, tls).await?;
                eprintln!(
                    "round {} {kind:?} {path}: {:.0}/s p50 {} µs p99 {} µs cpu/1k {:.3} cpu/op {:.1} µs {:.2} Gbit/s{}",
                    round + 1,
                    s.rate,
                    s.p50_us,
                    s.p99_us,
                    s.cpu_per_1k,
                    s.cpu_per_op_us,
                    s.gbit_s,
                    s.invalid
                        .as_deref()
                        .map(|e| format!(" INVALID: {e}"))
                        .unwrap_or_default()
                );
                results.push(kind, path, s);
                topo.check_alive()?;
            }
        }
        let (bps, suite) =
            crypto::bulk_ceiling(&topo.certs, provider.clone(), Duration::from_millis(500))?;
        let (hs, group) = crypto::server_handshake_cpu(&topo.certs, provider.clone(), 200)?;
        eprintln!(
            "round {} in-memory rustls: {:.2} Gbit/s ({suite}), server handshake {:.0} µs ({group})",
            round + 1,
            bps * 8.0 / 1e9,
            hs.as_secs_f64() * 1e6
        );
        results.crypto_ceiling.push(bps);
        results.bare_handshake_us.push(hs.as_secs_f64() * 1e6);
        results.cipher_suite = suite;
        results.kx_group = group;
    }
    Ok(results)
}

/// Median and range of the per-round values that exist (invalid rounds are skipped).
pub fn summarize(values: &[Option<f64>]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values
        .iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Some((median, v[0], v[v.len() - 1]))
}

/// The value of a sample, if the sample counts.
pub(super) fn valid(s: &Sample, f: impl Fn(&Sample) -> f64) -> Option<f64> {
    s.invalid.is_none().then(|| f(s))
}

/// Per-round ratio of `f(subject) / g(baseline samples of that round)`.
pub(super) fn per_round(
    r: &Results,
    kind: Kind,
    subject: &str,
    f: impl Fn(&Results, usize, &Sample) -> Option<f64>,
    baseline: impl Fn(&Results, usize) -> Option<f64>,
) -> Vec<Option<f64>> {
    r.get(kind, subject)
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let num = f(r, i, s)?;
            let den = baseline(r, i)?;
            (den > 0.0).then(|| num / den)
        })
        .collect()
}

/// Per-round ratio of `f` on vigil to `f` on `base`, both measured by `kind`.
pub(super) fn vigil_vs(
    r: &Results,
    kind: Kind,
    base: &str,
    f: fn(&Sample) -> f64,
) -> Vec<Option<f64>> {
    per_round(
        r,
        kind,
        "vigil",
        |_, _, s| valid(s, f),
        |r, i| sample(r, kind, base, i).map(f),
    )
}

pub(super) fn sample<'a>(
    r: &'a Results,
    kind: Kind,
    path: &str,
    round: usize,
) -> Option<&'a Sample> {
    r.get(kind, path).get(round).filter(|s| s.invalid.is_none())
}

fn ratio(id: &str, name: &str, rounds: Vec<Option<f64>>, target: f64, goal: Goal) -> Ratio {
    let (ratio, min, max) = summarize(&rounds).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
    Ratio {
        id: id.into(),
        name: name.into(),
        ratio,
        min,
        max,
        target,
        goal,
        unit: "",
    }
}

/// The ratios BENCHMARKS.md sets targets for.
pub fn ratios(r: &Results) -> Vec<Ratio> {
    let mut out = Vec::new();
    // B1–B3 over HTTP/1.1, B4 the same over HTTP/2.
    for (id, fixed, closed, tag) in [
        ("B1", Kind::H1Fixed, Kind::H1Closed, "h1"),
        ("B4", Kind::H2Fixed, Kind::H2Closed, "h2"),
    ] {
        let added_p50 = |r: &Results, i: usize, path: &str| {
            let p = sample(r, fixed, path, i)?.p50_us as f64;
            let d = sample(r, fixed, "direct", i)?.p50_us as f64;
            Some((p - d).max(1.0))
        };
        out.push(ratio(
            id,
            &format!("{tag} added p50 vigil/envoy"),
            per_round(
                r,
                fixed,
                "vigil",
                |r, i, _| added_p50(r, i, "vigil"),
                |r, i| added_p50(r, i, "envoy"),
            ),
            0.25,
            Goal::AtMost,
        ));
        out.push(ratio(
            id,
            &format!("{tag} p99 vigil/best baseline"),
            per_round(
                r,
                fixed,
                "vigil",
                |_, _, s| valid(s, |s| s.p99_us as f64),
                |r, i| {
                    ["envoy", "haproxy", "nginx"]
                        .iter()
                        .filter_map(|p| sample(r, fixed, p, i).map(|s| s.p99_us as f64))
                        .reduce(f64::min)
                },
            ),
            0.75,
            Goal::AtMost,
        ));
        let b2 = if id == "B1" { "B2" } else { "B4" };
        for (base, target) in [("envoy", 0.5), ("nginx", 1.0)] {
            out.push(ratio(
                b2,
                &format!("{tag} CPU per 1k req/s vigil/{base}"),
                vigil_vs(r, fixed, base, |s| s.cpu_per_1k),
                target,
                Goal::AtMost,
            ));
        }
        let b3 = if id == "B1" { "B3" } else { "B4" };
        for (base, target) in [("haproxy", 1.0), ("envoy", 3.0)] {
            out.push(ratio(
                b3,
                &format!("{tag} max req/s vigil/{base}"),
                vigil_vs(r, closed, base, |s| s.rate),
                target,
                Goal::AtLeast,
            ));
        }
    }
    out.push(ratio(
        "B5",
        "opaque TCP throughput vigil/envoy",
        vigil_vs(r, Kind::Tcp, "envoy", |s| s.gbit_s),
        1.5,
        Goal::AtLeast,
    ));
    out.push(ratio(
        "B5",
        "opaque TCP throughput vigil/one-core rustls ceiling",
        per_round(
            r,
            Kind::Tcp,
            "vigil",
            |_, _, s| valid(s, |s| s.gbit_s * 1e9 / 8.0),
            |r, i| r.crypto_ceiling.get(i).copied(),
        ),
        0.45,
        Goal::AtLeast,
    ));
    out.push(ratio(
        "B6",
        "new mTLS connection per request, req/s vigil/envoy",
        vigil_vs(r, Kind::NewConn, "envoy", |s| s.rate),
        2.0,
        Goal::AtLeast,
    ));
    out.push(ratio(
        "B7",
        "server CPU per mTLS handshake vigil/bare rustls",
        per_round(
            r,
            Kind::Handshake,
            "vigil",
            |_, _, s| valid(s, |s| s.cpu_per_op_us),
            |r, i| r.bare_handshake_us.get(i).copied(),
        ),
        1.2,
        Goal::AtMost,
    ));
    out.push(ratio(
        "B12",
        "CPU per request metrics on/off",
        vigil_vs(r, Kind::H1Fixed, "vigil-nometrics", |s| s.cpu_per_op_us),
        1.03,
        Goal::AtMost,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p50: u64, p99: u64, cpu: f64, rate: f64) -> Sample {
        Sample {
            rate,
            p50_us: p50,
            p99_us: p99,
            cpu_per_1k: cpu,
            cpu_per_op_us: cpu * 1000.0,
            ..Sample::default()
        }
    }

    #[test]
    fn median_and_range_skip_missing_rounds() {
        assert_eq!(
            summarize(&[Some(3.0), None, Some(1.0), Some(2.0)]),
            Some((2.0, 1.0, 3.0))
        );
        assert_eq!(summarize(&[Some(1.0), Some(4.0)]), Some((2.5, 1.0, 4.0)));
        assert_eq!(summarize(&[None, Some(f64::NAN)]), None);
    }

    #[test]
    fn ratios_come_from_the_same_round_and_ignore_invalid_runs() {
        let mut r = Results::default();
        for round in 0..3 {
            let k = round as f64;
            r.push(Kind::H1Fixed, "direct", s(100, 500, 0.0, 1000.0));
            r.push(
                Kind::H1Fixed,
                "vigil",
                s(150, 1000, 0.1 + k / 100.0, 1000.0),
            );
            r.push(Kind::H1Fixed, "envoy", s(300, 4000, 0.5, 1000.0));
            r.push(Kind::H1Fixed, "haproxy", s(250, 2000, 0.3, 1000.0));
            r.push(Kind::H1Fixed, "nginx", s(250, 3000, 0.25, 1000.0));
            r.push(Kind::H1Fixed, "vigil-nometrics", s(150, 1000, 0.1, 1000.0));
        }
        // An invalid run of the subject in round 3 is left out.
        if let Some(v) = r
            .samples
            .get_mut("H1Fixed")
            .and_then(|m| m.get_mut("vigil"))
        {
            v[2].invalid = Some("missed the rate".into());
        }
        let all = ratios(&r);
        let find = |name: &str| all.iter().find(|x| x.name == name).unwrap();
        let p50 = find("h1 added p50 vigil/envoy");
        assert!((p50.ratio - 0.25).abs() < 1e-9, "{p50:?}");
        assert!(p50.pass());
        let p99 = find("h1 p99 vigil/best baseline");
        assert!((p99.ratio - 0.5).abs() < 1e-9 && p99.pass(), "{p99:?}");
        let cpu = find("h1 CPU per 1k req/s vigil/envoy");
        assert!(
            (cpu.min - 0.2).abs() < 1e-9 && (cpu.max - 0.22).abs() < 1e-9,
            "{cpu:?}"
        );
        let b12 = find("CPU per request metrics on/off");
        assert!((b12.ratio - 1.05).abs() < 1e-9 && !b12.pass(), "{b12:?}");
        // Nothing measured: NaN, and NaN never passes.
        let b6 = find("new mTLS connection per request, req/s vigil/envoy");
        assert!(b6.ratio.is_nan() && !b6.pass());
    }
}
