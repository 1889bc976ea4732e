//! The demo mesh, in this process: a local-mode controller (its own CA in a temporary
//! state directory, a watched policy directory) and one vigil-proxy per demo service, each
//! in controller mode — it proves its identity with a bootstrap token, gets a short-lived
//! SVID over gRPC/mTLS and streams its policy, exactly as a standalone `vigil-proxy` does.
//! Everything listens on 127.0.0.1 with ports the kernel picks; the proxies are started
//! with `vigil_proxy::testing::Loopback`, as the proxy's and controller's tests start theirs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use vigil_cert_authority::SpiffeId;
use vigil_controller::{Controller, ControllerArgs};
use vigil_proxy::{Proxy, access_log::AccessLog, testing::Loopback};

use super::apps::App;

/// Trust domain of the demo.
pub(crate) const TRUST_DOMAIN: &str = "cluster.local";
/// Namespace of the demo services.
pub(crate) const NAMESPACE: &str = "shop";
/// The SVID lifetime: the shortest the CA allows (with `--allow-short-ttl`), so the
/// demo sees every certificate rotate (renewal is due at 40–60 % of the lifetime).
const SVID_TTL: &str = "1m";

/// The services, in start order (a proxy's routes need its callees' inbound addresses).
/// `(name, labels' tier, callees)`.
const SERVICES: &[(&str, &str, &[&str])] = &[
    ("payments", "backend", &[]),
    ("orders", "backend", &["payments"]),
    ("frontend", "web", &["orders", "payments"]),
    ("intruder", "web", &["orders", "payments"]),
];

#[derive(Parser)]
struct ControllerCli {
    #[command(flatten)]
    args: ControllerArgs,
}

/// One demo service: its app and its proxy.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) id: SpiffeId,
    pub(crate) app: App,
    pub(crate) proxy: Proxy,
    /// The proxy's access log (JSON lines).
    pub(crate) log: PathBuf,
    routes: Vec<(&'static str, SocketAddr)>,
}

impl Service {
    /// The local listener through which this service calls `callee` (an
    /// `--outbound-route` of its proxy).
    pub(crate) fn route(&self, callee: &str) -> Result<SocketAddr> {
        self.routes
            .iter()
            .find(|(n, _)| *n == callee)
            .map(|(_, a)| *a)
            .with_context(|| format!("{} has no route to {callee}", self.name))
    }

