//! `vigil-testapp`: the application the real-node tests deploy (image `vigil-testapp`).
//!
//! It knows nothing of the mesh. Two listeners:
//! - the **app** port (`--listen`, 8080): what other pods call — an echo of the request as
//!   JSON (HTTP/1.1 and h2c), `/healthz` for kubelet probes, `?stream=1` (a line every
//!   100 ms until the client goes away), `?delay_ms=N` to answer slowly, and a gRPC echo
//!   (`/vigil.testapp.v1.Echo/Echo` returns the request's messages);
//! - the **control** port (`--control`, 9090): what the test calls to make *this pod*
//!   call others (`POST /call`, `POST /stream/open`, `GET /stream/status`) and to read
//!   what the app has seen (`GET /stats`). In an injected pod the control port is
//!   excluded from interception (`vigil.dev/skip-inbound-ports`), so the test reaches it
//!   directly while the calls it triggers leave through the pod's proxy like any app's.
//!
//! SIGTERM: the app keeps serving for `--shutdown-delay`, then stops accepting and lets
//! in-flight requests finish before it exits (what a well-behaved service does so a
//! Service can drain it).

mod app;
mod control;

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;

/// The test application of Vigil's real-node tests.
#[derive(Debug, Parser)]
#[command(name = "vigil-testapp", version, about)]
struct Args {
    /// The app listener (echo, /healthz, /stream, gRPC echo).
    #[arg(long, env = "TESTAPP_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The control listener (POST /call, /stream/open, GET /stream/status, /stats).
    #[arg(long, env = "TESTAPP_CONTROL", default_value = "0.0.0.0:9090")]
    control: SocketAddr,
    /// After SIGTERM, keep serving this long before draining (e.g. 2s).
    #[arg(long, env = "TESTAPP_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    shutdown_delay: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        _ => Err(format!("bad duration {s:?} (use 500ms or 2s)")),
    }
}

/// One line on stderr; a closed stderr is not worth dying for (`eprintln!` panics).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Who this instance is: the pod name (downward API `POD_NAME`) or the host name.
pub(crate) fn instance() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let stats = Arc::new(app::Stats::default());
    let app_listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the app port {}", args.listen))?;
    let control_listener = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding the control port {}", args.control))?;
    // The bound addresses (with port 0, the ones the kernel chose): tests read this line.
    say!(
        "vigil-testapp {}: app on {}, control on {}",
        instance(),
        app_listener.local_addr().unwrap_or(args.listen),
        control_listener.local_addr().unwrap_or(args.control)
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let app = tokio::spawn(app::serve(app_listener, stats.clone(), stop.clone()));
    tokio::spawn(control::serve(control_listener, stats));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    term.recv().await;
    say!(
        "SIGTERM: serving {:?} more, then draining",
        args.shutdown_delay
    );
    tokio::time::sleep(args.shutdown_delay).await;
    stop.cancel();
    let _ = app.await;
    say!("drained; exiting");
    Ok(())
}
