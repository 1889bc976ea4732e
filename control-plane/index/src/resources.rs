//! The resources the index compiles: policy CRDs, workloads and namespace labels.
//!
//! Sources (the local policy directory, or the Kubernetes API's caches) feed
//! [`Resource`]s in; the compiler only reads [`Resources`].

use std::{collections::BTreeMap, fmt};

use kube::ResourceExt;
use vigil_crds::{AccessPolicy, Quarantine, Segment, Workload};

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a Kubernetes object (namespace `default` if unset).
    pub fn of<K: kube::Resource>(obj: &K) -> Self {
        Self::new(
            obj.namespace().unwrap_or_else(|| "default".into()),
            obj.name_any(),
        )
    }

    /// Parses `namespace/name`, or `name` relative to `default_ns`.
    pub fn parse_relative(s: &str, default_ns: &str) -> Self {
        match s.split_once('/') {
            Some((ns, name)) => Self::new(ns, name),
            None => Self::new(default_ns, s),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The kinds the index understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `Segment`.
    Segment,
    /// `AccessPolicy`.
    AccessPolicy,
    /// `Quarantine`.
    Quarantine,
    /// `Workload` (local mode) or a Pod (Kubernetes).
    Workload,
    /// A namespace's labels and annotations.
    Namespace,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Segment => "Segment",
            Self::AccessPolicy => "AccessPolicy",
            Self::Quarantine => "Quarantine",
            Self::Workload => "Workload",
            Self::Namespace => "Namespace",
        })
    }
}

/// Labels and annotations of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceMeta {
    /// Labels (for namespace selectors).
    pub labels: BTreeMap<String, String>,
    /// Annotations (`vigil.dev/default-policy`).
    pub annotations: BTreeMap<String, String>,
}

/// One resource.
#[derive(Clone, Debug)]
pub enum Resource {
    /// A Segment.
    Segment(Segment),
    /// An AccessPolicy.
    AccessPolicy(AccessPolicy),
    /// A Quarantine.
    Quarantine(Quarantine),
    /// A Workload.
    Workload(Workload),
    /// A namespace (name, metadata).
    Namespace(String, NamespaceMeta),
}

impl Resource {
    /// The kind and key.
    pub fn id(&self) -> (Kind, ObjectKey) {
        match self {
            Self::Segment(r) => (Kind::Segment, ObjectKey::of(r)),
            Self::AccessPolicy(r) => (Kind::AccessPolicy, ObjectKey::of(r)),
            Self::Quarantine(r) => (Kind::Quarantine, ObjectKey::of(r)),
            Self::Workload(r) => (Kind::Workload, ObjectKey::of(r)),
            Self::Namespace(name, _) => (Kind::Namespace, ObjectKey::new("", name.clone())),
        }
    }
}

/// Every resource, by kind and key.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// Segments.
    pub segments: BTreeMap<ObjectKey, Segment>,
    /// Access policies.
    pub policies: BTreeMap<ObjectKey, AccessPolicy>,
    /// Quarantines.
    pub quarantines: BTreeMap<ObjectKey, Quarantine>,
    /// Workloads.
    pub workloads: BTreeMap<ObjectKey, Workload>,
    /// Namespace metadata, by namespace name.
    pub namespaces: BTreeMap<String, NamespaceMeta>,
    /// Services (Kubernetes): virtual addresses served by workloads.
    pub services: BTreeMap<ObjectKey, ServiceBackends>,
}

/// A Service's virtual addresses (ClusterIP:port) and the workloads behind them (from its
/// EndpointSlices). It is a mesh destination only if every backend is a mesh workload:
/// mTLS to an endpoint without a proxy would fail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceBackends {
    /// `ClusterIP:port` for each IP family and port.
    pub addresses: Vec<std::net::SocketAddr>,
    /// The pods behind it, as workload keys (mesh or not).
    pub backends: std::collections::BTreeSet<ObjectKey>,
    /// For each virtual address, the ready backends' `podIP:targetPort` (not the
    /// terminating ones): what callers' proxies balance over.
    pub endpoints: BTreeMap<std::net::SocketAddr, Vec<std::net::SocketAddr>>,
}

impl Resources {
    /// Adds or replaces a resource.
    pub fn apply(&mut self, r: Resource) {
        let (_, key) = r.id();
        match r {
            Resource::Segment(x) => {
                self.segments.insert(key, x);
            }
            Resource::AccessPolicy(x) => {
                self.policies.insert(key, x);
            }
            Resource::Quarantine(x) => {
                self.quarantines.insert(key, x);
            }
            Resource::Workload(x) => {
                self.workloads.insert(key, x);
            }
            Resource::Namespace(name, meta) => {
                self.namespaces.insert(name, meta);
            }
        }
    }

    /// Lays `other` over `self`: each of its resources replaces the one of the same kind,
    /// namespace and name, or is added (a proposed change over what is deployed). Returns
    /// how many resources `other` held.
    pub fn overlay(&mut self, other: Resources) -> usize {
        let n = other.segments.len()
            + other.policies.len()
            + other.quarantines.len()
            + other.workloads.len()
            + other.namespaces.len()
            + other.services.len();
        self.segments.extend(other.segments);
        self.policies.extend(other.policies);
        self.quarantines.extend(other.quarantines);
        self.workloads.extend(other.workloads);
        self.namespaces.extend(other.namespaces);
        self.services.extend(other.services);
        n
    }

    /// Removes a resource; true if it existed.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::Segment => self.segments.remove(key).is_some(),
            Kind::AccessPolicy => self.policies.remove(key).is_some(),
            Kind::Quarantine => self.quarantines.remove(key).is_some(),
            Kind::Workload => self.workloads.remove(key).is_some(),
            Kind::Namespace => self.namespaces.remove(&key.name).is_some(),
        }
    }

    /// A workload's labels: `metadata.labels` overlaid with `spec.labels`.
    pub fn workload_labels(w: &Workload) -> BTreeMap<String, String> {
        let mut labels = w.labels().clone();
        labels.extend(w.spec.labels.clone());
        labels
    }
}
