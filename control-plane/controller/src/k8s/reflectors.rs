//! The watches: one kube-rs reflector per kind, each keeping a store that follows the
//! apiserver through watch restarts and relists (the reflector replaces its store on a
//! relist, so nothing is lost or duplicated). Any change pokes the reload loop
//! (`crate::source::run`), which lets bursts settle and recompiles the index from the
//! stores as a whole.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use vigil_crds::{AccessPolicy, Quarantine, Segment};

use super::resources::Snapshot;

/// Readers of every store.
#[derive(Clone)]
pub struct Stores {
    /// Pods (all namespaces).
    pub pods: Store<Pod>,
    /// Namespaces.
    pub namespaces: Store<Namespace>,
    /// ServiceAccounts (a pod whose account is gone is no longer a workload).
    pub service_accounts: Store<ServiceAccount>,
    /// Segments.
    pub segments: Store<Segment>,
    /// AccessPolicies.
    pub policies: Store<AccessPolicy>,
    /// Quarantines.
    pub quarantines: Store<Quarantine>,
    /// Services.
    pub services: Store<Service>,
    /// EndpointSlices (which pods back a Service).
    pub slices: Store<EndpointSlice>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// Everything, now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            pods: self.pods.state(),
            namespaces: self.namespaces.state(),
            service_accounts: self.service_accounts.state(),
            segments: self.segments.state(),
            policies: self.policies.state(),
            quarantines: self.quarantines.state(),
            services: self.services.state(),
            slices: self.slices.state(),
        }
    }

    /// Waits until every store has its first complete list.
    pub async fn ready(&self) -> anyhow::Result<()> {
        let wait = async {
            self.pods.wait_until_ready().await?;
            self.namespaces.wait_until_ready().await?;
            self.service_accounts.wait_until_ready().await?;
            self.segments.wait_until_ready().await?;
            self.policies.wait_until_ready().await?;
            self.quarantines.wait_until_ready().await?;
            self.services.wait_until_ready().await?;
            self.slices.wait_until_ready().await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(120), wait)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the Kubernetes caches did not fill in 120 s (RBAC? CRDs installed?)"
                )
            })?
    }
}

/// Starts one reflector per kind; each change sends `()` on `changed`.
pub fn start(
    client: &kube::Client,
    changed: &mpsc::UnboundedSender<()>,
) -> (Stores, Vec<tokio::task::JoinHandle<()>>) {
    let mut tasks = Vec::new();
    let stores = Stores {
        pods: reflect(Api::all(client.clone()), changed, &mut tasks),
        namespaces: reflect(Api::all(client.clone()), changed, &mut tasks),
        service_accounts: reflect(Api::all(client.clone()), changed, &mut tasks),
        segments: reflect(Api::all(client.clone()), changed, &mut tasks),
        policies: reflect(Api::all(client.clone()), changed, &mut tasks),
        quarantines: reflect(Api::all(client.clone()), changed, &mut tasks),
        services: reflect(Api::all(client.clone()), changed, &mut tasks),
        slices: reflect(Api::all(client.clone()), changed, &mut tasks),
    };
    (stores, tasks)
}

fn reflect<K>(
    api: Api<K>,
    changed: &mpsc::UnboundedSender<()>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).into_owned();
    let changed = changed.clone();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => {
                    let _ = changed.send(());
                }
                Err(e) => {
                    tracing::warn!(kind = %kind, error = %e, "watch failed; retrying with backoff");
                }
            }
        }
    }));
    reader
}

/// A shared handle, for the webhook (namespace annotations) and the status writer.
pub type SharedStores = Arc<Stores>;
