//! The JSON patch (RFC 6902) that adds the sidecar, built from insertions only.
//!
//! The apiserver applies the patch to *its* JSON of the pod, which may carry fields this
//! crate's Kubernetes types do not know (a newer API version). A diff of two typed
//! serializations would, when a container is inserted at index 0, rewrite every existing
//! container field by field into its neighbour's slot and leave the unknown fields behind
//! on the wrong container. Insertions (`add` at an index, at `-`, or of a missing key) only
//! ever add Vigil's objects and leave the user's untouched, whatever they contain.

use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use serde::Serialize;

use crate::annotations::InjectError;

/// Everything injection adds to one pod.
#[derive(Clone, Debug)]
pub struct Additions {
    /// `vigil-init`, which must run before every other container.
    pub init: Container,
    /// `vigil-proxy`.
    pub proxy: Container,
    /// The proxy goes right after `vigil-init` (native sidecar) rather than first among
    /// the containers.
    pub native: bool,
    /// The projected token volume.
    pub volume: Volume,
    /// Annotations to set (only ones the pod does not have).
    pub annotations: BTreeMap<String, String>,
}

/// The patch turning `pod` into the injected pod.
pub fn build(pod: &Pod, add: &Additions) -> Result<Patch, InjectError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ops = Vec::new();

    let mut inits = vec![&add.init];
    if add.native {
        inits.push(&add.proxy);
    }
    if spec.init_containers.is_none() {
        ops.push(op(&["spec", "initContainers"], &inits)?);
    } else {
        for (i, c) in inits.iter().enumerate() {
            ops.push(op(&["spec", "initContainers", &i.to_string()], c)?);
        }
    }
    if !add.native {
        ops.push(op(&["spec", "containers", "0"], &add.proxy)?);
    }

    if spec.volumes.is_none() {
        ops.push(op(&["spec", "volumes"], &[&add.volume])?);
    } else {
        ops.push(op(&["spec", "volumes", "-"], &add.volume)?);
    }

    if pod.metadata.annotations.is_none() {
        ops.push(op(&["metadata", "annotations"], &add.annotations)?);
    } else {
        for (k, v) in &add.annotations {
            ops.push(op(&["metadata", "annotations", k], v)?);
        }
    }
    Ok(Patch(ops))
}

fn op(path: &[&str], value: &impl Serialize) -> Result<PatchOperation, InjectError> {
    Ok(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value: serde_json::to_value(value).map_err(|e| InjectError::Encode(e.to_string()))?,
    }))
}
