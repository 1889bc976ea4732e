//! Validating a [`ProxyPolicy`] and building its indexed form, [`Policy`].
//!
//! Compilation either succeeds completely or fails with the first problem found; callers
//! turn a failure into [`Policy::deny_all`] (fail closed), never into a partial policy.

use std::{collections::BTreeSet, net::SocketAddr};

use rustc_hash::{FxHashMap, FxHashSet};
use vigil_cert_authority::SpiffeId;

use crate::{
    error::PolicyError,
    http_match::CompiledHttp,
    index::{Index, IndexedSource},
    model::{Action, DefaultPolicy, Mode, ProxyPolicy, RateLimit, Source},
    pattern::SpiffePattern,
};

/// A compiled, indexed policy for one workload. Cheap to share (`Arc`) and immutable.
#[derive(Debug)]
pub struct Policy {
    pub(crate) generation: u64,
    pub(crate) workload: Option<SpiffeId>,
    pub(crate) default: DefaultPolicy,
    pub(crate) quarantined: bool,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) index: Index,
    revoked_ids: FxHashSet<Box<str>>,
    revoked_serials: FxHashSet<Vec<u8>>,
    destinations: FxHashMap<SocketAddr, Destination>,
    /// Each backend of a virtual address -> that virtual address.
    endpoint_of: FxHashMap<SocketAddr, SocketAddr>,
    passthrough: bool,
    /// Set when this is a deny-all standing in for an invalid policy.
    pub(crate) invalid: Option<String>,
    /// The source document (for `/config` and explain output).
    model: ProxyPolicy,
}

/// A mesh destination, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Where to connect (the destination's inbound proxy).
    pub proxy: SocketAddr,
    /// Identities the server may present.
    pub identities: BTreeSet<SpiffeId>,
    /// The backends of a virtual address, to balance over (see
    /// [`crate::model::Destination::endpoints`]); empty: connect to `proxy`.
    pub endpoints: std::sync::Arc<[SocketAddr]>,
}

impl Destination {
    /// Validates a destination document (`at` names it in errors): at least one identity,
    /// each an exact SPIFFE ID. Used for the pushed table and for destinations the proxy
    /// discovers on demand.
    pub fn compile(d: &crate::model::Destination, at: &str) -> Result<Self, PolicyError> {
        if d.identities.is_empty() {
            return Err(PolicyError::Invalid {
                at: at.to_string(),
                what: "a mesh destination needs at least one identity".into(),
            });
        }
        let identities = d
            .identities
            .iter()
            .map(|id| exact_id(id, at))
            .collect::<Result<BTreeSet<_>, _>>()?;
        Ok(Self {
            proxy: d.proxy.unwrap_or(d.address),
            identities,
            endpoints: d.endpoints.clone().into(),
        })
    }
}

/// One rule, compiled.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) policy: Box<str>,
    pub(crate) rule: u32,
    pub(crate) action: Action,
    pub(crate) mode: Mode,
    pub(crate) http: Option<CompiledHttp>,
    pub(crate) valid_from: Option<u64>,
    pub(crate) valid_until: Option<u64>,
    pub(crate) rate_limit: Option<RateLimit>,
}

