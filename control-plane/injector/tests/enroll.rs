//! `inject()` deciding who is injected: enrollment, protected namespaces, idempotency, and
//! the pods it refuses.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use support::*;
use vigil_injector::{Decision, InjectError, InjectorConfig, SkipReason, inject};

// === enrollment ===

#[test]
fn pod_annotation_enrolls() {
    let d = decide(
        &config(true),
        "shop",
        "{vigil.dev/inject: enabled}",
        &none(),
    );
    assert!(matches!(d, Decision::Inject(_)), "{d:?}");
}

#[test]
fn namespace_annotation_enrolls() {
    let d = decide(&config(true), "shop", "{}", &enabled_namespace());
    assert!(matches!(d, Decision::Inject(_)), "{d:?}");
}

#[test]
fn pod_disabled_overrides_namespace_enabled() {
    let d = decide(
        &config(true),
        "shop",
        "{vigil.dev/inject: disabled}",
        &enabled_namespace(),
    );
    assert_eq!(skipped(&d), Some(&SkipReason::NotEnrolled));
}

#[test]
fn unannotated_pods_and_namespaces_are_skipped() {
    let cfg = config(true);
    let d = decide(&cfg, "shop", "{}", &none());
    assert_eq!(skipped(&d), Some(&SkipReason::NotEnrolled));
    assert_eq!(
        SkipReason::NotEnrolled.to_string(),
        "not enrolled: no vigil.dev/inject=enabled on the pod or its namespace"
    );
    let ns_off = BTreeMap::from([("vigil.dev/inject".to_string(), "disabled".to_string())]);
    let d = decide(&cfg, "shop", "{}", &ns_off);
    assert_eq!(skipped(&d), Some(&SkipReason::NotEnrolled));
}

#[test]
fn protected_namespaces_are_never_injected_nor_validated() {
    let cfg = InjectorConfig {
        skip_namespaces: vec!["kube-system".into(), "monitoring".into()],
        ..config(true)
    };
    for ns in ["kube-system", "vigil-system", "monitoring"] {
        for ann in ["{vigil.dev/inject: enabled}", "{vigil.dev/inject: bogus}"] {
            let d = decide(&cfg, ns, ann, &enabled_namespace());
            assert_eq!(
                skipped(&d),
                Some(&SkipReason::Namespace(ns.into())),
                "{ns} {ann}"
            );
        }
    }
    assert_eq!(
        SkipReason::Namespace("kube-system".into()).to_string(),
        "namespace kube-system is never injected"
    );
    // A renamed control-plane namespace is protected even when not listed.
    let moved = InjectorConfig {
        control_plane_namespace: "mesh".into(),
        ..config(true)
    };
    let d = decide(&moved, "mesh", "{vigil.dev/inject: enabled}", &none());
    assert_eq!(skipped(&d), Some(&SkipReason::Namespace("mesh".into())));
}

#[test]
fn host_network_pods_are_skipped() {
    let p = pod(
        "metadata: {name: a, annotations: {vigil.dev/inject: enabled}}\nspec: {hostNetwork: true, containers: [{name: app, image: x}]}\n",
    );
    let d = inject(&config(true), "shop", &p, &none()).unwrap();
    assert_eq!(skipped(&d), Some(&SkipReason::HostNetwork));
    assert_eq!(
        SkipReason::HostNetwork.to_string(),
        "hostNetwork pods cannot be intercepted"
    );
}

// === idempotency ===

#[test]
fn injecting_the_output_again_is_skipped() {
    for cfg in [config(true), config(false)] {
        let once = injected(&cfg, &pod(APP));
        let again = inject(&cfg, "shop", &once, &enabled_namespace()).unwrap();
        assert_eq!(skipped(&again), Some(&SkipReason::AlreadyInjected));
        // Even without the marker annotation, the proxy container alone is recognised.
        let mut stripped = once.clone();
        stripped
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove("vigil.dev/injected");
        let again = inject(&cfg, "shop", &stripped, &none()).unwrap();
        assert_eq!(skipped(&again), Some(&SkipReason::AlreadyInjected));
    }
    let marked = decide(
        &config(true),
        "shop",
        "{vigil.dev/inject: enabled, vigil.dev/injected: '0.0.1'}",
        &none(),
    );
    assert_eq!(skipped(&marked), Some(&SkipReason::AlreadyInjected));
    assert_eq!(SkipReason::AlreadyInjected.to_string(), "already injected");
}

// === refusals ===

#[test]
fn invalid_annotations_are_refused_naming_the_annotation_value_and_allowed_values() {
    let cfg = config(true);
    for (annotation, value, expected) in [
        ("vigil.dev/inject", "enabeld", "one of enabled, disabled"),
        ("vigil.dev/inject", "true", "one of enabled, disabled"),
        ("vigil.dev/opaque-ports", "0", "ports 1-65535"),
        ("vigil.dev/opaque-ports", "70000", "ports 1-65535"),
        ("vigil.dev/http1-app-ports", "0", "ports 1-65535"),
        ("vigil.dev/http1-app-ports", "8080 9090", "ports 1-65535"),
        ("vigil.dev/skip-inbound-ports", "abc", "ports 1-65535"),
        ("vigil.dev/skip-outbound-ports", "80;443", "ports 1-65535"),
        ("vigil.dev/mesh-http1", "h2", "one of auto, http1, http2"),
        ("vigil.dev/mesh-http1", "HTTP2", "one of auto, http1, http2"),
        (
            "vigil.dev/default-policy",
            "allow",
            "one of deny, audit, allow-authenticated",
        ),
    ] {
        let ann = if annotation == "vigil.dev/inject" {
            format!("{{{annotation}: '{value}'}}")
        } else {
            format!("{{vigil.dev/inject: enabled, {annotation}: '{value}'}}")
        };
        // Refused whether enrolled by the pod or by its namespace.
        for ns_ann in [none(), enabled_namespace()] {
            let err = inject(&cfg, "shop", &bare(&ann), &ns_ann).unwrap_err();
            let InjectError::InvalidAnnotation {
                annotation: a,
                value: v,
                ..
            } = &err
            else {
                panic!("{err:?}")
            };
            assert_eq!((a.as_str(), v.as_str()), (annotation, value));
            let msg = err.to_string();
            assert!(
                msg.contains(annotation) && msg.contains(value) && msg.contains(expected),
                "{msg}"
            );
        }
    }
    for policy in ["deny", "audit", "allow-authenticated"] {
        let ann = format!("{{vigil.dev/inject: enabled, vigil.dev/default-policy: {policy}}}");
        assert!(matches!(
            decide(&cfg, "shop", &ann, &none()),
            Decision::Inject(_)
        ));
    }
}

#[test]
fn an_app_port_the_proxy_needs_is_refused() {
    let p = pod(&APP.replace("containerPort: 8080", "containerPort: 4191"));
    let err = inject(&config(true), "shop", &p, &none()).unwrap_err();
    assert!(
        matches!(
            err,
            InjectError::PortConflict {
                port: 4191,
                listener: "admin",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("\"app\" declares port 4191"),
        "{err}"
    );
    // UDP does not collide with the proxy's TCP listeners.
    let udp = pod(&APP.replace(
        "containerPort: 8080}",
        "containerPort: 4143, protocol: UDP}",
    ));
    assert!(matches!(
        inject(&config(true), "shop", &udp, &none()).unwrap(),
        Decision::Inject(_)
    ));
}
