//! Kubernetes mode: the same controller, fed by the Kubernetes API instead of a directory.
//!
//! ```text
//!   Pods, Namespaces, Services, EndpointSlices, Segments, AccessPolicies, Quarantines
//!     └─ reflectors (reflectors.rs) ─ debounce ─► Resources (resources.rs) ─► Index.replace
//!   Identity.Certify(service-account token) ─► TokenReview (token_review.rs)
//!   CA state dir  ◄─ restore / save ─►  Secret vigil-ca (ca_secret.rs; never overwritten)
//!   Lease (leader.rs) ─► the leader writes CRD status and Events (status.rs)
//!   injector webhook: HTTPS, certificate from the CA, caBundle kept current (webhook.rs)
//! ```
//!
//! Every replica serves the gRPC API and the webhook from its own caches; only the leader
//! writes status, events and CA rotations.

pub mod ca_secret;
pub mod leader;
pub mod reflectors;
pub mod resources;
pub mod status;
pub mod token_review;
pub mod webhook;

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Args;

use crate::source::{Debounce, Loaded, Source};

/// Kubernetes-mode flags.
#[derive(Clone, Debug, Args)]
pub struct KubeArgs {
    /// kubeconfig to use (default: in-cluster service account, then $KUBECONFIG).
    #[arg(long, env = "VIGIL_CONTROLLER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The controller's namespace (its Secret, Lease and identity live there).
    #[arg(
        long,
        env = "VIGIL_CONTROLLER_NAMESPACE",
        default_value = "vigil-system"
    )]
    pub namespace: String,
    /// This replica's name (Lease holder identity); default: the host name.
    #[arg(long, env = "VIGIL_CONTROLLER_POD_NAME")]
    pub pod_name: Option<String>,
    /// Secret holding the CA state (created on first start if absent; never overwritten).
    #[arg(long, env = "VIGIL_CONTROLLER_CA_SECRET", default_value = "vigil-ca")]
    pub ca_secret: String,
    /// Lease for leader election (status and event writes, CA rotation).
    #[arg(
        long,
        env = "VIGIL_CONTROLLER_LEASE",
        default_value = "vigil-controller"
    )]
    pub lease: String,
    /// Audience proxies' service-account tokens must carry.
    #[arg(
        long,
        env = "VIGIL_CONTROLLER_TOKEN_AUDIENCE",
        default_value = "vigil-ca"
    )]
    pub token_audience: String,
    /// The injector webhook's HTTPS listener (path /inject).
    #[arg(
        long,
        env = "VIGIL_CONTROLLER_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:9443"
    )]
    pub webhook_listen: SocketAddr,
    /// MutatingWebhookConfiguration whose caBundle the controller keeps current ("" = leave it).
    #[arg(
        long,
        env = "VIGIL_CONTROLLER_WEBHOOK_CONFIG",
        default_value = "vigil-injector"
    )]
    pub webhook_config: String,
    /// DNS names / IPs of the webhook's serving certificate.
    #[arg(
        long,
        env = "VIGIL_CONTROLLER_WEBHOOK_SANS",
        value_delimiter = ',',
        default_value = "vigil-controller.vigil-system.svc"
    )]
    pub webhook_sans: Vec<String>,
    /// Injector settings (YAML; the chart's ConfigMap). Default: built-in defaults.
    #[arg(long, env = "VIGIL_CONTROLLER_INJECTOR_CONFIG")]
    pub injector_config: Option<PathBuf>,
}

/// A connected Kubernetes client with the settings around it.
#[derive(Clone)]
pub struct Kube {
    /// The client.
    pub client: kube::Client,
    /// Flags.
    pub args: KubeArgs,
    /// Lease holder identity.
    pub holder: String,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("namespace", &self.args.namespace)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// Connects with `--kubeconfig`, or infers (in-cluster, then $KUBECONFIG).
pub async fn connect(args: &KubeArgs) -> anyhow::Result<Kube> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration (in-cluster or $KUBECONFIG)")?,
    };
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let holder = match &args.pod_name {
        Some(n) => n.clone(),
        None => std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("vigil-controller-{}", std::process::id())),
    };
    Ok(Kube {
        client,
        args: args.clone(),
        holder,
    })
}

/// What [`start`] leaves running.
#[derive(Debug)]
pub struct Started {
    /// Background tasks.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The webhook's bound address.
    pub webhook: SocketAddr,
}

/// Restores or creates the CA state (before the CA is opened): `true` if the Secret
/// already held a CA.
pub async fn prepare_ca(k: &Kube, state_dir: &std::path::Path) -> anyhow::Result<bool> {
    ca_secret::restore(k, state_dir).await
}

