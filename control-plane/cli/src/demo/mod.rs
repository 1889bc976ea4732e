//! `vigil demo`: the whole mesh on this machine in one command — no Kubernetes, no root.
//!
//! A local-mode controller with its own CA, four demo services (`frontend`, `orders`,
//! `payments` and an enrolled but unauthorised `intruder`) each behind its own
//! vigil-proxy on 127.0.0.1, and a policy directory; then eight narrated steps that show
//! and check what the mesh does (see [`steps`]). Exits 0 only if every step behaved as
//! expected; `--json` prints one JSON object for scripts.
//!
//! ```text
//!   demo (as each app) ──► frontend proxy ══mTLS══► orders proxy ──► orders app
//!                                         ══mTLS══► payments proxy ──► payments app
//!                          orders proxy   ══mTLS══► payments proxy
//!                          intruder proxy ══mTLS══► (denied)
//!   controller: CA + policy dir ──gRPC/mTLS──► every proxy (SVIDs, policy)
//! ```

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context, Result};
use clap::Args;

mod apps;
mod client;
mod mesh;
mod policies;
mod report;
mod steps;

use mesh::Mesh;
use report::{Narrator, secs};
use steps::{Demo, STEPS};

/// Flags of `vigil demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Print one JSON object with every step's outcome on stdout (the narration goes to
    /// stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// Keep the demo's files (policy directory, CA state, access logs) and print where.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Also print the controller's and proxies' own logs (to stderr).
    #[arg(long, short)]
    pub(crate) verbose: bool,
}

/// Exit code: 0 when every step behaved as expected, 1 otherwise.
pub(crate) fn run(a: DemoArgs) -> Result<u8> {
    if a.verbose {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_ansi(
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let dir = tempfile::Builder::new()
        .prefix("vigil-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let out: Box<dyn Write + Send> = if a.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let report = runtime.block_on(demo(dir.path().to_path_buf(), out))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if a.keep {
        let kept = dir.keep();
        eprintln!(
            "kept the demo's files in {}: policy/ (the YAML), state/ (the CA), logs/<service>.log (access logs)",
            kept.display()
        );
    }
    // Stop the background tasks (watchers, servers) before the directory goes away.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(if report.ok { 0 } else { 1 })
}

async fn demo(root: PathBuf, out: Box<dyn Write + Send>) -> Result<report::Report> {
    let mut n = Narrator::new(out, STEPS);
    n.say("vigil demo: a zero-trust service mesh on this machine (no Kubernetes, no root).");
    n.say(
        "Starting a local controller (its own CA; certificates live 1 minute) and four services,\neach behind its own vigil-proxy on 127.0.0.1...",
    );
    let started = Instant::now();
    let mesh = Mesh::start(
        &root,
        &[
            ("segments.yaml", policies::SEGMENTS.to_string()),
            ("policies.yaml", policies::POLICIES.to_string()),
        ],
    )
    .await?;
    n.say(format!(
        "\n  {:<9} {:<21} {:<21} {}",
        "service", "app", "proxy inbound", "identity (SPIFFE ID in its certificate)"
    ));
    for s in &mesh.services {
        n.say(format!(
            "  {:<9} {:<21} {:<21} {}",
            s.name,
            s.app.addr.to_string(),
            s.proxy.inbound.to_string(),
            s.id
        ));
    }
    n.say(format!(
        "  controller gRPC {} (mTLS)   status: http://{}/status",
        mesh.ctl.grpc, mesh.ctl.admin
    ));
    n.say(format!(
        "  policy directory {} (segments.yaml, policies.yaml, workloads.yaml)",
        mesh.policy_dir.display()
    ));
    n.say(format!(
        "Every proxy holds a certificate from the controller and policy generation {} ({}).",
        mesh.generation(),
        secs(started.elapsed())
    ));
    n.say(format!(
        "Default: deny. Allowed: frontend -> orders (GET /orders*), orders -> payments (POST /charge, JSON).\nFiles: {}",
        mesh.root.display()
    ));

    let mut demo = Demo { mesh, n };
    demo.run_all().await;
    let Demo { mesh, n } = demo;
    mesh.stop().await;
    Ok(n.finish())
}
