//! The injector webhook: its MutatingWebhookConfiguration exists, the API server can
//! reach it (its Service has ready endpoints, or its URL answers), and its `caBundle`
//! holds the CA's active root — the webhook's serving certificate is issued under that
//! root (`vigil_controller::k8s::webhook`), so a bundle without it (stale after a root
//! change or a restore) makes every pod creation in an enrolled namespace fail TLS.

use std::time::Duration;

use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration},
    core::v1::Service,
    discovery::v1::EndpointSlice,
};
use kube::{Api, api::ListParams};

use super::ca_secret::pem_certs;
use crate::{
    check::{chart, get_opt, report::Check},
    cluster::{Cluster, ClusterError},
};

pub(super) const ID: &str = "webhook-config";
pub(super) const TITLE: &str = "injector webhook configured";
const REACH_ID: &str = "webhook-reachable";
const REACH_TITLE: &str = "injector webhook reachable";
const BUNDLE_ID: &str = "webhook-ca-bundle";
const BUNDLE_TITLE: &str = "webhook caBundle holds the CA root";
/// How long a URL webhook may take to accept a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

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

/// Through its Service: ready endpoints. Through a URL: a TCP connection from here.
async fn reachable(
    cluster: &Cluster,
    hook: &MutatingWebhook,
    ns: &str,
) -> Result<Check, ClusterError> {
    let logs = format!(
        "kubectl -n {ns} describe deployment {0}; kubectl -n {ns} logs deploy/{0}",
        chart::CONTROLLER
    );
    if let Some(url) = &hook.client_config.url {
        let target = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host()?, u.port_u16().unwrap_or(443))));
        let Some(target) = target else {
            return Ok(Check::fail(
                REACH_ID,
                REACH_TITLE,
                format!("URL {url} has no host"),
                "fix webhook.url in the chart's values",
            ));
        };
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&target)).await;
        return Ok(match connected {
            Ok(Ok(_)) => {
                Check::ok(REACH_ID, REACH_TITLE).with_detail(format!("{url} accepts connections"))
            }
            Ok(Err(e)) => Check::warn(
                REACH_ID,
                REACH_TITLE,
                format!("{url}: {e} (from this machine)"),
                format!(
                    "the API server must reach it: check the controller behind webhook.url runs; {logs}"
                ),
            ),
            Err(_) => Check::warn(
                REACH_ID,
                REACH_TITLE,
                format!(
                    "{url}: no answer in {} s (from this machine)",
                    CONNECT_TIMEOUT.as_secs()
                ),
                "the API server must reach it: check the controller behind webhook.url runs",
            ),
        });
    }
    let Some(svc) = &hook.client_config.service else {
        return Ok(Check::fail(
            REACH_ID,
            REACH_TITLE,
            "the webhook has neither a Service nor a URL",
            format!("reinstall: {}", chart::INSTALL),
        ));
    };
    let svc_ns = svc.namespace.as_str();
    let services = Api::<Service>::namespaced(cluster.client.clone(), svc_ns);
    let what = format!("services in namespace {svc_ns}");
    if get_opt(cluster, &services, &svc.name, &what)
        .await?
        .is_none()
    {
        return Ok(Check::fail(
            REACH_ID,
            REACH_TITLE,
            format!("no Service {svc_ns}/{}", svc.name),
            format!("reinstall: {}", chart::INSTALL),
        ));
    }
    let slices = Api::<EndpointSlice>::namespaced(cluster.client.clone(), svc_ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={}", svc.name)))
        .await
        .map_err(|e| {
            cluster.error(
                e,
                "list",
                &format!("endpointslices in namespace {svc_ns}"),
                None,
            )
        })?;
    let ready = slices
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count();
    Ok(if ready > 0 {
        Check::ok(REACH_ID, REACH_TITLE).with_detail(format!(
            "Service {svc_ns}/{}: {ready} ready endpoint(s)",
            svc.name
        ))
    } else {
        Check::fail(
            REACH_ID,
            REACH_TITLE,
            format!(
                "Service {svc_ns}/{} has no ready endpoints: no controller replica serves the webhook",
                svc.name
            ),
            logs,
        )
    })
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
