//! Cluster access for the commands that work on Kubernetes: the kubectl-style global flags
//! (`--kubeconfig`, `--context`, `-n/--namespace`, and `KUBECONFIG` as kubectl reads it),
//! the client they make, and the operator-facing errors of talking to the API server.
//!
//! Every command that reaches the cluster goes through [`ClusterArgs::connect`], so
//! "which cluster, which user, which namespace" is decided in one place, the same way
//! kubectl decides it: `--kubeconfig` else `$KUBECONFIG` (a `:`-separated list) else
//! `~/.kube/config`, else the in-cluster service account; `--context` else the current
//! context; `-n` else the context's namespace else `default`.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// How long to wait for a TCP+TLS connection to the API server: a wrong or unreachable
/// context fails in seconds, not after the kernel's SYN retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one API response may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Global flags choosing the cluster, as kubectl's (they are accepted anywhere on the
/// command line, so `kubectl vigil -n shop explain ...` works as a plugin should).
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(long, short = 'n', global = true, value_name = "NAMESPACE")]
    pub(crate) namespace: Option<String>,
}

/// A client for the chosen cluster and the namespace commands default to.
#[derive(Clone)]
pub(crate) struct Cluster {
    /// The client.
    pub(crate) client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub(crate) namespace: String,
    /// The API server's URL (for messages).
    pub(crate) url: String,
}

/// What went wrong talking to the cluster, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    /// No usable kubeconfig or context.
    #[error(
        "cannot load the cluster configuration: {0} (check --kubeconfig, $KUBECONFIG and --context)"
    )]
    Config(String),
    /// The client could not be built from the configuration.
    #[error("cannot make a client for {url}: {message}")]
    Client {
        /// API server.
        url: String,
        /// Why.
        message: String,
    },
    /// The API server did not answer.
    #[error(
        "cannot reach the API server at {url}: {message} (is the context right and the cluster up?)"
    )]
    Unreachable {
        /// API server.
        url: String,
        /// Why.
        message: String,
    },
    /// The Vigil CRDs are not served.
    #[error(
        "the {plural}.policy.vigil.dev CRD is not installed in the cluster at {url}: install Vigil's chart (helm install vigil charts/vigil) or `kubectl apply -f crds/` first"
    )]
    CrdMissing {
        /// API server.
        url: String,
        /// The resource, e.g. `quarantines`.
        plural: &'static str,
    },
    /// RBAC refused.
    #[error(
        "forbidden: you may not {verb} {what} ({message}); ask a cluster admin for that RBAC permission"
    )]
    Forbidden {
        /// `list`, `create`, `delete`.
        verb: &'static str,
        /// e.g. `quarantines in namespace shop`.
        what: String,
        /// The API server's message.
        message: String,
    },
    /// Any other answer of the API server.
    #[error("{verb} {what}: {message}")]
    Api {
        /// `list`, `create`, `delete`.
        verb: &'static str,
        /// What was asked for.
        what: String,
        /// The API server's message.
        message: String,
    },
}

// === impl ClusterArgs ===

impl ClusterArgs {
    /// Loads the configuration as kubectl would and makes a client (no request yet).
    pub(crate) async fn connect(&self) -> Result<Cluster, ClusterError> {
        let mut config = self.config().await?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        let url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| ClusterError::Client {
            url: url.clone(),
            message: e.to_string(),
        })?;
        Ok(Cluster {
            client,
            namespace,
            url,
        })
    }

    async fn config(&self) -> Result<Config, ClusterError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            cluster: None,
            user: None,
        };
        let err = |e: &dyn std::fmt::Display| ClusterError::Config(e.to_string());
        if let Some(path) = &self.kubeconfig {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
            return Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| err(&e));
        }
        match Config::from_kubeconfig(&options).await {
            Ok(c) => Ok(c),
            // No kubeconfig at all: inside a pod, use its service account (as kubectl does).
            Err(kc_err) if self.context.is_none() => Config::incluster().map_err(|in_err| {
                ClusterError::Config(format!("{kc_err}; and not in a pod either ({in_err})"))
            }),
            Err(e) => Err(err(&e)),
        }
    }
}

// === impl Cluster ===

impl Cluster {
    /// Words a failed request `verb what` for the operator; `plural` is the resource the
    /// request was for, when it is one of Vigil's CRDs (a 404 on a list or create then
    /// means the CRD is not installed).
    pub(crate) fn error(
        &self,
        e: kube::Error,
        verb: &'static str,
        what: &str,
        crd_plural: Option<&'static str>,
    ) -> ClusterError {
        match e {
            kube::Error::Api(s) if s.is_forbidden() || s.code == 403 => ClusterError::Forbidden {
                verb,
                what: what.to_string(),
                message: s.message,
            },
            kube::Error::Api(s) if not_found(&s) && crd_plural.is_some() && verb != "delete" => {
                ClusterError::CrdMissing {
                    url: self.url.clone(),
                    plural: crd_plural.unwrap_or_default(),
                }
            }
            kube::Error::Api(s) => ClusterError::Api {
                verb,
                what: what.to_string(),
                message: s.message,
            },
            other => ClusterError::Unreachable {
                url: self.url.clone(),
                message: error_chain(&other),
            },
        }
    }

    /// `GET path` on `port` of pod `ns/pod`, through the API server's pod proxy
    /// (`/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/...`): how the CLI reads the
    /// admin endpoints of proxies and of the controller without a port-forward. The API
    /// server dials the pod IP, so the port must listen beyond loopback (the sidecar's
    /// admin port does, for the kubelet's probes); the caller needs `get pods/proxy`.
    pub(crate) async fn pod_get(
        &self,
        ns: &str,
        pod: &str,
        port: u16,
        path: &str,
    ) -> Result<String, ClusterError> {
        let uri = format!("/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy{path}");
        let req = http::Request::get(&uri)
            .body(Vec::new())
            .map_err(|e| ClusterError::Api {
                verb: "get",
                what: uri.clone(),
                message: e.to_string(),
            })?;
        self.client.request_text(req).await.map_err(|e| {
            self.error(
                e,
                "get",
                &format!("pods/proxy {ns}/{pod}:{port}{path}"),
                None,
            )
        })
    }

    /// Whether `policy.vigil.dev/v1alpha1` serves `plural` (to tell "no such object"
    /// from "no such resource" after a 404).
    pub(crate) async fn serves(&self, plural: &str) -> Result<bool, ClusterError> {
        let gv = format!("{}/{}", vigil_crds::GROUP, vigil_crds::VERSION);
        match self.client.list_api_group_resources(&gv).await {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
            Err(kube::Error::Api(s)) if not_found(&s) => Ok(false),
            Err(e) => Err(self.error(e, "discover", &gv, None)),
        }
    }
}

/// A 404, whether the body was a `Status` or, for a path nothing serves (a CRD not
/// installed), plain text (which kube cannot classify by reason).
pub(crate) fn not_found(s: &kube::core::Status) -> bool {
    s.is_not_found() || s.code == 404
}

/// An error and its sources on one line (kube's transport errors hide the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The port named `name` of container `c` (what the pod proxy is asked on).
pub(crate) fn named_port(c: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<u16> {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// A one-thread runtime for one command's requests.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
