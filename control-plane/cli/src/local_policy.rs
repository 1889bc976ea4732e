//! Evaluating requests against policy — from a local policy directory or the cluster
//! ([`crate::policy_source`]) — exactly as the controller would compile it and a proxy
//! would decide it (the same loader, compiler and evaluator).

use std::{net::IpAddr, path::Path};

use anyhow::{Context, Result, bail};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use vigil_cert_authority::{SpiffeId, TrustDomain};
use vigil_index::{ObjectKey, Settings, compile};
use vigil_policy::{HttpRequest, Peer, Policy, Reason, Request, model::DefaultPolicy};

use crate::{
    cluster::ClusterArgs,
    policy_source::{Source, SourceArgs, missing_workload_hint},
};

/// One request to judge.
#[derive(Clone, Debug, Default)]
pub(crate) struct Case {
    /// A SPIFFE ID, or `unauthenticated`.
    pub(crate) from: String,
    /// `namespace/workload`.
    pub(crate) to: String,
    pub(crate) port: u16,
    /// None: an opaque TCP connection.
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) source_ip: Option<IpAddr>,
    /// Unix seconds.
    pub(crate) at: u64,
}

/// The decision, explained.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Verdict {
    pub(crate) allowed: bool,
    /// `allow`, `deny`, or `audit` (allowed, but audit rules or an audit default would deny).
    pub(crate) decision: &'static str,
    pub(crate) reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) audit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate_limit: Option<String>,
    /// The path after normalisation (what was matched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) normalized_path: Option<String>,
}

/// Policy resources ready to judge requests.
pub(crate) struct Loaded {
    settings: Settings,
    resources: vigil_index::Resources,
    /// Where they came from (for messages).
    origin: String,
    /// The namespace of a `to` without one.
    namespace: String,
}

impl Loaded {
    /// Judges requests against `source`; its skipped documents are printed as warnings.
    pub(crate) fn new(
        source: Source,
        trust_domain: &TrustDomain,
        default_policy: DefaultPolicy,
    ) -> Self {
        for e in &source.skipped {
            eprintln!("warning: skipped (the controller keeps its last good version): {e}");
        }
        Self {
            settings: Settings {
                trust_domain: trust_domain.clone(),
                default_policy,
                egress_passthrough: true,
            },
            resources: source.resources,
            origin: source.origin,
            namespace: source.namespace,
        }
    }

    /// Reads the policy directory `dir` as the controller would. Files with errors are
    /// skipped (and printed).
    pub(crate) fn read(
        dir: &Path,
        trust_domain: &TrustDomain,
        default_policy: DefaultPolicy,
    ) -> Result<Self> {
        let source = SourceArgs {
            dir: Some(dir.to_path_buf()),
            overlay: None,
        }
        .load(&ClusterArgs::default())?;
        Ok(Self::new(source, trust_domain, default_policy))
    }

    /// Judges one request.
    pub(crate) fn decide(&self, case: &Case) -> Result<Verdict> {
        let key = match case.to.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => ObjectKey::new(ns, name),
            None if !case.to.is_empty() => ObjectKey::new(&self.namespace, &case.to),
            _ => bail!(
                "--to {:?} must be namespace/workload, or a workload in -n's namespace",
                case.to
            ),
        };
        let compiled = compile(&self.resources, &self.settings, case.at);
        let workload = compiled.workloads.get(&key).with_context(|| {
            format!(
                "no Workload {key} in {} ({})",
                self.origin,
                missing_workload_hint(&self.origin)
            )
        })?;
        let policy = Policy::compile(workload.policy.clone())
            .map_err(|e| anyhow::anyhow!("compiled policy is invalid: {e}"))?;
        let from = if case.from == "unauthenticated" {
            None
        } else {
            Some(SpiffeId::parse(&case.from).with_context(|| format!("--from {:?}", case.from))?)
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &case.headers {
            headers.append(
                HeaderName::try_from(k.as_str()).with_context(|| format!("header name {k:?}"))?,
                HeaderValue::try_from(v.as_str()).with_context(|| format!("header value {v:?}"))?,
            );
        }
        let normalized = match &case.path {
            Some(p) => Some(
                vigil_policy::path::normalize(p)
                    .map_err(|e| anyhow::anyhow!("path {p:?}: {e} (the proxy answers 400)"))?
                    .into_owned(),
            ),
            None => None,
        };
        let http = match (&case.method, &normalized) {
            (None, None) => None,
            (m, p) => Some(HttpRequest {
                method: m.as_deref().unwrap_or("GET"),
                path: p.as_deref().unwrap_or("/"),
                headers: &headers,
            }),
        };
        let d = policy.evaluate(
            &Request {
                peer: match &from {
                    Some(id) => Peer::Authenticated(id),
                    None => Peer::Unauthenticated,
                },
                source_ip: case.source_ip,
                port: case.port,
                http,
            },
            case.at,
        );
        let (policy_name, rule) = match d.reason {
            Reason::Rule(i) => policy
                .rule_info(i)
                .map_or((None, None), |(p, r, _, _)| (Some(p.to_string()), Some(r))),
            _ => (None, None),
        };
        let audit = d.audit.map(|f| {
            format!(
                "{}: {}",
                if f.would_allow {
                    "would allow"
                } else {
                    "would deny"
                },
                policy.describe(f.reason)
            )
        });
        Ok(Verdict {
            allowed: d.allowed,
            decision: match (d.allowed, &d.audit) {
                (false, _) => "deny",
                (true, Some(f)) if !f.would_allow => "audit",
                (true, _) => "allow",
            },
            reason: policy.describe(d.reason),
            policy: policy_name,
            rule,
            audit,
            rate_limit: d.rate_limit.map(|(_, rl)| {
                format!("{} requests/s, burst {}", rl.requests_per_second, rl.burst)
            }),
            normalized_path: normalized,
        })
    }
}
