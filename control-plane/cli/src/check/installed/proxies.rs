//! Every enrolled pod's proxy is in sync: for each injected pod that runs, the controller's
//! `/status` (read through the API server's pod proxy, replicas merged — as `vigil
//! status` reads it) says its proxy acknowledged the controller's current generation
//! for it ([`controller_admin::sync`], the one definition of "in sync").
//!
//! The controller records only the generations a proxy applied: a proxy that could not
//! apply the current one (an invalid policy for it) stays at its last one, so it is
//! behind, and its log says why. A `/status` that cannot be read through the API server
//! (no RBAC for pods/proxy, a controller that does not run as a pod) is a warning: the
//! controller may be fine, `vigil status --controller ADDR` asks it directly.

use vigil_controller::status::StatusReport;

use crate::{
    check::report::Check,
    cluster::Cluster,
    controller_admin::{self, ProxySync, sync},
};

pub(super) const ID: &str = "proxies-in-sync";
pub(super) const TITLE: &str = "enrolled pods' proxies in sync";

/// The verdict for `pods` (`namespace/name`, injected and running), or `None` when the
/// pods could not be listed (`pods-injected` says why).
pub(super) async fn check(cluster: &Cluster, ns: &str, pods: Option<&[String]>) -> Vec<Check> {
    let Some(pods) = pods else {
        return vec![Check::warn(
            ID,
            TITLE,
            "cannot check: the pods could not be listed (see enrolled pods injected)",
            "run vigil check with a user who may list pods in all namespaces",
        )];
    };
    match controller_admin::replicas(cluster, ns).await {
        Ok(replicas) => decide(
            &controller_admin::merge(replicas.into_iter().map(|r| r.report).collect()),
            pods,
        ),
        Err(e) => vec![unreadable(ns, &format!("{e:#}"))],
    }
}

/// The warning when the controller's `/status` cannot be read through the API server.
fn unreadable(ns: &str, why: &str) -> Check {
    Check::warn(
        ID,
        TITLE,
        format!("cannot read the controller's /status through the API server: {why}"),
        format!(
            "check by hand: vigil status --controller ADDR (the controller's admin port, e.g. after kubectl -n {ns} port-forward deploy/vigil-controller 9191); through the API server it needs RBAC get pods/proxy in {ns}"
        ),
    )
}

