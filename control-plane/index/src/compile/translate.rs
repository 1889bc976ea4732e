//! One `AccessPolicy` in the proxy's model: its sources resolved to SPIFFE IDs, patterns,
//! CIDRs or (un)authenticated, its rules to [`Rule`]s with their HTTP/gRPC matches, times
//! and rate limit — validated by the proxy's own compiler, so the controller accepts
//! exactly what a proxy can enforce.

use std::collections::BTreeSet;

use vigil_cert_authority::SpiffeId;
use vigil_crds::{AccessPolicy, PolicyAction, PolicyMode};
use vigil_policy::{
    Policy, SpiffePattern,
    model::{
        Action, GrpcMatch, HeaderMatch, HttpMatch, Mode, PathMatch, ProxyPolicy, RateLimit, Rule,
        Source,
    },
};

use super::{Verdict, policies::Inputs};
use crate::resources::ObjectKey;

/// The compiled rules of one policy (validated by the proxy's own compiler).
pub(super) fn rules(
    key: &ObjectKey,
    p: &AccessPolicy,
    inputs: &Inputs<'_, '_>,
    verdict: &mut Verdict,
) -> Result<Vec<Rule>, String> {
    let spec = &p.spec;
    let td = inputs.td;
    if let Err(errs) = vigil_crds::validate(p) {
        return Err(errs.join("; "));
    }
    let mut from: Vec<Source> = Vec::new();
    for (i, s) in spec.from.iter().enumerate() {
        let at = |what: &str| format!("from[{i}]: {what}");
        if let Some(id) = &s.spiffe_id {
            SpiffePattern::parse(id).map_err(|e| at(&e.to_string()))?;
            from.push(Source::Id(id.clone()));
        } else if let Some(seg) = &s.segment {
            let seg_key = ObjectKey::parse_relative(seg, &key.namespace);
            match inputs.segments.get(&seg_key) {
                Some(members) => {
                    let ids: BTreeSet<String> = members
                        .iter()
                        .filter_map(|m| inputs.infos.get(m).map(|i| i.identity.to_string()))
                        .collect();
                    from.extend(ids.into_iter().map(Source::Id));
                }
                None => verdict
                    .warnings
                    .push(at(&format!("segment {seg_key} does not exist (yet)"))),
            }
        } else if let Some(ns) = &s.namespace {
            let pattern = format!("spiffe://{td}/ns/{ns}/sa/*");
            SpiffePattern::parse(&pattern).map_err(|e| at(&e.to_string()))?;
            from.push(Source::Id(pattern));
        } else if let Some(sa) = &s.service_account {
            let sa_key = ObjectKey::parse_relative(sa, &key.namespace);
            let id = SpiffeId::workload(td, &sa_key.namespace, &sa_key.name)
                .map_err(|e| at(&e.to_string()))?;
            from.push(Source::Id(id.to_string()));
        } else if s.authenticated == Some(true) {
            from.push(Source::Authenticated);
        } else if s.unauthenticated == Some(true) {
            from.push(Source::Unauthenticated);
        } else if let Some(cidr) = &s.cidr {
            from.push(Source::Cidr(
                cidr.parse()
                    .map_err(|e| at(&format!("cidr {cidr:?}: {e}")))?,
            ));
        }
    }
    let mut dedup = BTreeSet::new();
    from.retain(|s| dedup.insert(format!("{s:?}")));

    let valid_from = spec.valid_from.as_deref().map(parse_time).transpose()?;
    let valid_until = spec.valid_until.as_deref().map(parse_time).transpose()?;
    let rate_limit = spec.rate_limit.as_ref().map(|rl| RateLimit {
        requests_per_second: rl.requests_per_second,
        burst: rl.burst.unwrap_or(rl.requests_per_second),
    });
    let action = match spec.action {
        PolicyAction::Allow => Action::Allow,
        PolicyAction::Deny => Action::Deny,
    };
    let mode = match spec.mode {
        PolicyMode::Enforce => Mode::Enforce,
        PolicyMode::Audit => Mode::Audit,
    };
    let base = Rule {
        policy: key.to_string(),
        rule: 0,
        action,
        mode,
        ports: spec.target.ports.clone(),
        from: from.clone(),
        http: None,
        valid_from,
        valid_until,
        rate_limit,
    };
    let rules: Vec<Rule> = if spec.rules.is_empty() {
        vec![base]
    } else {
        spec.rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let http = HttpMatch {
                    methods: r.methods.clone(),
                    paths: r
                        .paths
                        .iter()
                        .filter_map(|p| match (&p.exact, &p.prefix, &p.glob) {
                            (Some(v), _, _) => Some(PathMatch::Exact(v.clone())),
                            (_, Some(v), _) => Some(PathMatch::Prefix(v.clone())),
                            (_, _, Some(v)) => Some(PathMatch::Glob(v.clone())),
                            _ => None,
                        })
                        .collect(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| HeaderMatch {
                            name: h.name.clone(),
                            exact: h.exact.clone(),
                            regex: h.regex.clone(),
                            present: h.present,
                        })
                        .collect(),
                    grpc: r
                        .grpc
                        .iter()
                        .map(|g| GrpcMatch {
                            service: g.service.clone(),
                            method: g.method.clone(),
                        })
                        .collect(),
                };
                let is_l7 = !(http.methods.is_empty()
                    && http.paths.is_empty()
                    && http.headers.is_empty()
                    && http.grpc.is_empty());
                Rule {
                    rule: u32::try_from(i).unwrap_or(u32::MAX),
                    ports: if r.ports.is_empty() {
                        spec.target.ports.clone()
                    } else {
                        r.ports.clone()
                    },
                    http: is_l7.then_some(http),
                    ..base.clone()
                }
            })
            .collect()
    };
    if from.is_empty() {
        verdict
            .warnings
            .push("no source resolved to any workload yet; the policy matches no one".into());
        return Ok(Vec::new());
    }
    // The proxy's own compiler is the judge of validity (regexes, globs, methods...).
    Policy::compile(ProxyPolicy {
        inbound: rules.clone(),
        ..ProxyPolicy::default()
    })
    .map_err(|e| e.to_string())?;
    Ok(rules)
}

fn parse_time(s: &str) -> Result<u64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("time {s:?} is not RFC 3339: {e}"))?;
    u64::try_from(t.unix_timestamp()).map_err(|_| format!("time {s:?} is before 1970"))
}
