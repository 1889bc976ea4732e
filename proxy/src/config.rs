//! `vigil-proxy run` configuration: flags with `VIGIL_PROXY_*` environment variables,
//! validated into [`Config`], which `/config` serialises (it holds no secrets: key paths,
//! never key material).

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use serde::Serialize;
use vigil_cert_authority::SpiffeId;

mod routes;
mod tls;

pub use routes::{AccessLogTarget, OutboundRoute, ProbeRoute};

/// Default inbound listener.
pub const DEFAULT_INBOUND: &str = "[::]:4143";
/// Default outbound (transparent) listener.
pub const DEFAULT_OUTBOUND: &str = "127.0.0.1:4140";
/// Default admin listener.
pub const DEFAULT_ADMIN: &str = "[::]:4191";

/// Flags of `vigil-proxy run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Inbound listener: traffic to this workload (redirected by `init`, or sent directly).
    #[arg(long, env = "VIGIL_PROXY_INBOUND", default_value = DEFAULT_INBOUND)]
    pub inbound: SocketAddr,
    /// Outbound listener: this workload's outgoing traffic, redirected by `init`.
    /// The original destination is read with SO_ORIGINAL_DST.
    #[arg(long, env = "VIGIL_PROXY_OUTBOUND", default_value = DEFAULT_OUTBOUND)]
    pub outbound: SocketAddr,
    /// Admin listener: /ready, /live, /metrics, /config.
    #[arg(long, env = "VIGIL_PROXY_ADMIN", default_value = DEFAULT_ADMIN)]
    pub admin: SocketAddr,

    /// Workload certificate chain (PEM: leaf first). Reloaded on change.
    #[arg(long, env = "VIGIL_PROXY_SVID", requires_all = ["key", "bundle"])]
    pub svid: Option<PathBuf>,
    /// Private key of the SVID (PEM). Reloaded on change.
    #[arg(long, env = "VIGIL_PROXY_KEY")]
    pub key: Option<PathBuf>,
    /// Trust bundle (PEM roots). Reloaded on change.
    #[arg(long, env = "VIGIL_PROXY_BUNDLE")]
    pub bundle: Option<PathBuf>,
    /// This workload's SPIFFE ID; certificates for any other identity are refused.
    /// Defaults to the identity in the first certificate loaded.
    #[arg(long, env = "VIGIL_PROXY_IDENTITY", value_parser = parse_id)]
    pub identity: Option<SpiffeId>,
    /// Policy file (the proxy's compiled policy format, YAML or JSON). Reloaded on change;
    /// an invalid file denies all traffic until fixed.
    #[arg(long, env = "VIGIL_PROXY_POLICY")]
    pub policy: Option<PathBuf>,

    /// Controller mode: get certificates and policy from the controller at this address
    /// (host:port) instead of files. Needs --workload, --bundle and a bootstrap token.
    #[arg(long, env = "VIGIL_PROXY_CONTROLLER", conflicts_with_all = ["svid", "key", "policy"])]
    pub controller: Option<String>,
    /// The controller's SPIFFE ID (verified on every connection). Default:
    /// spiffe://<trust-domain>/ns/vigil-system/sa/vigil-controller.
    #[arg(long, env = "VIGIL_PROXY_CONTROLLER_IDENTITY", value_parser = parse_id)]
    pub controller_identity: Option<SpiffeId>,
    /// This workload, `namespace/name` (controller mode).
    #[arg(long, env = "VIGIL_PROXY_WORKLOAD")]
    pub workload: Option<String>,
    /// Bootstrap token (`vigil ca token`) proving this workload's identity for its first
    /// certificate (controller mode, local). Prefer --bootstrap-token-file.
    #[arg(long, env = "VIGIL_PROXY_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// File holding the bootstrap token.
    #[arg(
        long,
        env = "VIGIL_PROXY_BOOTSTRAP_TOKEN_FILE",
        conflicts_with = "bootstrap_token"
    )]
    pub bootstrap_token_file: Option<PathBuf>,

    /// Kubernetes: a projected service-account token (audience `vigil-ca`) proving this
    /// pod's identity for its first certificate. Re-read at every request (the kubelet
    /// rotates it); the identity is the token's service account.
    #[arg(
        long,
        env = "VIGIL_PROXY_SERVICE_ACCOUNT_TOKEN_FILE",
        conflicts_with_all = ["bootstrap_token", "bootstrap_token_file"]
    )]
    pub service_account_token_file: Option<PathBuf>,
    /// The trust anchors (PEM roots) that verify the controller, inline — what the
    /// injector sets; an alternative to --bundle.
    #[arg(
        long,
        env = "VIGIL_PROXY_TRUST_ANCHORS",
        conflicts_with = "bundle",
        hide_env_values = true
    )]
    pub trust_anchors: Option<String>,

    /// Forward inbound traffic to this address (non-transparent use). Without it, inbound
    /// traffic goes to 127.0.0.1:<original destination port>.
    #[arg(long, env = "VIGIL_PROXY_APP")]
    pub app: Option<SocketAddr>,
    /// Static outbound route `LISTEN=UPSTREAM,SPIFFE_ID[,SPIFFE_ID...]`: a listener at
    /// LISTEN whose connections go over mTLS to the proxy at UPSTREAM, which must present
    /// one of the IDs. Repeatable.
    #[arg(
        long = "outbound-route",
        env = "VIGIL_PROXY_OUTBOUND_ROUTES",
        value_delimiter = ';'
    )]
    pub outbound_routes: Vec<OutboundRoute>,
    /// Plaintext HTTP route `PORT:PATH` that needs no identity (kubelet probes). GET/HEAD
    /// only, exact path. Repeatable.
    #[arg(
        long = "probe-route",
        env = "VIGIL_PROXY_PROBE_ROUTES",
        value_delimiter = ','
    )]
    pub probe_routes: Vec<ProbeRoute>,
    /// Ports whose traffic is never inspected (server-first protocols such as MySQL or
    /// SMTP, or anything not HTTP): authorized at L4 without waiting for detection.
    #[arg(long, env = "VIGIL_PROXY_OPAQUE_PORTS", value_delimiter = ',')]
    pub opaque_ports: Vec<u16>,
    /// Ports whose app speaks HTTP/1.1 only: HTTP/2 requests for them reach the app as
    /// HTTP/1.1 (elsewhere the app gets the protocol the client spoke). Never list a gRPC
    /// port: gRPC needs HTTP/2 end to end.
    #[arg(long, env = "VIGIL_PROXY_HTTP1_APP_PORTS", value_delimiter = ',')]
    pub http1_app_ports: Vec<u16>,

    /// How long to wait for a client's first bytes before treating it as opaque TCP.
    #[arg(long, env = "VIGIL_PROXY_DETECT_TIMEOUT", default_value = "300ms", value_parser = humantime::parse_duration)]
    pub detect_timeout: Duration,
    /// Longest a TLS handshake may take.
    #[arg(long, env = "VIGIL_PROXY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Longest an HTTP/1 request head may take to arrive (slowloris).
    #[arg(long, env = "VIGIL_PROXY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Timeout for connecting to the app or an upstream proxy.
    #[arg(long, env = "VIGIL_PROXY_CONNECT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Idle pooled upstream connections are closed after this long.
    #[arg(long, env = "VIGIL_PROXY_POOL_IDLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    pub pool_idle_timeout: Duration,
    /// Most idle pooled connections kept per upstream.
    #[arg(long, env = "VIGIL_PROXY_POOL_MAX_IDLE", default_value_t = 256)]
    pub pool_max_idle: usize,
    /// On SIGTERM, how long in-flight requests may take before the proxy exits.
    #[arg(long, env = "VIGIL_PROXY_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Most concurrent connections per listener; more are closed on accept.
    #[arg(long, env = "VIGIL_PROXY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most connections per listener still in detection or their TLS handshake; more are
    /// closed on accept (stalled handshakes cannot exhaust file descriptors).
    #[arg(
        long,
        env = "VIGIL_PROXY_MAX_PENDING_HANDSHAKES",
        default_value_t = 1024
    )]
    pub max_pending_handshakes: usize,
    /// Most such connections from one source address.
    #[arg(
        long,
        env = "VIGIL_PROXY_MAX_PENDING_PER_SOURCE",
        default_value_t = 128
    )]
    pub max_pending_per_source: usize,
    /// Largest HTTP request head (HTTP/1) or header list (HTTP/2); larger gets 431.
    #[arg(long, env = "VIGIL_PROXY_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Accept queue of each listener (`listen(2)` backlog; the kernel caps it at
    /// net.core.somaxconn). The standard library's 128 drops SYNs in a connection storm.
    #[arg(long, env = "VIGIL_PROXY_LISTEN_BACKLOG", default_value_t = 1024)]
    pub listen_backlog: u32,
    /// Most concurrent HTTP/2 streams per connection.
    #[arg(
        long,
        env = "VIGIL_PROXY_MAX_CONCURRENT_STREAMS",
        default_value_t = 256
    )]
    pub max_concurrent_streams: u32,
    /// How the app's HTTP/1.1 requests travel to the destination's proxy: `auto` (as
    /// `http1` while fewer than 4 requests to the destination are in flight, else — and
    /// for 100 ms after, or until 16 requests in a row found fewer — as `http2`),
    /// `http1` (keep-alive HTTP/1.1 mesh connections, pooled per destination) or `http2`
    /// (streams of one HTTP/2 mesh connection per destination). The app's HTTP/2
    /// requests whose stream ended with their headers and that ask for no trailers
    /// (`te: trailers`) travel the same way (and reach the far app as HTTP/2 again); all
    /// other HTTP/2, gRPC included, always go as HTTP/2.
    #[arg(
        long,
        env = "VIGIL_PROXY_MESH_HTTP1",
        value_enum,
        default_value = "auto"
    )]
    pub mesh_http1: MeshHttp1,
    /// Access log: `stdout` (one JSON line per request/connection) or `off`.
    #[arg(long, env = "VIGIL_PROXY_ACCESS_LOG", default_value = "stdout")]
    pub access_log: AccessLogTarget,
    /// Runtime worker threads (1 = a single-threaded runtime, the sidecar default).
    #[arg(long, env = "VIGIL_PROXY_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// TLS key-exchange groups, most preferred first: `x25519mlkem768` (hybrid
    /// post-quantum), `x25519`, `p256`. Restrict to `p256` where only FIPS groups may be
    /// used; peers must share at least one group.
    #[arg(
        long,
        env = "VIGIL_PROXY_TLS_GROUPS",
        value_delimiter = ',',
        default_value = "x25519mlkem768,x25519,p256"
    )]
    pub tls_groups: Vec<String>,
    /// TLS 1.3 cipher suites, most preferred first (IANA names, any case):
    /// `TLS_AES_256_GCM_SHA384`, `TLS_AES_128_GCM_SHA256`, `TLS_CHACHA20_POLY1305_SHA256`.
    /// The connecting proxy's order decides; peers must share at least one suite.
    #[arg(
        long,
        env = "VIGIL_PROXY_TLS_CIPHER_SUITES",
        value_delimiter = ',',
        default_value = "TLS_AES_256_GCM_SHA384,TLS_AES_128_GCM_SHA256,TLS_CHACHA20_POLY1305_SHA256"
    )]
    pub tls_cipher_suites: Vec<String>,
    /// Per-request metrics (request counts, latency histograms, authorization decisions).
    /// Connection, TLS and policy metrics are always kept; turning these off exists to
    /// measure their cost (benchmark B12).
    #[arg(long, env = "VIGIL_PROXY_REQUEST_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub request_metrics: bool,
    /// Most peers kept in the record of recent mTLS connections (`/peers` on the admin
    /// port, read by `vigil verify`); beyond it the peer seen least recently is replaced.
    /// 0 turns the record off.
    #[arg(long, env = "VIGIL_PROXY_PEER_RECORD_MAX", default_value_t = 16)]
    pub peer_record_max: usize,
}

