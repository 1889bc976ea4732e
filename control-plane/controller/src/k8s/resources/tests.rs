use std::sync::Arc;

use super::*;

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

const INJECTED: &str = r#"
metadata:
  name: web-1
  namespace: shop
  labels: {app: web}
  annotations: {vigil.dev/inject: enabled, vigil.dev/default-policy: audit}
spec:
  serviceAccountName: web
  initContainers:
  - {name: vigil-init, image: p}
  - {name: vigil-proxy, image: p, restartPolicy: Always, ports: [{containerPort: 4143}]}
  containers:
  - {name: app, image: web, ports: [{containerPort: 8080}, {containerPort: 9090}, {containerPort: 53, protocol: UDP}]}
status:
  phase: Running
  podIP: 10.1.0.7
  podIPs: [{ip: 10.1.0.7}, {ip: "fd00::7"}]
"#;

#[test]
fn an_injected_enrolled_pod_is_a_workload_with_its_identity_labels_and_addresses() {
    let w = workload(&pod(INJECTED), None).unwrap();
    assert_eq!(w.spec.service_account, "web");
    assert_eq!(w.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(w.metadata.labels.unwrap()["app"], "web");
    assert_eq!(
        w.spec.addresses,
        [
            "10.1.0.7:8080",
            "10.1.0.7:9090",
            "[fd00::7]:8080",
            "[fd00::7]:9090"
        ],
        "TCP ports of the app containers only, every pod IP"
    );
    assert_eq!(w.spec.default_policy, Some(DefaultPolicySpec::Audit));
}

#[test]
fn enrollment_needs_the_annotation_and_the_proxy() {
    let ns_enabled = BTreeMap::from([("vigil.dev/inject".to_string(), "enabled".to_string())]);
    // Namespace-enrolled, injected.
    let by_ns = pod(&INJECTED.replace("vigil.dev/inject: enabled, ", ""));
    assert!(workload(&by_ns, None).is_none(), "no annotation anywhere");
    assert!(workload(&by_ns, Some(&ns_enabled)).is_some());
    // The pod opts out of an enrolled namespace.
    let out = pod(&INJECTED.replace("vigil.dev/inject: enabled", "vigil.dev/inject: disabled"));
    assert!(workload(&out, Some(&ns_enabled)).is_none());
    // Annotated after creation: no proxy, not a mesh workload.
    let bare = pod(
        "metadata: {name: a, namespace: shop, annotations: {vigil.dev/inject: enabled}}\nspec: {containers: [{name: app, image: x}]}\n",
    );
    assert!(!has_proxy(&bare));
    assert!(workload(&bare, None).is_none());
    // Finished pods are gone from the mesh.
    let done = pod(&INJECTED.replace("phase: Running", "phase: Succeeded"));
    assert!(workload(&done, None).is_none());
    // No service account: "default".
    let default_sa = pod(&INJECTED.replace("  serviceAccountName: web\n", ""));
    assert_eq!(
        workload(&default_sa, None).unwrap().spec.service_account,
        "default"
    );
}

#[test]
fn services_map_cluster_ips_to_the_pods_of_their_endpoint_slices() {
    let svc = |yaml: &str| -> Arc<Service> { Arc::new(serde_saphyr::from_str(yaml).unwrap()) };
    let slice =
        |yaml: &str| -> Arc<EndpointSlice> { Arc::new(serde_saphyr::from_str(yaml).unwrap()) };
    let out = services(
        &[
            svc(
                "metadata: {name: web, namespace: shop}\nspec: {clusterIP: 10.0.0.10, clusterIPs: [10.0.0.10], ports: [{port: 80}, {port: 53, protocol: UDP}]}\n",
            ),
            svc(
                "metadata: {name: headless, namespace: shop}\nspec: {clusterIP: None, ports: [{port: 80}]}\n",
            ),
            svc(
                "metadata: {name: ext, namespace: shop}\nspec: {clusterIP: 10.0.0.11, ports: [{port: 443}]}\n",
            ),
        ],
        &[
            slice(
                "metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints:\n- {addresses: [10.1.0.7], targetRef: {kind: Pod, name: web-1, namespace: shop}}\n- {addresses: [10.1.0.8], targetRef: {kind: Pod, name: web-2}}\n",
            ),
            slice(
                "metadata: {name: ext-1, namespace: shop, labels: {kubernetes.io/service-name: ext}}\naddressType: IPv4\nendpoints:\n- {addresses: [192.0.2.1]}\n",
            ),
        ],
        &Default::default(),
    );
    assert_eq!(
        out.len(),
        2,
        "headless services have no virtual address: {out:?}"
    );
    let web = &out[&ObjectKey::new("shop", "web")];
    assert_eq!(web.addresses, ["10.0.0.10:80".parse().unwrap()]);
    assert_eq!(
        web.backends,
        [
            ObjectKey::new("shop", "web-1"),
            ObjectKey::new("shop", "web-2")
        ]
        .into()
    );
    let ext = &out[&ObjectKey::new("shop", "ext")];
    assert_eq!(ext.backends.len(), 1);
    assert!(
        ext.backends.iter().all(|b| b.name.starts_with("external:")),
        "a non-pod endpoint is never a mesh backend"
    );
}

#[test]
fn service_endpoints_are_the_ready_backends_on_the_matching_port() {
    let svc = |yaml: &str| -> Arc<Service> { Arc::new(serde_saphyr::from_str(yaml).unwrap()) };
    let slice =
        |yaml: &str| -> Arc<EndpointSlice> { Arc::new(serde_saphyr::from_str(yaml).unwrap()) };
    let services_ = [svc(
        "metadata: {name: orders, namespace: shop}\nspec: {clusterIP: 10.96.0.5, clusterIPs: [10.96.0.5], ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 90, targetPort: 9090}]}\n",
    )];
    // Ready (explicitly, and unset = ready), not ready, terminating (by condition), and a
    // pod whose deletion has started (known only from the pod, not yet from the slice).
    let slices = [slice(
        "metadata: {name: orders-a, namespace: shop, labels: {kubernetes.io/service-name: orders}}\naddressType: IPv4\nports: [{name: http, port: 8080}, {name: grpc, port: 9090}]\nendpoints:\n- {addresses: [10.244.0.5], conditions: {ready: true}, targetRef: {kind: Pod, name: orders-1}}\n- {addresses: [10.244.0.6], targetRef: {kind: Pod, name: orders-2}}\n- {addresses: [10.244.0.7], conditions: {ready: false}, targetRef: {kind: Pod, name: orders-3}}\n- {addresses: [10.244.0.8], conditions: {ready: false, serving: true, terminating: true}, targetRef: {kind: Pod, name: orders-4}}\n- {addresses: [10.244.0.9], conditions: {ready: true}, targetRef: {kind: Pod, name: orders-5}}\n",
    )];
    let deleting = [ObjectKey::new("shop", "orders-5")].into();
    let out = services(&services_, &slices, &deleting);
    let orders = &out[&ObjectKey::new("shop", "orders")];
    let eps = |virt: &str| -> Vec<String> {
        orders.endpoints[&virt.parse().unwrap()]
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(eps("10.96.0.5:80"), ["10.244.0.5:8080", "10.244.0.6:8080"]);
    assert_eq!(
        eps("10.96.0.5:90"),
        ["10.244.0.5:9090", "10.244.0.6:9090"],
        "each virtual port maps to the slice port of the same name"
    );
    assert_eq!(
        orders.backends.len(),
        5,
        "every pod behind the Service still counts as a backend (identity, mesh check)"
    );
    // A slice without the port's name contributes nothing to it.
    let unnamed = [slice(
        "metadata: {name: orders-b, namespace: shop, labels: {kubernetes.io/service-name: orders}}\naddressType: IPv4\nports: [{name: other, port: 7000}]\nendpoints:\n- {addresses: [10.244.0.10], targetRef: {kind: Pod, name: orders-6}}\n",
    )];
    let out = services(&services_, &unnamed, &Default::default());
    assert!(
        out[&ObjectKey::new("shop", "orders")].endpoints.is_empty(),
        "{out:?}"
    );
}

#[test]
fn a_pod_whose_service_account_is_gone_is_not_a_workload() {
    let sa = |name: &str| -> Arc<ServiceAccount> {
        Arc::new(
            serde_saphyr::from_str(&format!("metadata: {{name: {name}, namespace: shop}}\n"))
                .unwrap(),
        )
    };
    let mut snap = Snapshot {
        pods: vec![Arc::new(pod(INJECTED))],
        service_accounts: vec![sa("web")],
        ..Snapshot::default()
    };
    let r = resources(&snap);
    assert!(r.workloads.contains_key(&ObjectKey::new("shop", "web-1")));
    snap.service_accounts = vec![sa("other")];
    assert!(resources(&snap).workloads.is_empty());
}
