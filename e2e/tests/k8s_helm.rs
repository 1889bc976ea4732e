//! The Helm chart against real Helm and the real kube-apiserver: lint clean (default and
//! HA values), bad values refused by the schema, every rendered object accepted by the
//! apiserver (server-side dry run), `helm install` works without `--wait`, and the
//! chart's RBAC gives the controller exactly what it needs — a test authenticates as
//! the chart's ServiceAccount and is refused what it must not do.

#![allow(clippy::unwrap_used)]

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    authentication::v1::{TokenReview, TokenReviewSpec},
    coordination::v1::Lease,
    core::v1::{Namespace, Pod, Secret},
};
use kube::{
    Api, Client,
    api::{
        DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    },
    discovery::{ApiResource, Scope},
};
use vigil_e2e::k8s;

const NS: &str = "vigil-system";

fn chart() -> String {
    k8s::repo_root().join("charts/vigil").display().to_string()
}

fn ha_values() -> String {
    k8s::repo_root()
        .join("charts/vigil/values-ha.yaml")
        .display()
        .to_string()
}

#[test]
fn the_chart_lints_clean_and_its_schema_refuses_bad_values() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let (chart, ha) = (chart(), ha_values());
    for extra in [vec![], vec!["-f", ha.as_str()]] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend(extra.iter().copied());
        let (ok, out) = cluster.helm(&args);
        assert!(ok && out.contains("0 chart(s) failed"), "{out}");
    }
    for (set, want) in [
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("replicas=0", "replicas"),
        ("defaultPolicy=allow-all", "defaultPolicy"),
        ("injector.nativeSidecar=maybe", "nativeSidecar"),
        ("webhook.url=http://127.0.0.1:9443/inject", "url"),
        ("replicaz=3", "replicaz"),
    ] {
        let (ok, out) = cluster.helm(&["lint", &chart, "--set", set]);
        assert!(!ok, "{set} accepted:\n{out}");
        assert!(out.contains(want), "{set}: {out}");
    }
}