impl Policy {
    /// Validates and indexes a policy document.
    pub fn compile(model: ProxyPolicy) -> Result<Self, PolicyError> {
        let workload = model
            .workload
            .as_deref()
            .map(|w| exact_id(w, "workload"))
            .transpose()?;
        let mut rules = Vec::with_capacity(model.inbound.len());
        let mut index = Index::default();
        for (i, r) in model.inbound.iter().enumerate() {
            let at = format!("inbound[{i}] ({} rule {})", r.policy, r.rule);
            let invalid = |what: &str| PolicyError::Invalid {
                at: at.clone(),
                what: what.to_owned(),
            };
            if r.from.is_empty() {
                return Err(invalid(
                    "`from` is empty; a rule must name at least one source",
                ));
            }
            if r.ports.contains(&0) {
                return Err(invalid("port 0 is not a port"));
            }
            if let (Some(from), Some(until)) = (r.valid_from, r.valid_until)
                && until <= from
            {
                return Err(invalid("validUntil must be after validFrom"));
            }
            let rate_limit = match r.rate_limit {
                Some(rl) if rl.requests_per_second == 0 => {
                    return Err(invalid("rateLimit.requestsPerSecond must be positive"));
                }
                Some(_) if r.action == Action::Deny => {
                    return Err(invalid("rateLimit only applies to allow rules"));
                }
                Some(rl) => Some(RateLimit {
                    requests_per_second: rl.requests_per_second,
                    burst: if rl.burst == 0 {
                        rl.requests_per_second
                    } else {
                        rl.burst
                    },
                }),
                None => None,
            };
            let http = r
                .http
                .as_ref()
                .map(|h| CompiledHttp::compile(h, &at, r.action == Action::Deny))
                .transpose()?;
            let idx = u32::try_from(i).map_err(|_| invalid("too many rules"))?;
            for source in &r.from {
                let indexed = match source {
                    Source::Id(p) => {
                        IndexedSource::Pattern(SpiffePattern::parse(p).map_err(|source| {
                            PolicyError::Pattern {
                                at: at.clone(),
                                source,
                            }
                        })?)
                    }
                    Source::Authenticated => IndexedSource::Authenticated,
                    Source::Unauthenticated => IndexedSource::Unauthenticated,
                    Source::Cidr(net) => IndexedSource::Cidr(net.trunc()),
                };
                index.insert(idx, &r.ports, &indexed);
            }
            rules.push(CompiledRule {
                policy: r.policy.as_str().into(),
                rule: r.rule,
                action: r.action,
                mode: r.mode,
                http,
                valid_from: r.valid_from,
                valid_until: r.valid_until,
                rate_limit,
            });
        }

        let mut revoked_ids = FxHashSet::default();
        for (i, id) in model.revoked.ids.iter().enumerate() {
            revoked_ids.insert(exact_id(id, &format!("revoked.ids[{i}]"))?.as_str().into());
        }
        let mut revoked_serials = FxHashSet::default();
        for (i, s) in model.revoked.serials.iter().enumerate() {
            revoked_serials.insert(parse_hex(s).ok_or_else(|| PolicyError::Invalid {
                at: format!("revoked.serials[{i}]"),
                what: format!("{s:?} is not a lowercase hex serial number"),
            })?);
        }

        let mut destinations = FxHashMap::default();
        let mut endpoint_of = FxHashMap::default();
        for (i, d) in model.outbound.destinations.iter().enumerate() {
            let at = format!("outbound.destinations[{i}]");
            let dest = Destination::compile(d, &at)?;
            for e in dest.endpoints.iter() {
                // A backend behind two virtual addresses (a pod in two Services) serves
                // the identities of either: keep the first.
                endpoint_of.entry(*e).or_insert(d.address);
            }
            if destinations.insert(d.address, dest).is_some() {
                return Err(PolicyError::Invalid {
                    at,
                    what: format!("{} is listed twice", d.address),
                });
            }
        }

        Ok(Self {
            generation: model.generation,
            workload,
            default: model.default_policy,
            quarantined: model.quarantined,
            rules,
            index,
            revoked_ids,
            revoked_serials,
            passthrough: model.outbound.passthrough,
            destinations,
            endpoint_of,
            invalid: None,
            model,
        })
    }

    /// A policy that denies everything, standing in for one that could not be compiled.
    /// `reason` is reported by explain and logs.
    pub fn deny_all(generation: u64, reason: impl Into<String>) -> Self {
        Self {
            generation,
            workload: None,
            default: DefaultPolicy::Deny,
            quarantined: false,
            rules: Vec::new(),
            index: Index::default(),
            revoked_ids: FxHashSet::default(),
            revoked_serials: FxHashSet::default(),
            destinations: FxHashMap::default(),
            endpoint_of: FxHashMap::default(),
            passthrough: false,
            invalid: Some(reason.into()),
            model: ProxyPolicy {
                generation,
                ..ProxyPolicy::default()
            },
        }
    }

    /// The policy generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The workload this policy is for, if it says.
    pub fn workload(&self) -> Option<&SpiffeId> {
        self.workload.as_ref()
    }

    /// True if the workload itself is quarantined (all its traffic is denied).
    pub fn is_quarantined(&self) -> bool {
        self.quarantined
    }

    /// Why this policy is a deny-all stand-in, if it is one.
    pub fn invalid_reason(&self) -> Option<&str> {
        self.invalid.as_deref()
    }

    /// Is this peer revoked (by identity or certificate serial)?
    pub fn is_revoked(&self, id: &SpiffeId, serial: &[u8]) -> bool {
        self.revoked_ids.contains(id.as_str()) || self.revoked_serials.contains(serial)
    }

    /// The mesh destination at `addr`, if it is one.
    pub fn destination(&self, addr: &SocketAddr) -> Option<&Destination> {
        self.destinations.get(addr)
    }

    /// The destination (virtual address) that lists `addr` among its endpoints.
    pub fn endpoint_owner(&self, addr: &SocketAddr) -> Option<&Destination> {
        self.destinations.get(self.endpoint_of.get(addr)?)
    }

    /// May traffic to non-mesh destinations pass through in plaintext?
    pub fn passthrough(&self) -> bool {
        self.passthrough && !self.quarantined
    }

    /// The source document.
    pub fn model(&self) -> &ProxyPolicy {
        &self.model
    }

    /// The next time (unix seconds, after `now`) at which a rule's validity window opens
    /// or closes: when decisions may change without any other event.
    pub fn next_change_after(&self, now: u64) -> Option<u64> {
        self.rules
            .iter()
            .flat_map(|r| [r.valid_from, r.valid_until])
            .flatten()
            .filter(|t| *t > now)
            .min()
    }
}

fn exact_id(s: &str, at: &str) -> Result<SpiffeId, PolicyError> {
    SpiffeId::parse(s).map_err(|e| PolicyError::Invalid {
        at: at.to_owned(),
        what: format!("{s:?} is not a SPIFFE ID: {e}"),
    })
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty()
        || !s.len().is_multiple_of(2)
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}
