//! The injector webhook: its MutatingWebhookConfiguration exists, the API server can
//! reach it (its Service has ready endpoints, or its URL answers), and its `caBundle`
//! holds the CA's active root — the webhook's serving certificate is issued under that
//! root (`vigil_controller::k8s::webhook`), so a bundle without it (stale after a root
//! change or a restore) makes every pod creation in an enrolled namespace fail TLS.

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use kube::Api;

use super::{ca_secret::pem_certs, webhook_reach::reachable};
use crate::{
    check::{chart, get_opt, report::Check},
    cluster::{Cluster, ClusterError},
};

pub(super) const ID: &str = "webhook-config";
pub(super) const TITLE: &str = "injector webhook configured";
const BUNDLE_ID: &str = "webhook-ca-bundle";
const BUNDLE_TITLE: &str = "webhook caBundle holds the CA root";

/// `webhook-config`, `webhook-reachable`, `webhook-ca-bundle`; `roots` are the CA
/// Secret's (DER, active first), `None` if it could not be read.
pub(super) async fn check(
    cluster: &Cluster,
    ns: &str,
    roots: Option<&[Vec<u8>]>,
) -> Result<Vec<Check>, ClusterError> {
    let api = Api::<MutatingWebhookConfiguration>::all(cluster.client.clone());
    let name = chart::WEBHOOK;
    let config = get_opt(cluster, &api, name, "mutatingwebhookconfigurations").await?;
    let Some(hook) = config
        .and_then(|c| c.webhooks)
        .and_then(|w| w.into_iter().next())
    else {
        return Ok(vec![Check::fail(
            ID,
            TITLE,
            format!(
                "no MutatingWebhookConfiguration {name} (or it has no webhook): pods are not injected"
            ),
            format!("install Vigil: {}", chart::INSTALL),
        )]);
    };
    let restart = format!(
        "kubectl -n {ns} rollout restart deployment/{} (the controller writes the caBundle on start)",
        chart::CONTROLLER
    );
    Ok(vec![
        Check::ok(ID, TITLE).with_detail(format!(
            "{name}, failurePolicy {}",
            hook.failure_policy.as_deref().unwrap_or("Fail")
        )),
        reachable(cluster, &hook, ns).await?,
        ca_bundle(&hook, roots, &restart),
    ])
}

/// Whether the caBundle holds the CA Secret's active root.
fn ca_bundle(hook: &MutatingWebhook, roots: Option<&[Vec<u8>]>, restart: &str) -> Check {
    let bundle = hook
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| pem_certs(&b.0))
        .unwrap_or_default();
    if bundle.is_empty() {
        return Check::fail(
            BUNDLE_ID,
            BUNDLE_TITLE,
            "the caBundle is empty: the API server cannot verify the webhook",
            restart,
        );
    }
    let Some(active) = roots.and_then(|r| r.first()) else {
        return Check::warn(
            BUNDLE_ID,
            BUNDLE_TITLE,
            "cannot compare: the CA Secret could not be read (see ca-secret)",
            "fix the CA Secret first",
        );
    };
    if bundle.contains(active) {
        Check::ok(BUNDLE_ID, BUNDLE_TITLE).with_detail(format!(
            "{} certificate(s), the active root among them",
            bundle.len()
        ))
    } else {
        Check::fail(
            BUNDLE_ID,
            BUNDLE_TITLE,
            format!(
                "stale: none of its {} certificate(s) is the CA's active root, so the API server rejects the webhook's certificate",
                bundle.len()
            ),
            restart,
        )
    }
}
