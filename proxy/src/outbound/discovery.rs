//! On-demand discovery: is there a mesh workload behind an address the pushed outbound
//! table does not list?
//!
//! The controller pushes each proxy only the destinations its policy lets it reach, so
//! tables stay small at 10 000 workloads. A connection to any other address must not
//! simply pass through in plaintext: it may be a mesh workload that policy does not (yet)
//! allow — its request would cross the wire in the clear, and the destination would see
//! an unauthenticated caller instead of this workload's identity. So the proxy asks the
//! controller (`Policy.Resolve`): a mesh workload means mTLS with its identity (and the
//! destination decides, and logs who asked); none means egress policy (passthrough or
//! strict).
//!
//! Answers are cached per address — "mesh" for [`MESH_TTL`], "not mesh" for
//! [`NOT_MESH_TTL`] (a new pod on that address is found within that time). When the
//! controller cannot answer, a cached answer of any age is used; with none, the
//! connection is refused: it might be a mesh destination, and plaintext is not a safe
//! guess. File mode has no controller: there every unlisted address is "not mesh".

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::target::Target;

/// How long a "mesh workload" answer is used without asking again.
pub const MESH_TTL: Duration = Duration::from_secs(60);
/// How long a "no mesh workload" answer is used without asking again.
pub const NOT_MESH_TTL: Duration = Duration::from_secs(5);
/// Cache bound; past it the cache starts over (a proxy talks to few addresses).
const MAX_ENTRIES: usize = 4096;

/// Asks the controller; `Ok(None)` is "no mesh workload there".
pub type ResolveFn = Arc<
    dyn Fn(SocketAddr) -> Pin<Box<dyn Future<Output = anyhow::Result<Option<Target>>> + Send>>
        + Send
        + Sync,
>;

/// The answer for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A mesh workload: connect with mTLS, expecting one of these identities.
    Mesh(Target),
    /// No mesh workload: egress policy decides.
    NotMesh,
    /// Nobody could say (controller unreachable, nothing cached): refuse.
    Unknown(String),
}

struct Cached {
    target: Option<Target>,
    at: Instant,
}

/// The resolver and its cache.
pub struct Discovery {
    resolve: Option<ResolveFn>,
    cache: Mutex<HashMap<SocketAddr, Cached>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("enabled", &self.resolve.is_some())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// No controller (file mode): unlisted addresses are not in the mesh.
    pub fn off() -> Self {
        Self {
            resolve: None,
            cache: Mutex::default(),
        }
    }

    /// Resolves through `resolve` (controller mode).
    pub fn new(resolve: ResolveFn) -> Self {
        Self {
            resolve: Some(resolve),
            cache: Mutex::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is at `addr`: from the cache while fresh, else from the controller.
    pub async fn lookup(&self, addr: SocketAddr) -> Found {
        let Some(resolve) = &self.resolve else {
            return Found::NotMesh;
        };
        let now = Instant::now();
        if let Some(c) = self.cache().get(&addr) {
            let ttl = if c.target.is_some() {
                MESH_TTL
            } else {
                NOT_MESH_TTL
            };
            if now.duration_since(c.at) < ttl {
                return found(c.target.clone());
            }
        }
        match resolve(addr).await {
            Ok(target) => {
                let mut cache = self.cache();
                if cache.len() >= MAX_ENTRIES {
                    cache.clear();
                }
                cache.insert(
                    addr,
                    Cached {
                        target: target.clone(),
                        at: Instant::now(),
                    },
                );
                found(target)
            }
            Err(e) => match self.cache().get(&addr) {
                // Stale, but the best answer there is while the controller is away.
                Some(c) => found(c.target.clone()),
                None => Found::Unknown(format!("{e:#}")),
            },
        }
    }

    /// A cached mesh answer of any age (the pooled client's connector resolves again by
    /// authority after [`Self::lookup`] already answered).
    pub fn cached(&self, addr: &SocketAddr) -> Option<Target> {
        self.cache().get(addr).and_then(|c| c.target.clone())
    }

    /// `addr` as a backend of a cached virtual destination that lists it as an endpoint
    /// (the authority of a request balanced over a discovered Service).
    pub fn cached_backend(&self, addr: &SocketAddr) -> Option<Target> {
        self.cache().values().find_map(|c| {
            let t = c.target.as_ref()?;
            t.endpoints.contains(addr).then(|| Target {
                proxy: *addr,
                identities: t.identities.clone(),
                endpoints: std::sync::Arc::from([]),
            })
        })
    }
}

fn found(t: Option<Target>) -> Found {
    t.map_or(Found::NotMesh, Found::Mesh)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::{
        collections::BTreeSet,
        sync::atomic::{AtomicU32, Ordering},
    };

    use vigil_cert_authority::SpiffeId;

    use super::*;

    fn target() -> Target {
        Target {
            proxy: "10.0.0.2:8080".parse().unwrap(),
            identities: BTreeSet::from([SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap()]),
            endpoints: std::sync::Arc::from([]),
        }
    }

    /// A resolver answering from `answers` in turn (`None` = an error), counting calls.
    fn scripted(answers: Vec<Option<Option<Target>>>) -> (Discovery, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let answers = Arc::new(answers);
        let f: ResolveFn = Arc::new(move |_| {
            let n = c.fetch_add(1, Ordering::SeqCst) as usize;
            let a = answers.get(n).cloned().flatten();
            Box::pin(async move { a.ok_or_else(|| anyhow::anyhow!("controller unreachable")) })
        });
        (Discovery::new(f), calls)
    }

    #[tokio::test]
    async fn mesh_answers_are_cached_and_outlive_the_controller() {
        let addr = "10.0.0.2:8080".parse().unwrap();
        let (d, calls) = scripted(vec![Some(Some(target())), None]);
        assert_eq!(d.lookup(addr).await, Found::Mesh(target()));
        assert_eq!(d.lookup(addr).await, Found::Mesh(target()), "cached");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(d.cached(&addr), Some(target()));
    }

    #[tokio::test]
    async fn stale_answers_stand_in_while_the_controller_is_away() {
        let addr = "10.0.0.2:8080".parse().unwrap();
        let (d, calls) = scripted(vec![Some(None), None]);
        assert_eq!(d.lookup(addr).await, Found::NotMesh);
        // Age the entry past its TTL.
        d.cache().get_mut(&addr).unwrap().at -= NOT_MESH_TTL + Duration::from_secs(1);
        assert_eq!(d.lookup(addr).await, Found::NotMesh, "stale, used on error");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "it did ask again");
    }

    #[tokio::test]
    async fn no_answer_and_nothing_cached_is_unknown() {
        let (d, _) = scripted(vec![None]);
        let got = d.lookup("10.0.0.9:80".parse().unwrap()).await;
        assert!(
            matches!(&got, Found::Unknown(e) if e.contains("unreachable")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn file_mode_has_no_resolver() {
        let d = Discovery::off();
        assert_eq!(
            d.lookup("10.0.0.9:80".parse().unwrap()).await,
            Found::NotMesh
        );
        assert_eq!(d.cached(&"10.0.0.9:80".parse().unwrap()), None);
    }
}
