//! Real proxies in this process, on loopback: the one harness the proxy's tests, the
//! controller's tests and `vigil demo` start proxies with (feature `testing`).
//!
//! A [`Loopback`] builds the command line `vigil-proxy run` parses — every listener on
//! 127.0.0.1 with a port the kernel picks — so what starts is exactly what the binary would
//! run with those flags, and a flag added to the proxy needs nothing here.
//!
//! ```no_run
//! # async fn f(creds: &std::path::Path, policy: &std::path::Path) -> anyhow::Result<()> {
//! use vigil_proxy::testing::Loopback;
//! let app: std::net::SocketAddr = "127.0.0.1:8080".parse()?;
//! let proxy = Loopback::new().files(creds, policy).app(app).start_ready().await?;
//! # Ok(()) }
//! ```

use std::{
    fmt::Display,
    io::Write,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Parser;

use crate::{
    Proxy,
    access_log::AccessLog,
    config::{Config, ConfigError, RunArgs},
    wait_ready::{self, NotReady, WaitReadyArgs},
};

/// How long [`Loopback::start_ready`] waits for `/ready`.
pub const READY_WITHIN: Duration = Duration::from_secs(10);

/// How long [`LogSink::when`] waits for the access log's writer thread.
pub const LOG_WITHIN: Duration = Duration::from_secs(5);

/// The flags of one proxy on loopback, and its access log.
#[derive(Debug)]
pub struct Loopback {
    argv: Vec<String>,
    log: LogTo,
}

#[derive(Debug)]
enum LogTo {
    Flags,
    Log(AccessLog),
}

/// Why a [`Loopback`] has no valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    /// The flags do not parse.
    #[error("proxy flags: {0}")]
    Flags(#[from] clap::Error),
    /// They parse, but do not make a valid configuration.
    #[error("proxy configuration: {0}")]
    Config(#[from] ConfigError),
}

#[derive(Parser)]
struct Argv {
    #[command(flatten)]
    run: RunArgs,
}

impl Default for Loopback {
    fn default() -> Self {
        Self::new()
    }
}

impl Loopback {
    /// Inbound, outbound and admin listeners on 127.0.0.1, ports chosen by the kernel;
    /// the access log as the flags say (stdout unless `--access-log off`, or [`Self::log`]).
    pub fn new() -> Self {
        let mut argv = vec!["vigil-proxy".to_string()];
        for listener in ["--inbound", "--outbound", "--admin"] {
            argv.extend([listener.to_string(), "127.0.0.1:0".to_string()]);
        }
        Self {
            argv,
            log: LogTo::Flags,
        }
    }

    /// Adds `flag value`.
    pub fn arg(mut self, flag: &str, value: impl Display) -> Self {
        self.argv.extend([flag.to_string(), value.to_string()]);
        self
    }

    /// Adds flags as the binary takes them (`["--opaque-ports", "5432"]`).
    pub fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Identity and policy from files: `svid.pem`, `key.pem` and `bundle.pem` in
    /// `creds`, the policy in `policy` (all hot-reloaded, as in file mode).
    pub fn files(self, creds: &Path, policy: &Path) -> Self {
        let file = |name: &str| creds.join(name).display().to_string();
        self.arg("--svid", file("svid.pem"))
            .arg("--key", file("key.pem"))
            .arg("--bundle", file("bundle.pem"))
            .arg("--policy", policy.display())
    }

    /// Identity and policy from the controller at `grpc`, for `workload`
    /// (`namespace/name`), proven with a bootstrap `token`; `bundle` is the trust bundle.
    pub fn controller(self, grpc: SocketAddr, workload: &str, bundle: &Path, token: &str) -> Self {
        self.arg("--controller", grpc)
            .arg("--workload", workload)
            .arg("--bundle", bundle.display())
            .arg("--bootstrap-token", token)
    }

    /// Allowed inbound traffic goes to `app`.
    pub fn app(self, app: SocketAddr) -> Self {
        self.arg("--app", app)
    }

    /// A static outbound route: a listener on a fresh loopback port (`Proxy::routes`, in
    /// the order added) to `upstream` (a peer proxy's inbound), which must present `server`.
    pub fn route(self, upstream: SocketAddr, server: impl Display) -> Self {
        self.arg(
            "--outbound-route",
            format!("127.0.0.1:0={upstream},{server}"),
        )
    }

    /// Writes the access log to `log` (whatever `--access-log` says).
    pub fn log(mut self, log: AccessLog) -> Self {
        self.log = LogTo::Log(log);
        self
    }

    /// The configuration these flags make, as `vigil-proxy run` would validate it.
    pub fn config(&self) -> Result<Config, LoopbackError> {
        Ok(Argv::try_parse_from(&self.argv)?.run.validate()?)
    }

    /// Starts the proxy (it may still be fetching credentials or policy).
    pub async fn start(self) -> anyhow::Result<Proxy> {
        let cfg = self.config()?;
        match self.log {
            LogTo::Flags => Proxy::start(cfg).await,
            LogTo::Log(log) => Proxy::start_with_log(cfg, log).await,
        }
    }

    /// Starts the proxy and waits (up to [`READY_WITHIN`]) until its `/ready` says it
    /// holds credentials and a policy.
    pub async fn start_ready(self) -> anyhow::Result<Proxy> {
        let proxy = self.start().await?;
        ready(proxy.admin, READY_WITHIN).await?;
        Ok(proxy)
    }
}

/// Waits until the admin server at `admin` answers `/ready` with 200 (what
/// `vigil-proxy wait-ready` does), for at most `within`; returns how long it took.
pub async fn ready(admin: SocketAddr, within: Duration) -> Result<Duration, NotReady> {
    let args = WaitReadyArgs {
        admin,
        timeout: within,
    };
    match tokio::task::spawn_blocking(move || wait_ready::wait(&args)).await {
        Ok(result) => result,
        // The blocking task panicked or was cancelled (runtime shutting down).
        Err(e) => Err(NotReady {
            admin,
            waited: within,
            last: e.to_string(),
        }),
    }
}

/// An access log captured in memory: pass `AccessLog::to_writer(sink.clone())` and read
/// the entries with [`LogSink::lines`].
#[derive(Clone, Debug, Default)]
pub struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogSink {
    /// The entries so far, one JSON value per line.
    ///
    /// # Panics
    /// If a line is not JSON: the access log writes one JSON object per line, and a test
    /// reading it should fail when it does not.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Complete lines only: the writer thread may be halfway through the next one.
        let complete = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(&[][..], |end| &bytes[..=end]);
        String::from_utf8_lossy(complete)
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("access-log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// The entries once `done` holds for them. The access log is written by a background
    /// thread, so a line can land after the response it describes reached the client: this
    /// polls until `done` holds or [`LOG_WITHIN`] passes, then returns the entries so far
    /// either way, for the caller's assertion to judge and show.
    pub async fn when(
        &self,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + LOG_WITHIN;
        loop {
            let lines = self.lines();
            if done(&lines) || tokio::time::Instant::now() >= deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first entry matching `f`, waiting for it as [`LogSink::when`] does.
    ///
    /// # Panics
    /// If no such entry is written within [`LOG_WITHIN`]; the message lists the entries.
    pub async fn first(&self, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let lines = self.when(|ls| ls.iter().any(&f)).await;
        match lines.iter().find(|l| f(l)) {
            Some(l) => l.clone(),
            None => panic!("no such access-log line within {LOG_WITHIN:?} in {lines:#?}"),
        }
    }
}
