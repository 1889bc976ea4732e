//! The API server answers, its Kubernetes version is one the chart installs on
//! (`kubeVersion` in `charts/vigil/Chart.yaml`), and it runs native sidecars (the
//! injector's `auto` decides the same way: `vigil_controller::k8s::has_native_sidecars`).

use vigil_controller::k8s::{NATIVE_SIDECARS_MINOR, has_native_sidecars, version_of};

use crate::{
    check::{chart::MIN_MINOR, report::Check},
    cluster::{Cluster, ClusterError},
};

/// `api-server` and `native-sidecars`. The first request of the run: an API server that
/// does not answer is an error, not a check.
pub(super) async fn checks(cluster: &Cluster) -> Result<Vec<Check>, ClusterError> {
    let v = cluster
        .client
        .apiserver_version()
        .await
        .map_err(|e| cluster.error(e, "get", "the API server's /version", None))?;
    let title = "API server reachable, Kubernetes version supported";
    let found = format!("Kubernetes {}", v.git_version);
    let version = match version_of(&v) {
        Some((1, minor)) if minor < MIN_MINOR => Check::fail(
            "api-server",
            title,
            format!("{found} is older than the chart supports (>= 1.{MIN_MINOR})"),
            format!("upgrade the cluster to Kubernetes 1.{MIN_MINOR} or later"),
        ),
        Some(_) => Check::ok("api-server", title).with_detail(found.clone()),
        None => Check::warn(
            "api-server",
            title,
            format!(
                "{found}: cannot read major/minor {:?}/{:?}",
                v.major, v.minor
            ),
            format!("make sure the cluster runs Kubernetes 1.{MIN_MINOR} or later"),
        ),
    };
    let title = "native sidecars (restartable init containers)";
    let sidecars = if has_native_sidecars(&v) {
        Check::ok("native-sidecars", title)
    } else {
        Check::warn(
            "native-sidecars",
            title,
            format!(
                "not on {found}: the proxy is injected as the first regular container, whose postStart hook holds the app until the proxy is ready"
            ),
            format!(
                "upgrade to Kubernetes 1.{NATIVE_SIDECARS_MINOR} or later for native sidecars (the chart's injector.nativeSidecar=auto then uses them)"
            ),
        )
    };
    Ok(vec![version, sidecars])
}
