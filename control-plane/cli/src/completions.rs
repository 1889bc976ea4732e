//! `vigil completions <shell>`: the shell completion script, generated from the same clap
//! definition that parses the command line (so it cannot drift from the flags).

use std::io::Write;

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Flags of `vigil completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub(crate) shell: Shell,
}

/// Prints the script for `vigil` (for `kubectl vigil`, kubectl completes its plugins itself).
pub(crate) fn run(a: CompletionsArgs) -> Result<u8> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut crate::Cli::command(), "vigil", &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(0)
}
