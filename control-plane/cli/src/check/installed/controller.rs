//! The controller runs: its Deployment has every desired replica ready, and one replica
//! holds the leader Lease and renews it (the leader writes policy status and events and
//! rotates the CA; a Lease not renewed within its duration means no replica leads).

use k8s_openapi::{
    api::{apps::v1::Deployment, coordination::v1::Lease},
    jiff::Timestamp,
};
use kube::Api;

use crate::{
    check::{chart, get_opt, report::Check},
    cluster::{Cluster, ClusterError},
};

pub(super) const ID: &str = "controller-ready";
pub(super) const TITLE: &str = "controller Deployment ready";
const LEADER_ID: &str = "controller-leader";
const LEADER_TITLE: &str = "controller leader elected (Lease held and renewed)";

/// `controller-ready` and `controller-leader`.
pub(super) async fn check(cluster: &Cluster, ns: &str) -> Result<Vec<Check>, ClusterError> {
    let name = chart::CONTROLLER;
    let logs =
        format!("kubectl -n {ns} describe deployment {name}; kubectl -n {ns} logs deploy/{name}");
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), ns);
    let what = format!("deployments in namespace {ns}");
    let ready = match get_opt(cluster, &deployments, name, &what).await? {
        None => Check::fail(
            ID,
            TITLE,
            format!("no Deployment {ns}/{name}"),
            format!("install Vigil: {}", chart::INSTALL),
        ),
        Some(d) => {
            let want = d.spec.replicas.unwrap_or(1);
            let have = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            if have >= want && want > 0 {
                Check::ok(ID, TITLE).with_detail(format!("{have}/{want} replicas ready"))
            } else {
                Check::fail(
                    ID,
                    TITLE,
                    format!("{have}/{want} replicas of {ns}/{name} ready"),
                    logs.clone(),
                )
            }
        }
    };
    let leases = Api::<Lease>::namespaced(cluster.client.clone(), ns);
    let what = format!("leases in namespace {ns}");
    let lease = get_opt(cluster, &leases, chart::LEASE, &what).await?;
    Ok(vec![ready, leader(lease, ns, &logs, Timestamp::now())])
}

/// Judges the Lease at `now`.
fn leader(lease: Option<Lease>, ns: &str, logs: &str, now: Timestamp) -> Check {
    let Some(spec) = lease.and_then(|l| l.spec) else {
        return Check::fail(
            LEADER_ID,
            LEADER_TITLE,
            format!("no Lease {ns}/{}: no replica has ever led", chart::LEASE),
            logs,
        );
    };
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return Check::fail(LEADER_ID, LEADER_TITLE, "the Lease has no holder", logs);
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let age = spec
        .renew_time
        .map(|t| (now.as_millisecond() - t.0.as_millisecond()) / 1000);
    match age {
        Some(age) if age <= duration => {
            Check::ok(LEADER_ID, LEADER_TITLE).with_detail(format!("held by {holder}"))
        }
        Some(age) => Check::fail(
            LEADER_ID,
            LEADER_TITLE,
            format!(
                "{holder} last renewed it {age} s ago (it lapses after {duration} s): no replica leads"
            ),
            logs,
        ),
        None => Check::fail(
            LEADER_ID,
            LEADER_TITLE,
            format!("{holder} never renewed it"),
            logs,
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime,
    };

    use super::*;
    use crate::check::report::Outcome;

    fn lease(renewed: i64) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("vigil-controller-abc".into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_lease_is_fresh_within_its_duration() {
        let now = Timestamp::from_second(1_000).unwrap();
        let fresh = leader(Some(lease(990)), "vigil-system", "logs", now);
        assert_eq!(fresh.outcome, Outcome::Ok);
        assert_eq!(
            fresh.detail.as_deref(),
            Some("held by vigil-controller-abc")
        );
        let stale = leader(Some(lease(900)), "vigil-system", "logs", now);
        assert_eq!(stale.outcome, Outcome::Fail);
        assert!(stale.detail.unwrap().contains("100 s ago"));
        assert_eq!(
            leader(None, "vigil-system", "logs", now).outcome,
            Outcome::Fail
        );
    }
}
