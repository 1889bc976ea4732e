//! The decision function: the one place that says allow or deny.
//!
//! ```text
//! quarantined workload ............................ deny (Quarantined)
//! revoked peer .................................... deny (Revoked)
//! any matching enforce-mode DENY rule ............. deny (that rule)      <- deny wins
//! any matching enforce-mode ALLOW rule ............ allow (that rule, its rate limit)
//! otherwise ....................................... the default policy
//! ```
//!
//! Audit-mode rules never change the outcome: the same evaluation is repeated with them
//! treated as enforced, and if that "shadow" verdict differs the decision carries an
//! [`AuditFinding`] ("would deny" / "would allow") for logs and metrics. A default policy of
//! `audit` allows but reports "would deny".
//!
//! For opaque (L4) traffic there is no request to inspect: allow rules with HTTP conditions
//! do not match, while deny rules with HTTP conditions *do* (conservatively), so an L7
//! deny can never be bypassed by speaking a protocol the proxy does not parse.

use std::net::IpAddr;

use vigil_cert_authority::SpiffeId;

use crate::{
    compile::Policy,
    http_match::HttpRequest,
    index::Who,
    model::{Action, DefaultPolicy, Mode, RateLimit},
};

/// Who sent a request.
#[derive(Clone, Copy, Debug)]
pub enum Peer<'a> {
    /// A peer that presented a valid SVID.
    Authenticated(&'a SpiffeId),
    /// A plaintext peer.
    Unauthenticated,
}

/// What is being authorized: a request (with `http`) or a connection (without).
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The source.
    pub peer: Peer<'a>,
    /// The source address, if known.
    pub source_ip: Option<IpAddr>,
    /// The destination port on this workload.
    pub port: u16,
    /// L7 attributes; `None` for opaque TCP.
    pub http: Option<HttpRequest<'a>>,
}

/// The outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Let it through?
    pub allowed: bool,
    /// What decided.
    pub reason: Reason,
    /// Set when audit-mode rules (or an `audit` default) would have decided differently.
    pub audit: Option<AuditFinding>,
    /// The rate limit of the allow rule that decided, if any, keyed by that rule.
    pub rate_limit: Option<(u32, RateLimit)>,
}

/// What decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A rule, by index into the policy's `inbound` list.
    Rule(u32),
    /// No rule matched; the default policy applied.
    Default(DefaultPolicy),
    /// The workload is quarantined.
    Quarantined,
    /// The peer is revoked.
    Revoked,
    /// The policy could not be compiled; everything is denied.
    InvalidPolicy,
}

/// What an audit evaluation found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AuditFinding {
    /// The verdict had audit rules been enforced.
    pub would_allow: bool,
    /// What would have decided.
    pub reason: Reason,
}

/// Best (lowest-index) matching rule per category.
#[derive(Default)]
struct Matches {
    enforce_deny: Option<u32>,
    enforce_allow: Option<u32>,
    audit_deny: Option<u32>,
    audit_allow: Option<u32>,
}