/// Every object `helm template` renders, created with `dryRun=All`.
async fn dry_run(client: &Client, rendered: &str) -> usize {
    let mut n = 0;
    for doc in rendered.split("\n---") {
        let body: String = doc
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        if body.trim().is_empty() {
            continue;
        }
        let obj: DynamicObject =
            serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        let types = obj.types.clone().unwrap();
        let (group, version) = match types.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), types.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &types.kind);
        let (ar, caps): (ApiResource, _) =
            kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            Api::namespaced_with(
                client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or(NS),
                &ar,
            )
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let pp = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        api.create(&pp, &obj).await.unwrap_or_else(|e| {
            panic!(
                "the apiserver refused {} {:?}: {e}",
                types.kind, obj.metadata.name
            )
        });
        n += 1;
    }
    n
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_and_least_privilege_rbac() {
    let Some(cluster) = k8s::cluster() else {
        return;
    };
    let admin = cluster.admin();
    k8s::install_crds(&admin).await;
    let nss: Api<Namespace> = Api::all(admin.clone());
    let _ = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await;

    let chart = chart();
    // The rendered manifests (default and HA) are valid to the real apiserver.
    for extra in [vec![], vec!["-f".to_string(), ha_values()]] {
        let mut args = vec![
            "template",
            "vigil",
            &chart,
            "-n",
            NS,
            "--kube-version",
            "1.36.3",
        ];
        args.extend(extra.iter().map(String::as_str));
        let (ok, rendered) = cluster.helm(&args);
        assert!(ok, "{rendered}");
        let n = dry_run(&admin, &rendered).await;
        assert!(
            n >= 9,
            "{n} objects rendered (the CRDs are checked by k8s_crds.rs)"
        );
        assert_eq!(
            extra.is_empty(),
            !rendered.contains("kind: PodDisruptionBudget"),
            "PDB only with HA values"
        );
    }

    // Install (no --wait: nothing runs without a kubelet). failurePolicy Ignore: no
    // controller answers in this test, and other pods of this cluster must still be created.
    let (ok, out) = cluster.helm(&[
        "install",
        "vigil",
        &chart,
        "-n",
        NS,
        "--set",
        "webhook.url=https://127.0.0.1:1/inject",
        "--set",
        "webhook.failurePolicy=Ignore",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("vigil.dev/inject=enabled"),
        "NOTES.txt says how to enroll: {out}"
    );
    let mwc = Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .get("vigil-injector")
        .await
        .unwrap();
    let hook = &mwc.webhooks.unwrap()[0];
    assert_eq!(
        hook.client_config.url.as_deref(),
        Some("https://127.0.0.1:1/inject")
    );
    assert!(
        hook.client_config.service.is_none(),
        "tests must never make the apiserver dial a Service IP"
    );
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    assert!(
        secrets.get_opt("vigil-ca").await.unwrap().is_none(),
        "the chart must not create the CA Secret"
    );
    let deploy = Api::<DynamicObject>::namespaced_with(
        admin.clone(),
        NS,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apps", "v1", "Deployment"),
            "deployments",
        ),
    )
    .get("vigil-controller")
    .await
    .unwrap();
    assert_eq!(
        deploy.data["spec"]["template"]["spec"]["serviceAccountName"],
        "vigil-controller"
    );

    // RBAC, as the controller.
    let ctl = cluster.as_controller();
    Api::<Pod>::all(ctl.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<Namespace>::all(ctl.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::all(ctl.clone())
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
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "vigil-controller"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    leases.get("vigil-controller").await.unwrap();
    let ctl_secrets: Api<Secret> = Api::namespaced(ctl.clone(), NS);
    ctl_secrets
        .create(&PostParams::default(), &serde_json::from_value(serde_json::json!({"metadata": {"name": "vigil-ca"}, "stringData": {"ca.json": "{}"}})).unwrap())
        .await
        .unwrap();
    ctl_secrets.get("vigil-ca").await.unwrap();
    Api::<MutatingWebhookConfiguration>::all(ctl.clone())
        .get("vigil-injector")
        .await
        .unwrap();

    // ...and what it must not do.
    let other = cluster.namespace("tenant").await;
    Api::<Secret>::namespaced(admin.clone(), &other)
        .create(&PostParams::default(), &serde_json::from_value(serde_json::json!({"metadata": {"name": "db-password"}, "stringData": {"p": "hunter2"}})).unwrap())
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
        Api::<Secret>::namespaced(ctl.clone(), NS)
            .list(&ListParams::default())
            .await,
        "listing Secrets in its own namespace",
    );
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                serde_json::json!({"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}}),
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
    forbidden(
        Api::<Pod>::namespaced(ctl.clone(), &other)
            .create(&PostParams::default(), &serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}})).unwrap())
            .await,
        "creating pods",
    );
    let victim: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "victim"}, "spec": {"containers": [{"name": "x", "image": "x"}]}})).unwrap();
    Api::<Pod>::namespaced(admin.clone(), &other)
        .create(&PostParams::default(), &victim)
        .await
        .unwrap();
    forbidden(
        Api::<Pod>::namespaced(ctl.clone(), &other)
            .delete("victim", &DeleteParams::default())
            .await,
        "deleting pods",
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
                &Patch::Merge(serde_json::json!({"spec": {"action": "Deny"}})),
            )
            .await,
        "changing a policy's spec",
    );
    ctl_policies
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .unwrap();
    let other_hook: MutatingWebhookConfiguration = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "someone-else"}, "webhooks": []}),
    )
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .create(&PostParams::default(), &other_hook)
        .await
        .unwrap();
    forbidden(
        Api::<MutatingWebhookConfiguration>::all(ctl.clone())
            .patch(
                "someone-else",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        "patching another webhook configuration",
    );
    forbidden(
        Api::<Lease>::namespaced(ctl.clone(), "kube-system")
            .get("kube-controller-manager")
            .await,
        "reading leases outside its own",
    );
}
