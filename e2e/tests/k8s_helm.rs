//! The Helm chart against the real kube-apiserver (`k8s_chart.rs` checks the rendering
//! itself): every rendered object is accepted by the apiserver (server-side dry run),
//! `helm install` works without `--wait` and `helm uninstall` keeps the CA, and the
//! chart's RBAC gives the controller exactly what it needs — requests authenticated as
//! the chart's ServiceAccount are refused (403) what it must not do.
//!
//! One apiserver for this binary. Only `install_uninstall_and_least_privilege_rbac`
//! changes cluster state; the dry run uses server-side apply (`dryRun=All`, forced), which
//! validates whether or not the release is installed at that moment, so the tests run in
//! parallel.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::{
    api::{
        admissionregistration::v1::MutatingWebhookConfiguration,
        apps::v1::Deployment,
        authentication::v1::{TokenReview, TokenReviewSpec},
        authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        },
        coordination::v1::Lease,
        core::v1::{ConfigMap, Event, Namespace, Pod, Secret, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{
        DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
        WatchParams,
    },
    discovery::{ApiResource, Scope},
};
use serde_json::{Value, json};
use vigil_e2e::chart::{NS, chart, ha_values, template};
use vigil_e2e::k8s;

const CRDS: [&str; 3] = [
    "accesspolicies.policy.vigil.dev",
    "quarantines.policy.vigil.dev",
    "segments.policy.vigil.dev",
];

/// Server-side apply with `dryRun=All` (forced) of every rendered object: the
/// apiserver's full validation and admission, whether or not the release is installed.
async fn dry_run(client: &Client, docs: &[Value]) -> usize {
    let mut n = 0;
    for doc in docs {
        let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let types = obj.types.clone().unwrap();
        let (group, version) = match types.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), types.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &types.kind);
        let (ar, caps): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{gvk:?} is not served: {e}"));
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = obj.metadata.namespace.as_deref();
            assert_eq!(ns, Some(NS), "{} without the release namespace", types.kind);
            Api::namespaced_with(client.clone(), NS, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let name = obj.metadata.name.clone().unwrap();
        let mut pp = PatchParams::apply("vigil-e2e-dry-run").force();
        pp.dry_run = true;
        api.patch(&name, &pp, &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("the apiserver refused {} {name}: {e}", types.kind));
        n += 1;
    }
    n
}

