//! No policy is rejected, and the accepted ones reach their proxies — both from the
//! status the leader writes on each Segment, AccessPolicy and Quarantine (`Accepted`
//! with the compiler's reason; `targetWorkloads`, `enforcingProxies`).
//!
//! `enforcingProxies` counts the proxies connected to the leader that acknowledged the
//! policy, so with several replicas fewer than `targetWorkloads` is a warning, not a
//! failure; per-proxy sync is `proxies-in-sync` (the controller's `/status`).

use kube::{Api, ResourceExt, api::ListParams};
use serde::de::DeserializeOwned;
use vigil_crds::{AccessPolicy, PolicyStatus, Quarantine, Segment};

use crate::{
    check::report::Check,
    cluster::{Cluster, ClusterError},
};

pub(super) const ID: &str = "policies-accepted";
pub(super) const TITLE: &str = "policies accepted";
const SYNC_ID: &str = "policies-enforced";
const SYNC_TITLE: &str = "accepted policies enforced by their proxies";

/// One resource's verdict, as its status says.
struct Verdict {
    /// `AccessPolicy shop/web`.
    name: String,
    /// `kubectl -n shop edit accesspolicy web`.
    edit: String,
    /// The status describes an older generation of the spec (or there is none).
    behind: bool,
    /// The status the leader wrote.
    status: Option<PolicyStatus>,
}

/// A failure per rejected resource, then one line for enforcement.
pub(super) async fn check(cluster: &Cluster, served: &[&str]) -> Result<Vec<Check>, ClusterError> {
    let mut all = Vec::new();
    if served.contains(&"Segment") {
        all.extend(list::<Segment>(cluster, "Segment", "segments", |s| s.status.clone()).await?);
    }
    if served.contains(&"AccessPolicy") {
        all.extend(
            list::<AccessPolicy>(cluster, "AccessPolicy", "accesspolicies", |s| {
                s.status.clone()
            })
            .await?,
        );
    }
    if served.contains(&"Quarantine") {
        all.extend(
            list::<Quarantine>(cluster, "Quarantine", "quarantines", |s| s.status.clone()).await?,
        );
    }
    let (mut checks, mut pending, mut short) = (Vec::new(), Vec::new(), Vec::new());
    let mut accepted = 0;
    for v in &all {
        let condition = v
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Accepted"));
        match condition {
            Some(c) if c.status == "False" => checks.push(Check::fail(
                ID,
                format!("{} accepted", v.name),
                format!("rejected ({}): {}", c.reason, c.message),
                format!("fix it ({}); `vigil policy test --overlay DIR` checks a change before it is applied", v.edit),
            )),
            Some(_) if !v.behind => {
                accepted += 1;
                let s = v.status.clone().unwrap_or_default();
                let (targets, enforcing) = (s.target_workloads.unwrap_or(0), s.enforcing_proxies.unwrap_or(0));
                if enforcing < targets {
                    short.push(format!("{} ({enforcing}/{targets})", v.name));
                }
            }
            _ => pending.push(v.name.clone()),
        }
    }
    if checks.is_empty() {
        checks.push(
            Check::ok(ID, TITLE)
                .with_detail(format!("{accepted} of {} resource(s) accepted", all.len())),
        );
    }
    checks.push(if pending.is_empty() && short.is_empty() {
        Check::ok(SYNC_ID, SYNC_TITLE)
    } else {
        let mut detail = Vec::new();
        if !pending.is_empty() {
            detail.push(format!("no status for the current generation yet: {}", pending.join(", ")));
        }
        if !short.is_empty() {
            detail.push(format!("fewer enforcing proxies than targets: {}", short.join(", ")));
        }
        Check::warn(
            SYNC_ID,
            SYNC_TITLE,
            detail.join("; "),
            "wait a few seconds and check again; if it stays, check the controller leads (controller-leader) and proxies-in-sync (or `vigil status`) for proxies that are offline or behind",
        )
    });
    Ok(checks)
}

/// Every object of a Vigil kind, with its status.
async fn list<K>(
    cluster: &Cluster,
    kind: &str,
    plural: &'static str,
    status: impl Fn(&K) -> Option<PolicyStatus>,
) -> Result<Vec<Verdict>, ClusterError>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = Api::<K>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| {
            cluster.error(
                e,
                "list",
                &format!("{plural} in all namespaces"),
                Some(plural),
            )
        })?;
    Ok(list
        .items
        .iter()
        .map(|o| {
            let (ns, name) = (o.namespace().unwrap_or_default(), o.name_any());
            let s = status(o);
            Verdict {
                name: format!("{kind} {ns}/{name}"),
                edit: format!("kubectl -n {ns} edit {} {name}", kind.to_lowercase()),
                behind: s.as_ref().and_then(|s| s.observed_generation) < o.meta().generation,
                status: s,
            }
        })
        .collect())
}
