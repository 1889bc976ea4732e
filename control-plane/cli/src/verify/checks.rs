//! The checks of `vigil verify`, as pure functions of what was read: one [`Check`] each,
//! with the fix for a failure.

use vigil_controller::status::{StatusReport, WorkloadReport};
use vigil_proxy::metrics::labels::Direction;

use super::view::ProxyView;
use crate::{
    check::report::Check,
    controller_admin::{ProxySync, sync},
    local_policy::Verdict,
    status::fmt_time,
};

/// FROM or TO, and what was found of it.
#[derive(Debug)]
pub(crate) struct Side {
    /// `from` or `to` (check ids and titles).
    pub(crate) role: Role,
    /// `namespace/pod`.
    pub(crate) pod: String,
    /// The service account it runs as.
    pub(crate) service_account: String,
    /// The command that re-creates it (so the webhook injects it).
    pub(crate) restart: String,
    /// Its sidecar.
    pub(crate) sidecar: Sidecar,
}

/// FROM or TO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The caller.
    From,
    /// The callee.
    To,
}

/// A pod's sidecar, as far as it could be seen.
#[derive(Debug)]
pub(crate) enum Sidecar {
    /// No `vigil-proxy` container: outside the mesh.
    Missing,
    /// Injected, but its admin port could not be read.
    Unreadable(String),
    /// What its admin port says.
    Seen(Box<ProxyView>),
}

// === impl Side ===

impl Side {
    /// The proxy's view, if it was read.
    pub(crate) fn view(&self) -> Option<&ProxyView> {
        match &self.sidecar {
            Sidecar::Seen(v) => Some(v),
            _ => None,
        }
    }

    /// Its SPIFFE ID as its proxy's certificate says.
    pub(crate) fn id(&self) -> Option<&str> {
        self.view()?.identity.as_ref().map(|s| s.id.as_str())
    }

    fn name(&self) -> String {
        format!("{} {}", self.role.upper(), self.pod)
    }

    fn ns_and_pod(&self) -> (&str, &str) {
        self.pod.split_once('/').unwrap_or(("", &self.pod))
    }

    fn logs(&self) -> String {
        let (ns, pod) = self.ns_and_pod();
        format!("kubectl -n {ns} logs {pod} -c vigil-proxy")
    }

    fn enroll_fix(&self) -> String {
        let (ns, _) = self.ns_and_pod();
        format!(
            "enroll it: kubectl annotate namespace {ns} vigil.dev/inject=enabled (or annotate the pod template), then re-create the pod: {}",
            self.restart
        )
    }
}

// === impl Role ===

impl Role {
    fn upper(self) -> &'static str {
        match self {
            Self::From => "FROM",
            Self::To => "TO",
        }
    }

    fn id(self, check: &str) -> &'static str {
        match (self, check) {
            (Self::From, "enrolled") => "from-enrolled",
            (Self::To, "enrolled") => "to-enrolled",
            (Self::From, "svid") => "from-svid",
            (Self::To, "svid") => "to-svid",
            (Self::From, _) => "from-in-sync",
            (Self::To, _) => "to-in-sync",
        }
    }
}

/// The pod carries the injected proxy, and the proxy is ready.
pub(crate) fn enrolled(side: &Side) -> Check {
    let id = side.role.id("enrolled");
    let title = format!("{} is in the mesh", side.name());
    match &side.sidecar {
        Sidecar::Missing => Check::fail(
            id,
            title,
            "no vigil-proxy sidecar: the pod is outside the mesh (no identity, plaintext)",
            side.enroll_fix(),
        ),
        Sidecar::Unreadable(why) => Check::fail(
            id,
            title,
            format!("its vigil-proxy could not be read: {why}"),
            format!(
                "is the pod running? (kubectl get pod); see {}; vigil verify reads the proxy's admin port through the API server, which needs RBAC get pods/proxy",
                side.logs()
            ),
        ),
        Sidecar::Seen(v) if !v.ready => Check::fail(
            id,
            title,
            "its vigil-proxy is not ready (no certificate or no valid policy yet)",
            format!("see {}", side.logs()),
        ),
        Sidecar::Seen(_) => Check::ok(id, title).with_detail("vigil-proxy injected and ready"),
    }
}