impl Policy {
    /// Decides a request or connection at time `now` (unix seconds).
    pub fn evaluate(&self, req: &Request<'_>, now: u64) -> Decision {
        let fixed = |reason| Decision {
            allowed: false,
            reason,
            audit: None,
            rate_limit: None,
        };
        if self.invalid.is_some() {
            return fixed(Reason::InvalidPolicy);
        }
        if self.quarantined {
            return fixed(Reason::Quarantined);
        }
        let id = match req.peer {
            Peer::Authenticated(id) => {
                if self.is_revoked(id, &[]) {
                    return fixed(Reason::Revoked);
                }
                Some(id)
            }
            Peer::Unauthenticated => None,
        };

        let mut m = Matches::default();
        let who = Who {
            id,
            ip: req.source_ip,
        };
        self.index.for_each_candidate(req.port, who, |i| {
            let Some(rule) = self.rules.get(i as usize) else {
                return;
            };
            if rule.valid_from.is_some_and(|t| now < t)
                || rule.valid_until.is_some_and(|t| now >= t)
            {
                return;
            }
            let applies = match (&rule.http, &req.http) {
                (None, _) => true,
                (Some(h), Some(r)) => h.matches(r),
                // L4 traffic: an L7 deny applies conservatively, an L7 allow does not.
                (Some(_), None) => rule.action == Action::Deny,
            };
            if !applies {
                return;
            }
            let slot = match (rule.mode, rule.action) {
                (Mode::Enforce, Action::Deny) => &mut m.enforce_deny,
                (Mode::Enforce, Action::Allow) => &mut m.enforce_allow,
                (Mode::Audit, Action::Deny) => &mut m.audit_deny,
                (Mode::Audit, Action::Allow) => &mut m.audit_allow,
            };
            *slot = Some(slot.map_or(i, |best| best.min(i)));
        });

        let authenticated = id.is_some();
        let (allowed, reason) = self.verdict(m.enforce_deny, m.enforce_allow, authenticated);
        let (shadow_allowed, shadow_reason) = self.verdict(
            min_opt(m.enforce_deny, m.audit_deny),
            min_opt(m.enforce_allow, m.audit_allow),
            authenticated,
        );
        let audit = match reason {
            // An `audit` default allows what a `deny` default would refuse.
            Reason::Default(DefaultPolicy::Audit) if shadow_reason == reason => {
                Some(AuditFinding {
                    would_allow: false,
                    reason: Reason::Default(DefaultPolicy::Deny),
                })
            }
            _ if shadow_allowed != allowed => Some(AuditFinding {
                would_allow: shadow_allowed,
                reason: shadow_reason,
            }),
            _ => None,
        };
        let rate_limit = match reason {
            Reason::Rule(i) if allowed => self.rules[i as usize].rate_limit.map(|rl| (i, rl)),
            _ => None,
        };
        Decision {
            allowed,
            reason,
            audit,
            rate_limit,
        }
    }

    fn verdict(
        &self,
        deny: Option<u32>,
        allow: Option<u32>,
        authenticated: bool,
    ) -> (bool, Reason) {
        if let Some(i) = deny {
            return (false, Reason::Rule(i));
        }
        if let Some(i) = allow {
            return (true, Reason::Rule(i));
        }
        let allowed = match self.default {
            DefaultPolicy::Deny => false,
            DefaultPolicy::Audit => true,
            DefaultPolicy::AllowAuthenticated => authenticated,
        };
        (allowed, Reason::Default(self.default))
    }

    /// `(policy, rule index within it, action, mode)` of a rule.
    pub fn rule_info(&self, rule: u32) -> Option<(&str, u32, Action, Mode)> {
        self.rules
            .get(rule as usize)
            .map(|r| (&*r.policy, r.rule, r.action, r.mode))
    }

    /// A short, human-readable description of a reason (for logs and `vigil explain`).
    pub fn describe(&self, reason: Reason) -> String {
        match reason {
            Reason::Rule(i) => match self.rule_info(i) {
                Some((policy, rule, action, mode)) => {
                    let action = match action {
                        Action::Allow => "allowed",
                        Action::Deny => "denied",
                    };
                    let mode = if mode == Mode::Audit {
                        " (audit mode)"
                    } else {
                        ""
                    };
                    format!("{action} by policy {policy} rule {rule}{mode}")
                }
                None => format!("rule #{i}"),
            },
            Reason::Default(DefaultPolicy::Deny) => "default deny (no policy allows it)".into(),
            Reason::Default(DefaultPolicy::Audit) => {
                "default audit (allowed, would be denied)".into()
            }
            Reason::Default(DefaultPolicy::AllowAuthenticated) => {
                "default allow-authenticated".into()
            }
            Reason::Quarantined => "workload is quarantined".into(),
            Reason::Revoked => "peer identity is revoked".into(),
            Reason::InvalidPolicy => match self.invalid_reason() {
                Some(why) => format!("policy is invalid, denying everything: {why}"),
                None => "policy is invalid, denying everything".into(),
            },
        }
    }
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
