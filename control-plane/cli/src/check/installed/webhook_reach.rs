//! Whether the API server can reach the injector webhook: through its Service, the
//! Service exists and has ready endpoints (a controller replica passed its readiness
//! probe); through a URL (`webhook.url`, a controller outside the cluster), the URL
//! accepts a TCP connection from here — a warning only if not, since this machine may
//! not see the network the API server sees.

use std::time::Duration;

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhook, core::v1::Service, discovery::v1::EndpointSlice,
};
use kube::{Api, api::ListParams};

use crate::{
    check::{chart, get_opt, report::Check},
    cluster::{Cluster, ClusterError},
};

const REACH_ID: &str = "webhook-reachable";
const REACH_TITLE: &str = "injector webhook reachable";
/// How long a URL webhook may take to accept a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Through its Service: ready endpoints. Through a URL: a TCP connection from here.
pub(super) async fn reachable(
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
