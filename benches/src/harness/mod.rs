//! The side-by-side macro benchmark (`vigil-bench`, run by `make bench` / `make bench-full`).
//!
//! One invocation starts every path of BENCHMARKS.md — direct, a vigil sidecar pair, and
//! the Envoy, HAProxy and nginx pairs from the reference configurations — with everything
//! under test pinned to CPU 0 and the load generator (this process) to CPU 1, runs
//! interleaved rounds of B1–B7 and B12, and prints one line per target:
//!
//! ```text
//! B2 h1 CPU per 1k req/s vigil/envoy ratio=0.412 [0.398..0.431] target=<=0.5 pass=true
//! ```
//!
//! Then it starts every proxy again under callgrind and counts instructions and
//! allocator calls per request ([`count`]): figures that do not move with the machine's
//! load, to decide what to change and to check that a change helped.
//!
//! It writes every sample as JSON (`run-<time>.json`) and every ratio as a JSON line
//! (`<id>.jsonl`, with the micro-benchmarks') under the results directory, and a Markdown
//! report with an SVG latency plot (`report.md`, `latency.svg`). Every process it started
//! is killed at the end, on error, and on SIGINT/SIGTERM.

// This module is the benchmark program's body: progress goes to stderr, ratio lines to
// stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod binaries;
pub mod callgrind;
pub mod certs;
pub mod count;
pub mod crypto;
pub mod floors;
pub mod layout;
pub mod measure;
pub mod plot;
pub mod procs;
pub mod report;
pub mod suite;
pub mod syscalls;
pub mod tcp;
pub mod tls_server;
pub mod topology;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::SystemTime,
};

use anyhow::Context;

use crate::Ratio;
use topology::Launch;

/// Options of one invocation.
#[derive(Debug, Clone)]
pub struct Options {
    /// Tier.
    pub tier: suite::Tier,
    /// Where results go.
    pub out: PathBuf,
    /// Pin the SUT to CPU 0 and the generator to CPU 1 (needs 2 CPUs).
    pub pin: bool,
    /// Run the timed rounds (B1–B7, B12).
    pub timed: bool,
    /// Count instructions and allocations per request under callgrind ([`count`]).
    pub count: bool,
    /// Only these kinds of timed measurement (all when empty): a loop to use while
    /// optimising one timed target. The report then leaves the others' ratios `NaN`.
    pub only: Vec<measure::Kind>,
}