/// The proxy's certificate: who, serial, expiry; for the identity of the pod's service
/// account. `now` in unix seconds.
pub(crate) fn svid(side: &Side, now: u64) -> Option<Check> {
    let v = side.view()?;
    let id = side.role.id("svid");
    let title = format!("{}'s SVID", side.role.upper());
    let Some(s) = &v.identity else {
        return Some(Check::fail(
            id,
            title,
            "its proxy has no certificate yet",
            format!(
                "see {} (it asks the controller for one at start)",
                side.logs()
            ),
        ));
    };
    let (ns, _) = side.ns_and_pod();
    let expected = format!("/ns/{ns}/sa/{}", side.service_account);
    let expires = fmt_time(i64::try_from(s.not_after).unwrap_or(i64::MAX));
    if s.not_after <= now {
        return Some(Check::fail(
            id,
            title,
            format!("{} expired at {expires}", s.id),
            format!("the proxy renews at half its lifetime: see {}", side.logs()),
        ));
    }
    if !s.id.ends_with(&expected) {
        return Some(Check::fail(
            id,
            title,
            format!(
                "{} is not the identity of service account {ns}/{}",
                s.id, side.service_account
            ),
            format!("re-create the pod: {}", side.restart),
        ));
    }
    let left = humantime::format_duration(std::time::Duration::from_secs(s.not_after - now));
    Some(Check::ok(id, title).with_detail(format!(
        "{}, serial {}, expires {expires} (in {left})",
        s.id, s.serial
    )))
}

/// The proxy enforces the controller's current snapshot for this workload: what the proxy
/// applied (its `/config`) against what the controller would send it now (its `/status`,
/// from the replica the proxy's policy stream is connected to).
pub(crate) fn in_sync(side: &Side, controller: &Result<StatusReport, String>) -> Option<Check> {
    let v = side.view()?;
    let id = side.role.id("in-sync");
    let title = format!("{}'s proxy enforces the current policy", side.role.upper());
    let generation = v.policy.generation;
    if let Some(why) = &v.policy.invalid {
        return Some(Check::fail(
            id,
            title,
            format!("its policy is invalid, so it denies everything: {why}"),
            "see vigil status for the rejected policy and fix it",
        ));
    }
    if v.policy.quarantined {
        return Some(Check::fail(
            id,
            title,
            "the workload is quarantined: all its traffic is denied",
            "kubectl get quarantines -A; lift it with vigil unquarantine (or kubectl delete quarantine)",
        ));
    }
    if !v.policy.loaded {
        return Some(Check::fail(
            id,
            title,
            "no policy loaded yet",
            format!("see {}", side.logs()),
        ));
    }
    let report = match controller {
        Ok(r) => r,
        Err(why) => {
            return Some(Check::warn(
                id,
                title,
                format!(
                    "the proxy applied generation {generation}; the controller could not be asked to compare: {why}"
                ),
                "vigil status -n <vigil's namespace> (or pass --vigil-namespace)",
            ));
        }
    };
    let w: Option<&WorkloadReport> = report.workloads.iter().find(|w| w.workload == side.pod);
    Some(match w {
        None => Check::fail(
            id,
            title,
            format!(
                "the controller does not know {} as a workload (its proxy is at generation {generation})",
                side.pod
            ),
            "vigil check (is the pod enrolled, with a service account that exists?)",
        ),
        Some(w) => match sync(w, Some(generation)) {
            ProxySync::NotConnected => Check::fail(
                id,
                title,
                format!(
                    "the controller has no policy stream from this proxy (it applied generation {generation}; the controller's current is {})",
                    w.generation
                ),
                format!("see {} for why it cannot reach the controller", side.logs()),
            ),
            ProxySync::InSync => Check::ok(id, title).with_detail(format!(
                "generation {generation}, the controller's current for {}",
                side.pod
            )),
            ProxySync::Behind => Check::fail(
                id,
                title,
                format!(
                    "the proxy applied generation {generation}, the controller's current for {} is {}",
                    side.pod, w.generation
                ),
                format!(
                    "a change applies within a second: run vigil verify again; if it stays behind, see {}",
                    side.logs()
                ),
            ),
        },
    })
}

