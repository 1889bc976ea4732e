//! Wiring: CA, index, the source (the local directory and its watcher, or Kubernetes),
//! the gRPC and admin servers, and the background tasks (JIT recompiles, CA maintenance).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;
use vigil_cert_authority::{SpiffeId, ttl::TtlPolicy};
use vigil_index::{Index, Settings};

use crate::{
    admin, ca,
    config::{ControllerArgs, EgressArg},
    grpc,
    k8s::token_review::TokenReviewer,
    metrics::Metrics,
    source::{self, Source},
    state::{State, unix_now},
};
use vigil_policy_dir::PolicyDir;

/// A running controller.
pub struct Controller {
    /// Bound gRPC address.
    pub grpc: SocketAddr,
    /// Bound admin address.
    pub admin: SocketAddr,
    /// Bound injector webhook address (Kubernetes mode).
    pub webhook: Option<SocketAddr>,
    /// Shared state (index, CA, metrics).
    pub state: Arc<State>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("grpc", &self.grpc)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Loads everything and starts serving.
    pub async fn start(args: ControllerArgs) -> anyhow::Result<Self> {
        let ttl_policy = if args.allow_short_ttl {
            TtlPolicy::default().allow_short()
        } else {
            TtlPolicy::default()
        };
        ttl_policy
            .resolve(Some(args.svid_ttl))
            .with_context(|| "--svid-ttl".to_string())?;
        // Kubernetes mode keeps the CA in a Secret: restore it before opening, store a
        // newly created one after (never overwriting one that appeared meanwhile).
        let kube = if args.kubernetes {
            let k = crate::k8s::connect(&args.kube).await?;
            crate::k8s::prepare_ca(&k, &args.state_dir).await?;
            Some(k)
        } else {
            None
        };
        let mut ca = ca::open_or_init(&args.state_dir, &args.trust_domain, ttl_policy)?;
        if let Some(k) = &kube
            && crate::k8s::ca_secret::save_if_new(k, &args.state_dir).await?
        {
            ca = ca::open_or_init(&args.state_dir, &args.trust_domain, ttl_policy)?;
        }
        let identity = match args.identity {
            Some(id) => id,
            None => SpiffeId::workload(&args.trust_domain, "vigil-system", "vigil-controller")?,
        };
        let creds = ca::controller_credentials(&ca, &identity)
            .context("issuing the controller's certificate")?;
        let settings = Settings {
            trust_domain: args.trust_domain.clone(),
            default_policy: args.default_policy,
            egress_passthrough: args.egress == EgressArg::Passthrough,
        };
        // The local directory is read before anything serves, so the first policy a proxy
        // gets is the directory's (Kubernetes mode publishes once its caches are synced).
        let mut dir = args.local.as_ref().map(PolicyDir::new);
        let loaded = dir.as_mut().map(Source::load).unwrap_or_default();
        let state = Arc::new(State {
            index: Mutex::new(Index::new(settings)),
            bundle: watch::Sender::new(ca.bundle()),
            ca: Mutex::new(ca),
            creds: watch::Sender::new(Arc::new(creds)),
            identity,
            metrics: Metrics::new(),
            svid_ttl: Some(args.svid_ttl),
            connected: Mutex::default(),
            cert_expiry: Mutex::default(),
            source_errors: Mutex::default(),
            shutdown: CancellationToken::new(),
        });
        source::publish(&state, loaded);
        let reviewer = kube
            .as_ref()
            .map(|k| TokenReviewer::new(k.client.clone(), k.args.token_audience.clone()));

        let grpc_l = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding the gRPC listener on {}", args.listen))?;
        let admin_l = TcpListener::bind(args.admin)
            .await
            .with_context(|| format!("binding the admin listener on {}", args.admin))?;
        let (grpc_addr, admin_addr) = (grpc_l.local_addr()?, admin_l.local_addr()?);
        let shutdown = state.shutdown.clone();
        let mut tasks = Vec::new();

        // The source: the local directory (reloaded on change) or the Kubernetes API.
        let mut watcher = None;
        let mut webhook = None;
        match (dir, kube) {
            (Some(dir), _) => {
                let path = dir.dir().display().to_string();
                watcher = Some(
                    crate::local::start(dir, state.clone(), &mut tasks)
                        .with_context(|| format!("watching {path}"))?,
                );
            }
            (None, Some(k)) => {
                let started = crate::k8s::start(state.clone(), k, args.state_dir.clone()).await?;
                tasks.extend(started.tasks);
                webhook = Some(started.webhook);
            }
            (None, None) => anyhow::bail!("pass --local DIR or --kubernetes"),
        }

        // JIT windows: recompile when one opens or closes, without any other event.
        let st = state.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if st.index().tick(unix_now()) {
                    st.publish_generation();
                    tracing::info!("a policy validity window opened or closed; recompiled");
                }
            }
        }));
        tasks.push(tokio::spawn(ca::run_maintenance(state.clone())));
        tasks.push(tokio::spawn(admin::serve(admin_l, state.clone())));
        let st = state.clone();
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = grpc::serve(grpc_l, st, reviewer, sd).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));
        tracing::info!(grpc = %grpc_addr, admin = %admin_addr, mode = if webhook.is_some() { "kubernetes" } else { "local" }, "vigil-controller started");
        Ok(Self {
            grpc: grpc_addr,
            admin: admin_addr,
            webhook,
            state,
            shutdown,
            tasks,
            _watcher: watcher,
        })
    }

    /// Stops serving (open policy streams end; proxies keep their last policy).
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
