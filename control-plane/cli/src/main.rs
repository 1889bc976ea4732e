//! `vigil`: the command line for operating a Vigil mesh.
//!
//! Today it administers the certificate authority (`vigil ca ...`). Every failure prints
//! one line, `error: <what went wrong and what to check>`, and exits non-zero.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ca;

/// Vigil: a zero-trust service mesh.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Administer the certificate authority (local mode and tests).
    #[command(subcommand)]
    Ca(ca::CaCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ca(cmd) => ca::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain into one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
