//! The API server answers, its Kubernetes version is one the chart installs on
//! (`kubeVersion` in `charts/vigil/Chart.yaml`), and it runs native sidecars (the
//! injector's `auto` decides the same way: `vigil_controller::k8s::has_native_sidecars`).

use k8s_openapi::apimachinery::pkg::version::Info;
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
    Ok(judge(&v))
}

/// The two checks for the version the API server reports.
fn judge(v: &Info) -> Vec<Check> {
    let title = "API server reachable, Kubernetes version supported";
    let found = format!("Kubernetes {}", v.git_version);
    let version = match version_of(v) {
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
    let sidecars = if has_native_sidecars(v) {
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
    vec![version, sidecars]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Outcome;

    fn info(minor: &str) -> Info {
        Info {
            major: "1".into(),
            minor: minor.into(),
            git_version: format!("v1.{minor}.0"),
            ..Info::default()
        }
    }

    #[test]
    fn too_old_fails_without_native_sidecars_warns() {
        let outcomes = |minor| {
            judge(&info(minor))
                .iter()
                .map(|c| c.outcome)
                .collect::<Vec<_>>()
        };
        assert_eq!(outcomes("27"), [Outcome::Fail, Outcome::Warn]);
        assert_eq!(outcomes("28+"), [Outcome::Ok, Outcome::Warn]);
        assert_eq!(outcomes("29"), [Outcome::Ok, Outcome::Ok]);
        let old = judge(&info("27"));
        assert_eq!(
            old[0].detail.as_deref(),
            Some("Kubernetes v1.27.0 is older than the chart supports (>= 1.28)")
        );
        assert_eq!(
            old[0].fix.as_deref(),
            Some("upgrade the cluster to Kubernetes 1.28 or later")
        );
    }
}
