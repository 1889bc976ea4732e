//! Domain <-> wire conversions. Wire -> domain fails closed.

use std::net::SocketAddr;

use vigil_cert_authority::{TrustBundle, TrustDomain};
use vigil_policy::model::{
    Action, DefaultPolicy, Destination, GrpcMatch, HeaderMatch, HttpMatch, Mode, Outbound,
    PathMatch, ProxyPolicy, RateLimit, Revocations, Rule, Source,
};

use crate::pb;

/// A wire message that cannot be turned into a domain value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {why}")]
pub struct WireError {
    /// Which field.
    pub what: String,
    /// What is wrong.
    pub why: String,
}

fn bad(what: impl Into<String>, why: impl Into<String>) -> WireError {
    WireError {
        what: what.into(),
        why: why.into(),
    }
}

// === domain -> wire ===

impl From<&Destination> for pb::Destination {
    fn from(d: &Destination) -> Self {
        Self {
            address: d.address.to_string(),
            proxy: d.proxy.map(|a| a.to_string()).unwrap_or_default(),
            identities: d.identities.clone(),
            endpoints: d.endpoints.iter().map(ToString::to_string).collect(),
        }
    }
}

impl From<&ProxyPolicy> for pb::WorkloadPolicy {
    fn from(p: &ProxyPolicy) -> Self {
        Self {
            generation: p.generation,
            workload_id: p.workload.clone().unwrap_or_default(),
            default_policy: match p.default_policy {
                DefaultPolicy::Deny => pb::DefaultPolicy::Deny,
                DefaultPolicy::Audit => pb::DefaultPolicy::Audit,
                DefaultPolicy::AllowAuthenticated => pb::DefaultPolicy::AllowAuthenticated,
            } as i32,
            quarantined: p.quarantined,
            inbound: p.inbound.iter().map(rule_to_wire).collect(),
            revoked: Some(pb::Revocations {
                ids: p.revoked.ids.clone(),
                serials: p.revoked.serials.clone(),
            }),
            outbound: Some(pb::Outbound {
                passthrough: p.outbound.passthrough,
                destinations: p
                    .outbound
                    .destinations
                    .iter()
                    .map(pb::Destination::from)
                    .collect(),
            }),
        }
    }
}

fn rule_to_wire(r: &Rule) -> pb::Rule {
    pb::Rule {
        policy: r.policy.clone(),
        rule: r.rule,
        action: match r.action {
            Action::Allow => pb::Action::Allow,
            Action::Deny => pb::Action::Deny,
        } as i32,
        mode: match r.mode {
            Mode::Enforce => pb::Mode::Enforce,
            Mode::Audit => pb::Mode::Audit,
        } as i32,
        ports: r.ports.iter().map(|p| u32::from(*p)).collect(),
        from: r
            .from
            .iter()
            .map(|s| pb::Source {
                kind: Some(match s {
                    Source::Id(id) => pb::source::Kind::Id(id.clone()),
                    Source::Authenticated => pb::source::Kind::Authenticated(true),
                    Source::Unauthenticated => pb::source::Kind::Unauthenticated(true),
                    Source::Cidr(net) => pb::source::Kind::Cidr(net.to_string()),
                }),
            })
            .collect(),
        http: r.http.as_ref().map(|h| pb::HttpMatch {
            methods: h.methods.clone(),
            paths: h
                .paths
                .iter()
                .map(|p| pb::PathMatch {
                    kind: Some(match p {
                        PathMatch::Exact(s) => pb::path_match::Kind::Exact(s.clone()),
                        PathMatch::Prefix(s) => pb::path_match::Kind::Prefix(s.clone()),
                        PathMatch::Glob(s) => pb::path_match::Kind::Glob(s.clone()),
                    }),
                })
                .collect(),
            headers: h
                .headers
                .iter()
                .map(|m| pb::HeaderMatch {
                    name: m.name.clone(),
                    kind: match (&m.exact, &m.regex, m.present) {
                        (Some(v), _, _) => Some(pb::header_match::Kind::Exact(v.clone())),
                        (_, Some(v), _) => Some(pb::header_match::Kind::Regex(v.clone())),
                        (_, _, Some(v)) => Some(pb::header_match::Kind::Present(v)),
                        _ => None,
                    },
                })
                .collect(),
            grpc: h
                .grpc
                .iter()
                .map(|g| pb::GrpcMatch {
                    service: g.service.clone(),
                    method: g.method.clone(),
                })
                .collect(),
        }),
        valid_from: r.valid_from,
        valid_until: r.valid_until,
        rate_limit: r.rate_limit.map(|rl| pb::RateLimit {
            requests_per_second: rl.requests_per_second,
            burst: rl.burst,
        }),
    }
}

impl From<&TrustBundle> for pb::TrustBundle {
    fn from(b: &TrustBundle) -> Self {
        Self {
            trust_domain: b.trust_domain().to_string(),
            roots: b.roots().iter().map(|r| r.as_ref().to_vec()).collect(),
            sequence: b.sequence(),
        }
    }
}

// === wire -> domain (fail closed) ===

impl TryFrom<pb::WorkloadPolicy> for ProxyPolicy {
    type Error = WireError;

