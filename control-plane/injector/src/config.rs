//! Injector settings: the YAML the Helm chart mounts (ConfigMap key `config.yaml`; every
//! key optional, unknown keys refused so a typo is not silently a default), plus the
//! runtime facts only the running controller knows (its trust anchors and identity, and
//! whether the apiserver supports native sidecars).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::ResourceRequirements, apimachinery::pkg::api::resource::Quantity,
};
use serde::{Deserialize, Serialize};

/// The proxy's listener ports.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ProxyPorts {
    /// Inbound (redirected incoming traffic).
    pub inbound: u16,
    /// Outbound (redirected outgoing traffic).
    pub outbound: u16,
    /// Admin (/ready, /live, /metrics).
    pub admin: u16,
}

impl Default for ProxyPorts {
    fn default() -> Self {
        Self {
            inbound: 4143,
            outbound: 4140,
            admin: 4191,
        }
    }
}

/// The mesh TLS parameters of injected proxies: `VIGIL_PROXY_TLS_GROUPS` and
/// `VIGIL_PROXY_TLS_CIPHER_SUITES`, most preferred first. Empty lists leave the proxy's
/// defaults. Names are checked when the settings load and stored canonically, so a typo
/// stops the controller rather than every injected pod.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ProxyTls {
    /// Key-exchange groups (`x25519mlkem768`, `x25519`, `p256`).
    pub groups: Vec<String>,
    /// TLS 1.3 cipher suites by IANA name (`TLS_AES_256_GCM_SHA384`,
    /// `TLS_AES_128_GCM_SHA256`, `TLS_CHACHA20_POLY1305_SHA256`).
    pub cipher_suites: Vec<String>,
}

impl ProxyTls {
    /// The lists with canonical names and without duplicates, or what is wrong.
    fn canonical(&self) -> Result<Self, ConfigError> {
        use vigil_cert_authority::tls::TlsParam;
        let each = |key: &str, param: TlsParam, names: &[String]| {
            (param.canonical_list(names.iter().map(String::as_str)))
                .map(|list| list.into_iter().map(String::from).collect())
                .map_err(|e| ConfigError::Invalid(format!("tls.{key}: {e}")))
        };
        Ok(Self {
            groups: each("groups", TlsParam::KxGroup, &self.groups)?,
            cipher_suites: each("cipherSuites", TlsParam::CipherSuite, &self.cipher_suites)?,
        })
    }
}

/// The mesh hop of the app's HTTP/1.1 requests (the proxy's `--mesh-http1`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MeshHttp1 {
    /// Keep-alive HTTP/1.1 mesh connections while few requests to a destination are in
    /// flight, streams of its HTTP/2 connection while many are (the proxy's default).
    #[default]
    Auto,
    /// Keep-alive HTTP/1.1 mesh connections.
    Http1,
    /// Streams of one HTTP/2 mesh connection per destination.
    Http2,
}

impl MeshHttp1 {
    /// The proxy's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Http1 => "http1",
            Self::Http2 => "http2",
        }
    }
}

/// Whether the proxy is a native sidecar (an init container with `restartPolicy: Always`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NativeSidecar {
    /// Where the apiserver is 1.29 or newer.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never: a regular first container that holds the app until it is ready.
    Never,
}

