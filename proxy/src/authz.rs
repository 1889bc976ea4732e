//! The one authorization step. Everything that lets traffic through to this workload asks
//! it: inbound HTTP requests, inbound opaque connections, and the re-check of live
//! connections and tunnels when policy changes ([`crate::connections`]).
//!
//! ```text
//! inbound HTTP request ──┐                      ┌─► metrics + access-log fields (once, here)
//! inbound opaque conn ───┼─► judge ─► Verdict ──┤
//! re-check on change ────┘  (evaluate,          └─► the caller: forward, 403 / 429, close
//!                            rate limit)
//! ```
//!
//! A [`Verdict`] is a value: allowed or not, the reason as a type
//! ([`vigil_policy::Reason`]: rule, default, quarantine, revocation, invalid policy), the
//! deciding policy and rule, an audit finding, and the rate-limit outcome; what was judged
//! (a [`Subject`] and, for HTTP, the normalised request) is kept as a [`Judged`] when a
//! connection must be judged again later. Callers turn a verdict into a response or a
//! close; they never evaluate policy themselves.
//!
//! The outbound side authorizes no mesh traffic — the destination's inbound does — so it
//! does not call this; its own refusals (quarantine, strict egress) are rejections
//! ([`crate::metrics::labels::Rejected`]).

use std::{net::IpAddr, sync::Arc, time::Instant};

use http::{HeaderMap, Method};
use vigil_policy::{Decision, HttpRequest, Policy, Reason, Request, unix_now};

use crate::{
    access_log::{Audit, Entry, Judgement, Note, What},
    metrics::{
        Judged as Of,
        labels::{self, Closed, Direction, Rejected},
    },
    ratelimit::RateLimiter,
    shared::{Shared, Source},
};

/// Who asks, from where, for which port of this workload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subject<'a> {
    /// The peer: a verified SVID, or unauthenticated.
    pub(crate) source: &'a Source,
    /// Its address.
    pub(crate) src_ip: IpAddr,
    /// The workload port the traffic is for (policy `ports`).
    pub(crate) port: u16,
}

/// The outcome of one authorization.
#[derive(Clone, Debug)]
pub(crate) struct Verdict {
    /// The policy it was judged under.
    pub(crate) policy: Arc<Policy>,
    /// The evaluator's decision (reason, audit finding, the deciding rule's rate limit).
    pub(crate) decision: Decision,
    /// Whether that rate limit let it through.
    pub(crate) rate: Rate,
}

/// The rate-limit outcome of an allowed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rate {
    /// No limit applies (or nothing was allowed to limit).
    Unlimited,
    /// Within the deciding rule's limit.
    Within,
    /// Over it: refuse, and tell the client to retry after this many seconds.
    Exceeded {
        /// `Retry-After`, in seconds.
        retry_after: u64,
    },
}

/// What was judged, owned, so it can be judged again: a connection's subject and, for
/// an upgraded HTTP request, the request (method, normalised path, headers).
#[derive(Clone, Debug)]
pub(crate) struct Judged {
    pub(crate) source: Source,
    pub(crate) src_ip: IpAddr,
    pub(crate) port: u16,
    pub(crate) http: Option<JudgedHttp>,
}

/// The L7 part of a [`Judged`] request.
#[derive(Clone, Debug)]
pub(crate) struct JudgedHttp {
    pub(crate) method: Method,
    /// Normalised.
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
}

// === impl Subject ===

impl Subject<'_> {
    fn request<'h>(&'h self, http: Option<HttpRequest<'h>>) -> Request<'h> {
        Request {
            peer: self.source.peer(),
            source_ip: Some(self.src_ip),
            port: self.port,
            http,
        }
    }
}

/// Authorizes one HTTP request (`path` already normalised) under the policy in force,
/// applies the deciding rule's rate limit, and records the verdict (metrics; `entry`
/// when the access log is on).
pub(crate) fn request(
    shared: &Shared,
    subject: &Subject<'_>,
    http: HttpRequest<'_>,
    entry: &mut Entry,
) -> Verdict {
    let policy = shared.policy();
    let decision = policy.evaluate(&subject.request(Some(http)), unix_now());
    let rate = match decision.rate_limit {
        Some((rule, limit)) if decision.allowed => {
            let source = subject.source.id_string();
            let key = match policy.rule_info(rule) {
                Some((pol, idx, _, _)) => format!("{pol}#{idx}#{source}"),
                None => format!("#{rule}#{source}"),
            };
            if shared.limiter.allow(key, limit, Instant::now()) {
                Rate::Within
            } else {
                Rate::Exceeded {
                    retry_after: RateLimiter::retry_after(limit).as_secs(),
                }
            }
        }
        _ => Rate::Unlimited,
    };
    let verdict = Verdict {
        policy,
        decision,
        rate,
    };
    verdict.record(shared, Of::Request, entry);
    verdict
}