    fn try_from(p: pb::WorkloadPolicy) -> Result<Self, WireError> {
        let default_policy = match pb::DefaultPolicy::try_from(p.default_policy) {
            Ok(pb::DefaultPolicy::Deny) => DefaultPolicy::Deny,
            Ok(pb::DefaultPolicy::Audit) => DefaultPolicy::Audit,
            Ok(pb::DefaultPolicy::AllowAuthenticated) => DefaultPolicy::AllowAuthenticated,
            _ => return Err(bad("default_policy", "unspecified or unknown")),
        };
        let inbound = p
            .inbound
            .into_iter()
            .enumerate()
            .map(|(i, r)| rule_from_wire(r, i))
            .collect::<Result<_, _>>()?;
        let revoked = p.revoked.unwrap_or_default();
        let outbound = p.outbound.unwrap_or_default();
        let destinations = outbound
            .destinations
            .into_iter()
            .enumerate()
            .map(|(i, d)| destination_from_wire(d, &format!("outbound.destinations[{i}]")))
            .collect::<Result<_, WireError>>()?;
        Ok(Self {
            generation: p.generation,
            workload: (!p.workload_id.is_empty()).then_some(p.workload_id),
            default_policy,
            quarantined: p.quarantined,
            inbound,
            revoked: Revocations {
                ids: revoked.ids,
                serials: revoked.serials,
            },
            outbound: Outbound {
                passthrough: outbound.passthrough,
                destinations,
            },
        })
    }
}

fn rule_from_wire(r: pb::Rule, i: usize) -> Result<Rule, WireError> {
    let at = |f: &str| format!("inbound[{i}].{f}");
    let action = match pb::Action::try_from(r.action) {
        Ok(pb::Action::Allow) => Action::Allow,
        Ok(pb::Action::Deny) => Action::Deny,
        _ => return Err(bad(at("action"), "unspecified or unknown")),
    };
    let mode = match pb::Mode::try_from(r.mode) {
        Ok(pb::Mode::Enforce) => Mode::Enforce,
        Ok(pb::Mode::Audit) => Mode::Audit,
        _ => return Err(bad(at("mode"), "unspecified or unknown")),
    };
    let ports = r
        .ports
        .iter()
        .map(|p| u16::try_from(*p).map_err(|_| bad(at("ports"), format!("{p} is not a port"))))
        .collect::<Result<_, _>>()?;
    let from = r
        .from
        .into_iter()
        .map(|s| match s.kind {
            Some(pb::source::Kind::Id(id)) => Ok(Source::Id(id)),
            Some(pb::source::Kind::Authenticated(true)) => Ok(Source::Authenticated),
            Some(pb::source::Kind::Unauthenticated(true)) => Ok(Source::Unauthenticated),
            Some(pb::source::Kind::Cidr(c)) => c
                .parse()
                .map(Source::Cidr)
                .map_err(|e| bad(at("from"), format!("cidr {c:?}: {e}"))),
            _ => Err(bad(at("from"), "source without a kind")),
        })
        .collect::<Result<_, _>>()?;
    let http = match r.http {
        None => None,
        Some(h) => Some(HttpMatch {
            methods: h.methods,
            paths: h
                .paths
                .into_iter()
                .map(|p| match p.kind {
                    Some(pb::path_match::Kind::Exact(s)) => Ok(PathMatch::Exact(s)),
                    Some(pb::path_match::Kind::Prefix(s)) => Ok(PathMatch::Prefix(s)),
                    Some(pb::path_match::Kind::Glob(s)) => Ok(PathMatch::Glob(s)),
                    None => Err(bad(at("http.paths"), "path match without a kind")),
                })
                .collect::<Result<_, _>>()?,
            headers: h
                .headers
                .into_iter()
                .map(|m| {
                    let (exact, regex, present) = match m.kind {
                        Some(pb::header_match::Kind::Exact(v)) => (Some(v), None, None),
                        Some(pb::header_match::Kind::Regex(v)) => (None, Some(v), None),
                        Some(pb::header_match::Kind::Present(v)) => (None, None, Some(v)),
                        None => return Err(bad(at("http.headers"), "header match without a kind")),
                    };
                    Ok(HeaderMatch {
                        name: m.name,
                        exact,
                        regex,
                        present,
                    })
                })
                .collect::<Result<_, _>>()?,
            grpc: h
                .grpc
                .into_iter()
                .map(|g| GrpcMatch {
                    service: g.service,
                    method: g.method,
                })
                .collect(),
        }),
    };
    Ok(Rule {
        policy: r.policy,
        rule: r.rule,
        action,
        mode,
        ports,
        from,
        http,
        valid_from: r.valid_from,
        valid_until: r.valid_until,
        rate_limit: r.rate_limit.map(|rl| RateLimit {
            requests_per_second: rl.requests_per_second,
            burst: rl.burst,
        }),
    })
}

/// A wire bundle as a validated trust bundle.
pub fn bundle_from_wire(b: pb::TrustBundle) -> Result<TrustBundle, WireError> {
    let td =
        TrustDomain::new(&b.trust_domain).map_err(|e| bad("bundle.trust_domain", e.to_string()))?;
    let roots = b.roots.into_iter().map(Into::into).collect();
    TrustBundle::new(td, roots, b.sequence).map_err(|e| bad("bundle", e.to_string()))
}

/// A destination (in a snapshot's table, or a `Resolve` answer); `at` names it in errors.
/// Identities are checked when the policy compiles it.
pub fn destination_from_wire(d: pb::Destination, at: &str) -> Result<Destination, WireError> {
    Ok(Destination {
        address: parse_addr(&d.address, at)?,
        proxy: if d.proxy.is_empty() {
            None
        } else {
            Some(parse_addr(&d.proxy, at)?)
        },
        identities: d.identities,
        endpoints: d
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| parse_addr(e, &format!("{at}.endpoints[{i}]")))
            .collect::<Result<_, _>>()?,
    })
}

fn parse_addr(s: &str, at: &str) -> Result<SocketAddr, WireError> {
    s.parse()
        .map_err(|e| bad(at, format!("address {s:?}: {e}")))
}

#[cfg(test)]
mod tests;
