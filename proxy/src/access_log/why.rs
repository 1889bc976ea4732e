//! Why a request or connection ended as it did, as a value: what decided ([`What`]) and
//! what happened after ([`Note`]s). The access log renders it as its `reason` text (the
//! words `vigil explain` uses for the same decision); a structured sink (OTLP, an audit
//! log) takes the value itself.
//!
//! Rendering happens on the log's writer thread, not on the request path: a judgement
//! keeps the policy it was made under (an `Arc`), and only the writer turns it into words.

use std::{fmt, sync::Arc};

use vigil_policy::{AuditFinding, Policy, Reason};

use crate::metrics::labels::{Closed, Rejected};

/// The reason of one access-log line.
#[derive(Clone, Debug, Default)]
pub struct Why {
    /// What decided.
    pub what: What,
    /// What happened after the decision, in order.
    pub notes: Vec<Note>,
}

/// What decided a request or connection.
#[derive(Clone, Debug, Default)]
pub enum What {
    /// Nothing yet (a request cancelled before any decision).
    #[default]
    Unset,
    /// This proxy's authorization, under the policy then in force.
    Judged(Judgement),
    /// A declared probe route: plaintext `GET`/`HEAD` allowed without identity.
    ProbeRoute,
    /// Refused before authorization (logged as the metric's reason label).
    Rejected(Rejected),
    /// Outbound: this workload is quarantined, nothing leaves it.
    Quarantined,
    /// Outbound: sent on over mTLS; `answer` is the destination's, once it came.
    Forwarded(Option<Answer>),
    /// Outbound: the destination could not be reached or verified, or the exchange
    /// failed.
    UpstreamFailed(String),
    /// Outbound: a request this proxy refused to send as it was (e.g. a malformed
    /// `Upgrade`).
    Refused(String),
    /// Outbound: plaintext to a destination outside the mesh.
    Passthrough,
    /// Outbound: not a mesh destination, and passthrough is off.
    PassthroughOff,
    /// Outbound: the passthrough destination could not be reached.
    PassthroughFailed,
    /// Outbound: nobody could say whether the destination is in the mesh.
    DestinationUnknown(String),
}

/// A policy decision: what decided, under which policy.
#[derive(Clone, Debug)]
pub struct Judgement {
    /// The policy in force when it was decided.
    pub policy: Arc<Policy>,
    /// What decided.
    pub reason: Reason,
}

/// What the destination answered an outbound request.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The destination proxy's request id: present when its proxy, not its app,
    /// produced the answer (a deny there is logged under it).
    pub request_id: Option<String>,
}

/// An audit-mode finding: what audit rules would have decided.
#[derive(Clone, Debug)]
pub struct Audit {
    /// The policy in force.
    pub policy: Arc<Policy>,
    /// The finding.
    pub finding: AuditFinding,
}

/// Something that happened after the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// The deciding rule's rate limit refused it.
    RateLimited,
    /// Allowed, but the local app could not be reached.
    AppUnavailable,
    /// The proxy closed it later.
    Closed(Closed),
    /// The client went away before the response.
    Cancelled,
}

// === impl Why ===

impl Why {
    /// A reason without notes.
    pub fn new(what: What) -> Self {
        Self {
            what,
            notes: Vec::new(),
        }
    }

    /// Adds a note.
    pub fn note(&mut self, note: Note) {
        self.notes.push(note);
    }
}

impl From<What> for Why {
    fn from(what: What) -> Self {
        Self::new(what)
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.what)?;
        let mut empty = matches!(self.what, What::Unset);
        for note in &self.notes {
            let sep = if empty { "" } else { "; " };
            match note {
                Note::RateLimited => f.write_str(" (rate limited)")?,
                Note::AppUnavailable => write!(f, "{sep}app unavailable")?,
                Note::Closed(c) => write!(f, "{sep}closed: {}", c.as_str())?,
                Note::Cancelled => {
                    write!(
                        f,
                        "{sep}cancelled: the client went away before the response"
                    )?;
                }
            }
            empty = false;
        }
        Ok(())
    }
}

// === impl What ===

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unset => Ok(()),
            Self::Judged(j) => f.write_str(&j.policy.describe(j.reason)),
            Self::ProbeRoute => f.write_str("probe route"),
            Self::Rejected(r) => f.write_str(r.as_str()),
            Self::Quarantined => f.write_str("workload is quarantined"),
            Self::Forwarded(None) => f.write_str("forwarded over mTLS"),
            Self::Forwarded(Some(a)) => {
                write!(
                    f,
                    "forwarded over mTLS; the destination answered {}",
                    a.status
                )?;
                match &a.request_id {
                    Some(id) => write!(f, " (its request id {id})"),
                    None => Ok(()),
                }
            }
            Self::UpstreamFailed(e) => write!(f, "upstream failed: {e}"),
            Self::Refused(e) => f.write_str(e),
            Self::Passthrough => f.write_str("passthrough (not a mesh destination)"),
            Self::PassthroughOff => f.write_str("not a mesh destination and passthrough is off"),
            Self::PassthroughFailed => f.write_str("passthrough connect failed"),
            Self::DestinationUnknown(why) => {
                write!(f, "destination unknown (controller unreachable: {why})")
            }
        }
    }
}

// === impl Audit ===

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let would = if self.finding.would_allow {
            "would allow"
        } else {
            "would deny"
        };
        write!(f, "{would}: {}", self.policy.describe(self.finding.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_follow_what_decided() {
        let mut why = Why::new(What::Rejected(Rejected::AmbiguousPath));
        assert_eq!(why.to_string(), "ambiguous_path");
        why.note(Note::Closed(Closed::Revoked));
        why.note(Note::Cancelled);
        assert_eq!(
            why.to_string(),
            "ambiguous_path; closed: revoked; cancelled: the client went away before the response"
        );
        let mut unset = Why::default();
        unset.note(Note::Cancelled);
        assert_eq!(
            unset.to_string(),
            "cancelled: the client went away before the response"
        );
    }

    #[test]
    fn judgements_are_described_by_their_policy() {
        let policy = Arc::new(Policy::deny_all(1, "test"));
        let mut why = Why::new(What::Judged(Judgement {
            policy: policy.clone(),
            reason: Reason::Quarantined,
        }));
        why.note(Note::RateLimited);
        assert_eq!(why.to_string(), "workload is quarantined (rate limited)");
        let audit = Audit {
            policy,
            finding: AuditFinding {
                would_allow: false,
                reason: Reason::Revoked,
            },
        };
        assert_eq!(audit.to_string(), "would deny: peer identity is revoked");
        let answered = What::Forwarded(Some(Answer {
            status: 403,
            request_id: Some("r-1".into()),
        }));
        assert_eq!(
            answered.to_string(),
            "forwarded over mTLS; the destination answered 403 (its request id r-1)"
        );
    }
}
