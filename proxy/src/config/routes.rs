//! The values of `vigil-proxy run` flags that have a grammar of their own: static
//! outbound routes (`--outbound-route`), plaintext probe routes (`--probe-route`) and the
//! access-log target.

use std::{collections::BTreeSet, net::SocketAddr, str::FromStr};

use serde::Serialize;
use vigil_cert_authority::SpiffeId;

/// A static outbound route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutboundRoute {
    /// Local listener the app connects to.
    pub listen: SocketAddr,
    /// The destination's inbound proxy.
    pub upstream: SocketAddr,
    /// Identities the upstream may present.
    pub identities: BTreeSet<SpiffeId>,
}

/// A plaintext probe route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeRoute {
    /// The workload port.
    pub port: u16,
    /// The exact path.
    pub path: String,
}

/// Where access logs go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Nowhere.
    Off,
}

impl FromStr for OutboundRoute {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected LISTEN=UPSTREAM,SPIFFE_ID[,SPIFFE_ID...]";
        let (listen, rest) = s.split_once('=').ok_or(usage)?;
        let mut parts = rest.split(',');
        let upstream = parts.next().ok_or(usage)?;
        let identities = parts
            .map(|p| SpiffeId::parse(p.trim()).map_err(|e| format!("{p:?}: {e}")))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if identities.is_empty() {
            return Err(format!("{usage}: at least one SPIFFE ID"));
        }
        Ok(Self {
            listen: listen
                .trim()
                .parse()
                .map_err(|e| format!("listen address {listen:?}: {e}"))?,
            upstream: upstream
                .trim()
                .parse()
                .map_err(|e| format!("upstream address {upstream:?}: {e}"))?,
            identities,
        })
    }
}

impl FromStr for ProbeRoute {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, path) = s.split_once(':').ok_or("expected PORT:PATH")?;
        let port: u16 = port.parse().map_err(|e| format!("port {port:?}: {e}"))?;
        let normalized =
            vigil_policy::path::normalize(path).map_err(|e| format!("path {path:?}: {e}"))?;
        if normalized != path {
            return Err(format!(
                "probe path {path:?} must be normalised (e.g. {normalized:?})"
            ));
        }
        Ok(Self {
            port,
            path: path.to_owned(),
        })
    }
}

impl FromStr for AccessLogTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "unknown access log target {other:?}; use stdout or off"
            )),
        }
    }
}
