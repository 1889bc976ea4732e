//! `vigil explain`: would this request be allowed, and by what? Against a policy
//! directory or the cluster's policies ([`crate::policy_source`]).

use std::{net::IpAddr, time::SystemTime};

use anyhow::{Result, bail};
use clap::Args;
use vigil_cert_authority::TrustDomain;

use crate::{
    cluster::ClusterArgs,
    local_policy::{Case, Loaded},
    output::OutputArgs,
    policy_source::SourceArgs,
};

/// Flags of `vigil explain`.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// Where the policy comes from: `--dir`, else the cluster.
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// The caller: a SPIFFE ID, or `unauthenticated`.
    #[arg(long)]
    pub(crate) from: String,
    /// The callee, `namespace/workload` (or `workload`, in `-n`'s namespace).
    #[arg(long)]
    pub(crate) to: String,
    /// Destination port on the callee.
    #[arg(long)]
    pub(crate) port: u16,
    /// HTTP method (omit method and path for an opaque TCP connection).
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// HTTP path (it is normalised first, as the proxy does).
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// A request header `NAME=VALUE` (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    pub(crate) headers: Vec<(String, String)>,
    /// The caller's source address (for CIDR sources).
    #[arg(long)]
    pub(crate) source_ip: Option<IpAddr>,
    /// Evaluate at this time (RFC 3339) instead of now, e.g. to see a JIT policy expire.
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub(crate) at: Option<SystemTime>,
    /// Trust domain of the identities.
    #[arg(long, env = "VIGIL_TRUST_DOMAIN", default_value = "cluster.local", value_parser = crate::parse_trust_domain)]
    pub(crate) trust_domain: TrustDomain,
    /// `-o table|json|yaml`.
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))
}

/// Exit code: 0 allow, 1 deny (2 for errors, from main).
pub(crate) fn run(a: ExplainArgs, cluster: &ClusterArgs) -> Result<u8> {
    if a.method.is_none() && a.path.is_some() {
        bail!("--path needs --method");
    }
    let loaded = Loaded::new(
        a.source.load(cluster)?,
        &a.trust_domain,
        vigil_policy::model::DefaultPolicy::Deny,
    );
    let at = a.at.unwrap_or_else(SystemTime::now);
    let case = Case {
        from: a.from,
        to: a.to,
        port: a.port,
        method: a.method,
        path: a.path,
        headers: a.headers,
        source_ip: a.source_ip,
        at: at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let v = loaded.decide(&case)?;
    a.out.print(&v, |v| {
        println!("{}: {}", v.decision.to_uppercase(), v.reason);
        if let Some(p) = &v.normalized_path {
            println!("  path (normalised): {p}");
        }
        if let Some(a) = &v.audit {
            println!("  audit: {a}");
        }
        if let Some(r) = &v.rate_limit {
            println!("  rate limit: {r} per source identity");
        }
    })?;
    Ok(if v.allowed { 0 } else { 1 })
}
