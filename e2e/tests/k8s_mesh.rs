//! The controller in Kubernetes mode against a real kube-apiserver, installed with the
//! Helm chart and running as the chart's ServiceAccount (its RBAC is what lets it work):
//!
//! - the CA lands in a Secret it creates, and survives a controller restart unchanged;
//! - the apiserver calls the injector webhook: an annotated Pod comes back with the
//!   sidecar, the init container and the token volume; an unannotated one unchanged;
//!   a re-created injected Pod is not injected twice;
//! - a TokenRequest-minted token (audience `vigil-ca`) for ServiceAccount `web` gets
//!   `spiffe://cluster.local/ns/<ns>/sa/web`; a token for another audience gets nothing;
//! - an AccessPolicy created through the API reaches the connected proxies as a new
//!   generation, changes their decisions (403 → 200 on a real mTLS request between two
//!   real proxies), and its status says Accepted and how many proxies enforce it.
//!
//! Pods never run (no kubelet): the test sets their IPs through the status subresource
//! and runs the proxies itself on loopback, as the injected containers would.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery::ApiResource,
};
use vigil_e2e::{
    apps, k8s,
    kube_procs::{
        ControllerPorts, controller_env, free_port, metric, policy_status, ready, spawn, wait_for,
        yaml,
    },
};

const TD: &str = "cluster.local";

fn containers(pod: &Pod) -> (Vec<String>, Vec<String>, Vec<String>) {
    let spec = pod.spec.as_ref().unwrap();
    (
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect(),
        spec.containers.iter().map(|c| c.name.clone()).collect(),
        spec.volumes
            .iter()
            .flatten()
            .map(|v| v.name.clone())
            .collect(),
    )
}

