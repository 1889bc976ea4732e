//! `vigil-bench`: the side-by-side macro benchmark (see `vigil_benches::harness`).
//!
//! ```text
//! vigil-bench                 # quick tier (make bench)
//! vigil-bench --full          # full tier (make bench-full)
//! vigil-bench --count-only    # only instructions/allocations per request (callgrind)
//! vigil-bench sink ADDR       # the TCP sink it starts as B5's backend
//! vigil-bench layout          # write proxy/layout/hot-functions.txt (make proxy-layout)
//! ```
//!
//! Exits 1 if the suite could not run; target misses are reported, not fatal.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use vigil_benches::harness::{self, suite::Tier};

/// Side-by-side benchmark of vigil against Envoy, HAProxy and nginx sidecar pairs.
#[derive(Debug, Parser)]
#[command(name = "vigil-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Full tier (5 rounds, longer runs) instead of the quick one.
    #[arg(long)]
    full: bool,
    /// Results directory (default: <target dir>/bench-results).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not pin the SUT and the generator to separate CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Skip the counted run under callgrind (instructions and allocations per request).
    #[arg(long, conflicts_with = "count_only")]
    no_count: bool,
    /// Only the counted run: no timed rounds (quick to repeat while optimising).
    #[arg(long)]
    count_only: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the TCP sink (B5's backend) on ADDR.
    Sink {
        /// Listen address.
        addr: SocketAddr,
    },
    /// Profile the vigil sidecars under callgrind and write the functions that run, which
    /// vigil-proxy's build links together (make proxy-layout).
    Layout {
        /// The list to write.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../proxy/layout/hot-functions.txt"))]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Sink { addr }) = cli.command {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("vigil-bench sink: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match rt.block_on(harness::tcp::sink(addr)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil-bench sink: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Cmd::Layout { out }) = &cli.command {
        return match harness::layout(out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil-bench layout: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let out = cli.out.unwrap_or_else(default_out);
    let opts = harness::Options {
        tier: if cli.full { Tier::Full } else { Tier::Quick },
        out,
        pin: !cli.no_pin,
        timed: !cli.count_only,
        count: !cli.no_count,
    };
    match harness::run(&opts) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `<target dir>/bench-results`: this binary lives in `<target dir>/<profile>/`.
fn default_out() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("bench-results")))
        .unwrap_or_else(|| PathBuf::from("target/bench-results"))
}
