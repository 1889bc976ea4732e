//! The CA as the controller runs it: opened (or created on the very first start), its
//! maintenance (issuer rotation, root retirement, bundle publishing), and the controller's
//! own short-lived server certificate.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use vigil_cert_authority::{
    CaError, CertificateAuthority, InitOptions, SpiffeId, TrustDomain, creds::Credentials, pemfile,
    state::StateError, tls, ttl::TtlPolicy,
};

use crate::state::State;

/// TTL of the controller's own certificate.
const CONTROLLER_SVID_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often CA maintenance runs.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);

/// Opens the CA in `dir`; creates it only if `dir` holds no CA state at all. A partial,
/// corrupt or mismatched state is an error, never replaced.
pub fn open_or_init(
    dir: &Path,
    td: &TrustDomain,
    ttl: TtlPolicy,
) -> anyhow::Result<CertificateAuthority> {
    match CertificateAuthority::open(dir, ttl) {
        Ok(ca) => {
            anyhow::ensure!(
                ca.trust_domain() == td,
                "the CA in {} is for trust domain {}, not {td}; pass --trust-domain {} or another --state-dir",
                dir.display(),
                ca.trust_domain(),
                ca.trust_domain()
            );
            tracing::info!(dir = %dir.display(), trust_domain = %td, "CA loaded");
            Ok(ca)
        }
        Err(CaError::State(StateError::NotInitialized(_))) => {
            tracing::warn!(dir = %dir.display(), trust_domain = %td, "no CA state: creating a new CA (first start)");
            CertificateAuthority::init(dir, InitOptions::new(td.clone()), ttl, SystemTime::now())
                .with_context(|| format!("creating a CA in {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("loading the CA in {}", dir.display())),
    }
}

/// Issues the controller's own SVID (key generated here, in memory only).
pub fn controller_credentials(
    ca: &CertificateAuthority,
    id: &SpiffeId,
) -> anyhow::Result<Credentials> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
    let svid = ca.issue(csr.der(), id, Some(CONTROLLER_SVID_TTL))?;
    let key = pemfile::decode_private_key(&key.serialize_pem())?;
    Ok(Credentials::new(
        svid.cert_chain(),
        key,
        ca.bundle(),
        id,
        &tls::provider(),
        SystemTime::now(),
    )?)
}

/// Runs CA maintenance and renews the controller's certificate, until the task is dropped.
pub async fn run_maintenance(state: Arc<State>) {
    loop {
        let now = SystemTime::now();
        let (bundle, issuer_expiry) = {
            let mut ca = state.ca();
            if let Err(e) = ca.maintain(now) {
                tracing::error!(error = %e, "CA maintenance failed; will retry");
            }
            (ca.bundle(), ca.issuer_not_after())
        };
        let secs = issuer_expiry
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        state
            .metrics
            .issuer_expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
        state.bundle.send_if_modified(|b| {
            let changed = *b != bundle;
            if changed {
                tracing::info!(
                    sequence = bundle.sequence(),
                    roots = bundle.roots().len(),
                    "trust bundle changed"
                );
                *b = bundle.clone();
            }
            changed
        });
        // Renew our own certificate at the usual point of its life (or on a bundle change).
        let current = state.creds.borrow().clone();
        let due = now + MAINTENANCE_EVERY
            >= current.info.not_before
                + (current
                    .info
                    .not_after
                    .duration_since(current.info.not_before)
                    .unwrap_or_default())
                    / 2;
        if due || current.bundle != *state.bundle.borrow() {
            let renewed = controller_credentials(&state.ca(), &state.identity);
            match renewed {
                Ok(c) => {
                    state.creds.send_replace(Arc::new(c));
                }
                Err(e) => {
                    tracing::error!(error = %e, "renewing the controller certificate failed; will retry")
                }
            }
        }
        tokio::time::sleep(MAINTENANCE_EVERY).await;
    }
}