/// Injector settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct InjectorConfig {
    /// The proxy image (also runs the init container).
    pub proxy_image: String,
    /// Its pull policy.
    pub image_pull_policy: String,
    /// Where proxies reach the controller (host:port).
    pub controller_address: String,
    /// The proxy's user ID (iptables exempts its traffic).
    pub proxy_uid: i64,
    /// Listener ports.
    pub ports: ProxyPorts,
    /// The proxy container's resources.
    pub resources: Option<ResourceRequirements>,
    /// The proxy's log filter (`VIGIL_PROXY_LOG`).
    pub log_level: String,
    /// The proxy's mesh TLS parameters.
    pub tls: ProxyTls,
    /// How proxies send their app's HTTP/1.1 requests to other proxies
    /// (`VIGIL_PROXY_MESH_HTTP1`); a pod's `vigil.dev/mesh-http1` overrides it.
    pub mesh_http1: MeshHttp1,
    /// Native sidecar mode.
    pub native_sidecar: NativeSidecar,
    /// Audience of the projected service-account token.
    pub token_audience: String,
    /// Lifetime of the projected token (the kubelet refreshes it at 80 %).
    pub token_expiration_seconds: i64,
    /// The control plane's namespace: never injected.
    pub control_plane_namespace: String,
    /// Other namespaces never injected.
    pub skip_namespaces: Vec<String>,
    /// Runtime: PEM roots that verify the controller.
    #[serde(skip)]
    pub trust_anchors_pem: String,
    /// Runtime: the controller's SPIFFE ID.
    #[serde(skip)]
    pub controller_identity: String,
    /// Runtime: whether the apiserver supports native sidecars (1.29+).
    #[serde(skip)]
    pub cluster_has_native_sidecars: bool,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        let q = |s: &str| Quantity(s.to_string());
        Self {
            proxy_image: format!(
                "ghcr.io/vigil-mesh/vigil-proxy:{}",
                env!("CARGO_PKG_VERSION")
            ),
            image_pull_policy: "IfNotPresent".into(),
            controller_address: "vigil-controller.vigil-system.svc:8443".into(),
            proxy_uid: 2102,
            ports: ProxyPorts::default(),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), q("10m")),
                    ("memory".to_string(), q("20Mi")),
                ])),
                limits: Some(BTreeMap::from([("memory".to_string(), q("128Mi"))])),
                ..ResourceRequirements::default()
            }),
            log_level: "info".into(),
            tls: ProxyTls::default(),
            mesh_http1: MeshHttp1::default(),
            native_sidecar: NativeSidecar::Auto,
            token_audience: "vigil-ca".into(),
            token_expiration_seconds: 3600,
            control_plane_namespace: "vigil-system".into(),
            skip_namespaces: vec!["kube-system".into()],
            trust_anchors_pem: String::new(),
            controller_identity: String::new(),
            cluster_has_native_sidecars: false,
        }
    }
}

impl InjectorConfig {
    /// Whether injected proxies are native sidecars.
    pub fn native(&self) -> bool {
        match self.native_sidecar {
            NativeSidecar::Always => true,
            NativeSidecar::Never => false,
            NativeSidecar::Auto => self.cluster_has_native_sidecars,
        }
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid YAML/JSON for the settings (unknown key, wrong type).
    #[error("injector configuration (check the keys against the chart's values): {0}")]
    Parse(String),
    /// Parsed, but unusable.
    #[error("injector configuration: {0}")]
    Invalid(String),
}

/// Parses the settings (YAML or JSON; empty means defaults) and checks they are usable.
/// JSON is recognised by its leading `{`; everything else is read as YAML.
pub fn parse_config(text: &str) -> Result<InjectorConfig, ConfigError> {
    let mut cfg: InjectorConfig = if text.trim().is_empty() {
        InjectorConfig::default()
    } else if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?
    };
    if cfg.proxy_image.is_empty() || cfg.controller_address.is_empty() {
        return Err(ConfigError::Invalid(
            "proxyImage and controllerAddress must be set".into(),
        ));
    }
    if cfg.proxy_uid <= 0 || u32::try_from(cfg.proxy_uid).is_err() {
        return Err(ConfigError::Invalid(
            "proxyUid must be a non-root user ID (1..4294967295)".into(),
        ));
    }
    if !["Always", "IfNotPresent", "Never"].contains(&cfg.image_pull_policy.as_str()) {
        return Err(ConfigError::Invalid(format!(
            "imagePullPolicy {:?} must be Always, IfNotPresent or Never",
            cfg.image_pull_policy
        )));
    }
    let p = &cfg.ports;
    if p.inbound == 0
        || p.outbound == 0
        || p.admin == 0
        || p.inbound == p.outbound
        || p.inbound == p.admin
        || p.outbound == p.admin
    {
        return Err(ConfigError::Invalid(
            "ports must be distinct and non-zero".into(),
        ));
    }
    if !(600..=i64::from(u32::MAX)).contains(&cfg.token_expiration_seconds) {
        return Err(ConfigError::Invalid(
            "tokenExpirationSeconds must be at least 600 (the apiserver's minimum for projected tokens)".into(),
        ));
    }
    cfg.tls = cfg.tls.canonical()?;
    Ok(cfg)
}