/// Authorizes an opaque connection under the policy in force and records the verdict.
pub(crate) fn connection(shared: &Shared, subject: &Subject<'_>, entry: &mut Entry) -> Verdict {
    let policy = shared.policy();
    let decision = policy.evaluate(&subject.request(None), unix_now());
    let verdict = Verdict {
        policy,
        decision,
        rate: Rate::Unlimited,
    };
    verdict.record(shared, Of::Connection, entry);
    verdict
}

// === impl Verdict ===

impl Verdict {
    /// Let it through? (Allowed by policy and within its rate limit.)
    pub(crate) fn allowed(&self) -> bool {
        self.decision.allowed && !matches!(self.rate, Rate::Exceeded { .. })
    }

    /// The `policy` label: the deciding policy's name, or a fixed word.
    pub(crate) fn policy_label(&self) -> &str {
        policy_label(&self.policy, self.decision.reason)
    }

    /// Counts the verdict and writes its fields into `entry` — the one place decisions
    /// become metrics and log fields.
    fn record(&self, shared: &Shared, of: Of, entry: &mut Entry) {
        let Decision {
            allowed,
            reason,
            audit,
            ..
        } = self.decision;
        let decision = labels::Decision::of(self.allowed());
        let direction = Direction::Inbound;
        shared.metrics.record_authz(
            direction,
            self.policy_label(),
            labels::Decision::of(allowed),
            of,
        );
        if let Some(f) = audit {
            shared
                .metrics
                .record_audit(policy_label(&self.policy, f.reason), f.would_allow);
        }
        if let Rate::Exceeded { .. } = self.rate {
            shared.metrics.reject(direction, Rejected::RateLimited);
        }
        entry.decision = decision;
        if !shared.log.enabled() {
            return;
        }
        entry.reason.what = What::Judged(Judgement {
            policy: self.policy.clone(),
            reason,
        });
        if let Rate::Exceeded { .. } = self.rate {
            entry.reason.note(Note::RateLimited);
        }
        if let Reason::Rule(i) = reason
            && let Some((p, r, _, _)) = self.policy.rule_info(i)
        {
            entry.policy = Some(p.to_string());
            entry.rule = Some(r);
        }
        entry.audit = audit.map(|finding| Audit {
            policy: self.policy.clone(),
            finding,
        });
    }
}

// === impl Judged ===

impl Judged {
    /// Why a connection allowed for this must close under `p`, if it must: this
    /// workload is quarantined, the peer's certificate is revoked (by identity or
    /// serial), or the same request or connection, judged again, is denied.
    pub(crate) fn closes(&self, p: &Policy) -> Option<Closed> {
        if let Some(reason) = peer_closes(p, &self.source) {
            return Some(reason);
        }
        let subject = Subject {
            source: &self.source,
            src_ip: self.src_ip,
            port: self.port,
        };
        let http = self.http.as_ref().map(|h| HttpRequest {
            method: h.method.as_str(),
            path: &h.path,
            headers: &h.headers,
        });
        let d = p.evaluate(&subject.request(http), unix_now());
        (!d.allowed).then(|| Closed::of(d.reason))
    }
}

/// Why a connection from `source` must close under `p` whatever it carries: this
/// workload is quarantined, or the peer's certificate is revoked.
pub(crate) fn peer_closes(p: &Policy, source: &Source) -> Option<Closed> {
    if p.is_quarantined() {
        return Some(Closed::Quarantine);
    }
    match source {
        Source::Mesh(info) if p.is_revoked(&info.id, &info.serial) => Some(Closed::Revoked),
        _ => None,
    }
}

/// The `policy` label of a reason: the deciding policy's name, or a fixed word.
fn policy_label(policy: &Policy, reason: Reason) -> &str {
    match reason {
        Reason::Rule(i) => policy.rule_info(i).map(|r| r.0).unwrap_or_default(),
        Reason::Default(_) => "default",
        Reason::Quarantined => "quarantine",
        Reason::Revoked => "revoked",
        Reason::InvalidPolicy => "invalid",
    }
}
