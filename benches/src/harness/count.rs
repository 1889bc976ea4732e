//! The deterministic figures: instructions and allocator calls per request, per path,
//! counted under callgrind ([`super::callgrind`]).
//!
//! Wall-clock ratios on a shared 2-core machine move 2–3× between rounds; these do not.
//! After the timed rounds a second topology starts with every proxy under callgrind (the
//! backend and the TCP sink native), and for each path and workload the harness warms
//! the path up, zeroes the counters of every process of its sidecars, runs a fixed
//! number of requests one after another, dumps the counters and divides. A count is of
//! the proxies' user-space work for those requests — parsing, policy, TLS records, the
//! allocator, timers that fired meanwhile — not of the kernel's.
//!
//! | workload | through | processes counted |
//! |---|---|---|
//! | `h1` | one HTTP/1.1 keep-alive connection to the outbound entry | both sidecars |
//! | `h2` | one HTTP/2 connection, one stream at a time | both sidecars |
//! | `conn` | a new mTLS connection to the inbound per request, full handshake (B6's shape) | the inbound |
//! | `resume` | the same, each connection resuming the session of the one before | the inbound |
//!
//! Each dump is kept as `<results>/callgrind/<path>.<workload>.<process>.<pid>.callgrind`:
//! `callgrind_annotate` on it shows where those requests' instructions went.

use std::{path::Path, time::Duration};

use anyhow::Context;
use serde::Serialize;

use crate::load::{Protocol, Target, client};

use super::{
    callgrind::{self, Counts},
    measure::TlsClients,
    topology::{PathDef, Topology},
};

/// The paths counted (direct has no proxy to count).
pub const PATHS: &[&str] = &[
    "vigil",
    "vigil-nometrics",
    "vigil-h1app",
    "envoy",
    "haproxy",
    "nginx",
];

/// What a count measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// HTTP/1.1 keep-alive through the pair.
    H1,
    /// HTTP/2 through the pair.
    H2,
    /// A new mTLS connection (full handshake) and one request, to the inbound.
    Conn,
    /// A new mTLS connection that resumes the previous one's session, and one request.
    Resume,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::H1 => "h1",
            Self::H2 => "h2",
            Self::Conn => "conn",
            Self::Resume => "resume",
        })
    }
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Self; 4] = [Self::H1, Self::H2, Self::Conn, Self::Resume];

    /// Requests counted, after `self.warmup()` uncounted ones.
    pub fn requests(self) -> u32 {
        match self {
            Self::H1 | Self::H2 => 1000,
            Self::Conn | Self::Resume => 100,
        }
    }

    /// Whether each request opens a new connection.
    pub fn fresh(self) -> bool {
        matches!(self, Self::Conn | Self::Resume)
    }

    fn warmup(self) -> u32 {
        match self {
            Self::H1 | Self::H2 => 100,
            Self::Conn | Self::Resume => 10,
        }
    }
}

/// One path's figures for one workload.
#[derive(Clone, Debug, Serialize)]
pub struct Counted {
    /// The path.
    pub path: String,
    /// The workload.
    pub workload: Workload,
    /// Instructions per request, every counted process together.
    pub instructions: f64,
    /// Allocator calls per request.
    pub allocations: f64,
    /// Why there is no figure.
    pub error: Option<String>,
}

/// Counts every workload on every path of `topo` (started with
/// [`super::topology::Launch::Callgrind`] and `dumps`), printing a line per count.
pub async fn run(topo: &Topology, dumps: &Path, tls: &TlsClients) -> Vec<Counted> {
    let mut out = Vec::new();
    for &name in PATHS {
        let Some(p) = topo.path(name) else { continue };
        for w in Workload::ALL {
            let c = match count(topo, p, w, dumps, tls).await {
                Ok(Some(per)) => Counted {
                    path: name.into(),
                    workload: w,
                    instructions: per.instructions as f64 / f64::from(w.requests()),
                    allocations: per.allocations as f64 / f64::from(w.requests()),
                    error: None,
                },
                Ok(None) => continue,
                Err(e) => Counted {
                    path: name.into(),
                    workload: w,
                    instructions: f64::NAN,
                    allocations: f64::NAN,
                    error: Some(format!("{e:#}")),
                },
            };
            eprintln!(
                "count {name} {w:?}: {:.0} instructions, {:.1} allocations per request{}",
                c.instructions,
                c.allocations,
                c.error
                    .as_deref()
                    .map(|e| format!(" FAILED: {e}"))
                    .unwrap_or_default()
            );
            out.push(c);
        }
    }
    out
}

