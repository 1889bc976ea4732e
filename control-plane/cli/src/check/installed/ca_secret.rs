//! Reads the CA's certificates out of its Secret (`vigil-ca`: the CA state directory's
//! files as keys, see `vigil_controller::k8s::ca_secret`). Only the certificate files the
//! manifest names are read; the key files are never looked at, printed or kept.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use vigil_cert_authority::state::MANIFEST;

use crate::{
    check::{chart, get_opt},
    cluster::{Cluster, ClusterError},
};

/// The CA's certificates (DER).
#[derive(Clone, Debug)]
pub(super) struct CaCerts {
    /// The roots in the bundle; the first is the active one, which signs the issuer.
    pub(super) roots: Vec<Vec<u8>>,
    /// The issuer (signs workload and webhook certificates).
    pub(super) issuer: Vec<u8>,
}

/// Why the Secret holds no usable CA.
#[derive(Debug, thiserror::Error)]
pub(super) enum CaSecretError {
    /// No Secret.
    #[error("no Secret {0}")]
    Missing(String),
    /// A Secret that is not a CA state.
    #[error("Secret {secret} holds no valid CA state: {why}")]
    Invalid {
        /// namespace/name.
        secret: String,
        /// What is wrong.
        why: String,
    },
}

/// The Secret's certificates, or why there are none.
pub(super) async fn read(
    cluster: &Cluster,
    ns: &str,
) -> Result<Result<CaCerts, CaSecretError>, ClusterError> {
    let api = Api::<Secret>::namespaced(cluster.client.clone(), ns);
    let what = format!("secrets in namespace {ns}");
    let name = format!("{ns}/{}", chart::CA_SECRET);
    let Some(secret) = get_opt(cluster, &api, chart::CA_SECRET, &what).await? else {
        return Ok(Err(CaSecretError::Missing(name)));
    };
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    Ok(certs(&data).map_err(|why| CaSecretError::Invalid { secret: name, why }))
}

/// The certificates the manifest names, parsed from the state files.
fn certs(files: &BTreeMap<String, Vec<u8>>) -> Result<CaCerts, String> {
    let manifest = files
        .get(MANIFEST)
        .ok_or_else(|| format!("no {MANIFEST}"))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| format!("{MANIFEST}: {e}"))?;
    let cert = |name: Option<&str>| -> Result<Vec<u8>, String> {
        let name = name.ok_or_else(|| format!("{MANIFEST} names no certificate file"))?;
        let pem = files.get(name).ok_or_else(|| format!("no {name}"))?;
        first_cert(pem).ok_or_else(|| format!("{name} holds no PEM certificate"))
    };
    let roots = manifest["roots"]
        .as_array()
        .ok_or_else(|| format!("{MANIFEST} lists no roots"))?
        .iter()
        .map(|r| cert(r["cert"].as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    if roots.is_empty() {
        return Err(format!("{MANIFEST} lists no roots"));
    }
    let issuer = cert(manifest["issuer"]["cert"].as_str())?;
    Ok(CaCerts { roots, issuer })
}

/// The DER of every certificate in a PEM text (other blocks are skipped).
pub(super) fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map_while(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}

fn first_cert(pem: &[u8]) -> Option<Vec<u8>> {
    pem_certs(pem).into_iter().next()
}
