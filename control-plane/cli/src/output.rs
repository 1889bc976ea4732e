//! `-o/--output table|json|yaml`, the same flag with the same meaning on every command
//! that reports something (`explain`, `policy test`, `status`, `quarantine`,
//! `unquarantine`): `table` for people (the default), `json` and `yaml` for scripts — the
//! same value serialized either way, one document per run.

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;

/// How a command prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Lines and columns for people.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// The flag, flattened into each reporting command.
#[derive(Clone, Copy, Debug, Default, Args)]
pub(crate) struct OutputArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: Format,
    /// Same as `--output json` (kept for scripts written before `--output`).
    #[arg(long, hide = true, conflicts_with = "output")]
    json: bool,
}

// === impl OutputArgs ===

impl OutputArgs {
    /// The chosen format.
    pub(crate) fn format(self) -> Format {
        if self.json { Format::Json } else { self.output }
    }

    /// Prints `value` as JSON or YAML, or calls `table` to print it for people.
    pub(crate) fn print<T: Serialize>(self, value: &T, table: impl FnOnce(&T)) -> Result<()> {
        match self.format() {
            Format::Table => table(value),
            Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        }
        Ok(())
    }
}
