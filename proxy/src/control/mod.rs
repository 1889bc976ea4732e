//! Controller mode: certificates from `Identity.Certify`, policy from `Policy.Sync`,
//! published into the same stores file mode uses.
//!
//! - identity ([`identity`]): a fresh P-256 key and CSR per certificate, kept in memory
//!   only; the first certificate is proven with the bootstrap token, renewals with the
//!   current SVID over mTLS; renewal at 50 % ± 10 % of the lifetime; failures back off
//!   (capped, jittered) while the current certificate stays in use.
//! - policy ([`policy`]): one stream per connection; every snapshot is applied (an invalid
//!   one becomes deny-all) and acknowledged on the same stream (`Policy.Watch` and a
//!   unary `Policy.Ack` with a controller that predates `Policy.Sync`); when the
//!   controller is unreachable the last policy stays in force (fail static) and the
//!   stream is re-opened with backoff.
//!
//! Every connection to the controller verifies its SPIFFE ID against the trust bundle.

use std::sync::{Arc, Mutex};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::Channel;
use vigil_cert_authority::{SpiffeId, TrustBundle, creds::CredentialStore, tls};

use crate::policy_store::PolicyStore;

mod identity;
mod policy;
mod resolve;

pub use identity::run_identity;
pub use policy::run_policy;
pub use resolve::resolve;

/// How a proxy proves its identity for a first certificate.
#[derive(Clone)]
pub enum ProofSource {
    /// A bootstrap token (local mode, `vigil ca token`).
    Bootstrap(String),
    /// A projected service-account token file (Kubernetes), re-read at every use: the
    /// kubelet rotates it.
    ServiceAccountTokenFile(std::path::PathBuf),
}

impl std::fmt::Debug for ProofSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bootstrap(_) => f.write_str("Bootstrap(<redacted>)"),
            Self::ServiceAccountTokenFile(p) => {
                write!(f, "ServiceAccountTokenFile({})", p.display())
            }
        }
    }
}

impl ProofSource {
    /// The proof to send now.
    pub fn load(&self) -> anyhow::Result<vigil_api::pb::certify_request::Proof> {
        use vigil_api::pb::certify_request::Proof;
        Ok(match self {
            Self::Bootstrap(t) => Proof::BootstrapToken(t.clone()),
            Self::ServiceAccountTokenFile(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("reading the service-account token {}: {e}", path.display())
                })?;
                Proof::ServiceAccountToken(token.trim().to_string())
            }
        })
    }
}

/// The service account a Kubernetes service-account token is for (its `sub` claim,
/// `system:serviceaccount:<ns>:<sa>`), read WITHOUT verifying it: only to know which
/// identity to expect. The controller verifies the token (TokenReview).
pub fn service_account_of(token: &str) -> Option<(String, String)> {
    use base64::Engine;
    let payload = token.trim().split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let sub = claims.get("sub")?.as_str()?;
    let rest = sub.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
        .then(|| (ns.to_string(), sa.to_string()))
}

/// What both loops share.
pub struct Control {
    /// Controller address, host:port.
    pub address: String,
    /// The controller's SPIFFE ID.
    pub controller_id: SpiffeId,
    /// This workload, namespace/name.
    pub workload: String,
    /// How the first certificate is proven, if at all.
    pub proof: Option<ProofSource>,
    /// Where certificates go.
    pub creds: Arc<CredentialStore>,
    /// Where policy goes.
    pub policy: Arc<PolicyStore>,
    /// The latest trust bundle (initially from `--bundle`).
    bundle: Mutex<TrustBundle>,
    /// The current SVID chain and key, to republish with a new bundle.
    svid: Mutex<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>>,
    /// A channel for unary calls (`Resolve`), with the serial of the SVID it presents.
    unary: tokio::sync::Mutex<Option<(Channel, Vec<u8>)>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("address", &self.address)
            .field("workload", &self.workload)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// Shared state for the two loops.
    pub fn new(
        address: String,
        controller_id: SpiffeId,
        workload: String,
        proof: Option<ProofSource>,
        bundle: TrustBundle,
        creds: Arc<CredentialStore>,
        policy: Arc<PolicyStore>,
    ) -> Self {
        Self {
            address,
            controller_id,
            workload,
            proof,
            creds,
            policy,
            bundle: Mutex::new(bundle),
            svid: Mutex::new(None),
            unary: tokio::sync::Mutex::new(None),
        }
    }

    fn bundle(&self) -> TrustBundle {
        self.bundle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A channel to the controller, presenting the current SVID if there is one and
    /// `with_svid` is set.
    async fn channel(&self, with_svid: bool) -> anyhow::Result<Channel> {
        let current = if with_svid {
            self.creds.current()
        } else {
            None
        };
        let config = Arc::new(tls::control_client_config(
            &self.bundle(),
            current.as_deref(),
            self.controller_id.clone(),
            tls::provider(),
        )?);
        let channel = vigil_api::connect(&self.address, config).await?;
        Ok(channel)
    }
}

/// A uniformly random jitter in -1.0..=1.0 for the rotation functions.
fn jitter() -> f64 {
    let b = vigil_cert_authority::keys::random_bytes::<4>(false);
    f64::from(u32::from_be_bytes(b)) / f64::from(u32::MAX) * 2.0 - 1.0
}

#[cfg(test)]
mod sa_token_tests {
    use base64::Engine;

    use super::service_account_of;

    fn jwt(claims: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b(r#"{"alg":"ES256"}"#), b(claims))
    }

    #[test]
    fn the_subject_names_the_service_account_and_anything_else_is_refused() {
        assert_eq!(
            service_account_of(&jwt(
                r#"{"sub":"system:serviceaccount:shop:web","aud":["vigil-ca"]}"#
            )),
            Some(("shop".into(), "web".into()))
        );
        for bad in [
            jwt(r#"{"sub":"system:node:n1"}"#),
            jwt(r#"{"sub":"system:serviceaccount:shop"}"#),
            jwt(r#"{"sub":"system:serviceaccount::web"}"#),
            jwt(r#"{"sub":"system:serviceaccount:a:b:c"}"#),
            jwt(r#"{"aud":"x"}"#),
            "not-a-jwt".to_string(),
            "a.!!!.c".to_string(),
        ] {
            assert_eq!(service_account_of(&bad), None, "{bad}");
        }
    }
}
