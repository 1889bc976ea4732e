//! Bootstrap tokens: the first proof a proxy presents in local mode.
//!
//! In Kubernetes a proxy proves who it is with its projected service-account token; without
//! Kubernetes, `vigil ca token` mints a token bound to one SPIFFE ID with an expiry, and the
//! proxy presents it to `Identity.Certify`. A token is
//!
//! ```text
//! vgt1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(key, "vgt1." + claims))>
//! ```
//!
//! keyed with a 256-bit secret kept in the CA state directory. Verification checks the MAC
//! first, in constant time (`aws_lc_rs::hmac::verify`), and only then looks at the claims,
//! so nothing about a forged token is interpreted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::{keys, spiffe::SpiffeId};

const PREFIX: &str = "vgt1.";
/// Size of the token key, in bytes.
pub const KEY_LEN: usize = 32;

/// Mints and verifies bootstrap tokens with one secret key.
pub struct TokenKey(hmac::Key);

/// What a valid token asserts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenClaims {
    /// The identity the token is bound to.
    pub sub: SpiffeId,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// Random token ID, so two tokens minted in the same second differ.
    pub jti: String,
}

impl TokenClaims {
    /// Reads a token's claims **without verifying it** — for the holder to learn which
    /// identity its token is for. Never use this to make an authorization decision.
    pub fn peek_unverified(token: &str) -> Option<Self> {
        let (signed, _) = token.trim().rsplit_once('.')?;
        let body = signed.strip_prefix(PREFIX)?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }
}

/// Why a token is refused. Each case is distinct so operators can tell them apart.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a Vigil token at all.
    #[error("bootstrap token is malformed (expected `vgt1.<claims>.<mac>`)")]
    Malformed,
    /// The MAC does not verify: tampered, or minted by another CA.
    #[error("bootstrap token signature is invalid (tampered, or minted by a different CA)")]
    BadSignature,
    /// Valid but expired.
    #[error(
        "bootstrap token expired at {expired_at} (unix seconds); mint a new one with `vigil ca token`"
    )]
    Expired {
        /// When it expired.
        expired_at: u64,
    },
    /// Valid, but for another identity.
    #[error("bootstrap token is bound to {bound_to}, not to {presented}")]
    WrongIdentity {
        /// The identity in the token.
        bound_to: SpiffeId,
        /// The identity the caller asked for.
        presented: SpiffeId,
    },
}

impl TokenKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Fresh random key bytes (for `vigil ca init`).
    pub fn generate_bytes() -> [u8; KEY_LEN] {
        keys::random_bytes::<KEY_LEN>(false)
    }

    /// Mints a token for `id`, valid for `ttl` from `now`.
    pub fn mint(&self, id: &SpiffeId, ttl: Duration, now: SystemTime) -> String {
        let iat = unix(now);
        let claims = TokenClaims {
            sub: id.clone(),
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
            jti: hex(&keys::random_bytes::<12>(false)),
        };
        // Serialising plain claims cannot fail.
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signed = format!("{PREFIX}{body}");
        let tag = hmac::sign(&self.0, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Verifies a token for the identity `expected` at time `now`.
    pub fn verify(
        &self,
        token: &str,
        expected: &SpiffeId,
        now: SystemTime,
    ) -> Result<TokenClaims, TokenError> {
        let claims = self.verify_signature(token)?;
        if unix(now) >= claims.exp {
            return Err(TokenError::Expired {
                expired_at: claims.exp,
            });
        }
        if &claims.sub != expected {
            return Err(TokenError::WrongIdentity {
                bound_to: claims.sub,
                presented: expected.clone(),
            });
        }
        Ok(claims)
    }

    /// Checks the MAC (constant time) and decodes the claims, without checking expiry or
    /// identity.
    fn verify_signature(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let token = token.trim();
        let (signed, tag_b64) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let body = signed.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag_b64)
            .map_err(|_| TokenError::Malformed)?;
        if body.is_empty() || tag.len() != hmac::HMAC_SHA256.digest_algorithm().output_len {
            return Err(TokenError::Malformed);
        }
        hmac::verify(&self.0, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn mint_and_verify() {
        let key = TokenKey::from_bytes(&[7; KEY_LEN]);
        let web = id("spiffe://td/ns/shop/sa/web");
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = key.mint(&web, Duration::from_secs(600), now);
        assert!(t.starts_with("vgt1."));
        let claims = key
            .verify(&t, &web, now + Duration::from_secs(599))
            .unwrap();
        assert_eq!(claims.sub, web);
        assert_eq!(claims.exp - claims.iat, 600);
        // Two tokens for the same identity in the same second differ.
        assert_ne!(t, key.mint(&web, Duration::from_secs(600), now));
    }

    #[test]
    fn rejections_are_distinct() {
        let key = TokenKey::from_bytes(&[7; KEY_LEN]);
        let web = id("spiffe://td/ns/shop/sa/web");
        let db = id("spiffe://td/ns/shop/sa/db");
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = key.mint(&web, Duration::from_secs(600), now);

        assert_eq!(
            key.verify(&t, &web, now + Duration::from_secs(600)),
            Err(TokenError::Expired {
                expired_at: 1_000_600
            })
        );
        assert_eq!(
            key.verify(&t, &db, now),
            Err(TokenError::WrongIdentity {
                bound_to: web.clone(),
                presented: db.clone()
            })
        );
        // Another CA's key.
        let other = TokenKey::from_bytes(&[8; KEY_LEN]);
        assert_eq!(other.verify(&t, &web, now), Err(TokenError::BadSignature));

        // Tampering with the claims: swap in claims for `db` but keep the old MAC.
        let (_, mac) = t.rsplit_once('.').unwrap();
        let forged_claims = TokenClaims {
            sub: db.clone(),
            iat: 1_000_000,
            exp: 9_999_999_999,
            jti: "x".into(),
        };
        let forged = format!(
            "vgt1.{}.{mac}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap())
        );
        assert_eq!(key.verify(&forged, &db, now), Err(TokenError::BadSignature));
        // Flip one character of the MAC.
        let mut bad = t.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            key.verify(std::str::from_utf8(&bad).unwrap(), &web, now),
            Err(TokenError::BadSignature)
        );

        for junk in [
            "",
            "vgt1.",
            "vgt1..",
            "abc.def",
            "vgt2.abc.def",
            "vgt1.abc.!!!",
        ] {
            assert_eq!(
                key.verify(junk, &web, now),
                Err(TokenError::Malformed),
                "{junk:?}"
            );
        }
        // A correct MAC over garbage claims is still malformed, not accepted.
        let signed = "vgt1.bm90LWpzb24";
        let tag = hmac::sign(&key.0, signed.as_bytes());
        let t = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(key.verify(&t, &web, now), Err(TokenError::Malformed));
    }

    #[test]
    fn holders_can_read_their_identity() {
        let key = TokenKey::from_bytes(&[7; KEY_LEN]);
        let web = id("spiffe://td/ns/shop/sa/web");
        let t = key.mint(
            &web,
            Duration::from_secs(60),
            UNIX_EPOCH + Duration::from_secs(5),
        );
        assert_eq!(TokenClaims::peek_unverified(&t).unwrap().sub, web);
        assert_eq!(TokenClaims::peek_unverified("garbage"), None);
    }

    #[test]
    fn debug_does_not_leak_the_key() {
        assert_eq!(
            format!("{:?}", TokenKey::from_bytes(&[1; KEY_LEN])),
            "TokenKey([redacted])"
        );
    }
}