async fn ensure_namespace(client: &Client, name: &str) {
    let r = Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await;
    match r {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_is_accepted_by_the_apiserver() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let admin = cluster.admin();
    ensure_namespace(&admin, NS).await;
    let ha = ha_values();
    for (what, extra) in [
        ("default values", vec![]),
        ("values-ha.yaml", vec!["-f", ha.as_str()]),
        (
            "webhook URL, selectors, PDB",
            vec![
                "--set",
                "webhook.url=https://127.0.0.1:9443/inject,podDisruptionBudget.enabled=true",
                "--set-json",
                r#"webhook.namespaceSelector={"matchLabels":{"mesh":"on"}}"#,
                "--set-json",
                r#"webhook.objectSelector={"matchLabels":{"app":"x"}}"#,
            ],
        ),
    ] {
        let docs = template(cluster, &extra);
        let n = dry_run(&admin, &docs).await;
        assert_eq!(n, docs.len(), "{what}");
        assert!(
            n >= 9,
            "{what}: {n} objects (the CRDs are checked by k8s_crds.rs)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The installed release and the controller's permissions.

/// (verb, resource[.group][/subresource], namespace, name, allowed)
type Access<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, bool);

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// What the apiserver's authorizer says about the controller doing `verb` on
/// `group/resource[/subresource]` (in `ns`, named `name`): a SelfSubjectAccessReview
/// made with the controller's own credentials.
async fn can(
    ctl: &Client,
    verb: &str,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> bool {
    // "accesspolicies.policy.vigil.dev/status" -> group, resource, subresource
    let (rest, sub) = resource
        .split_once('/')
        .map_or((resource, None), |(r, s)| (r, Some(s.to_string())));
    let (res, group) = rest.split_once('.').unwrap_or((rest, ""));
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(res.into()),
                subresource: sub,
                namespace: ns.map(String::from),
                name: name.map(String::from),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(ctl.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_uninstall_and_least_privilege_rbac() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let admin = cluster.admin();
    let chart = chart();

    // Install (no --wait: nothing runs without a kubelet). The webhook points at a dead
    // loopback port, never at a Service (the apiserver must only dial loopback here), and
    // failurePolicy is Ignore: no controller answers in this test, and pods of other tests
    // and namespaces must still be created.
    let started = std::time::Instant::now();
    let out = cluster.helm_ok(&[
        "install",
        "vigil",
        &chart,
        "-n",
        NS,
        "--create-namespace",
        "--set",
        "webhook.url=https://127.0.0.1:1/inject",
        "--set",
        "webhook.failurePolicy=Ignore",
    ]);
    for words in [
        "STATUS: deployed",
        "kubectl annotate namespace <ns> vigil.dev/inject=enabled",
        "vigil status",
        "helm never creates or deletes it",
    ] {
        assert!(out.contains(words), "NOTES.txt: {words:?} missing:\n{out}");
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("helm install: {:.2} s", started.elapsed().as_secs_f64());
    }

    // What the release created.
    Api::<Deployment>::namespaced(admin.clone(), NS)
        .get("vigil-controller")
        .await
        .unwrap();
    let svc = Api::<Service>::namespaced(admin.clone(), NS)
        .get("vigil-controller")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap().len(), 3);
    Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .get("vigil-controller")
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .get("vigil-controller-injector")
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .get("vigil-controller")
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .get("vigil-controller")
        .await
        .unwrap();
    Api::<Role>::namespaced(admin.clone(), NS)
        .get("vigil-controller")
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), NS)
        .get("vigil-controller")
        .await
        .unwrap();
    let mwcs = Api::<MutatingWebhookConfiguration>::all(admin.clone());
    let hook = mwcs.get("vigil-injector").await.unwrap().webhooks.unwrap()[0].clone();
    assert_eq!(
        hook.client_config.url.as_deref(),
        Some("https://127.0.0.1:1/inject")
    );
    assert!(
        hook.client_config.service.is_none(),
        "tests must never make the apiserver dial a Service IP"
    );
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    // The CRDs come from the chart's crds/ (nothing else in this binary installs them).
    let crds = Api::<CustomResourceDefinition>::all(admin.clone());
    for name in CRDS {
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(
                crds.clone(),
                name,
                kube::runtime::conditions::is_crd_established(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established in 30 s"))
        .unwrap();
    }
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    assert!(
        secrets.get_opt("vigil-ca").await.unwrap().is_none(),
        "the chart must not create the CA Secret"
    );
    // A pod in an ordinary namespace is still created (failurePolicy Ignore).
    let other = cluster.namespace("tenant").await;
    let victim: Pod = serde_json::from_value(
        json!({"metadata": {"name": "victim"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}),
    )
    .unwrap();
    Api::<Pod>::namespaced(admin.clone(), &other)
        .create(&PostParams::default(), &victim)
        .await
        .unwrap();

    // ---- RBAC, as the controller: what it needs, with real requests.
    let ctl = cluster.as_controller();
    Api::<Pod>::all(ctl.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    drop(
        Api::<Namespace>::all(ctl.clone())
            .watch(&WatchParams::default().timeout(1), "0")
            .await
            .unwrap(),
    );
    Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::all(ctl.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<ServiceAccount>::all(ctl.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let ap = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.vigil.dev", "v1alpha1", "AccessPolicy"),
        "accesspolicies",
    );
    Api::<DynamicObject>::all_with(ctl.clone(), &ap)
        .list(&ListParams::default())
        .await
        .unwrap();
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: "not-a-token".into(),
            audiences: Some(vec!["vigil-ca".into()]),
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(ctl.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    assert_ne!(reviewed.status.unwrap().authenticated, Some(true));
    let leases: Api<Lease> = Api::namespaced(ctl.clone(), NS);
    leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "vigil-controller"}})).unwrap(),
        )
        .await
        .unwrap();
    leases.get("vigil-controller").await.unwrap();
    leases
        .patch(
            "vigil-controller",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "vigil-controller-0"}})),
        )
        .await
        .unwrap();
    let ctl_secrets: Api<Secret> = Api::namespaced(ctl.clone(), NS);
    ctl_secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "vigil-ca"}, "stringData": {"ca.json": "{}"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    ctl_secrets.get("vigil-ca").await.unwrap();
    // Its own webhook configuration: read and patch (the caBundle).
    let ctl_mwcs = Api::<MutatingWebhookConfiguration>::all(ctl.clone());
    ctl_mwcs.get("vigil-injector").await.unwrap();
    ctl_mwcs
        .patch(
            "vigil-injector",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle",
                  "value": k8s_b64(cluster.ca_pem.as_bytes())}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    // Events about the objects it watches.
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "victim.vigil"},
        "involvedObject": {"kind": "Pod", "name": "victim", "namespace": other},
        "reason": "Enrolled", "message": "test", "type": "Normal"
    }))
    .unwrap();
    Api::<Event>::namespaced(ctl.clone(), &other)
        .create(&PostParams::default(), &event)
        .await
        .unwrap();

    // ---- ...and what it must not do, with real requests.
    Api::<Secret>::namespaced(admin.clone(), &other)
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "db-password"}, "stringData": {"p": "hunter2"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    forbidden(
        Api::<Secret>::namespaced(ctl.clone(), &other)
            .get("db-password")
            .await,
        "reading a Secret in another namespace",
    );
    forbidden(
        Api::<Secret>::all(ctl.clone())
            .list(&ListParams::default())
            .await,
        "listing Secrets cluster-wide",
    );
    forbidden(
        ctl_secrets.list(&ListParams::default()).await,
        "listing Secrets in its own namespace",
    );
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    forbidden(
        ctl_secrets.get("unrelated").await,
        "reading another Secret in its own namespace",
    );
    forbidden(
        ctl_secrets
            .delete("vigil-ca", &DeleteParams::default())
            .await,
        "deleting the CA Secret",
    );
    let ctl_pods = Api::<Pod>::namespaced(ctl.clone(), &other);
    let mut x = victim.clone();
    x.metadata.name = Some("x".into());
    forbidden(
        ctl_pods.create(&PostParams::default(), &x).await,
        "creating pods",
    );
    forbidden(
        ctl_pods.delete("victim", &DeleteParams::default()).await,
        "deleting pods",
    );
    forbidden(
        ctl_pods
            .patch(
                "victim",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        "patching pods",
    );
    let mut policy: DynamicObject = serde_saphyr::from_str(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec: {target: {segment: a}, action: Allow, from: [{authenticated: true}]}\n",
    )
    .unwrap();
    policy.metadata.namespace = Some(other.clone());
    Api::<DynamicObject>::namespaced_with(admin.clone(), &other, &ap)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let ctl_policies = Api::<DynamicObject>::namespaced_with(ctl.clone(), &other, &ap);
    forbidden(
        ctl_policies
            .patch(
                "p",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"action": "Deny"}})),
            )
            .await,
        "changing a policy's spec",
    );
    forbidden(
        ctl_policies.delete("p", &DeleteParams::default()).await,
        "deleting a policy",
    );
    ctl_policies
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .unwrap();
    let other_hook: MutatingWebhookConfiguration =
        serde_json::from_value(json!({"metadata": {"name": "someone-else"}, "webhooks": []}))
            .unwrap();
    mwcs.create(&PostParams::default(), &other_hook)
        .await
        .unwrap();
    forbidden(
        ctl_mwcs
            .patch(
                "someone-else",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        "patching another webhook configuration",
    );
    forbidden(
        ctl_mwcs
            .delete("vigil-injector", &DeleteParams::default())
            .await,
        "deleting its own webhook configuration",
    );
    forbidden(
        Api::<Lease>::namespaced(ctl.clone(), "kube-system")
            .get("kube-controller-manager")
            .await,
        "reading leases outside its own",
    );

    // ---- The whole matrix, from the authorizer (SelfSubjectAccessReview as the
    // controller): (verb, resource[.group][/subresource], namespace, name, allowed).
    let o = Some(other.as_str());
    let ns = Some(NS);
    #[rustfmt::skip]
    let matrix: &[Access<'_>] = &[
        ("watch", "pods", None, None, true),
        ("watch", "namespaces", None, None, true),
        ("watch", "serviceaccounts", None, None, true),
        ("watch", "services", None, None, true),
        ("watch", "endpointslices.discovery.k8s.io", None, None, true),
        ("watch", "segments.policy.vigil.dev", None, None, true),
        ("watch", "quarantines.policy.vigil.dev", None, None, true),
        ("update", "accesspolicies.policy.vigil.dev/status", o, Some("p"), true),
        ("patch", "segments.policy.vigil.dev/status", o, Some("s"), true),
        ("create", "tokenreviews.authentication.k8s.io", None, None, true),
        ("create", "events", o, None, true),
        ("patch", "events.events.k8s.io", o, Some("e"), true),
        ("create", "secrets", ns, None, true),
        ("update", "secrets", ns, Some("vigil-ca"), true),
        ("update", "leases.coordination.k8s.io", ns, Some("vigil-controller"), true),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None, Some("vigil-injector"), true),
        // refused
        ("get", "secrets", o, Some("db-password"), false),
        ("list", "secrets", None, None, false),
        ("watch", "secrets", ns, None, false),
        ("get", "secrets", ns, Some("unrelated"), false),
        ("delete", "secrets", ns, Some("vigil-ca"), false),
        ("create", "secrets", o, None, false),
        ("get", "configmaps", ns, Some("vigil-controller-injector"), false),
        ("create", "pods", o, None, false),
        ("update", "pods", o, Some("victim"), false),
        ("delete", "pods", o, Some("victim"), false),
        ("create", "pods/exec", o, Some("victim"), false),
        ("create", "pods/eviction", o, Some("victim"), false),
        ("create", "serviceaccounts/token", o, Some("default"), false),
        ("update", "namespaces", None, Some("default"), false),
        ("list", "nodes", None, None, false),
        ("create", "accesspolicies.policy.vigil.dev", o, None, false),
        ("update", "accesspolicies.policy.vigil.dev", o, Some("p"), false),
        ("delete", "quarantines.policy.vigil.dev", o, Some("q"), false),
        ("update", "leases.coordination.k8s.io", ns, Some("other"), false),
        ("delete", "leases.coordination.k8s.io", ns, Some("vigil-controller"), false),
        ("create", "leases.coordination.k8s.io", Some("kube-system"), None, false),
        ("list", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None, None, false),
        ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None, None, false),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None, Some("someone-else"), false),
        ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io", None, None, false),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None, None, false),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", None, Some("vigil-controller"), false),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", None, None, false),
        ("impersonate", "serviceaccounts", o, Some("default"), false),
    ];
    let mut wrong = Vec::new();
    for &(verb, resource, ns, name, want) in matrix {
        if can(&ctl, verb, resource, ns, name).await != want {
            wrong.push(format!(
                "{verb} {resource} ns={ns:?} name={name:?}: expected {}",
                if want { "allowed" } else { "refused" }
            ));
        }
    }
    assert!(wrong.is_empty(), "RBAC:\n{}", wrong.join("\n"));

    // ---- helm uninstall removes the release but never the CA Secret or the CRDs
    // (and with them every policy).
    cluster.helm_ok(&["uninstall", "vigil", "-n", NS]);
    assert!(
        mwcs.get_opt("vigil-injector").await.unwrap().is_none(),
        "the webhook configuration goes with the release"
    );
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), NS)
            .get_opt("vigil-controller")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        secrets.get_opt("vigil-ca").await.unwrap().is_some(),
        "helm uninstall deleted the CA Secret"
    );
    for name in CRDS {
        assert!(
            crds.get_opt(name).await.unwrap().is_some(),
            "{name} deleted"
        );
    }
    Api::<DynamicObject>::namespaced_with(admin.clone(), &other, &ap)
        .get("p")
        .await
        .unwrap();
}

fn k8s_b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
