//! `vigil-controller` flags, each with a `VIGIL_CONTROLLER_*` environment variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{
    Args, ValueEnum,
    builder::{PossibleValuesParser, TypedValueParser},
};
use vigil_cert_authority::{SpiffeId, TrustDomain};
use vigil_policy::model::DefaultPolicy;

/// Flags.
#[derive(Clone, Debug, Args)]
pub struct ControllerArgs {
    /// Local mode: read policy and workloads from the YAML files in this directory
    /// (watched; changes apply live).
    #[arg(
        long,
        env = "VIGIL_CONTROLLER_LOCAL",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub local: Option<PathBuf>,
    /// Kubernetes mode: watch Pods, Namespaces, Services/EndpointSlices and the policy
    /// CRDs; verify service-account tokens with TokenReview; serve the injector webhook;
    /// keep the CA in a Secret. See the `--kube-*` flags.
    #[arg(long, env = "VIGIL_CONTROLLER_KUBERNETES")]
    pub kubernetes: bool,
    /// Kubernetes mode settings.
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
    /// CA state directory (created with a new CA only if it holds no CA state at all).
    #[arg(long, env = "VIGIL_CONTROLLER_STATE_DIR")]
    pub state_dir: PathBuf,
    /// gRPC listener for proxies (Identity, Policy).
    #[arg(
        long,
        env = "VIGIL_CONTROLLER_LISTEN",
        default_value = "127.0.0.1:8443"
    )]
    pub listen: SocketAddr,
    /// Admin listener: /live, /ready, /metrics, /status.
    #[arg(long, env = "VIGIL_CONTROLLER_ADMIN", default_value = "127.0.0.1:9191")]
    pub admin: SocketAddr,
    /// Trust domain (must match the CA's).
    #[arg(long, env = "VIGIL_CONTROLLER_TRUST_DOMAIN", default_value = "cluster.local", value_parser = parse_td)]
    pub trust_domain: TrustDomain,
    /// The controller's own SPIFFE ID (proxies verify it). Default:
    /// spiffe://<trust-domain>/ns/vigil-system/sa/vigil-controller.
    #[arg(long, env = "VIGIL_CONTROLLER_IDENTITY", value_parser = parse_id)]
    pub identity: Option<SpiffeId>,
    /// Lifetime of workload SVIDs (5m..24h; down to 1m with --allow-short-ttl).
    #[arg(long, env = "VIGIL_CONTROLLER_SVID_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub svid_ttl: Duration,
    /// Allow SVID TTLs below 5 minutes (demos and tests of rotation).
    #[arg(long, env = "VIGIL_CONTROLLER_ALLOW_SHORT_TTL")]
    pub allow_short_ttl: bool,
    /// Default for requests no policy decides, where neither workload nor namespace says.
    #[arg(
        long,
        env = "VIGIL_CONTROLLER_DEFAULT_POLICY",
        value_parser = PossibleValuesParser::new(DefaultPolicy::NAMES)
            .try_map(|s| s.parse::<DefaultPolicy>()),
        default_value = "deny"
    )]
    pub default_policy: DefaultPolicy,
    /// Traffic to destinations outside the mesh, where the workload does not say.
    #[arg(
        long,
        env = "VIGIL_CONTROLLER_EGRESS",
        value_enum,
        default_value = "passthrough"
    )]
    pub egress: EgressArg,
}

/// `--egress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EgressArg {
    /// Plaintext pass-through to non-mesh destinations.
    Passthrough,
    /// Refuse non-mesh destinations.
    Strict,
}

fn parse_td(s: &str) -> Result<TrustDomain, String> {
    TrustDomain::new(s).map_err(|e| e.to_string())
}

fn parse_id(s: &str) -> Result<SpiffeId, String> {
    SpiffeId::parse(s).map_err(|e| e.to_string())
}
