//! `vigil-proxy`: `run` the sidecar, or `init` the pod's iptables redirection.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{io::IsTerminal, process::ExitCode};

use clap::{Parser, Subcommand};
use vigil_proxy::{Proxy, config::RunArgs, init::InitArgs, wait_ready::WaitReadyArgs};

/// Vigil's sidecar proxy.
#[derive(Debug, Parser)]
#[command(name = "vigil-proxy", version, about)]
struct Cli {
    /// Diagnostic log format (access logs are always JSON lines on stdout).
    #[arg(
        long,
        env = "VIGIL_PROXY_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Run(Box<RunArgs>),
    /// Program iptables so the pod's traffic goes through the proxy (init container).
    Init(InitArgs),
    /// Wait until the proxy reports ready (the injected postStart hook, where the cluster
    /// has no native sidecars).
    WaitReady(WaitReadyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Init(args) => match vigil_proxy::init::run(&args) {
            Ok(lines) => {
                if args.dry_run {
                    for l in lines {
                        println!("{l}");
                    }
                } else {
                    let v6 = lines
                        .iter()
                        .filter(|l| l.starts_with(&format!("{} ", args.ip6tables)))
                        .count();
                    eprintln!(
                        "vigil-proxy init: {} iptables rules applied, {v6} ip6tables rules applied",
                        lines.len() - v6
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::WaitReady(args) => match vigil_proxy::wait_ready::wait(&args) {
            Ok(after) => {
                eprintln!("vigil-proxy wait-ready: ready after {after:?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => match run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = args.validate()?;
    match vigil_proxy::limits::raise_fd_limit() {
        Ok((before, now)) if now > before => {
            tracing::info!(before, now, "raised the open-files limit to the hard limit");
        }
        Ok((_, now)) => tracing::info!(limit = now, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "could not read or raise the open-files limit"),
    }
    let runtime = if cfg.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let proxy = Proxy::start(cfg).await?;
        wait_for_signal().await?;
        tracing::info!("shutting down: draining connections");
        let left = proxy.drain().await;
        if left > 0 {
            tracing::warn!(
                connections = left,
                "drain deadline reached; closing the rest"
            );
        }
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_PROXY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Colours in the text log only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>): escape codes in a file or a pipe are noise.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
