//! `vigil`: the command line for operating a Vigil mesh.
//!
//! Every failure prints one line, `error: <what went wrong and what to check>`. Exit
//! codes: 0 success (or "allow"), 1 failure (or "deny" / a failed policy test), 2 usage
//! errors and, for `explain` and `policy test`, errors.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_cert_authority::TrustDomain;

mod ca;
mod demo;
mod explain;
mod local_policy;
mod policy_test;
mod quarantine;
mod status;

/// Vigil: a zero-trust service mesh.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole mesh on this machine and show what it does (start here).
    Demo(demo::DemoArgs),
    /// Administer the certificate authority (local mode and tests).
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Explain the decision for one request against a policy directory.
    Explain(explain::ExplainArgs),
    /// Policy as code.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show the controller's proxies, generations and policy verdicts.
    Status(status::StatusArgs),
    /// Quarantine workloads (local mode: writes a Quarantine into the policy directory).
    Quarantine(quarantine::QuarantineArgs),
    /// Lift a quarantine written by `vigil quarantine`.
    Unquarantine(quarantine::UnquarantineArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a YAML list of expected decisions against a policy directory.
    Test(policy_test::PolicyTestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `explain` and `policy test` use 1 for "deny"/"mismatch", so their errors exit 2.
    let (result, error_code) = match cli.command {
        Command::Demo(a) => (demo::run(a), 1),
        Command::Ca(cmd) => (ca::run(cmd).map(|()| 0), 1),
        Command::Explain(a) => (explain::run(a), 2),
        Command::Policy(PolicyCommand::Test(a)) => (policy_test::run(a), 2),
        Command::Status(a) => (status::run(a), 1),
        Command::Quarantine(a) => (quarantine::quarantine(a), 1),
        Command::Unquarantine(a) => (quarantine::unquarantine(a), 1),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // `{:#}` joins the context chain into one line.
            eprintln!("error: {e:#}");
            ExitCode::from(error_code)
        }
    }
}

fn parse_trust_domain(s: &str) -> Result<TrustDomain, String> {
    TrustDomain::new(s).map_err(|e| e.to_string())
}