/// The edge is mTLS from the proxies' own view: FROM's proxy recorded an outbound mTLS
/// connection to TO's identity, TO's proxy an inbound one from FROM's.
pub(crate) fn mtls(from: &Side, to: &Side, port: u16) -> Check {
    const ID: &str = "mtls";
    let title = "FROM → TO is mTLS (the proxies' own record)";
    // A side outside the mesh first: that is the answer, whatever the other says.
    let missing = [from, to]
        .into_iter()
        .find(|s| matches!(s.sidecar, Sidecar::Missing));
    for side in missing.into_iter().chain([from, to]) {
        match &side.sidecar {
            Sidecar::Missing => {
                let detail = match side.role {
                    Role::From => format!(
                        "{} has no proxy: its connections to TO leave in plaintext, without an identity (TO's proxy sees them as unauthenticated)",
                        side.name()
                    ),
                    Role::To => format!(
                        "{} has no proxy: nothing on its side speaks mTLS, so FROM's traffic reaches it in plaintext",
                        side.name()
                    ),
                };
                return Check::fail(ID, title, detail, side.enroll_fix());
            }
            Sidecar::Unreadable(_) => {
                return Check::fail(
                    ID,
                    title,
                    format!("cannot tell: {}'s proxy could not be read", side.name()),
                    format!("see {}", side.logs()),
                );
            }
            Sidecar::Seen(_) => {}
        }
    }
    let (Some(from_id), Some(to_id)) = (from.id(), to.id()) else {
        return Check::fail(
            ID,
            title,
            "cannot tell: a proxy has no certificate yet",
            "see the SVID checks above",
        );
    };
    let out = from.view().and_then(|v| v.peer(to_id, Direction::Outbound));
    let inb = to.view().and_then(|v| v.peer(from_id, Direction::Inbound));
    let seen = |e: &vigil_proxy::peers::PeerEntry| {
        format!(
            "{} connection(s), last {}",
            e.seen.connections,
            fmt_time(i64::try_from(e.seen.last_seen).unwrap_or(0))
        )
    };
    let retry = format!(
        "send a request from FROM to TO and run vigil verify again; if requests get through but are not recorded, they bypass the proxies: check that vigil-init ran (kubectl logs POD -c vigil-init) and that port {port} is not in vigil.dev/skip-outbound-ports or skip-inbound-ports"
    );
    match (out, inb) {
        (Some(o), Some(i)) => Check::ok(ID, title).with_detail(format!(
            "FROM's proxy: outbound to {to_id}, {}; TO's proxy: inbound from {from_id}, {}",
            seen(o),
            seen(i)
        )),
        (Some(o), None) => Check::warn(
            ID,
            title,
            format!(
                "only FROM's proxy recorded it (outbound to {to_id}, {}); TO's proxy has no inbound record from {from_id} (restarted since, or replaced it in a full record)",
                seen(o)
            ),
            retry,
        ),
        (None, Some(i)) => Check::warn(
            ID,
            title,
            format!(
                "only TO's proxy recorded it (inbound from {from_id}, {}): that may be another pod of FROM's service account; FROM's proxy has no outbound record to {to_id}",
                seen(i)
            ),
            retry,
        ),
        (None, None) => Check::fail(
            ID,
            title,
            format!(
                "neither proxy recorded an mTLS connection between {from_id} and {to_id} since it started"
            ),
            retry,
        ),
    }
}

