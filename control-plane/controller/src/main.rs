//! `vigil-controller` entry point.

#![allow(clippy::print_stderr)]

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use vigil_controller::{Controller, ControllerArgs};

/// Vigil's control plane: CA, policy index, proxy API.
#[derive(Debug, Parser)]
#[command(name = "vigil-controller", version, about)]
struct Cli {
    /// Diagnostic log format.
    #[arg(long, env = "VIGIL_CONTROLLER_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    args: ControllerArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_CONTROLLER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let controller = Controller::start(cli.args).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        controller.stop().await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Colours in the text log only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>): escape codes in a file or a pipe are noise.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