/// The counts for `w` requests on `p`; `None` if the path has no such workload.
async fn count(
    topo: &Topology,
    p: &PathDef,
    w: Workload,
    dumps: &Path,
    tls: &TlsClients,
) -> anyhow::Result<Option<Counts>> {
    let Some((t, procs)) = target(p, w, tls) else {
        return Ok(None);
    };
    let procs = topo.procs_at(&procs);
    let fresh = w.fresh();
    let mut sender = client::connect(&t).await?;
    warm_up(&t, &mut sender, w.warmup(), fresh).await?;
    settle().await;
    let pids: Vec<(&str, u32)> = procs
        .iter()
        .flat_map(|p| p.pids().into_iter().map(|pid| (p.name.as_str(), pid)))
        .collect();
    for &(_, pid) in &pids {
        callgrind::zero(pid)?;
    }
    requests(&t, &mut sender, w.requests(), fresh)
        .await
        .context("counted (after the warm-up)")?;
    drop(sender);
    settle().await;
    let mut total = Counts::default();
    for &(name, pid) in &pids {
        let (counts, file) = callgrind::dump(pid, dumps)?;
        // Kept under a name that says what it counted, for `callgrind_annotate`.
        let keep = dumps.join(format!("{}.{w}.{name}.{pid}.callgrind", p.name));
        std::fs::rename(&file, &keep)?;
        total = total + counts;
    }
    Ok(Some(total))
}

/// Where `w`'s requests on `p` go, and the indexes of the processes they cross; `None` if
/// the path has no such workload.
pub(super) fn target(p: &PathDef, w: Workload, tls: &TlsClients) -> Option<(Target, Vec<usize>)> {
    let target = |addr, protocol, tls| Target {
        addr,
        path: "/index.html".into(),
        authority: "localhost".into(),
        protocol,
        tls,
    };
    match w {
        Workload::H1 if !p.sidecars.is_empty() => {
            Some((target(p.http, Protocol::Http1, None), p.sidecars.clone()))
        }
        Workload::H1 => None,
        Workload::H2 if !p.h2_sidecars.is_empty() => {
            Some((target(p.h2, Protocol::Http2, None), p.h2_sidecars.clone()))
        }
        Workload::H2 => None,
        Workload::Conn | Workload::Resume => {
            let ((addr, how), i) = (p.inbound?, p.inbound_proc?);
            let client = match w {
                Workload::Resume => tls.get(how).resuming(),
                _ => tls.get(how).clone(),
            };
            Some((target(addr, Protocol::Http1, Some(client)), vec![i]))
        }
    }
}

/// Failed requests a warm-up may retry. Proxies that just started under callgrind run
/// every code path translated the first time, many times slower than natively: Envoy's
/// outbound can answer 503 when its own first connection to its inbound (a handshake,
/// also under callgrind) outlasts its connect timeout — on a slow machine (2026-12-07)
/// its HTTP/1.1 count failed with 503 in two runs of three. The counted requests after
/// the warm-up must all succeed.
const WARMUP_FAILURES: u32 = 5;

