//! Wiring: stores, loaders, listeners, admin server, and the drain on shutdown.
//!
//! [`Proxy::start`] binds every listener first (so tests can use port 0 and read the
//! bound addresses back), loads credentials and policy, and spawns the serving tasks.
//! [`Proxy::drain`] stops accepting, lets in-flight work finish up to the drain timeout,
//! and returns.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use vigil_cert_authority::{SpiffeId, TrustBundle, creds::CredentialStore, token::TokenClaims};

use crate::{
    access_log::AccessLog,
    admin::{self, Admin},
    config::{AccessLogTarget, Config, MeshHttp1},
    connections::Connections,
    control::{self, Control, ProofSource},
    files,
    http_util::RequestIds,
    identity::CredentialFiles,
    inbound,
    inbound::AppClient,
    metrics::Metrics,
    outbound::{self, MeshConnector, MeshPool, discovery::Discovery},
    peers::Peers,
    policy_store::{self, PolicyStore},
    ratelimit::RateLimiter,
    shared::Shared,
    tls_state::{PolicyRevocation, TlsState},
};

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    /// Bound inbound address.
    pub inbound: SocketAddr,
    /// Bound outbound address.
    pub outbound: SocketAddr,
    /// Bound admin address.
    pub admin: SocketAddr,
    /// Bound static-route listeners, in `--outbound-route` order.
    pub routes: Vec<SocketAddr>,
    /// Shared state (stores, metrics).
    pub shared: Arc<Shared>,
    /// The credential store (file mode publishes into it; the controller client will too).
    pub creds: Arc<CredentialStore>,
    /// The policy store.
    pub policy: Arc<PolicyStore>,
    /// Keeps the file watchers alive.
    _watchers: Vec<notify::RecommendedWatcher>,
    /// Cancels background tasks that are not connections (watchers, publishers).
    background: CancellationToken,
}

