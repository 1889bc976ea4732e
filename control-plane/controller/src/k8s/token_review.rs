//! Verifying a proxy's projected service-account token with the TokenReview API.
//!
//! The apiserver checks the signature, expiry, that the token's pod and service account
//! still exist, and the audience (we ask for `--token-audience`, `vigil-ca`: a token
//! minted for anything else — the default API audience included — is refused). What
//! comes back is the authenticated user `system:serviceaccount:<ns>:<sa>` and, for
//! pod-bound tokens, the pod's name.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, api::PostParams};

/// Checks tokens against one audience.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Who a token authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewed {
    /// Namespace of the service account.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// The pod the token is bound to, if it is pod-bound (projected tokens are).
    pub pod: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The apiserver did not authenticate it (bad signature, expired, wrong audience,
    /// deleted pod or service account, ...). The message is the apiserver's.
    #[error("service-account token not authenticated: {0}")]
    NotAuthenticated(String),
    /// Authenticated, but not for our audience.
    #[error("service-account token is not for audience {0:?}")]
    WrongAudience(String),
    /// Authenticated, but not a service account.
    #[error("token authenticates {0:?}, not a service account")]
    NotServiceAccount(String),
    /// The TokenReview call failed (not the token's fault; the proxy retries).
    #[error("TokenReview failed: {0}")]
    Api(#[from] kube::Error),
}

impl TokenReviewer {
    /// A reviewer for `audience`.
    pub fn new(client: kube::Client, audience: String) -> Self {
        Self { client, audience }
    }

    /// Reviews `token`.
    pub async fn review(&self, token: &str) -> Result<Reviewed, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let out = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = out.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "no reason given".into());
            return Err(ReviewError::NotAuthenticated(why));
        }
        if !status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience))
        {
            return Err(ReviewError::WrongAudience(self.audience.clone()));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let Some((namespace, service_account)) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
        else {
            return Err(ReviewError::NotServiceAccount(username));
        };
        let pod = user
            .extra
            .as_ref()
            .and_then(|e| e.get("authentication.kubernetes.io/pod-name"))
            .and_then(|v| v.first())
            .cloned();
        Ok(Reviewed {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            pod,
        })
    }
}
