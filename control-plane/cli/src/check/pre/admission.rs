//! The API server serves `admissionregistration.k8s.io/v1`, so the chart's
//! MutatingWebhookConfiguration (the injector) can exist.

use crate::{
    check::report::Check,
    cluster::{Cluster, ClusterError, not_found},
};

pub(super) const ID: &str = "admission-webhooks";
pub(super) const TITLE: &str = "admission webhooks (admissionregistration.k8s.io/v1)";
const GROUP_VERSION: &str = "admissionregistration.k8s.io/v1";

/// Whether mutating webhook configurations are served.
pub(super) async fn check(cluster: &Cluster) -> Result<Vec<Check>, ClusterError> {
    let served = match cluster.client.list_api_group_resources(GROUP_VERSION).await {
        Ok(list) => list
            .resources
            .iter()
            .any(|r| r.name == "mutatingwebhookconfigurations"),
        Err(kube::Error::Api(s)) if not_found(&s) => false,
        Err(e) => return Err(cluster.error(e, "discover", GROUP_VERSION, None)),
    };
    Ok(vec![if served {
        Check::ok(ID, TITLE)
    } else {
        Check::fail(
            ID,
            TITLE,
            format!("{GROUP_VERSION} mutatingwebhookconfigurations is not served"),
            "enable it on the API server (--runtime-config=admissionregistration.k8s.io/v1=true, admission plugin MutatingAdmissionWebhook)",
        )
    }])
}