impl Proxy {
    /// Binds, loads and starts serving.
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        let log = match cfg.access_log {
            AccessLogTarget::Stdout => AccessLog::stdout(),
            AccessLogTarget::Off => AccessLog::off(),
        };
        Self::start_with_log(cfg, log).await
    }

    /// Like [`Self::start`], with the access log going to `log` (tests capture it).
    pub async fn start_with_log(cfg: Config, log: AccessLog) -> anyhow::Result<Self> {
        let cfg = Arc::new(cfg);
        let metrics = Metrics::new(cfg.request_metrics);
        let background = CancellationToken::new();
        let mut watchers = Vec::new();

        // Policy: fail closed until a valid policy is loaded.
        let policy_store = Arc::new(PolicyStore::new());
        if let Some(path) = &cfg.policy {
            let mut file = policy_store::PolicyFile::new(path);
            let first = file.reload(&policy_store);
            let store = policy_store.clone();
            watchers.push(
                files::watch(&[path], background.clone(), first, move || {
                    file.reload(&store)
                })
                .with_context(|| format!("watching {}", path.display()))?,
            );
        }

        // Credentials.
        let files = match (&cfg.svid, &cfg.key, &cfg.bundle) {
            (Some(svid), Some(key), Some(bundle)) => Some(CredentialFiles {
                svid: svid.clone(),
                key: key.clone(),
                bundle: bundle.clone(),
            }),
            _ => None,
        };
        let identity = match (&cfg.identity, &files, &cfg.controller) {
            (Some(id), _, _) => id.clone(),
            (None, Some(f), _) => f.identity().context("reading the workload identity from --svid")?,
            (None, None, Some(c)) => match &c.service_account_token_file {
                Some(path) => identity_of_service_account_token(path, c)?,
                None => c
                    .bootstrap_token
                    .as_deref()
                    .and_then(TokenClaims::peek_unverified)
                    .map(|claims| claims.sub)
                    .context("the bootstrap token is malformed; pass --identity or a token from `vigil ca token`")?,
            },
            (None, None, None) => anyhow::bail!("no identity: pass --identity or --svid"),
        };
        let creds = Arc::new(CredentialStore::new(identity));
        if let Some(f) = files {
            if let Err(e) = f.load_into(&creds) {
                tracing::error!(error = %e, "credentials not loaded; not ready until they are valid");
            }
            let store = creds.clone();
            let f2 = f.clone();
            let read_all = |f: &CredentialFiles| -> std::io::Result<Vec<Vec<u8>>> {
                f.paths().iter().map(std::fs::read).collect()
            };
            let mut last = read_all(&f).ok();
            let first = if last.is_some() {
                files::Reloaded::Done
            } else {
                files::Reloaded::Retry
            };
            watchers.push(
                files::watch(&f.paths(), background.clone(), first, move || {
                    // Unreadable (descriptors exhausted, a Secret volume mid-swap): keep the
                    // credentials in force and try again soon.
                    let Ok(now) = read_all(&f2) else {
                        return files::Reloaded::Retry;
                    };
                    if last.as_ref() == Some(&now) {
                        return files::Reloaded::Done;
                    }
                    match f2.load_into(&store) {
                        Ok(c) => tracing::info!(id = %c.info.id, "credentials reloaded"),
                        Err(e @ crate::identity::LoadError::Read { .. }) => {
                            tracing::warn!(error = %e, "credential files unreadable; keeping the current ones (retrying)");
                            return files::Reloaded::Retry;
                        }
                        Err(e) => tracing::error!(error = %e, "credential reload rejected; keeping the current ones"),
                    }
                    last = Some(now);
                    files::Reloaded::Done
                })
                .context("watching credential files")?,
            );
        }

        // Controller mode: certificates and policy come from the controller, and so do
        // answers about destinations the pushed table does not list.
        let mut discovery = Discovery::off();
        if let Some(c) = &cfg.controller {
            let (pem, source) = match (&c.trust_anchors, &cfg.bundle) {
                (Some(pem), _) => (pem.clone(), "--trust-anchors".to_string()),
                (None, Some(path)) => (
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?,
                    path.display().to_string(),
                ),
                (None, None) => anyhow::bail!("controller mode needs --bundle or --trust-anchors"),
            };
            let bundle = TrustBundle::from_pem(creds.id().trust_domain(), &pem)
                .with_context(|| format!("{source} is not a trust bundle"))?;
            let controller_id = match &c.identity {
                Some(id) => id.clone(),
                None => SpiffeId::workload(
                    &creds.id().trust_domain(),
                    "vigil-system",
                    "vigil-controller",
                )?,
            };
            let ctl = Arc::new(Control::new(
                c.address.clone(),
                controller_id,
                c.workload.clone(),
                match (&c.service_account_token_file, &c.bootstrap_token) {
                    (Some(path), _) => Some(ProofSource::ServiceAccountTokenFile(path.clone())),
                    (None, Some(t)) => Some(ProofSource::Bootstrap(t.clone())),
                    (None, None) => None,
                },
                bundle,
                creds.clone(),
                policy_store.clone(),
            ));
            tokio::spawn(control::run_identity(ctl.clone(), background.clone()));
            tokio::spawn(control::run_policy(ctl.clone(), background.clone()));
            discovery = Discovery::new(Arc::new(move |addr| {
                let ctl = ctl.clone();
                Box::pin(async move { control::resolve(&ctl, addr).await })
            }));
        }

        // TLS configs follow credentials; verifiers follow policy (revocations).
        let (tls_tx, tls_rx) = watch::channel::<Option<Arc<TlsState>>>(None);
        spawn_tls_builder(
            creds.clone(),
            policy_store.subscribe(),
            tls_tx,
            metrics.clone(),
            cfg.tls_provider(),
            background.clone(),
        );
        spawn_policy_gauge(
            policy_store.subscribe(),
            metrics.clone(),
            background.clone(),
        );
        tokio::spawn(crate::memory::trim_after_bursts(
            metrics.clone(),
            background.clone(),
        ));

        // One registry of live connections, re-checked on every policy change.
        let conns = Connections::new(policy_store.subscribe());
        let watcher = conns.watch();
        let stop = background.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = watcher => {}
            }
        });
        let peers = Peers::new(cfg.peer_record_max);
        let connector = MeshConnector::new(
            cfg.outbound_routes.clone(),
            tls_rx.clone(),
            policy_store.subscribe(),
            conns.clone(),
            cfg.connect_timeout,
            cfg.handshake_timeout,
            Arc::new(discovery),
        )
        .recording(peers.clone());
        let shared = Arc::new(Shared {
            tls: tls_rx,
            policy: policy_store.subscribe(),
            metrics,
            log,
            limiter: RateLimiter::default(),
            ids: RequestIds::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            cfg: cfg.clone(),
            conns,
            peers,
        });

        let backlog = cfg.listen_backlog;
        let bind = |addr: SocketAddr, what: &'static str| async move {
            crate::listen::bind(addr, backlog)
                .with_context(|| format!("binding the {what} listener on {addr}"))
        };
        let inbound_ls = bind(cfg.inbound, "inbound").await?;
        let outbound_ls = bind(cfg.outbound, "outbound").await?;
        let admin_ls = bind(cfg.admin, "admin").await?;
        let mut route_ls = Vec::new();
        for r in &cfg.outbound_routes {
            route_ls.extend(bind(r.listen, "outbound route").await?.into_iter().take(1));
        }
        let first = |ls: &[TcpListener]| ls.first().map(TcpListener::local_addr).transpose();
        let inbound_addr = first(&inbound_ls)?.context("no inbound listener")?;
        let outbound_addr = first(&outbound_ls)?.context("no outbound listener")?;
        let admin_addr = first(&admin_ls)?.context("no admin listener")?;
        let routes = route_ls
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;

        // The inbound forwards to the app; the outbound connects to the mesh.
        let app_client = Arc::new(AppClient::new(
            cfg.connect_timeout,
            cfg.pool_idle_timeout,
            cfg.pool_max_idle,
        ));
        let mut mesh = MeshPool::new(
            connector,
            cfg.pool_idle_timeout,
            cfg.pool_max_idle,
            cfg.max_concurrent_streams,
        );
        let http1_below = match cfg.mesh_http1 {
            MeshHttp1::Http1 => Some(usize::MAX),
            MeshHttp1::Auto => Some(outbound::AUTO_HTTP2_FROM),
            MeshHttp1::Http2 => None,
        };
        if let Some(below) = http1_below {
            // The destination's proxy closes a keep-alive connection idle for its header
            // read timeout (the mesh's proxies share one configuration): stop reusing
            // one well before that.
            mesh = mesh.http1_hop(cfg.header_read_timeout / 2, below);
        }
        let mesh = Arc::new(mesh);
        for l in inbound_ls {
            tokio::spawn(inbound::serve(l, shared.clone(), app_client.clone()));
        }
        for l in outbound_ls {
            let (s, m) = (shared.clone(), mesh.clone());
            tokio::spawn(outbound::serve_transparent(l, s, m));
        }
        for (i, l) in route_ls.into_iter().enumerate() {
            let (s, m) = (shared.clone(), mesh.clone());
            tokio::spawn(outbound::serve_route(l, s, m, i));
        }
        let admin = Arc::new(Admin {
            shared: shared.clone(),
            policy_store: policy_store.clone(),
        });
        let admin_tasks: Vec<_> = admin_ls
            .into_iter()
            .map(|l| tokio::spawn(admin::serve(l, admin.clone())))
            .collect();
        let bg = background.clone();
        tokio::spawn(async move {
            bg.cancelled().await;
            for t in admin_tasks {
                t.abort();
            }
        });
        tracing::info!(inbound = %inbound_addr, outbound = %outbound_addr, admin = %admin_addr, "vigil-proxy started");
        Ok(Self {
            inbound: inbound_addr,
            outbound: outbound_addr,
            admin: admin_addr,
            routes,
            shared,
            creds,
            policy: policy_store,
            _watchers: watchers,
            background,
        })
    }

    /// Stops accepting, waits for in-flight connections up to the drain timeout, then stops
    /// everything. Returns how many connections were still open at the deadline.
    pub async fn drain(self) -> usize {
        let shared = &self.shared;
        shared.shutdown.cancel();
        shared.tracker.close();
        let deadline = shared.cfg.drain_timeout;
        let unfinished = match tokio::time::timeout(deadline, shared.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => shared.tracker.len(),
        };
        self.background.cancel();
        unfinished
    }
}