fn parse_id(s: &str) -> Result<SpiffeId, String> {
    SpiffeId::parse(s).map_err(|e| e.to_string())
}

/// How the app's HTTP/1.1 requests travel between proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MeshHttp1 {
    /// Keep-alive HTTP/1.1 mesh connections, one request at a time each: each proxy
    /// reads and writes HTTP/1.1 only, the cheapest per request.
    Http1,
    /// Streams of one HTTP/2 mesh connection per destination: fewer connections (and
    /// handshakes) when many requests to one destination are in flight at once.
    Http2,
    /// HTTP/1.1 connections while fewer than [`crate::outbound::AUTO_HTTP2_FROM`]
    /// requests to the destination are in flight (the fewest instructions per request),
    /// streams of its HTTP/2 connection from then on and for 100 ms after, or until 16
    /// requests in a row found fewer (the fewest system calls: their writes are gathered
    /// per turn).
    Auto,
}

/// The validated configuration (what `/config` shows).
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Inbound listener.
    pub inbound: SocketAddr,
    /// Outbound listener.
    pub outbound: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// File-mode credential paths.
    pub svid: Option<PathBuf>,
    /// Key path (the key itself is never shown).
    pub key: Option<PathBuf>,
    /// Bundle path.
    pub bundle: Option<PathBuf>,
    /// Expected identity.
    pub identity: Option<SpiffeId>,
    /// Controller mode settings (None in file mode).
    pub controller: Option<ControlConfig>,
    /// Policy file.
    pub policy: Option<PathBuf>,
    /// Inbound forwarding target.
    pub app: Option<SocketAddr>,
    /// Static outbound routes.
    pub outbound_routes: Vec<OutboundRoute>,
    /// Probe routes.
    pub probe_routes: Vec<ProbeRoute>,
    /// Opaque ports.
    pub opaque_ports: BTreeSet<u16>,
    /// Ports whose app gets HTTP/1.1 whatever the client spoke.
    pub http1_app_ports: BTreeSet<u16>,
    /// Timeouts and limits.
    #[serde(serialize_with = "ser_duration")]
    pub detect_timeout: Duration,
    /// TLS handshake timeout.
    #[serde(serialize_with = "ser_duration")]
    pub handshake_timeout: Duration,
    /// HTTP/1 header read timeout.
    #[serde(serialize_with = "ser_duration")]
    pub header_read_timeout: Duration,
    /// Connect timeout.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Pool idle timeout.
    #[serde(serialize_with = "ser_duration")]
    pub pool_idle_timeout: Duration,
    /// Pool size per upstream.
    pub pool_max_idle: usize,
    /// Drain deadline.
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// Connection limit per listener.
    pub max_connections: usize,
    /// Connections per listener still in detection or handshake.
    pub max_pending_handshakes: usize,
    /// The same, per source address.
    pub max_pending_per_source: usize,
    /// Header size limit.
    pub max_header_bytes: usize,
    /// Listen backlog per listener.
    pub listen_backlog: u32,
    /// HTTP/2 stream limit.
    pub max_concurrent_streams: u32,
    /// The mesh hop of HTTP/1.1 requests.
    pub mesh_http1: MeshHttp1,
    /// Access log target.
    pub access_log: AccessLogTarget,
    /// Worker threads.
    pub threads: usize,
    /// TLS key-exchange groups, most preferred first (names from
    /// `vigil_cert_authority::tls::KX_GROUP_NAMES`, lower case).
    pub tls_groups: Vec<String>,
    /// TLS 1.3 cipher suites, most preferred first (IANA names from
    /// `vigil_cert_authority::tls::CIPHER_SUITE_NAMES`).
    pub tls_cipher_suites: Vec<String>,
    /// Per-request metrics on.
    pub request_metrics: bool,
    /// Most peers in `/peers` (0: off).
    pub peer_record_max: usize,
}

