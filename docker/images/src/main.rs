//! `vigil-images`: write Vigil's OCI image archives from the release binaries (`make
//! images`), a pause image for a test node, or show what an archive holds.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vigil_images::{archive, images, inspect};

/// Vigil's container images as OCI archives, without a container engine.
#[derive(Debug, Parser)]
#[command(name = "vigil-images", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write vigil-controller.tar, vigil-proxy.tar and vigil-testapp.tar.
    Build {
        /// Where the archives go (default: <target dir>/images).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the release binaries are (default: this program's own directory).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Image tag (default: the workspace version, which is the chart's appVersion).
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        tag: String,
    },
    /// Write a pause (pod sandbox) image from a static binary.
    Pause {
        /// The static pause binary.
        #[arg(long)]
        binary: PathBuf,
        /// The image reference, e.g. vigil.test/pause:1.
        #[arg(long)]
        reference: String,
        /// The archive to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print an archive's name, user, entrypoint, ports and size as JSON.
    Inspect {
        /// The archive.
        archive: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Build { out, bin_dir, tag } => {
            let own_dir = std::env::current_exe()
                .context("locating this program")?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let bin_dir = bin_dir.unwrap_or_else(|| own_dir.clone());
            let out = out.unwrap_or_else(|| {
                own_dir
                    .parent()
                    .map(|t| t.join("images"))
                    .unwrap_or_else(|| PathBuf::from("images"))
            });
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let specs = [
                images::controller(&bin_dir.join("vigil-controller"), &tag)?,
                images::proxy(&bin_dir.join("vigil-proxy"), &tag)?,
                images::testapp(&bin_dir.join("vigil-testapp"), &tag)?,
            ];
            for spec in &specs {
                let name = spec.repository.rsplit('/').next().unwrap_or("image");
                let path = out.join(format!("{name}.tar"));
                let digest = archive::write(spec, &path)?;
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                println!(
                    "{}  {}  {digest}  {:.1} MB",
                    path.display(),
                    spec.reference(),
                    size as f64 / 1e6
                );
            }
        }
        Command::Pause {
            binary,
            reference,
            out,
        } => {
            let spec = images::pause(&binary, &reference)?;
            let digest = archive::write(&spec, &out)?;
            println!("{}  {}  {digest}", out.display(), spec.reference());
        }
        Command::Inspect { archive: path } => {
            let i = inspect::inspect(&path)?;
            let c = i.config.config().clone().unwrap_or_default();
            let v = serde_json::json!({
                "reference": i.reference,
                "dockerTags": i.docker_tags,
                "user": c.user(),
                "entrypoint": c.entrypoint(),
                "cmd": c.cmd(),
                "exposedPorts": c.exposed_ports(),
                "files": i.files.len(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}
