//! Leader election on a `coordination.k8s.io` Lease, the way client-go does it: the
//! holder renews every `RENEW`; a lease not renewed for `LEASE_DURATION` may be taken
//! over. Every write is a `replace` carrying the resourceVersion read just before, so two
//! candidates can never both win: the second one's write conflicts.
//!
//! Only status/event writes and CA rotation depend on leadership; every replica serves.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;

use super::Kube;

/// How long a lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews (and candidates retry).
pub const RENEW: Duration = Duration::from_secs(2);

/// Runs the election forever, publishing whether this replica leads.
pub async fn run(k: Kube, leading: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(k.client.clone(), &k.args.namespace);
    loop {
        let now = leading_now(&api, &k).await;
        let was = *leading.borrow();
        match now {
            Ok(is) => {
                if is != was {
                    if is {
                        tracing::info!(holder = %k.holder, lease = %k.args.lease, "became the leader (status, events, CA rotation)");
                    } else {
                        tracing::info!(holder = %k.holder, lease = %k.args.lease, "no longer the leader");
                    }
                    leading.send_replace(is);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = %k.args.lease, "leader election failed");
                if was {
                    // Unable to renew: step down before the lease can be taken over.
                    leading.send_replace(false);
                }
            }
        }
        tokio::time::sleep(RENEW).await;
    }
}

/// One round: acquire, renew, or observe someone else's valid lease.
async fn leading_now(api: &Api<Lease>, k: &Kube) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(k.holder.clone()),
        lease_duration_seconds: Some(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15)),
        acquire_time: acquired.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(mut lease) = api.get_opt(&k.args.lease).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(k.args.lease.clone()),
                namespace: Some(k.args.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec(0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
            Err(e) => Err(e),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let mine = current.holder_identity.as_deref() == Some(k.holder.as_str());
    let duration = current.lease_duration_seconds.map_or(LEASE_DURATION, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(15))
    });
    let expired = current.renew_time.as_ref().is_none_or(|t| {
        let age = now.as_millisecond() - t.0.as_millisecond();
        age > i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
    });
    if !mine && !expired && current.holder_identity.is_some() {
        return Ok(false);
    }
    let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!mine);
    let acquired = if mine { current.acquire_time } else { None };
    lease.spec = Some(spec(transitions, acquired));
    match api
        .replace(&k.args.lease, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}
