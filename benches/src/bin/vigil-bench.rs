//! `vigil-bench`: the side-by-side macro benchmark (see `vigil_benches::harness`).
//!
//! ```text
//! vigil-bench                 # quick tier (make bench)
//! vigil-bench --full          # full tier (make bench-full)
//! vigil-bench --count-only    # only instructions/allocations per request (callgrind)
//! vigil-bench --only tcp --no-count   # one kind of timed measurement (B5 here)
//! vigil-bench sink ADDR       # the TCP sink it starts as B5's backend
//! vigil-bench relay ADDR UP   # a plain relay, two of which are B5's floor
//! vigil-bench tls-server DIR ADDR  # the smallest rustls server on sockets, B7's floor
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
    /// Only this kind of timed measurement (repeatable; all by default): e.g. `--only tcp`
    /// to repeat B5 alone while optimising it. Ratios of kinds not run print `NaN`.
    #[arg(long, value_enum, conflicts_with = "count_only")]
    only: Vec<harness::measure::Kind>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the TCP sink (B5's backend) on ADDR.
    Sink {
        /// Listen address.
        addr: SocketAddr,
    },
    /// Run a plain TCP relay (no TLS) from LISTEN to UPSTREAM; two are B5's `relay` path.
    Relay {
        /// Listen address.
        listen: SocketAddr,
        /// Where each connection goes.
        upstream: SocketAddr,
    },
    /// Serve mTLS handshakes with the server SVID in DIR on ADDR: the smallest rustls
    /// server over TCP, B7's `rustls` path (the socket floor).
    TlsServer {
        /// Directory with `server.crt`, `server.key` and `ca.crt`.
        dir: PathBuf,
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
    match cli.command {
        Some(Cmd::Sink { addr }) => return serve("sink", harness::tcp::sink(addr)),
        Some(Cmd::Relay { listen, upstream }) => {
            return serve("relay", harness::tcp::relay(listen, upstream));
        }
        Some(Cmd::TlsServer { dir, addr }) => {
            return match harness::tls_server::serve(&dir, addr) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil-bench tls-server: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
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
        only: cli.only,
    };
    match harness::run(&opts) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one of the harness's servers on a current-thread runtime until it fails.
fn serve(name: &str, server: impl Future<Output = std::io::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil-bench {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-bench {name}: {e}");
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
