//! AdmissionReview in, AdmissionReview out: the one place the injector's outcomes become
//! webhook answers.
//!
//! | request                                   | answer                                   |
//! |-------------------------------------------|------------------------------------------|
//! | not a Pod, not CREATE, or a subresource   | allowed, no patch                        |
//! | pod skipped ([`crate::SkipReason`])       | allowed, no patch                        |
//! | pod to inject                             | allowed, `patchType: JSONPatch`, patch   |
//! | invalid annotation, port conflict         | refused: code 400 and the reason         |
//! | body not an AdmissionReview with request  | `Err` (the HTTP layer answers 400)       |
//!
//! The patch is sent base64-encoded, the form the apiserver's Go `[]byte` field expects
//! from every webhook.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use k8s_openapi::api::core::v1::Pod;
use kube::core::{
    DynamicObject, Status,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};

use crate::{
    config::InjectorConfig,
    inject::{Decision, inject},
};

/// A request the webhook cannot answer with an AdmissionReview.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not an `admission.k8s.io/v1` AdmissionReview carrying a request.
    #[error("not an AdmissionReview request: {0}")]
    Malformed(String),
    /// The response could not be encoded (a bug).
    #[error("encoding the AdmissionReview response: {0}")]
    Encode(String),
}

/// Answers one AdmissionReview. `namespace_annotations(ns)` returns the annotations of
/// namespace `ns` (the request carries only the pod; the controller reads its cache).
pub fn review(
    config: &InjectorConfig,
    body: &[u8],
    namespace_annotations: impl Fn(&str) -> BTreeMap<String, String>,
) -> Result<Vec<u8>, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    let req: AdmissionRequest<DynamicObject> =
        review
            .try_into()
            .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| {
                ReviewError::Malformed(e.to_string())
            })?;
    let resp = answer(config, &req, namespace_annotations);
    encode(resp)
}

fn answer(
    config: &InjectorConfig,
    req: &AdmissionRequest<DynamicObject>,
    namespace_annotations: impl Fn(&str) -> BTreeMap<String, String>,
) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    if !is_pod || req.operation != Operation::Create || req.sub_resource.is_some() {
        return resp;
    }
    let Some(obj) = &req.object else {
        return refuse(resp, "the CREATE request carries no pod");
    };
    let pod: Pod = match serde_json::to_value(obj).and_then(serde_json::from_value) {
        Ok(p) => p,
        Err(e) => return refuse(resp, &format!("not a valid Pod: {e}")),
    };
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    match inject(config, &namespace, &pod, &namespace_annotations(&namespace)) {
        Ok(Decision::Skip(reason)) => {
            tracing::debug!(%namespace, pod = %name, %reason, "not injected");
            resp
        }
        Ok(Decision::Inject(patch)) => {
            tracing::info!(%namespace, pod = %name, native = config.native(), "injecting vigil-proxy");
            match resp.clone().with_patch(patch) {
                Ok(r) => r,
                Err(e) => refuse(resp, &format!("cannot encode the patch: {e}")),
            }
        }
        Err(e) => {
            tracing::warn!(%namespace, pod = %name, error = %e, "pod refused");
            refuse(resp, &e.to_string())
        }
    }
}

fn refuse(mut resp: AdmissionResponse, reason: &str) -> AdmissionResponse {
    resp.allowed = false;
    resp.result =
        Status::failure(&format!("vigil injector: {reason}"), "BadRequest").with_code(400);
    resp
}

/// Serializes the review, with the patch as base64 (kube-rs would write a number array).
fn encode(resp: AdmissionResponse) -> Result<Vec<u8>, ReviewError> {
    let patch = resp.patch.clone();
    let mut review =
        serde_json::to_value(resp.into_review()).map_err(|e| ReviewError::Encode(e.to_string()))?;
    if let (Some(bytes), Some(slot)) = (patch, review.pointer_mut("/response/patch")) {
        *slot = serde_json::Value::String(STANDARD.encode(bytes));
    }
    serde_json::to_vec(&review).map_err(|e| ReviewError::Encode(e.to_string()))
}
