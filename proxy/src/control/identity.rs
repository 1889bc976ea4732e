//! The identity loop: certify, renew, back off, keep the last good certificate.

use std::{sync::Arc, time::SystemTime};

use tokio_util::sync::CancellationToken;
use vigil_api::{
    convert::bundle_from_wire,
    pb::{self, identity_client::IdentityClient},
};
use vigil_cert_authority::{
    issuer::BACKDATE,
    pemfile,
    rotation::{Backoff, renewal_delay},
    tls,
};

use super::{Control, jitter};

/// Keeps this workload's certificate fresh until `stop` is cancelled.
pub async fn run_identity(ctl: Arc<Control>, stop: CancellationToken) {
    let backoff = Backoff::default();
    let mut attempt = 0u32;
    loop {
        let delay = match certify(&ctl).await {
            Ok((not_before, not_after)) => {
                attempt = 0;
                // The CA backdates certificates by a minute for clock skew; the lifetime the
                // renewal point is computed from starts at issuance, not at the backdated
                // notBefore (otherwise a short certificate would be "half gone" at once).
                let issued = (not_before + BACKDATE).min(not_after);
                renewal_delay(issued, not_after, SystemTime::now(), jitter())
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), attempt, "certificate request failed; keeping the current certificate");
                let d = backoff.delay(attempt, jitter());
                attempt = attempt.saturating_add(1);
                d
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One certificate request. Renews over mTLS when the current certificate is still valid;
/// otherwise (or if the controller refuses the renewal) proves identity with the token.
async fn certify(ctl: &Control) -> anyhow::Result<(SystemTime, SystemTime)> {
    let now = SystemTime::now();
    // Renew over mTLS while the current certificate is still valid (a few seconds of
    // margin for the round trip); an expired one needs the token again.
    let renewable = ctl
        .creds
        .current()
        .is_some_and(|c| c.info.not_after > now + std::time::Duration::from_secs(5));
    let attempts: Vec<bool> = match (renewable, ctl.proof.is_some()) {
        (true, true) => vec![true, false],
        (true, false) => vec![true],
        (false, _) => vec![false],
    };
    let mut last_err = anyhow::anyhow!(
        "no way to prove this workload's identity (no certificate and no bootstrap token)"
    );
    for with_svid in attempts {
        match certify_once(ctl, with_svid).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                if with_svid {
                    tracing::warn!(error = %format!("{e:#}"), "renewal with the current certificate failed; trying the bootstrap token");
                }
                last_err = e;
            }
        }
    }
    Err(last_err)
}

async fn certify_once(ctl: &Control, renewal: bool) -> anyhow::Result<(SystemTime, SystemTime)> {
    // A new key for every certificate, generated here and never written anywhere.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
    let proof = match (&ctl.proof, renewal) {
        (Some(p), false) => Some(p.load()?),
        _ => None,
    };
    let channel = ctl.channel(renewal).await?;
    let resp = IdentityClient::new(channel)
        .certify(pb::CertifyRequest {
            workload: ctl.workload.clone(),
            csr: csr.der().to_vec(),
            proof,
        })
        .await
        .map_err(|s| anyhow::anyhow!("controller refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    let bundle = bundle_from_wire(resp.bundle.unwrap_or_default())?;
    let chain: Vec<_> = std::iter::once(resp.leaf)
        .chain(resp.chain)
        .map(rustls_pki_types::CertificateDer::from)
        .collect();
    let key_der = pemfile::decode_private_key(&key.serialize_pem())?;
    let creds = ctl.creds.publish(
        chain.clone(),
        key_der.clone_key(),
        bundle.clone(),
        &tls::provider(),
        SystemTime::now(),
    )?;
    *ctl.svid.lock().unwrap_or_else(|p| p.into_inner()) = Some((chain, key_der));
    *ctl.bundle.lock().unwrap_or_else(|p| p.into_inner()) = bundle;
    tracing::info!(id = %creds.info.id, renewal, not_after = ?creds.info.not_after, "certificate obtained from the controller");
    Ok((creds.info.not_before, creds.info.not_after))
}