/// Runs the whole suite; the ratios.
pub fn run(opts: &Options) -> anyhow::Result<Vec<Ratio>> {
    install_signal_handler();
    let bins = topology::Binaries::find()?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let pin = opts.pin && cpus >= 2;
    if opts.pin && !pin {
        eprintln!("vigil-bench: 1 CPU available; not pinning (numbers will be noisy)");
    }
    if pin {
        let mut set = nix::sched::CpuSet::new();
        set.set(1)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .context("pinning the load generator to CPU 1")?;
    }
    fs::create_dir_all(&opts.out)?;
    let work = tempfile::Builder::new().prefix("vigil-bench-").tempdir()?;
    let provider = bench_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cpu = pin.then_some(0);
    let (results, idle_pss_kib) = if opts.timed {
        let mut topo = topology::Topology::start(&bins, work.path(), cpu, &Launch::Native)?;
        eprintln!(
            "vigil-bench: every path started (work directory {})",
            work.path().display()
        );
        let idle_pss_kib = topo
            .procs
            .iter()
            .map(|p| (p.name.clone(), p.pss() / 1024))
            .collect();
        let tls = tls_clients(&topo, &provider)?;
        let results = rt.block_on(suite::run(
            &mut topo,
            opts.tier,
            &opts.only,
            &tls,
            Arc::clone(&provider),
        ))?;
        (results, idle_pss_kib)
        // every process is killed here, before the counted run or any writing
    } else {
        (suite::Results::default(), Vec::new())
    };
    let counts = if opts.count {
        let dir = work.path().join("counted");
        // The dumps stay with the results (the last run's only), for callgrind_annotate.
        let dumps = opts.out.join("callgrind");
        if dumps.exists() {
            fs::remove_dir_all(&dumps)?;
        }
        fs::create_dir_all(&dumps)?;
        let topo = topology::Topology::start(&bins, &dir, cpu, &Launch::Callgrind(dumps.clone()))
            .context("starting the proxies under callgrind (is valgrind installed?)")?;
        eprintln!("vigil-bench: every proxy started under callgrind");
        let tls = tls_clients(&topo, &provider)?;
        rt.block_on(count::run(&topo, &dumps, &tls))
    } else {
        Vec::new()
    };

    let mut ratios = if opts.timed {
        suite::ratios(&results)
    } else {
        Vec::new()
    };
    if opts.count {
        ratios.extend(count::ratios(&counts));
    }
    for r in &ratios {
        println!("{}", r.line());
        r.record(&opts.out)?;
    }
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let info = report::RunInfo {
        tier: format!("{:?}", opts.tier).to_lowercase(),
        rounds: opts.tier.rounds(),
        date: utc_now(),
        machine: format!(
            "{cpus} CPUs, Linux {}, {}",
            fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
            if pin {
                "SUT on CPU 0, generator on CPU 1"
            } else {
                "not pinned"
            }
        ),
        versions: versions(&bins),
        idle_pss_kib,
    };
    let json =
        serde_json::json!({ "info": info, "results": results, "counts": counts, "ratios": ratios });
    fs::write(
        opts.out.join(format!("run-{stamp}.json")),
        serde_json::to_vec_pretty(&json)?,
    )?;
    let mut all = ratios.clone();
    all.extend(latest_micro(&opts.out));
    fs::write(opts.out.join("latency.svg"), plot::latency_svg(&results))?;
    fs::write(
        opts.out.join("report.md"),
        report::markdown(&info, &results, &counts, &all, "latency.svg"),
    )?;
    eprintln!(
        "vigil-bench: report in {}",
        opts.out.join("report.md").display()
    );
    Ok(ratios)
}

/// The newest record of each micro-benchmark result (B8–B11, B12's micro part) in `dir`,
/// for the report.
fn latest_micro(dir: &Path) -> Vec<Ratio> {
    let mut out = Vec::new();
    for id in ["B8", "B9", "B10", "B11", "B12"] {
        let Ok(text) = fs::read_to_string(dir.join(format!("{id}.jsonl"))) else {
            continue;
        };
        // B12.jsonl also holds the harness's own (unitless) ratio: only the micro part.
        let rows: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| id != "B12" || v["unit"].is_string())
            .collect();
        let Some(newest) = rows.iter().filter_map(|v| v["unix_time"].as_u64()).max() else {
            continue;
        };
        // Everything that benchmark wrote in its last invocation (within a minute of it).
        for v in rows
            .iter()
            .filter(|v| v["unix_time"].as_u64().is_some_and(|t| t + 60 >= newest))
        {
            let unit: &'static str = match v["unit"].as_str() {
                Some("ns") => "ns",
                Some("ms") => "ms",
                Some("MB") => "MB",
                Some("KB") => "KB",
                _ => "",
            };
            out.push(Ratio {
                id: id.into(),
                name: v["name"].as_str().unwrap_or("").into(),
                ratio: v["ratio"].as_f64().unwrap_or(f64::NAN),
                min: v["min"].as_f64().unwrap_or(f64::NAN),
                max: v["max"].as_f64().unwrap_or(f64::NAN),
                target: v["target"].as_f64().unwrap_or(f64::NAN),
                goal: if v["goal"] == "AtLeast" {
                    crate::Goal::AtLeast
                } else {
                    crate::Goal::AtMost
                },
                unit,
            });
        }
    }
    out
}

