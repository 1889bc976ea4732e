//! The caller's SPIFFE ID, remembered per certificate.
//!
//! Every `Policy.Ack` and `Policy.Resolve` (and each Watch or Sync stream, once)
//! authorizes its caller by the SVID of its connection; parsing that X.509 leaf was 40 %
//! of an ack's handler (B10 profile, `benches/RESULTS.md` change 11). The ID depends
//! only on the certificate's bytes — which rustls verified when the connection was made;
//! this cache verifies nothing — so it is remembered by those exact bytes. Bounded: it
//! forgets everything when full.

use std::{collections::HashMap, sync::Mutex};

use tonic::Request;
use vigil_cert_authority::SpiffeId;

use super::peer_identity;

/// How many certificates are remembered at most (one per connected proxy).
const CAPACITY: usize = 16_384;

/// SPIFFE IDs of recently seen peer certificates, by the certificate's DER.
#[derive(Debug, Default)]
pub(super) struct PeerIds {
    ids: Mutex<HashMap<Vec<u8>, SpiffeId>>,
}

impl PeerIds {
    /// The verified SPIFFE ID of the caller, if it presented an SVID: the same answer as
    /// [`peer_identity`].
    pub(super) fn identity<T>(&self, req: &Request<T>) -> Option<SpiffeId> {
        let certs = req.peer_certs()?;
        let leaf = certs.first()?;
        if let Some(id) = self.lock().get(leaf.as_ref()) {
            return Some(id.clone());
        }
        let id = peer_identity(req)?;
        let mut ids = self.lock();
        if ids.len() >= CAPACITY {
            ids.clear();
        }
        ids.insert(leaf.as_ref().to_vec(), id.clone());
        Some(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, SpiffeId>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}
