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
        /// Where the release vigil-controller and vigil-proxy are (default:
        /// <target dir>/release).
        #[arg(long)]
        release_dir: Option<PathBuf>,
        /// The test app binary (default: vigil-testapp next to this program).
        #[arg(long)]
        testapp: Option<PathBuf>,
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
        Command::Build {
            out,
            release_dir,
            testapp,
            tag,
        } => {
            let own_dir = std::env::current_exe()
                .context("locating this program")?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let target = own_dir.parent().map(Path::to_path_buf).unwrap_or_default();
            let release = release_dir.unwrap_or_else(|| target.join("release"));
            let testapp = testapp.unwrap_or_else(|| own_dir.join("vigil-testapp"));
            let out = out.unwrap_or_else(|| target.join("images"));
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let specs = [
                images::controller(&release.join("vigil-controller"), &tag)?,
                images::proxy(&release.join("vigil-proxy"), &tag)?,
                images::testapp(&testapp, &tag)?,
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
