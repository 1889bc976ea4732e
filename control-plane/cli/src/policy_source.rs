//! Where `vigil explain` and `vigil policy test` read policy from: a local policy
//! directory (`--dir`), or else the cluster — optionally with a directory of changed
//! documents laid over it (`--overlay`, "what would this PR change").
//!
//! ```text
//!   --dir DIR ─────────── PolicyDir (vigil-policy-dir) ───────────────┐
//!   cluster ── list Pods, Namespaces, ServiceAccounts, Services,      ├─► Resources ─► overlay ─► Loaded
//!              EndpointSlices, Segments, AccessPolicies, Quarantines  │   (same name+namespace
//!              └─ vigil_controller::k8s::resources (the controller's  ┘    replaces, new adds)
//!                 own conversion: which pods are workloads, and how)
//! ```
//!
//! The cluster is read once (a list per kind), not watched; the result is what the
//! controller's reflectors would hold at that moment, compiled by the same code.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use anyhow::{Result, bail};
use clap::Args;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use kube::{Api, api::ListParams};
use serde::de::DeserializeOwned;
use vigil_controller::k8s::resources::{Snapshot, resources};
use vigil_crds::{AccessPolicy, Quarantine, Segment};
use vigil_index::{ObjectKey, Resources};
use vigil_policy_dir::PolicyDir;

use crate::cluster::{Cluster, ClusterArgs, ClusterError, runtime};

/// Flags choosing the policy source.
#[derive(Debug, Args)]
pub(crate) struct SourceArgs {
    /// Policy directory (the controller's `--local` directory); omit it to read the
    /// cluster (see --kubeconfig, --context).
    #[arg(long, env = "VIGIL_POLICY_DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// A directory of changed Segment/AccessPolicy/Quarantine YAML laid over the policies
    /// (same name and namespace replaces, a new one adds; no namespace means `-n`'s): what
    /// would this change do?
    #[arg(long, value_name = "DIR")]
    pub(crate) overlay: Option<PathBuf>,
}

/// The policy resources and a description of where they came from.
pub(crate) struct Source {
    /// Everything the compiler needs.
    pub(crate) resources: Resources,
    /// Documents skipped in a policy directory (the controller keeps their last good
    /// version); never from the overlay, whose errors are fatal.
    pub(crate) skipped: Vec<String>,
    /// `the policy directory X`, `the cluster at URL`.
    pub(crate) origin: String,
    /// The namespace of names given without one (overlay documents without
    /// `metadata.namespace`, `--to NAME`): `-n`, else the context's namespace (cluster) or
    /// `default` (directory) — as kubectl would place them.
    pub(crate) namespace: String,
}

// === impl SourceArgs ===

impl SourceArgs {
    /// Reads the directory or the cluster, then the overlay.
    pub(crate) fn load(&self, cluster: &ClusterArgs) -> Result<Source> {
        let mut source = match &self.dir {
            Some(dir) => {
                if !dir.is_dir() {
                    bail!("{} is not a directory", dir.display());
                }
                let (resources, errors) = PolicyDir::new(dir).load();
                Source {
                    resources,
                    skipped: errors.iter().map(ToString::to_string).collect(),
                    origin: format!("the policy directory {}", dir.display()),
                    namespace: cluster
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                }
            }
            None => runtime()?.block_on(from_cluster(cluster))?,
        };
        if let Some(overlay) = &self.overlay {
            let n = apply_overlay(&mut source.resources, overlay, &source.namespace)?;
            source.origin = format!(
                "{} with {n} document(s) of {} laid over",
                source.origin,
                overlay.display()
            );
        }
        Ok(source)
    }
}

/// Lays every document of `dir` over `base`, those without a namespace placed in
/// `namespace`. Any bad document is an error: the overlay is the change under test, so it
/// must be judged whole.
fn apply_overlay(base: &mut Resources, dir: &std::path::Path, namespace: &str) -> Result<usize> {
    if !dir.is_dir() {
        bail!("--overlay {} is not a directory", dir.display());
    }
    let (mut overlay, errors) = PolicyDir::new(dir).load();
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        bail!("the overlay is invalid: {}", list.join("; "));
    }
    place(&mut overlay.segments, namespace);
    place(&mut overlay.policies, namespace);
    place(&mut overlay.quarantines, namespace);
    place(&mut overlay.workloads, namespace);
    Ok(base.overlay(overlay))
}

/// Puts the objects without `metadata.namespace` into `namespace` (and keys them so).
fn place<K: kube::Resource>(objects: &mut BTreeMap<ObjectKey, K>, namespace: &str) {
    let unplaced: Vec<ObjectKey> = objects
        .iter()
        .filter(|(_, o)| o.meta().namespace.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    for key in unplaced {
        if let Some(mut o) = objects.remove(&key) {
            o.meta_mut().namespace = Some(namespace.to_string());
            objects.insert(ObjectKey::of(&o), o);
        }
    }
}

/// One list of every kind the controller watches, turned into resources by the
/// controller's own conversion.
async fn from_cluster(args: &ClusterArgs) -> Result<Source> {
    let cluster = args.connect().await?;
    let snapshot = Snapshot {
        pods: list::<Pod>(&cluster, "pods", None).await?,
        namespaces: list::<Namespace>(&cluster, "namespaces", None).await?,
        service_accounts: list::<ServiceAccount>(&cluster, "serviceaccounts", None).await?,
        segments: list::<Segment>(&cluster, "segments", Some("segments")).await?,
        policies: list::<AccessPolicy>(&cluster, "accesspolicies", Some("accesspolicies")).await?,
        quarantines: list::<Quarantine>(&cluster, "quarantines", Some("quarantines")).await?,
        services: list::<Service>(&cluster, "services", None).await?,
        slices: list::<EndpointSlice>(&cluster, "endpointslices", None).await?,
    };
    Ok(Source {
        resources: resources(&snapshot),
        skipped: Vec::new(),
        origin: format!("the cluster at {}", cluster.url),
        namespace: cluster.namespace.clone(),
    })
}

/// Every object of a kind, in all namespaces.
async fn list<K>(
    cluster: &Cluster,
    plural: &'static str,
    crd: Option<&'static str>,
) -> Result<Vec<Arc<K>>, ClusterError>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = Api::<K>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.error(e, "list", &format!("{plural} in all namespaces"), crd))?;
    Ok(list.items.into_iter().map(Arc::new).collect())
}

/// For `--to`-style messages: where a workload was looked for.
pub(crate) fn missing_workload_hint(origin: &str) -> &'static str {
    if origin.starts_with("the cluster") {
        "in a cluster, a workload is a pod enrolled with vigil.dev/inject: enabled that carries the vigil-proxy container and whose service account exists"
    } else {
        "in local mode, a workload is a `Workload` document, local.vigil.dev/v1alpha1"
    }
}