/// Controller mode.
#[derive(Clone, Debug, Serialize)]
pub struct ControlConfig {
    /// Controller address, host:port.
    pub address: String,
    /// The controller's SPIFFE ID (None: derived from this workload's trust domain).
    pub identity: Option<SpiffeId>,
    /// This workload, namespace/name.
    pub workload: String,
    /// The bootstrap token (never shown).
    #[serde(serialize_with = "redacted")]
    pub bootstrap_token: Option<String>,
    /// Projected service-account token file (Kubernetes), re-read at every request.
    pub service_account_token_file: Option<PathBuf>,
    /// Inline PEM roots that verify the controller (instead of --bundle).
    pub trust_anchors: Option<String>,
}

fn redacted<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if v.is_some() { "<redacted>" } else { "<none>" })
}

/// Configuration errors, all reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl RunArgs {
    /// Validates the flags; every problem is reported at once.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let mut controller = None;
        match &self.controller {
            None => {
                if self.svid.is_none() {
                    errors.push("no credentials: pass --svid, --key and --bundle (file mode), or --controller".into());
                }
                if self.policy.is_none() {
                    errors
                        .push("no policy: pass --policy FILE (file mode), or --controller".into());
                }
            }
            Some(address) => {
                if self.bundle.is_none() && self.trust_anchors.is_none() {
                    errors.push(
                        "controller mode needs --bundle or --trust-anchors (the roots that verify the controller)"
                            .into(),
                    );
                }
                let workload = match &self.workload {
                    Some(w)
                        if w.split_once('/')
                            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty()) =>
                    {
                        w.clone()
                    }
                    Some(w) => {
                        errors.push(format!("--workload {w:?} must be namespace/name"));
                        String::new()
                    }
                    None => {
                        errors.push("controller mode needs --workload namespace/name".into());
                        String::new()
                    }
                };
                let token = match (&self.bootstrap_token, &self.bootstrap_token_file) {
                    (Some(t), _) => Some(t.trim().to_string()),
                    (None, Some(f)) => match std::fs::read_to_string(f) {
                        Ok(t) => Some(t.trim().to_string()),
                        Err(e) => {
                            errors.push(format!("--bootstrap-token-file {}: {e}", f.display()));
                            None
                        }
                    },
                    (None, None) => None,
                };
                if token.is_none()
                    && self.service_account_token_file.is_none()
                    && self.identity.is_none()
                {
                    errors.push("controller mode needs a proof of identity: --service-account-token-file (Kubernetes), a bootstrap token (--bootstrap-token[-file]), or --identity".into());
                }
                controller = Some(ControlConfig {
                    address: address.clone(),
                    identity: self.controller_identity.clone(),
                    workload,
                    bootstrap_token: token,
                    service_account_token_file: self.service_account_token_file.clone(),
                    trust_anchors: self.trust_anchors.clone(),
                });
            }
        }
        if self.listen_backlog == 0 {
            errors.push("--listen-backlog must be at least 1".into());
        }
        if self.threads == 0 {
            errors.push("--threads must be at least 1".into());
        }
        if self.max_header_bytes < 8192 {
            errors.push("--max-header-bytes must be at least 8192".into());
        }
        if self.max_connections == 0 {
            errors.push("--max-connections must be at least 1".into());
        }
        if self.max_pending_handshakes == 0 || self.max_pending_per_source == 0 {
            errors.push(
                "--max-pending-handshakes and --max-pending-per-source must be at least 1".into(),
            );
        }
        use vigil_cert_authority::tls::TlsParam;
        let tls_groups = tls::tls_names(
            "--tls-groups",
            TlsParam::KxGroup,
            &self.tls_groups,
            &mut errors,
        );
        let tls_cipher_suites = tls::tls_names(
            "--tls-cipher-suites",
            TlsParam::CipherSuite,
            &self.tls_cipher_suites,
            &mut errors,
        );
        let mut listens = BTreeSet::new();
        for addr in [self.inbound, self.outbound, self.admin]
            .into_iter()
            .chain(self.outbound_routes.iter().map(|r| r.listen))
        {
            if addr.port() != 0 && !listens.insert(addr) {
                errors.push(format!("{addr} is used by more than one listener"));
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Config {
            inbound: self.inbound,
            outbound: self.outbound,
            admin: self.admin,
            svid: self.svid,
            key: self.key,
            bundle: self.bundle,
            identity: self.identity,
            controller,
            policy: self.policy,
            app: self.app,
            outbound_routes: self.outbound_routes,
            probe_routes: self.probe_routes,
            opaque_ports: self.opaque_ports.into_iter().collect(),
            http1_app_ports: self.http1_app_ports.into_iter().collect(),
            detect_timeout: self.detect_timeout,
            handshake_timeout: self.handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            connect_timeout: self.connect_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            pool_max_idle: self.pool_max_idle,
            drain_timeout: self.drain_timeout,
            max_connections: self.max_connections,
            max_pending_handshakes: self.max_pending_handshakes,
            max_pending_per_source: self.max_pending_per_source,
            max_header_bytes: self.max_header_bytes,
            listen_backlog: self.listen_backlog,
            max_concurrent_streams: self.max_concurrent_streams,
            mesh_http1: self.mesh_http1,
            access_log: self.access_log,
            threads: self.threads,
            tls_groups,
            tls_cipher_suites,
            request_metrics: self.request_metrics,
            peer_record_max: self.peer_record_max,
        })
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[cfg(test)]
mod tests;
