//! `Identity.Certify`: CSR + proof -> SVID for the *authenticated* identity.

use std::{sync::Arc, time::SystemTime};

use tonic::{Request, Response, Status};
use vigil_api::pb::{self, certify_request::Proof};

use super::{peer_addr, peer_identity, workload_key};
use crate::state::State;

/// The Identity service.
pub(super) struct IdentityService {
    state: Arc<State>,
}

impl IdentityService {
    pub(super) fn new(state: Arc<State>) -> Self {
        Self { state }
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
            (Some(Proof::ServiceAccountToken(_)), _) => {
                return Err(self.refuse(
                    "unsupported_proof",
                    Status::unimplemented("service-account tokens are verified in Kubernetes mode; this controller runs in local mode"),
                ));
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