/// `n` successful GETs (as [`requests`]), retrying up to [`WARMUP_FAILURES`] failed ones
/// on a new connection after a pause.
async fn warm_up(
    t: &Target,
    sender: &mut client::Sender,
    n: u32,
    fresh: bool,
) -> anyhow::Result<()> {
    let (mut ok, mut failed) = (0, 0);
    while ok < n {
        match requests(t, sender, 1, fresh).await {
            Ok(()) => ok += 1,
            Err(e) if failed < WARMUP_FAILURES => {
                failed += 1;
                eprintln!(
                    "count: warm-up request to {} failed ({e:#}); retrying",
                    t.addr
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
                *sender = client::connect(t).await?;
            }
            Err(e) => return Err(e.context(format!("after {failed} failed warm-up requests"))),
        }
    }
    Ok(())
}

/// `n` GETs one after another, each on a new connection when `fresh`.
pub(super) async fn requests(
    t: &Target,
    sender: &mut client::Sender,
    n: u32,
    fresh: bool,
) -> anyhow::Result<()> {
    for i in 1..=n {
        if fresh {
            *sender = client::connect(t)
                .await
                .with_context(|| format!("connection {i} of {n}"))?;
        }
        sender
            .get(t)
            .await
            .with_context(|| format!("request {i} of {n}"))?;
    }
    Ok(())
}

/// Lets the sidecars finish with what they were sent (closing, logging) before their
/// counters are zeroed or read; under callgrind that takes a while.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// The ratios BENCHMARKS.md's targets imply for the counts: instructions per request
/// against nginx (B2, B4's CPU), per new connection against Envoy (B6), with and without
/// per-request metrics (B12), and B13 itself: instructions and allocations per request
/// per path (h1, h2, new mTLS connection) against nginx and HAProxy.
pub fn ratios(counts: &[Counted]) -> Vec<crate::Ratio> {
    let find = |path: &str, w: Workload| counts.iter().find(|c| c.path == path && c.workload == w);
    let get = |path: &str, w: Workload| find(path, w).map_or(f64::NAN, |c| c.instructions);
    let allocs = |path: &str, w: Workload| find(path, w).map_or(f64::NAN, |c| c.allocations);
    let ratio = |id: &str, name: &str, a: f64, b: f64, target: f64| {
        let r = a / b;
        crate::Ratio {
            id: id.into(),
            name: name.into(),
            ratio: r,
            min: r,
            max: r,
            target,
            goal: crate::Goal::AtMost,
            unit: "",
        }
    };
    let h1 = |path| (path, Workload::H1);
    let mut out = [
        (
            "B2",
            "h1 instructions per request vigil/nginx",
            h1("vigil"),
            h1("nginx"),
            1.0,
        ),
        (
            "B4",
            "h2 instructions per request vigil/nginx",
            ("vigil", Workload::H2),
            ("nginx", Workload::H2),
            1.0,
        ),
        (
            "B6",
            "instructions per new mTLS connection vigil/envoy",
            ("vigil", Workload::Conn),
            ("envoy", Workload::Conn),
            0.5,
        ),
        (
            "B6",
            "instructions per resumed mTLS connection vigil/envoy",
            ("vigil", Workload::Resume),
            ("envoy", Workload::Resume),
            0.5,
        ),
        (
            "B12",
            "h1 instructions per request metrics on/off",
            h1("vigil"),
            h1("vigil-nometrics"),
            1.03,
        ),
    ]
    .into_iter()
    .map(|(id, name, (a, wa), (b, wb), target)| ratio(id, name, get(a, wa), get(b, wb), target))
    .collect::<Vec<_>>();
    // B13: instructions and allocations of `path` against `base`, both at most 1.
    let b13 = |out: &mut Vec<crate::Ratio>, path: &str, w: Workload, tag: &str, base: &str| {
        let name = |what: &str| format!("{tag} {what} {path}/{base}");
        out.push(ratio(
            "B13",
            &name("instructions"),
            get(path, w),
            get(base, w),
            1.0,
        ));
        out.push(ratio(
            "B13",
            &name("allocations"),
            allocs(path, w),
            allocs(base, w),
            1.0,
        ));
    };
    for (w, tag) in [
        (Workload::H1, "h1"),
        (Workload::H2, "h2"),
        (Workload::Conn, "new mTLS connection"),
    ] {
        for base in ["nginx", "haproxy"] {
            b13(&mut out, "vigil", w, tag, base);
        }
    }
    // Like for like on the HTTP/2 path: the pair that forwards to the backend over
    // HTTP/1.1, as the baselines' inbounds do (the rows above are vigil as deployed).
    for base in ["nginx", "haproxy"] {
        b13(&mut out, "vigil-h1app", Workload::H2, "h2", base);
    }
    out
}

#[cfg(test)]
mod tests;
