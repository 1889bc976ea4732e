//! File-mode credentials: SVID, key and bundle PEM files, validated and published into a
//! [`CredentialStore`]. A bad reload keeps the last good credentials.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use vigil_cert_authority::{
    SpiffeId, TrustBundle,
    creds::{CredentialStore, Credentials},
    pemfile, svid, tls,
};

/// Paths of the credential files.
#[derive(Clone, Debug)]
pub struct CredentialFiles {
    /// Leaf + chain.
    pub svid: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// Trust bundle.
    pub bundle: PathBuf,
}

/// Why credential files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The credentials do not check out.
    #[error("credentials rejected: {0}")]
    Invalid(#[from] vigil_cert_authority::creds::CredsError),
}

impl CredentialFiles {
    /// The identity in the SVID file (used when no `--identity` was given).
    pub fn identity(&self) -> Result<SpiffeId, LoadError> {
        let certs = read_certs(&self.svid)?;
        let leaf = certs
            .first()
            .ok_or_else(|| parse_err(&self.svid, "no certificate"))?;
        svid::inspect_leaf(leaf)
            .map(|i| i.id)
            .map_err(|e| parse_err(&self.svid, e))
    }

    /// Reads, validates and publishes the files into `store`.
    pub fn load_into(
        &self,
        store: &CredentialStore,
    ) -> Result<std::sync::Arc<Credentials>, LoadError> {
        let chain = read_certs(&self.svid)?;
        let key_text = read(&self.key)?;
        let key = pemfile::decode_private_key(&key_text).map_err(|e| parse_err(&self.key, e))?;
        let bundle_text = read(&self.bundle)?;
        let bundle = TrustBundle::from_pem(store.id().trust_domain(), &bundle_text)
            .map_err(|e| parse_err(&self.bundle, e))?;
        Ok(store.publish(chain, key, bundle, &tls::provider(), SystemTime::now())?)
    }

    /// The files, for the watcher.
    pub fn paths(&self) -> [&Path; 3] {
        [&self.svid, &self.key, &self.bundle]
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, LoadError> {
    pemfile::decode_certs(&read(path)?).map_err(|e| parse_err(path, e))
}

fn parse_err(path: &Path, reason: impl std::fmt::Display) -> LoadError {
    LoadError::Parse {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}