async fn mint(client: &Client, ns: &str, sa: &str, pod: &Pod, audience: &str) -> String {
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_string()]),
            expiration_seconds: Some(600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_end_to_end() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let admin = cluster.admin();
    k8s::install_crds(&admin).await;
    let dir = tempfile::tempdir().unwrap();

    // The chart, with the webhook pointed at this test's controller.
    let ports = ControllerPorts::free();
    let (grpc, webhook) = (ports.grpc, ports.webhook);
    cluster.install_chart(&format!("https://127.0.0.1:{webhook}/inject"), "Fail");

    // The controller, authenticated as the chart's ServiceAccount.
    let kc = dir.path().join("controller.kubeconfig");
    cluster.write_kubeconfig_for(k8s::CONTROLLER_TOKEN, &kc);
    let ctl_env = |state: &str| {
        controller_env(
            "vigil-controller-test",
            &kc,
            &dir.path().join(state),
            &ports,
        )
    };
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "vigil-system");
    let mut controller = spawn(
        "controller",
        "vigil-controller",
        &[],
        &ctl_env("state-1"),
        dir.path(),
    );
    let admin_addr = ports.admin_addr();
    ready("the controller's admin server", admin_addr).await;

    // 1. The CA is in a Secret the controller created; a restart (fresh state dir, as a
    //    new pod) loads it instead of making a new one.
    let ca_before = secrets.get("vigil-ca").await.unwrap().data.unwrap();
    assert!(ca_before.contains_key("ca.json"), "{:?}", ca_before.keys());
    drop(controller);
    controller = spawn(
        "controller",
        "vigil-controller",
        &[],
        &ctl_env("state-2"),
        dir.path(),
    );
    ready("the restarted controller", admin_addr).await;
    assert_eq!(
        secrets.get("vigil-ca").await.unwrap().data.unwrap(),
        ca_before,
        "the CA Secret must never be overwritten"
    );
    assert!(
        ca_before.keys().any(|k| k.starts_with("root-"))
            && ca_before.keys().any(|k| k.starts_with("issuer-")),
        "root and issuer in the Secret: {:?}",
        ca_before.keys()
    );

    // 2. The webhook's caBundle is the CA root bundle.
    let mwc: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let bundle = wait_for("the caBundle patch", Duration::from_secs(30), || async {
        let c = mwc.get("vigil-injector").await.ok()?;
        let b = c.webhooks?.first()?.client_config.ca_bundle.clone()?;
        (!b.0.is_empty()).then(|| String::from_utf8(b.0).unwrap())
    })
    .await;
    assert!(bundle.contains("BEGIN CERTIFICATE"));

    // 3. Injection, as the apiserver performs it.
    let ns = cluster.namespace("shop").await;
    let nss: Api<Namespace> = Api::all(admin.clone());
    nss.patch(
        &ns,
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"metadata": {"annotations": {"vigil.dev/inject": "enabled"}}}),
        ),
    )
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    for sa in ["web", "cli"] {
        sas.create(
            &PostParams::default(),
            &yaml(&format!("metadata: {{name: {sa}}}")),
        )
        .await
        .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let pod_doc = |name: &str, sa: &str, port: u16| -> Pod {
        yaml(&format!(
            "metadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    image: example/{name}\n    ports: [{{containerPort: {port}}}]\n    readinessProbe: {{httpGet: {{path: /healthz, port: {port}}}}}\n"
        ))
    };
    // The namespace cache may lag the annotation by a moment: retry a dry run.
    wait_for("the webhook to inject", Duration::from_secs(60), || async {
        let pp = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let p = pods.create(&pp, &pod_doc("probe", "web", 1)).await.ok()?;
        containers(&p)
            .0
            .contains(&"vigil-proxy".to_string())
            .then_some(())
    })
    .await;
    let (web_port, cli_port) = (free_port(), free_port());
    let web = pods
        .create(&PostParams::default(), &pod_doc("web", "web", web_port))
        .await
        .unwrap();
    let (init, main, volumes) = containers(&web);
    assert_eq!(
        init,
        ["vigil-init", "vigil-proxy"],
        "native sidecar after the iptables init container"
    );
    assert_eq!(main, ["app"]);
    assert!(volumes.contains(&"vigil-token".to_string()), "{volumes:?}");
    let spec = web.spec.clone().unwrap();
    let sidecar = spec
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == "vigil-proxy")
        .unwrap();
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    let env: std::collections::BTreeMap<_, _> = sidecar
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        env["VIGIL_PROXY_PROBE_ROUTES"],
        format!("{web_port}:/healthz"),
        "the kubelet's probe is declared"
    );
    assert_eq!(
        env["VIGIL_PROXY_TRUST_ANCHORS"].trim(),
        bundle.trim(),
        "the proxy trusts the CA root"
    );
    let token_vol = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "vigil-token")
        .unwrap();
    let projected = serde_json::to_value(token_vol).unwrap();
    assert_eq!(
        projected["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "vigil-ca"
    );
    let init_caps =
        serde_json::to_value(&spec.init_containers.as_ref().unwrap()[0].security_context).unwrap();
    assert_eq!(
        init_caps["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );

    // Not enrolled: unchanged.
    let plain_ns = cluster.namespace("plain").await;
    let plain = Api::<Pod>::namespaced(admin.clone(), &plain_ns)
        .create(&PostParams::default(), &yaml("metadata: {name: plain}\nspec:\n  containers:\n  - {name: app, image: example/plain}\n"))
        .await
        .unwrap();
    let (init, main, _) = containers(&plain);
    assert!(init.is_empty() && main == ["app"], "{init:?} {main:?}");
    assert!(!containers(&plain).2.iter().any(|v| v == "vigil-token"));
    assert!(
        !plain
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("vigil.dev/injected")
    );

    // Re-created from an injected spec: still one sidecar.
    let mut again: Pod = yaml(&serde_json::to_string(&web).unwrap());
    again.metadata = yaml("name: web-again");
    let again = pods.create(&PostParams::default(), &again).await.unwrap();
    let (init, main, _) = containers(&again);
    assert_eq!(
        init.iter().filter(|c| *c == "vigil-proxy").count()
            + main.iter().filter(|c| *c == "vigil-proxy").count(),
        1,
        "{init:?} {main:?}"
    );

    let cli = pods
        .create(&PostParams::default(), &pod_doc("cli", "cli", cli_port))
        .await
        .unwrap();
    // No kubelet: the test gives the pods their IP and phase.
    for p in ["web", "cli"] {
        pods.patch_status(p, &PatchParams::default(), &Patch::Merge(serde_json::json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}})))
            .await
            .unwrap();
    }

    // 4. Tokens from the TokenRequest API, as the kubelet would project them.
    let web_token = dir.path().join("web.token");
    std::fs::write(&web_token, mint(&admin, &ns, "web", &web, "vigil-ca").await).unwrap();
    let cli_token = dir.path().join("cli.token");
    std::fs::write(&cli_token, mint(&admin, &ns, "cli", &cli, "vigil-ca").await).unwrap();
    let wrong_token = dir.path().join("wrong.token");
    std::fs::write(
        &wrong_token,
        mint(&admin, &ns, "web", &web, "https://kubernetes.default.svc").await,
    )
    .unwrap();

    let app_port = free_port();
    tokio::spawn(apps::http_app("web", app_port));
    let (web_in, web_admin, cli_admin, cli_route) =
        (free_port(), free_port(), free_port(), free_port());
    let proxy_env = |workload: &str, token: &Path, admin: u16| -> Vec<(&'static str, String)> {
        vec![
            ("VIGIL_PROXY_CONTROLLER", format!("127.0.0.1:{grpc}")),
            (
                "VIGIL_PROXY_CONTROLLER_IDENTITY",
                format!("spiffe://{TD}/ns/vigil-system/sa/vigil-controller"),
            ),
            ("VIGIL_PROXY_WORKLOAD", format!("{ns}/{workload}")),
            ("VIGIL_PROXY_TRUST_ANCHORS", bundle.clone()),
            (
                "VIGIL_PROXY_SERVICE_ACCOUNT_TOKEN_FILE",
                token.display().to_string(),
            ),
            ("VIGIL_PROXY_OUTBOUND", "127.0.0.1:0".into()),
            ("VIGIL_PROXY_ADMIN", format!("127.0.0.1:{admin}")),
        ]
    };
    let mut web_env = proxy_env("web", &web_token, web_admin);
    web_env.push(("VIGIL_PROXY_INBOUND", format!("127.0.0.1:{web_in}")));
    web_env.push(("VIGIL_PROXY_APP", format!("127.0.0.1:{app_port}")));
    let _web_proxy = spawn("web-proxy", "vigil-proxy", &["run"], &web_env, dir.path());
    let mut cli_env = proxy_env("cli", &cli_token, cli_admin);
    cli_env.push(("VIGIL_PROXY_INBOUND", "127.0.0.1:0".into()));
    cli_env.push((
        "VIGIL_PROXY_OUTBOUND_ROUTES",
        format!("127.0.0.1:{cli_route}=127.0.0.1:{web_in},spiffe://{TD}/ns/{ns}/sa/web"),
    ));
    let _cli_proxy = spawn("cli-proxy", "vigil-proxy", &["run"], &cli_env, dir.path());
    let wrong_admin = free_port();
    let mut wrong_env = proxy_env("web", &wrong_token, wrong_admin);
    wrong_env.push(("VIGIL_PROXY_INBOUND", "127.0.0.1:0".into()));
    let _wrong_proxy = spawn(
        "wrong-audience-proxy",
        "vigil-proxy",
        &["run"],
        &wrong_env,
        dir.path(),
    );

    // Tokens that authenticate, but not as the workload they claim: cli's token used for
    // workload web, and a token of web's service account bound to another pod.
    let other_pod = pods.get("web-again").await.unwrap();
    let other_pod_token = dir.path().join("other-pod.token");
    std::fs::write(
        &other_pod_token,
        mint(&admin, &ns, "web", &other_pod, "vigil-ca").await,
    )
    .unwrap();
    let mut impostors = Vec::new();
    for (name, token) in [
        ("stolen-token-proxy", &cli_token),
        ("other-pod-token-proxy", &other_pod_token),
    ] {
        let port = free_port();
        let mut env = proxy_env("web", token, port);
        env.push(("VIGIL_PROXY_INBOUND", "127.0.0.1:0".into()));
        impostors.push((
            spawn(name, "vigil-proxy", &["run"], &env, dir.path()),
            port,
            name,
        ));
    }

    for (name, admin) in [("web", web_admin), ("cli", cli_admin)] {
        let a: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        ready(
            &format!("the {name} proxy to be ready (SVID from its token)"),
            a,
        )
        .await;
    }
    let ctl_metrics: SocketAddr = admin_addr;
    let issued = metric(
        ctl_metrics,
        "vigil_controller_certificates_issued_total{kind=\"service_account_token\"}",
    )
    .await;
    assert!(issued >= 2.0, "SVIDs issued for SA tokens: {issued}");
    wait_for(
        "the wrong-audience token to be refused",
        Duration::from_secs(20),
        || async {
            let n = metric(
                ctl_metrics,
                "vigil_controller_certificate_requests_refused_total{reason=\"bad_token\"}",
            )
            .await;
            (n >= 1.0).then_some(())
        },
    )
    .await;
    let wrong_ready = apps::get(
        format!("127.0.0.1:{wrong_admin}").parse().unwrap(),
        "/ready",
    )
    .await;
    assert!(
        !wrong_ready.is_ok_and(|(s, _)| s.is_success()),
        "a token for another audience must not yield an SVID"
    );

    wait_for(
        "both impostors to be refused",
        Duration::from_secs(20),
        || async {
            let n = metric(
                ctl_metrics,
                "vigil_controller_certificate_requests_refused_total{reason=\"wrong_identity\"}",
            )
            .await;
            (n >= 2.0).then_some(())
        },
    )
    .await;
    let told = [
        format!("the token is for service account {ns}/cli, but workload {ns}/web runs as"),
        format!("the token is bound to pod web-again, not {ns}/web"),
    ];
    for ((proc, port, name), why) in impostors.into_iter().zip(told) {
        let r = apps::get(format!("127.0.0.1:{port}").parse().unwrap(), "/ready").await;
        assert!(
            !r.is_ok_and(|(s, _)| s.is_success()),
            "{name}: a token for another workload must not yield its SVID"
        );
        let log = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
        assert!(log.contains(&why), "{name} should be told {why:?}:\n{log}");
        drop(proc);
    }

    // 5. Default deny, then an AccessPolicy through the API.
    let route: SocketAddr = format!("127.0.0.1:{cli_route}").parse().unwrap();
    let (status, _) = apps::get(route, "/orders").await.unwrap();
    assert_eq!(status, 403, "no policy: denied");
    let web_metrics: SocketAddr = format!("127.0.0.1:{web_admin}").parse().unwrap();
    let gen_before = metric(web_metrics, "vigil_proxy_policy_generation").await;
    let ap = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.vigil.dev", "v1alpha1", "AccessPolicy"),
        "accesspolicies",
    );
    let policies: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &ap);
    let mut policy: DynamicObject = yaml(&format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: cli-reads-web}}\nspec:\n  target: {{podSelector: {{matchLabels: {{app: web}}}}}}\n  action: Allow\n  from: [{{serviceAccount: {ns}/cli}}]\n  rules: [{{methods: [GET], paths: [{{prefix: /orders}}]}}]\n"
    ));
    policy.metadata.namespace = Some(ns.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let created = Instant::now();
    let body = wait_for(
        "the policy to allow the call",
        Duration::from_secs(15),
        || async {
            apps::get(route, "/orders")
                .await
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|(_, b)| b)
        },
    )
    .await;
    let allowed_after = created.elapsed();
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply["peer"],
        format!("spiffe://{TD}/ns/{ns}/sa/cli"),
        "the caller's identity comes from its SA token"
    );
    assert!(
        metric(web_metrics, "vigil_proxy_policy_generation").await > gen_before,
        "a new snapshot generation"
    );
    assert_eq!(
        apps::get(route, "/admin").await.unwrap().0,
        403,
        "outside the rule: still denied"
    );

    // 6. Its status, written by the leader.
    let status = wait_for(
        "the AccessPolicy status",
        Duration::from_secs(20),
        || async {
            let p = policies.get("cli-reads-web").await.ok()?;
            let s = p.data.get("status")?.clone();
            (s["enforcingProxies"].as_u64()? >= 1 && s["conditions"][0]["status"] == "True")
                .then_some(s)
        },
    )
    .await;
    eprintln!(
        "AccessPolicy created through the API: calls allowed after {allowed_after:?}, status Accepted with {} enforcing proxies after {:?}",
        status["enforcingProxies"],
        created.elapsed()
    );
    assert_eq!(status["conditions"][0]["type"], "Accepted");
    assert_eq!(status["targetWorkloads"], 1);
    assert_eq!(status["observedGeneration"], 1);

    // A policy the apiserver accepts but the compiler cannot (a bad regex): its status
    // says why, and a Warning event says so too.
    let mut broken: DynamicObject = yaml(&format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: broken}}\nspec:\n  target: {{podSelector: {{matchLabels: {{app: web}}}}}}\n  action: Allow\n  from: [{{serviceAccount: {ns}/cli}}]\n  rules: [{{headers: [{{name: x-tenant, regex: \"(unclosed\"}}]}}]\n"
    ));
    broken.metadata.namespace = Some(ns.clone());
    policies
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    let rejected = wait_for("the rejected status", Duration::from_secs(20), || {
        policy_status(&policies, "broken", "False")
    })
    .await;
    assert_eq!(rejected["conditions"][0]["reason"], "Invalid");
    assert!(
        !rejected["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{rejected}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), &ns);
    wait_for(
        "the PolicyRejected event",
        Duration::from_secs(20),
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("PolicyRejected")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        apps::get(route, "/orders").await.unwrap().0,
        200,
        "the valid policy still applies"
    );

    // A Quarantine through the API cuts the caller off, with an Event.
    let q = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.vigil.dev", "v1alpha1", "Quarantine"),
        "quarantines",
    );
    let mut quarantine: DynamicObject = yaml(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Quarantine\nmetadata: {name: cli-compromised}\nspec: {serviceAccount: cli, reason: e2e}\n",
    );
    quarantine.metadata.namespace = Some(ns.clone());
    Api::<DynamicObject>::namespaced_with(admin.clone(), &ns, &q)
        .create(&PostParams::default(), &quarantine)
        .await
        .unwrap();
    wait_for(
        "the quarantine to deny the caller",
        Duration::from_secs(15),
        || async {
            match apps::get(route, "/orders").await {
                Ok((s, _)) if s == 200 => None,
                _ => Some(()),
            }
        },
    )
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), &ns);
    wait_for(
        "the QuarantineApplied event",
        Duration::from_secs(20),
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("QuarantineApplied"))
                .then_some(())
        },
    )
    .await;
    let _ = pods.delete("web-again", &DeleteParams::default()).await;
    drop(controller);
}
