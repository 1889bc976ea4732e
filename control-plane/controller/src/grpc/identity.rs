//! `Identity.Certify`: CSR + proof -> SVID for the *authenticated* identity.

use std::{sync::Arc, time::SystemTime};

use tonic::{Request, Response, Status};
use vigil_api::pb::{self, certify_request::Proof};

use super::{peer_addr, peer_identity, workload_key};
use crate::{k8s::token_review::TokenReviewer, state::State};

/// The Identity service.
pub(super) struct IdentityService {
    state: Arc<State>,
    /// Kubernetes mode: verifies proxies' service-account tokens.
    reviewer: Option<TokenReviewer>,
}

impl IdentityService {
    pub(super) fn new(state: Arc<State>, reviewer: Option<TokenReviewer>) -> Self {
        Self { state, reviewer }
    }

    fn refuse(&self, reason: &'static str, status: Status) -> Status {
        self.state
            .metrics
            .refused
            .with_label_values(&[reason])
            .inc();
        status
    }
}

impl IdentityService {
    /// The token must authenticate (TokenReview, our audience) the service account the
    /// workload runs as, in its namespace, and — for pod-bound tokens — that very pod.
    async fn check_service_account_token(
        &self,
        reviewer: &TokenReviewer,
        token: &str,
        key: &vigil_index::ObjectKey,
        identity: &vigil_cert_authority::SpiffeId,
    ) -> Result<(), Status> {
        use crate::k8s::token_review::ReviewError;
        let reviewed = match reviewer.review(token).await {
            Ok(r) => r,
            Err(ReviewError::Api(e)) => {
                tracing::error!(workload = %key, error = %e, "TokenReview call failed");
                return Err(self.refuse(
                    "token_review_failed",
                    Status::unavailable(format!("cannot verify the token now: {e}")),
                ));
            }
            Err(e) => {
                tracing::warn!(workload = %key, error = %e, "service-account token refused");
                return Err(self.refuse("bad_token", Status::unauthenticated(e.to_string())));
            }
        };
        let claimed = vigil_cert_authority::SpiffeId::workload(
            &identity.trust_domain(),
            &reviewed.namespace,
            &reviewed.service_account,
        )
        .map_err(|e| self.refuse("bad_token", Status::unauthenticated(e.to_string())))?;
        if claimed != *identity || reviewed.namespace != key.namespace {
            tracing::warn!(workload = %key, token_for = %claimed, "service-account token for another identity");
            return Err(self.refuse(
                "wrong_identity",
                Status::permission_denied(format!(
                    "the token is for service account {}/{}, but workload {key} runs as {identity}",
                    reviewed.namespace, reviewed.service_account
                )),
            ));
        }
        if let Some(pod) = &reviewed.pod
            && *pod != key.name
        {
            return Err(self.refuse(
                "wrong_identity",
                Status::permission_denied(format!("the token is bound to pod {pod}, not {key}")),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::identity_server::Identity for IdentityService {
    async fn certify(
        &self,
        req: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyResponse>, Status> {
        let peer = peer_identity(&req);
        let addr = peer_addr(&req);
        let req = req.into_inner();
        let key = workload_key(&req.workload)?;
        let Some(identity) = self.state.index().identity(&key).cloned() else {
            return Err(self.refuse(
                "unknown_workload",
                Status::not_found(format!("workload {key} is not known to the controller")),
            ));
        };
        let now = SystemTime::now();
        let kind = match (&req.proof, &peer) {
            (Some(Proof::BootstrapToken(token)), _) => {
                let verified = self.state.ca().token_key().verify(token, &identity, now);
                if let Err(e) = verified {
                    tracing::warn!(workload = %key, ?addr, error = %e, "bootstrap token refused");
                    return Err(self.refuse("bad_token", Status::unauthenticated(e.to_string())));
                }
                "bootstrap"
            }
            (Some(Proof::ServiceAccountToken(token)), _) => {
                let Some(reviewer) = &self.reviewer else {
                    return Err(self.refuse(
                        "unsupported_proof",
                        Status::unimplemented("service-account tokens are verified in Kubernetes mode; this controller runs in local mode"),
                    ));
                };
                self.check_service_account_token(reviewer, token, &key, &identity)
                    .await?;
                "service_account_token"
            }
            (None, Some(current)) if *current == identity => "renewal",
            (None, Some(current)) => {
                return Err(self.refuse(
                    "wrong_identity",
                    Status::permission_denied(format!(
                        "caller {current} cannot renew the identity of workload {key} ({identity})"
                    )),
                ));
            }
            (None, None) => {
                return Err(self.refuse(
                    "no_proof",
                    Status::unauthenticated("no proof of identity: send a bootstrap token, or renew over mTLS with your current SVID"),
                ));
            }
        };
        let (svid, bundle) = {
            let ca = self.state.ca();
            let svid = ca.issue(&req.csr, &identity, self.state.svid_ttl);
            (svid, ca.bundle())
        };
        let svid =
            svid.map_err(|e| self.refuse("bad_csr", Status::invalid_argument(e.to_string())))?;
        self.state.metrics.issued.with_label_values(&[kind]).inc();
        tracing::info!(workload = %key, id = %identity, kind, "SVID issued");
        let not_after = svid
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Response::new(pb::CertifyResponse {
            spiffe_id: identity.to_string(),
            leaf: svid.leaf.as_ref().to_vec(),
            chain: svid.chain.iter().map(|c| c.as_ref().to_vec()).collect(),
            bundle: Some(pb::TrustBundle::from(&bundle)),
            not_after_unix: i64::try_from(not_after).unwrap_or(i64::MAX),
        }))
    }
}