fn spawn_tls_builder(
    creds: Arc<CredentialStore>,
    policy: watch::Receiver<Arc<vigil_policy::Policy>>,
    tls_tx: watch::Sender<Option<Arc<TlsState>>>,
    metrics: Metrics,
    provider: Arc<rustls::crypto::CryptoProvider>,
    stop: CancellationToken,
) {
    let mut rx = creds.subscribe();
    tokio::spawn(async move {
        loop {
            let current = rx.borrow_and_update().clone();
            if let Some(c) = current {
                let expiry = c
                    .info
                    .not_after
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                metrics
                    .cert_expiry
                    .set(i64::try_from(expiry).unwrap_or(i64::MAX));
                match TlsState::new(
                    c,
                    Arc::new(PolicyRevocation(policy.clone())),
                    provider.clone(),
                ) {
                    Ok(state) => {
                        tls_tx.send_replace(Some(Arc::new(state)));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build TLS configuration; keeping the current one")
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    });
}

fn spawn_policy_gauge(
    mut rx: watch::Receiver<Arc<vigil_policy::Policy>>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let generation = rx.borrow_and_update().generation();
            metrics
                .policy_generation
                .set(i64::try_from(generation).unwrap_or(i64::MAX));
            tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    });
}

/// The identity a Kubernetes service-account token stands for: its service account, in
/// the trust domain of the controller's identity (`--controller-identity`, which the
/// injector always sets).
fn identity_of_service_account_token(
    path: &std::path::Path,
    c: &crate::config::ControlConfig,
) -> anyhow::Result<SpiffeId> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the service-account token {}", path.display()))?;
    let (ns, sa) = control::service_account_of(&token).with_context(|| {
        format!(
            "{} is not a service-account token (no sub claim system:serviceaccount:<ns>:<sa>)",
            path.display()
        )
    })?;
    let td = c.identity.as_ref().map(SpiffeId::trust_domain).context(
        "with --service-account-token-file, pass --controller-identity (it names the trust domain)",
    )?;
    Ok(SpiffeId::workload(&td, &ns, &sa)?)
}
