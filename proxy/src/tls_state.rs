//! The TLS configurations in force, rebuilt whenever credentials change.
//!
//! New handshakes pick up the current [`TlsState`]; established connections keep the
//! configuration they were made with, so a certificate rotation drops nothing. Every
//! verifier consults the *current* policy's revocation list on each handshake.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use rustls::crypto::CryptoProvider;
use tokio::sync::watch;
use vigil_cert_authority::{
    SpiffeId,
    creds::Credentials,
    svid::SvidInfo,
    tls::{self, MeshClient, MeshServer},
    verify::{Revocation, VerifierError},
};
use vigil_policy::Policy;

use crate::detect::MESH_ALPNS;

/// Most client configs cached (one per expected-identity set and ALPN offer).
const CLIENT_CACHE_MAX: usize = 1024;

/// Client configs are per (expected identities, ALPNs offered).
type ClientKey = (BTreeSet<SpiffeId>, &'static [&'static [u8]]);

/// Server and client TLS configurations for the current credentials.
#[derive(Debug)]
pub struct TlsState {
    /// The credentials these configs present.
    pub creds: Arc<Credentials>,
    /// Inbound mesh TLS, and the verifier that checks each accepted peer.
    pub server: MeshServer,
    provider: Arc<CryptoProvider>,
    revocation: Arc<dyn Revocation>,
    clients: Mutex<HashMap<ClientKey, MeshClient>>,
}

/// Revocation backed by the policy in force.
#[derive(Debug)]
pub struct PolicyRevocation(pub watch::Receiver<Arc<Policy>>);

impl Revocation for PolicyRevocation {
    fn is_revoked(&self, peer: &SvidInfo) -> bool {
        self.0.borrow().is_revoked(&peer.id, &peer.serial)
    }
}

impl TlsState {
    /// Builds the configs for `creds`, with `provider`'s key-exchange groups.
    pub fn new(
        creds: Arc<Credentials>,
        revocation: Arc<dyn Revocation>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, VerifierError> {
        let server = tls::mesh_server(&creds, provider.clone(), revocation.clone(), &MESH_ALPNS)?;
        Ok(Self {
            creds,
            server,
            provider,
            revocation,
            clients: Mutex::default(),
        })
    }

    /// A client config that presents our SVID, offers `alpn` (most preferred first), and
    /// accepts only a server presenting one of `expected`. The same config (and so its
    /// session tickets) for the same identities and ALPNs, until the credentials change.
    pub fn client(
        &self,
        expected: &BTreeSet<SpiffeId>,
        alpn: &'static [&'static [u8]],
    ) -> Result<MeshClient, VerifierError> {
        let key = (expected.clone(), alpn);
        let mut cache = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let config = tls::mesh_client(
            &self.creds,
            expected.iter().cloned(),
            self.provider.clone(),
            self.revocation.clone(),
            alpn,
        )?;
        if cache.len() >= CLIENT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, config.clone());
        Ok(config)
    }
}
