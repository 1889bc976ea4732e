//! SPIFFE IDs and trust domains: the one parser and formatter in Vigil.
//!
//! A SPIFFE ID is `spiffe://<trust-domain><path>`. Vigil's workload identities use the
//! Kubernetes shape `spiffe://<td>/ns/<namespace>/sa/<service-account>`, but the parser
//! accepts any ID the [SPIFFE ID standard] allows, and nothing more:
//!
//! - the scheme is exactly `spiffe://` (lowercase);
//! - the trust domain uses only `a-z 0-9 . - _` (so no uppercase, no port, no userinfo)
//!   and is at most 255 bytes;
//! - the path is empty (a trust-domain ID) or a sequence of `/segment`s, each non-empty,
//!   not `.` or `..`, made of `a-z A-Z 0-9 . - _` (so no percent-encoding, query or
//!   fragment, and no trailing slash);
//! - the whole ID is at most 2048 bytes.
//!
//! Parsing never normalises: an ID that is not already in canonical form is an error, so
//! two IDs are equal exactly when their strings are equal.
//!
//! [SPIFFE ID standard]: https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md

use std::{fmt, str::FromStr};

const SCHEME: &str = "spiffe://";
/// Longest SPIFFE ID the standard allows, in bytes.
pub const MAX_ID_LEN: usize = 2048;
/// Longest trust domain name the standard allows, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A trust domain name such as `cluster.local`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

/// A SPIFFE ID in canonical form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The whole ID, e.g. `spiffe://cluster.local/ns/shop/sa/web`.
    id: String,
    /// Byte offset where the path starts (== id.len() for a trust-domain ID).
    path_start: usize,
}

/// Why a string is not a SPIFFE ID (or trust domain). Messages name the offending part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The input was empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The scheme was not exactly `spiffe://`.
    #[error("SPIFFE ID must start with `spiffe://` (lowercase)")]
    WrongScheme,
    /// Nothing between the scheme and the path.
    #[error("SPIFFE ID has no trust domain")]
    MissingTrustDomain,
    /// A character outside `a-z 0-9 . - _` in the trust domain.
    #[error(
        "trust domain contains {0:?}; only lowercase letters, digits, `.`, `-` and `_` are allowed (no port, userinfo or uppercase)"
    )]
    BadTrustDomainChar(char),
    /// Trust domain over 255 bytes.
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    /// An empty path segment (`//` or a trailing `/`).
    #[error("SPIFFE ID path has an empty segment (double or trailing `/`)")]
    EmptySegment,
    /// A `.` or `..` path segment.
    #[error("SPIFFE ID path has a `.` or `..` segment")]
    DotSegment,
    /// A character outside `a-z A-Z 0-9 . - _` in the path.
    #[error(
        "SPIFFE ID path contains {0:?}; only letters, digits, `.`, `-` and `_` are allowed (no percent-encoding, query or fragment)"
    )]
    BadPathChar(char),
    /// Whole ID over 2048 bytes.
    #[error("SPIFFE ID is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    /// A workload identity was required but the ID has no path.
    #[error("expected a workload SPIFFE ID with a path, got the trust-domain ID `{0}`")]
    NoPath(String),
}

// === impl TrustDomain ===

impl TrustDomain {
    /// Parses a trust domain name (`cluster.local`), not a URI.
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The trust domain name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<td>` (used in CA certificates).
    pub fn id(&self) -> SpiffeId {
        let id = format!("{SCHEME}{}", self.0);
        let path_start = id.len();
        SpiffeId { id, path_start }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Default for TrustDomain {
    /// `cluster.local`, the default trust domain of a Kubernetes cluster.
    fn default() -> Self {
        Self("cluster.local".to_owned())
    }
}

// === impl SpiffeId ===

impl SpiffeId {
    /// Parses a SPIFFE ID. Rejects anything not already canonical (see the module docs).
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        let td_len = rest.find('/').unwrap_or(rest.len());
        validate_trust_domain(&rest[..td_len])?;
        let path_start = SCHEME.len() + td_len;
        validate_path(&s[path_start..])?;
        Ok(Self {
            id: s.to_owned(),
            path_start,
        })
    }

    /// Builds the Kubernetes-shaped workload ID `spiffe://<td>/ns/<ns>/sa/<sa>`.
    ///
    /// Fails if `ns` or `sa` is not a valid path segment.
    pub fn workload(
        td: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!("{SCHEME}{td}/ns/{namespace}/sa/{service_account}"))
    }

    /// The trust domain name (without scheme).
    pub fn trust_domain_name(&self) -> &str {
        &self.id[SCHEME.len()..self.path_start]
    }

    /// The trust domain as a typed value.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The path, e.g. `/ns/shop/sa/web`; empty for a trust-domain ID.
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }

    /// True for a trust-domain ID (`spiffe://td`), which names no workload.
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }

    /// `(namespace, service_account)` if the path has the Kubernetes shape `/ns/<ns>/sa/<sa>`.
    pub fn namespace_and_service_account(&self) -> Option<(&str, &str)> {
        let mut segs = self.path().strip_prefix('/')?.split('/');
        match (
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// Returns `self` if it names a workload (has a path), else [`SpiffeIdError::NoPath`].
    pub fn require_workload(self) -> Result<Self, SpiffeIdError> {
        if self.is_trust_domain_id() {
            return Err(SpiffeIdError::NoPath(self.id));
        }
        Ok(self)
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    match td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(c) => Err(SpiffeIdError::BadTrustDomainChar(c)),
        None => Ok(()),
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/', so the first split item is the empty string before it.
    for seg in path.split('/').skip(1) {
        if seg.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
        {
            return Err(SpiffeIdError::BadPathChar(c));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
