//! `vigil`: the command line for operating a Vigil mesh.
//!
//! Every failure prints one line, `error: <what went wrong and what to check>`. Exit
//! codes: 0 success (or "allow"), 1 failure (or "deny" / a failed policy test / a failed
//! check), 2 usage errors and, for `explain`, `policy test`, `check` and `verify`, errors.
//!
//! Installed as `kubectl-vigil` on the PATH (a copy or symlink), it is a kubectl plugin:
//! `kubectl vigil explain ...`; it then names itself `kubectl vigil` in help and usage.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use vigil_cert_authority::TrustDomain;

mod ca;
mod check;
mod cluster;
mod completions;
mod controller_admin;
mod demo;
mod explain;
mod local_policy;
mod output;
mod policy_source;
mod policy_test;
mod quarantine;
mod status;
mod verify;

/// Vigil: a zero-trust service mesh.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, propagate_version = true)]
struct Cli {
    /// The cluster (kubectl's flags), for the commands that read or write it.
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
    #[command(subcommand)]
    command: Command,
}

/// The executable's name for kubectl's plugin mechanism: kubectl runs `kubectl-vigil`
/// for `kubectl vigil`.
const PLUGIN_EXE: &str = "kubectl-vigil";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole mesh on this machine and show what it does (start here).
    Demo(demo::DemoArgs),
    /// Administer the certificate authority (local mode and tests).
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Explain the decision for one request against the cluster's policies or a directory.
    Explain(explain::ExplainArgs),
    /// Policy as code.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show the controller's proxies, generations and policy verdicts.
    Status(status::StatusArgs),
    /// Quarantine workloads: creates a Quarantine in the cluster (or, with --dir, writes
    /// one into the policy directory).
    Quarantine(quarantine::QuarantineArgs),
    /// Lift a quarantine written by `vigil quarantine`.
    Unquarantine(quarantine::UnquarantineArgs),
    /// Check that the cluster can take Vigil (--pre, before installing) or that every
    /// part of the installed Vigil is healthy; exit 1 if a check failed.
    Check(check::CheckArgs),
    /// Verify one edge live: FROM and TO in the mesh and in sync, their SVIDs, whether
    /// FROM → TO is mTLS (the proxies' own record) and what TO's policy decides; exit 1
    /// if a check failed.
    Verify(verify::VerifyArgs),
    /// Print a shell completion script, e.g. `source <(vigil completions bash)`.
    Completions(completions::CompletionsArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a YAML list of expected decisions against the cluster's policies or a
    /// directory, optionally with a change laid over them (--overlay).
    Test(policy_test::PolicyTestArgs),
}

/// How help and usage name the program: `kubectl vigil` when run as the plugin.
fn bin_name() -> &'static str {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let exe = std::path::Path::new(&argv0)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if exe == PLUGIN_EXE {
        "kubectl vigil"
    } else {
        "vigil"
    }
}

fn parse_cli() -> Cli {
    let matches = Cli::command().bin_name(bin_name()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse_cli();
    let cluster = &cli.cluster;
    // `explain` and `policy test` use 1 for "deny"/"mismatch", and `check` for a failed
    // check, so their errors exit 2.
    let (result, error_code) = match cli.command {
        Command::Demo(a) => (demo::run(a), 1),
        Command::Ca(cmd) => (ca::run(cmd).map(|()| 0), 1),
        Command::Explain(a) => (explain::run(a, cluster), 2),
        Command::Policy(PolicyCommand::Test(a)) => (policy_test::run(a, cluster), 2),
        Command::Status(a) => (status::run(a, cluster), 1),
        Command::Quarantine(a) => (quarantine::quarantine(a, cluster), 1),
        Command::Unquarantine(a) => (quarantine::unquarantine(a, cluster), 1),
        Command::Check(a) => (check::run(a, cluster), 2),
        Command::Verify(a) => (verify::run(a, cluster), 2),
        Command::Completions(a) => (completions::run(a), 1),
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
