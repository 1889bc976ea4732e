//! The programs the harness starts: the release `vigil-proxy` beside it, Envoy from
//! `benches/baselines/install.sh`, HAProxy and nginx from the system.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The programs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// Release `vigil-proxy`.
    pub vigil_proxy: PathBuf,
    /// Envoy 1.40 (from `benches/baselines/install.sh`).
    pub envoy: PathBuf,
    /// HAProxy.
    pub haproxy: PathBuf,
    /// nginx.
    pub nginx: PathBuf,
    /// This program (its `sink` subcommand is the TCP backend).
    pub me: PathBuf,
}

impl Binaries {
    /// Finds every program, saying how to get a missing one.
    pub fn find() -> anyhow::Result<Self> {
        let me = std::env::current_exe()?;
        let dir = me.parent().context("no directory for the harness binary")?;
        let vigil_proxy = dir.join("vigil-proxy");
        if !vigil_proxy.is_file() {
            bail!(
                "{} missing: build it with `cargo build --release -p vigil-proxy` (`make bench` does)",
                vigil_proxy.display()
            );
        }
        let envoy = match std::env::var_os("VIGIL_BENCH_ENVOY") {
            Some(p) => PathBuf::from(p),
            None => home().join(".cache/vigil/bench/envoy-1.40.0/envoy"),
        };
        if !envoy.is_file() {
            bail!(
                "{} missing: run benches/baselines/install.sh (`make bench` does)",
                envoy.display()
            );
        }
        Ok(Self {
            vigil_proxy,
            envoy,
            haproxy: which("haproxy")?,
            nginx: which("nginx")?,
            me,
        })
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{name} not found: run benches/baselines/install.sh (`make bench` does)")
        })
}