/// Fills the caches, compiles the index from them, and starts the watches, the leader
/// election, the status writer, the CA sync and the injector webhook.
pub async fn start(
    state: std::sync::Arc<crate::state::State>,
    k: Kube,
    state_dir: PathBuf,
) -> anyhow::Result<Started> {
    use std::sync::Arc;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (stores, mut tasks) = reflectors::start(&k.client, &tx);
    stores.ready().await?;
    let stores = Arc::new(stores);
    let mut api = ApiSource(stores.clone());
    crate::source::publish(&state, api.load());
    // Reflector events come in bursts (a rollout touches many pods): one rebuild 50 ms
    // after the first.
    let debounce = Debounce {
        quiet: KUBE_SETTLE,
        max: KUBE_SETTLE,
    };
    tasks.push(tokio::spawn(crate::source::run(
        api,
        rx,
        debounce,
        state.clone(),
    )));

    let (lead_tx, lead_rx) = tokio::sync::watch::channel(false);
    tasks.push(tokio::spawn(leader::run(k.clone(), lead_tx)));
    tasks.push(tokio::spawn(status::run(
        state.clone(),
        k.clone(),
        stores.clone(),
        lead_rx.clone(),
    )));
    tasks.push(tokio::spawn(sync_ca(
        state.clone(),
        k.clone(),
        state_dir,
        lead_rx,
    )));

    let injector = injector_config(&state, &k).await?;
    let listener = tokio::net::TcpListener::bind(k.args.webhook_listen)
        .await
        .with_context(|| format!("binding the webhook listener on {}", k.args.webhook_listen))?;
    let webhook = listener.local_addr()?;
    let (st, kk, sto) = (state.clone(), k.clone(), stores.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = webhook::serve(listener, st, kk, sto, Arc::new(injector)).await {
            tracing::error!(error = %format!("{e:#}"), "the injector webhook stopped");
        }
    }));
    tasks.push(tokio::spawn(webhook::keep_ca_bundle(
        state.clone(),
        k.clone(),
    )));
    tracing::info!(%webhook, namespace = %k.args.namespace, holder = %k.holder, "Kubernetes mode started");
    Ok(Started { tasks, webhook })
}

/// How long reflector events settle before the index is rebuilt from the caches.
const KUBE_SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// Kubernetes mode's source: the reflectors' caches, converted to resources.
struct ApiSource(std::sync::Arc<reflectors::Stores>);

impl Source for ApiSource {
    const WHAT: &'static str = "Kubernetes API";

    fn load(&mut self) -> Loaded {
        Loaded {
            resources: resources::resources(&self.0.snapshot()),
            errors: Vec::new(),
        }
    }
}

async fn injector_config(
    state: &crate::state::State,
    k: &Kube,
) -> anyhow::Result<vigil_injector::InjectorConfig> {
    let mut cfg = match &k.args.injector_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            vigil_injector::parse_config(&text).with_context(|| {
                format!("{} is not a valid injector configuration", path.display())
            })?
        }
        None => vigil_injector::InjectorConfig::default(),
    };
    cfg.controller_identity = state.identity.to_string();
    cfg.trust_anchors_pem = state.bundle.borrow().to_pem();
    cfg.cluster_has_native_sidecars = match k.client.apiserver_version().await {
        Ok(v) => has_native_sidecars(&v),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the apiserver version; assuming no native sidecars");
            false
        }
    };
    Ok(cfg)
}

/// The first Kubernetes 1.x minor with native sidecars (init containers with
/// `restartPolicy: Always`) on by default; `vigil check --pre` reports it too.
pub const NATIVE_SIDECARS_MINOR: u32 = 29;

/// The apiserver's `(major, minor)`, as `/version` reports them (`"29+"` on some
/// distributions counts as 29); `None` if they are not numbers.
pub fn version_of(v: &k8s_openapi::apimachinery::pkg::version::Info) -> Option<(u32, u32)> {
    let major = v.major.trim_end_matches('+').parse().ok()?;
    let minor = v.minor.trim_end_matches('+').parse().ok()?;
    Some((major, minor))
}

/// Whether an apiserver of this version runs native sidecars (the injector's `auto`).
pub fn has_native_sidecars(v: &k8s_openapi::apimachinery::pkg::version::Info) -> bool {
    version_of(v)
        .is_some_and(|(major, minor)| major > 1 || (major == 1 && minor >= NATIVE_SIDECARS_MINOR))
}

/// Keeps the CA state and its Secret together: the leader writes its rotations, the
/// others load the leader's.
async fn sync_ca(
    state: std::sync::Arc<crate::state::State>,
    k: Kube,
    dir: PathBuf,
    leading: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        let result = if *leading.borrow() {
            ca_secret::sync(&k, &dir).await.map(|_| ())
        } else {
            match ca_secret::refresh(&k, &dir).await {
                Ok(true) => state.ca().reload().map_err(anyhow::Error::from).map(|()| {
                    tracing::info!("CA reloaded from the Secret (the leader rotated it)");
                }),
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "CA Secret sync failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::version::Info;

    use super::*;

    fn info(major: &str, minor: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            ..Info::default()
        }
    }

    #[test]
    fn native_sidecars_from_1_29_and_distribution_suffixes_are_read() {
        assert!(!has_native_sidecars(&info("1", "28")));
        assert!(has_native_sidecars(&info("1", "29+")));
        assert!(has_native_sidecars(&info("2", "0")));
        assert!(!has_native_sidecars(&info("1", "")));
        assert_eq!(version_of(&info("1", "36")), Some((1, 36)));
    }
}