fn versions(bins: &topology::Binaries) -> Vec<String> {
    let first_line = |prog: &Path, arg: &str| {
        Command::new(prog)
            .arg(arg)
            .output()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text)
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|e| format!("{}: {e}", prog.display()))
    };
    vec![
        format!("vigil-proxy {}", env!("CARGO_PKG_VERSION")),
        first_line(&bins.envoy, "--version"),
        first_line(&bins.haproxy, "-v"),
        first_line(&bins.nginx, "-v"),
    ]
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// SIGINT/SIGTERM: kill every started process group, then exit. The signals are blocked
/// in the calling thread (and so in every thread started after it) and taken by one
/// thread with `sigwait`; children start with an empty mask (std resets it).
fn install_signal_handler() {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGINT);
    set.add(nix::sys::signal::Signal::SIGTERM);
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            procs::kill_all();
            eprintln!("vigil-bench: {sig:?}; every process it started is killed");
            std::process::exit(130);
        }
    });
}

/// `vigil-bench layout` (`make proxy-layout`): profiles the vigil sidecars of the
/// topology under callgrind and writes the functions that ran to `out` ([`layout`]).
pub fn layout(out: &Path) -> anyhow::Result<()> {
    install_signal_handler();
    let bins = topology::Binaries::find()?;
    let work = tempfile::Builder::new().prefix("vigil-layout-").tempdir()?;
    let dumps = work.path().join("callgrind");
    fs::create_dir_all(&dumps)?;
    let provider = bench_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let topo = topology::Topology::start(
        &bins,
        &work.path().join("topology"),
        None,
        &Launch::Layout(dumps.clone()),
    )
    .context("starting the vigil sidecars under callgrind (is valgrind installed?)")?;
    eprintln!("vigil-bench: the vigil sidecars started under callgrind");
    let tls = tls_clients(&topo, &provider)?;
    let profile = rt.block_on(layout::profile(&topo, &dumps, &tls, &bins.vigil_proxy))?;
    drop(topo);
    let symbols = layout::symbols(&bins.vigil_proxy)?;
    let header = format!(
        "The functions of vigil-proxy that run, in the order its build links them ahead of the\n\
         rest of its code (proxy/build.rs, proxy/src/link_layout.rs): what startup runs, then\n\
         what only serving runs. Written by `make proxy-layout` (vigil-bench layout) from\n\
         callgrind profiles of the benchmark topology's sidecars starting and serving HTTP/1.1,\n\
         HTTP/2, new and resumed mTLS connections, opaque TCP and admin requests. Regenerate\n\
         after changing what the proxy runs: functions missing here are linked as before,\n\
         among the rest (B8's idle PSS grows with a stale list).\n\
         Written {}.",
        utc_now()
    );
    fs::write(out, layout::list(&profile, &symbols, &header))
        .with_context(|| out.display().to_string())?;
    eprintln!(
        "vigil-bench: {} functions at startup, {} more while serving -> {}",
        profile.startup.len(),
        profile
            .serving
            .iter()
            .flat_map(|(_, ran)| ran)
            .filter(|f| !profile.startup.contains(*f))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        out.display()
    );
    Ok(())
}

/// The load generator's TLS provider (and B7's socket floor's). Like for like: every path
/// on X25519 and AES-128-GCM (topology::KX_GROUP, topology::CIPHER_SUITE), what Envoy's
/// BoringSSL negotiates and cannot be told otherwise; this client offers nothing else, so
/// no server can pick another.
pub fn bench_provider() -> Arc<rustls::crypto::CryptoProvider> {
    vigil_cert_authority::tls::provider_with(
        &[rustls::crypto::aws_lc_rs::kx_group::X25519],
        &[rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256],
    )
}

/// TLS clients for direct connections to the inbound sidecars of `topo`.
fn tls_clients(
    topo: &topology::Topology,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<measure::TlsClients> {
    Ok(measure::TlsClients {
        vigil: topo
            .certs
            .spiffe_client(provider.clone(), &[vigil_cert_authority::tls::ALPN_MESH])?,
        spiffe: topo.certs.spiffe_client(provider.clone(), &[])?,
        dns: topo.certs.dns_client(provider.clone())?,
    })
}