    /// The serial number of the proxy's current certificate (hex).
    pub(crate) fn serial(&self) -> Option<String> {
        self.proxy
            .creds
            .current()
            .map(|c| c.info.serial.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The policy generation the proxy enforces.
    pub(crate) fn generation(&self) -> u64 {
        self.proxy.shared.policy().generation()
    }

    /// Access-log entries so far.
    pub(crate) fn log_entries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (up to 3 s: the log is written by a background thread) for the last entry
    /// matching `pred`.
    pub(crate) async fn wait_log(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(e) = self.log_entries().into_iter().rev().find(|e| pred(e)) {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The running mesh.
pub(crate) struct Mesh {
    /// Root of the demo's files (state, policy, logs).
    pub(crate) root: PathBuf,
    pub(crate) policy_dir: PathBuf,
    pub(crate) ctl: Controller,
    pub(crate) services: Vec<Service>,
}

impl Mesh {
    /// Starts the controller with `initial` policy files, then every service and proxy,
    /// and waits until every proxy holds a certificate and the current policy.
    pub(crate) async fn start(root: &Path, initial: &[(&str, String)]) -> Result<Self> {
        let policy_dir = root.join("policy");
        let state_dir = root.join("state");
        let logs = root.join("logs");
        for d in [&policy_dir, &logs] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        // The apps first: Workload documents name their addresses.
        let mut apps = Vec::new();
        for (name, tier, _) in SERVICES {
            apps.push((*name, *tier, App::start(name).await?));
        }
        let workloads: Vec<String> = apps
            .iter()
            .map(|(name, tier, app)| workload_doc(name, tier, app.addr))
            .collect();
        write_file(&policy_dir, "workloads.yaml", &workloads.join("---\n"))?;
        for (file, yaml) in initial {
            write_file(&policy_dir, file, yaml)?;
        }

        let args = ControllerCli::try_parse_from([
            "vigil-controller".to_string(),
            "--local".into(),
            policy_dir.display().to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--admin".into(),
            "127.0.0.1:0".into(),
            "--trust-domain".into(),
            TRUST_DOMAIN.into(),
            "--svid-ttl".into(),
            SVID_TTL.into(),
            "--allow-short-ttl".into(),
        ])?
        .args;
        let ctl = Controller::start(args)
            .await
            .context("starting the controller")?;
        let bundle = root.join("bundle.pem");
        let pem = ctl.state.ca().bundle().to_pem();
        write_file(root, "bundle.pem", &pem)?;

        let mut services: Vec<Service> = Vec::new();
        for ((name, _, callees), (_, _, app)) in SERVICES.iter().zip(apps) {
            let id = workload_id(name)?;
            let token = {
                // One short lock: the controller's gRPC handlers need the CA too.
                let ca = ctl.state.ca();
                ca.token_key()
                    .mint(&id, Duration::from_secs(600), SystemTime::now())
            };
            let mut proxy = Loopback::new().app(app.addr).controller(
                ctl.grpc,
                &format!("{NAMESPACE}/{name}"),
                &bundle,
                &token,
            );
            for callee in *callees {
                let upstream = services
                    .iter()
                    .find(|s| s.name == *callee)
                    .with_context(|| format!("{callee} must start before {name}"))?;
                proxy = proxy.route(upstream.proxy.inbound, &upstream.id);
            }
            let log = logs.join(format!("{name}.log"));
            let file = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let proxy = proxy
                .log(AccessLog::to_writer(file))
                .start()
                .await
                .with_context(|| format!("starting the proxy of {name}"))?;
            let routes = callees.iter().copied().zip(proxy.routes.clone()).collect();
            services.push(Service {
                name,
                id,
                app,
                proxy,
                log,
                routes,
            });
        }
        let mesh = Self {
            root: root.to_path_buf(),
            policy_dir,
            ctl,
            services,
        };
        mesh.wait_converged(0, Duration::from_secs(20)).await?;
        Ok(mesh)
    }

    /// A service by name.
    pub(crate) fn svc(&self, name: &str) -> Result<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no demo service {name}"))
    }

    /// The controller's current policy generation.
    pub(crate) fn generation(&self) -> u64 {
        self.ctl.state.index().generation()
    }

    /// Waits until the controller has moved past generation `after` (it has read the
    /// latest edit) and every proxy has a certificate and has acknowledged its current
    /// policy snapshot (a workload's snapshot only changes when its policy does); returns
    /// how long that took.
    pub(crate) async fn wait_converged(&self, after: u64, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let generation = self.generation();
            let status = self.ctl.state.index().status();
            let lagging: Vec<&str> = self
                .services
                .iter()
                .filter(|s| {
                    let up_to_date = status.iter().any(|w| {
                        w.workload.name == s.name && w.up_to_date && w.generation == s.generation()
                    });
                    s.serial().is_none() || !up_to_date
                })
                .map(|s| s.name)
                .collect();
            if generation > after && lagging.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                if generation <= after {
                    bail!(
                        "after {limit:?}, the controller has not applied the edit (generation {generation})"
                    );
                }
                bail!(
                    "after {limit:?}, these proxies have no certificate or have not applied their current policy: {}",
                    lagging.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes a policy file (atomically; the controller watches the directory).
    pub(crate) fn write(&self, file: &str, yaml: &str) -> Result<PathBuf> {
        write_file(&self.policy_dir, file, yaml)
    }

    /// Removes a policy file.
    pub(crate) fn remove(&self, file: &str) -> Result<()> {
        let p = self.policy_dir.join(file);
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))
    }

    /// Stops the proxies, then the controller.
    pub(crate) async fn stop(self) {
        for s in self.services {
            s.proxy.drain().await;
        }
        self.ctl.stop().await;
    }
}

/// `spiffe://cluster.local/ns/shop/sa/<name>`.
pub(crate) fn workload_id(name: &str) -> Result<SpiffeId> {
    Ok(SpiffeId::parse(&format!(
        "spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{name}"
    ))?)
}

fn workload_doc(name: &str, tier: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: local.vigil.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: {NAMESPACE}, labels: {{app: {name}, tier: {tier}}}}}\nspec: {{serviceAccount: {name}, addresses: ['{addr}']}}\n"
    )
}

fn write_file(dir: &Path, file: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(file);
    vigil_cert_authority::state::write_private_file(&path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
