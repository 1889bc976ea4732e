//! `review()`: AdmissionReview bytes in, AdmissionReview bytes out, as the apiserver sends
//! and reads them.

#![allow(clippy::unwrap_used)]

mod support;

use std::{cell::RefCell, collections::BTreeMap};

use base64::{Engine, engine::general_purpose::STANDARD};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use support::*;
use vigil_injector::{ReviewError, review};

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

fn admission(op: &str, kind: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "namespace": "shop",
            "operation": op,
            "userInfo": {"username": "alice"},
            "object": object,
            "dryRun": false
        }
    }))
    .unwrap()
}

/// The whole answer, after checking the envelope every answer must have.
fn answer(bytes: &[u8]) -> Value {
    let review: Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let r = review["response"].clone();
    assert_eq!(r["uid"], UID, "the uid is echoed back");
    r
}

fn pod_json(yaml: &str) -> Value {
    // Raw JSON as the apiserver sends it: no namespace on CREATE.
    let mut v = serde_json::to_value(pod(yaml)).unwrap();
    v["apiVersion"] = "v1".into();
    v["kind"] = "Pod".into();
    v
}

fn allowed_without_patch(r: &Value) {
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        r.get("patch").is_none() && r.get("patchType").is_none(),
        "{r}"
    );
}

#[test]
fn enrolled_pod_gets_a_base64_json_patch_that_adds_the_sidecar() {
    let cfg = config(true);
    let object = pod_json(APP);
    let r = answer(
        &review(&cfg, &admission("CREATE", "Pod", object.clone()), |_| {
            none()
        })
        .unwrap(),
    );
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let bytes = STANDARD.decode(r["patch"].as_str().unwrap()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let out: Pod = serde_json::from_value(apply(&object, &patch)).unwrap();
    assert_eq!(init_names(&out), ["vigil-init", "vigil-proxy", "migrate"]);
    assert_eq!(container_names(&out), ["app", "metrics"]);
    assert!(env_of(&out, "vigil-proxy").contains_key("VIGIL_PROXY_TRUST_ANCHORS"));
}

#[test]
fn namespace_enrollment_uses_the_request_namespace() {
    let asked = RefCell::new(Vec::new());
    let lookup = |ns: &str| {
        asked.borrow_mut().push(ns.to_string());
        enabled_namespace()
    };
    let object = pod_json("metadata: {name: b}\nspec: {containers: [{name: app, image: x}]}\n");
    let r = answer(&review(&config(false), &admission("CREATE", "Pod", object), lookup).unwrap());
    assert_eq!(r["patchType"], "JSONPatch");
    assert_eq!(asked.into_inner(), ["shop"]);
}

#[test]
fn unenrolled_pod_is_allowed_unchanged() {
    let object = pod_json("metadata: {name: b}\nspec: {containers: [{name: app, image: x}]}\n");
    let r = answer(
        &review(&config(true), &admission("CREATE", "Pod", object), |_| {
            none()
        })
        .unwrap(),
    );
    allowed_without_patch(&r);
}

#[test]
fn invalid_annotation_is_refused_with_the_reason() {
    let object = pod_json(&APP.replace("vigil.dev/inject: enabled", "vigil.dev/inject: yes"));
    let r = answer(
        &review(&config(true), &admission("CREATE", "Pod", object), |_| {
            none()
        })
        .unwrap(),
    );
    assert_eq!(r["allowed"], false);
    assert!(r.get("patch").is_none());
    assert_eq!(r["status"]["code"], 400);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("vigil.dev/inject")
            && msg.contains("\"yes\"")
            && msg.contains("enabled, disabled"),
        "{msg}"
    );
}

#[test]
fn other_operations_kinds_and_subresources_pass_untouched() {
    let cfg = config(true);
    for op in ["UPDATE", "DELETE", "CONNECT"] {
        let r = answer(&review(&cfg, &admission(op, "Pod", pod_json(APP)), |_| none()).unwrap());
        allowed_without_patch(&r);
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let r = answer(&review(&cfg, &admission("CREATE", "ConfigMap", cm), |_| none()).unwrap());
    allowed_without_patch(&r);

    let mut sub: Value =
        serde_json::from_slice(&admission("CREATE", "Pod", pod_json(APP))).unwrap();
    sub["request"]["subResource"] = "status".into();
    let r = answer(&review(&cfg, &serde_json::to_vec(&sub).unwrap(), |_| none()).unwrap());
    allowed_without_patch(&r);
}

#[test]
fn skipped_namespaces_are_allowed_unchanged() {
    let mut body: Value =
        serde_json::from_slice(&admission("CREATE", "Pod", pod_json(APP))).unwrap();
    body["request"]["namespace"] = "kube-system".into();
    let r = answer(
        &review(&config(true), &serde_json::to_vec(&body).unwrap(), |_| {
            BTreeMap::new()
        })
        .unwrap(),
    );
    allowed_without_patch(&r);
}

#[test]
fn bodies_that_are_not_admission_reviews_are_errors() {
    let cfg = config(true);
    for garbage in [
        &b""[..],
        b"\x00\xff garbage",
        b"not json",
        b"[]",
        b"{}",
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
    ] {
        let err = review(&cfg, garbage, |_| none()).unwrap_err();
        assert!(matches!(err, ReviewError::Malformed(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("not an AdmissionReview request"),
            "{err}"
        );
    }
}