/// One ✔ with the count when every pod's proxy is in sync, else one ✘ per pod whose
/// proxy is not connected or behind.
pub(crate) fn decide(report: &StatusReport, pods: &[String]) -> Vec<Check> {
    let mut failed = Vec::new();
    for pod in pods {
        let (pod_ns, name) = pod.split_once('/').unwrap_or(("", pod));
        let logs = format!("kubectl -n {pod_ns} logs {name} -c vigil-proxy");
        let connect = format!(
            "see {logs} for why it cannot reach the controller (its address, mTLS errors), and the controller's log (kubectl logs deploy/vigil-controller in Vigil's namespace)"
        );
        let title = format!("{pod}'s proxy in sync");
        let Some(w) = report.workloads.iter().find(|w| &w.workload == pod) else {
            failed.push(Check::fail(
                ID,
                title,
                "not connected: the controller has no record of this workload (its proxy never opened a policy stream)",
                connect,
            ));
            continue;
        };
        match sync(w, w.applied) {
            ProxySync::InSync => {}
            ProxySync::NotConnected => failed.push(Check::fail(
                ID,
                title,
                format!(
                    "not connected: the controller has no policy stream from its proxy (last applied: {}; the controller's current is {})",
                    w.applied.map_or("none".to_string(), |g| g.to_string()),
                    w.generation
                ),
                connect,
            )),
            ProxySync::Behind => failed.push(Check::fail(
                ID,
                title,
                format!(
                    "behind: its proxy applied generation {}, the controller's current for it is {}",
                    w.applied.map_or("none".to_string(), |g| g.to_string()),
                    w.generation
                ),
                format!(
                    "a change applies within a second: run vigil check again; if it stays behind, see {logs} (a policy it could not apply is logged there as invalid, and it then denies the affected traffic; vigil status lists rejected policies)"
                ),
            )),
        }
    }
    if failed.is_empty() {
        return vec![Check::ok(ID, TITLE).with_detail(format!(
            "{} proxy(ies) at the controller's current generation",
            pods.len()
        ))];
    }
    failed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::check::report::Outcome;

    /// A `/status` as the controller serves it (`StatusReport::collect`, serialized).
    fn status(workloads: serde_json::Value) -> StatusReport {
        serde_json::from_value(serde_json::json!({
            "generation": 12,
            "trust_domain": "cluster.local",
            "issuer_not_after": 1_900_000_000u64,
            "bundle_roots": 1,
            "workloads": workloads,
            "resources": [{"kind": "AccessPolicy", "name": "shop/frontend-reads-orders",
                           "accepted": true, "reason": null, "warnings": [],
                           "targets": 2, "enforcing": 1}],
            "source_errors": [],
        }))
        .unwrap()
    }

    fn workload(
        name: &str,
        generation: u64,
        applied: Option<u64>,
        connected: usize,
    ) -> serde_json::Value {
        serde_json::json!({
            "workload": name,
            "identity": "spiffe://cluster.local/ns/shop/sa/x",
            "generation": generation,
            "applied": applied,
            "up_to_date": applied == Some(generation),
            "connected": connected,
            "cert_not_after": 1_800_000_000i64,
        })
    }

    fn pods() -> Vec<String> {
        vec!["shop/frontend-1".into(), "shop/orders-1".into()]
    }

    #[test]
    fn all_in_sync_is_one_line_with_the_count() {
        let r = status(serde_json::json!([
            workload("shop/frontend-1", 12, Some(12), 1),
            workload("shop/orders-1", 9, Some(9), 1),
            // Not an enrolled running pod: not counted.
            workload("shop/gone-1", 3, None, 0),
        ]));
        let c = decide(&r, &pods());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].outcome, Outcome::Ok);
        assert_eq!(
            c[0].detail.as_deref(),
            Some("2 proxy(ies) at the controller's current generation")
        );
        let none = decide(&r, &[]);
        assert_eq!(none[0].outcome, Outcome::Ok);
    }

    #[test]
    fn a_proxy_behind_fails_with_its_logs() {
        let r = status(serde_json::json!([
            workload("shop/frontend-1", 12, Some(11), 1),
            workload("shop/orders-1", 9, Some(9), 1),
        ]));
        let c = decide(&r, &pods());
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].outcome, Outcome::Fail);
        assert_eq!(c[0].title, "shop/frontend-1's proxy in sync");
        assert_eq!(
            c[0].detail.as_deref(),
            Some("behind: its proxy applied generation 11, the controller's current for it is 12")
        );
        assert!(
            c[0].fix
                .as_deref()
                .unwrap()
                .contains("kubectl -n shop logs frontend-1 -c vigil-proxy")
        );
    }

    #[test]
    fn a_proxy_not_connected_or_unknown_fails() {
        let r = status(serde_json::json!([workload(
            "shop/frontend-1",
            12,
            Some(12),
            0
        ),]));
        let c = decide(&r, &pods());
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c.iter().all(|c| c.outcome == Outcome::Fail));
        assert!(c[0].detail.as_deref().unwrap().starts_with(
            "not connected: the controller has no policy stream from its proxy (last applied: 12;"
        ));
        assert!(
            c[1].detail
                .as_deref()
                .unwrap()
                .contains("no record of this workload")
        );
        assert!(
            c[1].fix
                .as_deref()
                .unwrap()
                .contains("kubectl -n shop logs orders-1 -c vigil-proxy")
        );
    }

    #[test]
    fn an_invalid_policy_leaves_the_proxy_behind() {
        // The proxy acked generation 12 as invalid: the controller keeps its last valid
        // ack (10), so /status shows it connected and behind; its log says why.
        let r = status(serde_json::json!([
            workload("shop/frontend-1", 12, Some(12), 1),
            workload("shop/orders-1", 12, Some(10), 1),
        ]));
        let c = decide(&r, &pods());
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].outcome, Outcome::Fail);
        assert!(
            c[0].detail
                .as_deref()
                .unwrap()
                .starts_with("behind: its proxy applied generation 10")
        );
        assert!(
            c[0].fix
                .as_deref()
                .unwrap()
                .contains("logged there as invalid")
        );
    }

    #[test]
    fn an_unreadable_status_is_a_warning_with_the_way_by_hand() {
        let c = unreadable("vigil-system", "no running pod");
        assert_eq!(c.outcome, Outcome::Warn);
        assert!(c.fix.unwrap().contains("vigil status --controller ADDR"));
    }
}
