//! The user's path, step by step (the numbering); each step prints what it
//! measured. Helpers shared by the steps are at the end.

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{Api, Client, api::ListParams};
use vigil_e2e::{kube_procs::wait_for, node::Node};

/// Shared by the steps.
pub(crate) struct Ctx<'a> {
    pub(crate) node: &'a Node,
    pub(crate) client: Client,
}

/// The enrolled namespace of the path.
pub(crate) const SHOP: &str = "shop";

pub(crate) async fn run(node: &Node) {
    let ctx = Ctx {
        node,
        client: node.cluster().admin(),
    };
    crate::install::install(&ctx).await;
    crate::install::enroll(&ctx).await;
    let capture = crate::policy::default_deny_then_allow(&ctx).await;
    crate::policy::probes_and_the_unenrolled(&ctx, capture).await;
    crate::policy::quarantine(&ctx).await;
    crate::cli::verify_and_status(&ctx).await;
    crate::lifecycle::pod_deletion_under_load(&ctx).await;
    crate::lifecycle::controller_loss(&ctx).await;
    crate::install::upgrade_and_uninstall(&ctx).await;
}

impl Ctx<'_> {
    /// kubectl, which must succeed; its output.
    pub(crate) fn kubectl(&self, args: &[&str]) -> String {
        let (ok, out) = self.node.kubectl(args);
        assert!(ok, "kubectl {args:?}:\n{out}");
        out
    }

    /// `kubectl apply -f` of `yaml`.
    pub(crate) fn apply(&self, yaml: &str) {
        let file = self.node.dir.join("apply.yaml");
        std::fs::write(&file, yaml).unwrap();
        self.kubectl(&["apply", "-f", &file.display().to_string()]);
    }

    /// Waits until every replica of the Deployment is updated and Ready; how long it took.
    pub(crate) async fn deployment_ready(&self, ns: &str, name: &str, limit: Duration) -> Duration {
        let api = Api::<Deployment>::namespaced(self.client.clone(), ns);
        let t = Instant::now();
        wait_for(&format!("deployment {ns}/{name} ready"), limit, || {
            let api = api.clone();
            async move {
                let d = api.get_opt(name).await.ok()??;
                let want = d.spec.replicas.unwrap_or(1);
                let s = d.status?;
                (s.ready_replicas.unwrap_or(0) == want
                    && s.updated_replicas.unwrap_or(0) == want
                    && s.replicas.unwrap_or(0) == want
                    && s.observed_generation == d.metadata.generation)
                    .then_some(())
            }
        })
        .await;
        t.elapsed()
    }

    /// Running, Ready pods `app=<app>` that are not being deleted: (name, IP).
    pub(crate) async fn ready_pods(&self, ns: &str, app: &str) -> Vec<(String, String)> {
        self.ready_pods_by(ns, &format!("app={app}")).await
    }

    /// Running, Ready pods matching the label `selector` that are not being deleted.
    pub(crate) async fn ready_pods_by(&self, ns: &str, selector: &str) -> Vec<(String, String)> {
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        let pods = api
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        pods.items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| {
                let ip = p.status.as_ref()?.pod_ip.clone()?;
                Some((p.metadata.name.unwrap_or_default(), ip))
            })
            .collect()
    }

    /// The one Ready pod `app=<app>`.
    pub(crate) async fn pod(&self, ns: &str, app: &str) -> (String, String) {
        let pods = self.ready_pods(ns, app).await;
        assert_eq!(pods.len(), 1, "one ready {app} pod: {pods:?}");
        pods.into_iter().next().unwrap()
    }
}

/// Polls `f` every 25 ms until it returns `Some`; the value and how long it took.
pub(crate) async fn within<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> (T, Duration) {
    let t = Instant::now();
    loop {
        if let Some(v) = f().await {
            return (v, t.elapsed());
        }
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