/// TO's policy for FROM's request, decided by the one evaluator (`vigil explain`'s).
pub(crate) fn policy(
    from: &Side,
    to: &Side,
    request: &str,
    verdict: &Result<Verdict, String>,
    explain: &str,
) -> Check {
    const ID: &str = "policy";
    let title = format!("TO's policy for {request}");
    match verdict {
        Err(_) if matches!(to.sidecar, Sidecar::Missing) => Check::fail(
            ID,
            title,
            "TO is outside the mesh: no proxy enforces any policy for it",
            to.enroll_fix(),
        ),
        Err(why) => Check::fail(ID, title, format!("cannot decide: {why}"), "vigil check"),
        Ok(v) if v.decision == "allow" => {
            Check::ok(ID, title).with_detail(format!("allow: {}", v.reason))
        }
        Ok(v) if v.allowed => Check::warn(
            ID,
            title,
            format!(
                "allowed, but only because the policy is in audit: {}",
                v.audit.as_deref().unwrap_or(&v.reason)
            ),
            "switch the AccessPolicy to mode: Enforce once the audit log shows no unexpected denials",
        ),
        Ok(v) => {
            let fix = if matches!(from.sidecar, Sidecar::Missing) {
                from.enroll_fix()
            } else {
                format!(
                    "if FROM should reach TO, add an AccessPolicy for TO with from: [{{serviceAccount: {}/{}}}] and a rule for this request; try it first with {explain} --overlay DIR",
                    from.ns_and_pod().0,
                    from.service_account
                )
            };
            Check::fail(ID, title, format!("deny: {}", v.reason), fix)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vigil_proxy::peers::{PeerEntry, PeersReport, Seen};

    use super::*;
    use crate::{
        check::report::Outcome,
        verify::view::{PolicyView, Svid},
    };

    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
    const ORDERS: &str = "spiffe://cluster.local/ns/shop/sa/orders";

    fn side(role: Role, name: &str, sidecar: Sidecar) -> Side {
        Side {
            role,
            pod: format!("shop/{name}-1"),
            service_account: name.into(),
            restart: format!("kubectl -n shop rollout restart deployment/{name}"),
            sidecar,
        }
    }

    fn seen(id: &str, generation: u64, peers: &[(&str, Direction)]) -> Sidecar {
        Sidecar::Seen(Box::new(ProxyView {
            ready: true,
            identity: Some(Svid {
                id: id.into(),
                serial: "0a".into(),
                not_before: 0,
                not_after: 2_000,
            }),
            policy: PolicyView {
                generation,
                loaded: true,
                ..PolicyView::default()
            },
            peers: PeersReport {
                max: 256,
                evicted: 0,
                peers: peers
                    .iter()
                    .map(|(id, direction)| PeerEntry {
                        id: (*id).into(),
                        direction: *direction,
                        seen: Seen {
                            first_seen: 10,
                            last_seen: 20,
                            connections: 3,
                        },
                    })
                    .collect(),
            },
        }))
    }

    fn web(peers: &[(&str, Direction)]) -> Side {
        side(Role::From, "web", seen(WEB, 5, peers))
    }

    fn orders(peers: &[(&str, Direction)]) -> Side {
        side(Role::To, "orders", seen(ORDERS, 5, peers))
    }

    #[test]
    fn mtls_needs_both_proxies_records() {
        let both = mtls(
            &web(&[(ORDERS, Direction::Outbound)]),
            &orders(&[(WEB, Direction::Inbound)]),
            8080,
        );
        assert_eq!(both.outcome, Outcome::Ok, "{both:?}");
        assert!(both.detail.unwrap().contains("3 connection(s)"));
        let one = mtls(&web(&[(ORDERS, Direction::Outbound)]), &orders(&[]), 8080);
        assert_eq!(one.outcome, Outcome::Warn, "{one:?}");
        // The record of the other direction is not this edge.
        let none = mtls(
            &web(&[(ORDERS, Direction::Inbound)]),
            &orders(&[(WEB, Direction::Outbound)]),
            8080,
        );
        assert_eq!(none.outcome, Outcome::Fail, "{none:?}");
        assert!(none.fix.unwrap().contains("port 8080"));
    }

    #[test]
    fn a_side_outside_the_mesh_is_the_answer() {
        let plain = side(Role::From, "batch", Sidecar::Missing);
        let unread = side(Role::To, "orders", Sidecar::Unreadable("503".into()));
        let c = mtls(&plain, &unread, 8080);
        assert_eq!(c.outcome, Outcome::Fail);
        assert!(
            c.detail.unwrap().contains("plaintext"),
            "outside the mesh wins"
        );
        assert!(
            c.fix
                .unwrap()
                .contains("kubectl annotate namespace shop vigil.dev/inject=enabled")
        );
        assert_eq!(enrolled(&plain).outcome, Outcome::Fail);
        assert_eq!(enrolled(&unread).outcome, Outcome::Fail);
        assert!(svid(&plain, 1_000).is_none() && in_sync(&plain, &Err("x".into())).is_none());
    }

    #[test]
    fn in_sync_compares_the_proxys_generation_with_the_controllers() {
        let report = |generation, connected| StatusReport {
            workloads: vec![WorkloadReport {
                workload: "shop/web-1".into(),
                generation,
                connected,
                ..WorkloadReport::default()
            }],
            ..StatusReport::default()
        };
        let w = web(&[]);
        let outcome = |r: Result<StatusReport, String>| in_sync(&w, &r).unwrap().outcome;
        assert_eq!(outcome(Ok(report(5, 1))), Outcome::Ok);
        assert_eq!(outcome(Ok(report(6, 1))), Outcome::Fail, "behind");
        assert_eq!(outcome(Ok(report(5, 0))), Outcome::Fail, "no stream");
        assert_eq!(
            outcome(Ok(StatusReport::default())),
            Outcome::Fail,
            "unknown"
        );
        assert_eq!(outcome(Err("unreachable".into())), Outcome::Warn);
    }

    #[test]
    fn the_svid_must_be_in_date_and_the_pods_identity() {
        let ok = svid(&web(&[]), 1_000).unwrap();
        assert_eq!(ok.outcome, Outcome::Ok);
        assert!(
            ok.detail
                .unwrap()
                .starts_with(&format!("{WEB}, serial 0a, expires "))
        );
        assert_eq!(svid(&web(&[]), 2_000).unwrap().outcome, Outcome::Fail);
        let mut other = web(&[]);
        other.service_account = "api".into();
        assert_eq!(svid(&other, 1_000).unwrap().outcome, Outcome::Fail);
    }
}
