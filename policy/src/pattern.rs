//! SPIFFE ID patterns: an exact ID, or one whose path has whole `*` segments.

use std::fmt;

use vigil_cert_authority::{SpiffeId, SpiffeIdError};

/// A SPIFFE ID or pattern such as `spiffe://cluster.local/ns/shop/sa/*`.
///
/// `*` stands for exactly one path segment and must be the whole segment; the trust
/// domain is always literal. A pattern without `*` matches exactly one ID.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffePattern {
    text: String,
    /// Length of the literal prefix up to (and including) the `/` before the first `*`,
    /// or the whole text for an exact ID.
    literal_len: usize,
    exact: bool,
}

/// An invalid pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Not a SPIFFE ID even with wildcards replaced.
    #[error("{pattern:?} is not a SPIFFE ID pattern: {source}")]
    Invalid {
        /// The pattern.
        pattern: String,
        /// Why.
        source: SpiffeIdError,
    },
    /// `*` inside a segment (`web-*`) or in the trust domain.
    #[error("{0:?}: `*` must be a whole path segment (e.g. `.../sa/*`)")]
    PartialWildcard(String),
}

impl SpiffePattern {
    /// Parses a pattern.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let invalid = |source| PatternError::Invalid {
            pattern: text.to_owned(),
            source,
        };
        if !text.contains('*') {
            let id = SpiffeId::parse(text).map_err(invalid)?;
            return Ok(Self {
                literal_len: id.as_str().len(),
                text: id.as_str().to_owned(),
                exact: true,
            });
        }
        // Validate the shape with each `*` segment replaced by a placeholder.
        let probe = SpiffeId::parse(&text.replace('*', "x")).map_err(invalid)?;
        let path_start = text.len() - probe.path().len();
        if text[..path_start].contains('*') {
            return Err(PatternError::PartialWildcard(text.to_owned()));
        }
        let mut literal_len = None;
        let mut offset = path_start;
        for seg in text[path_start..].split('/').skip(1) {
            offset += 1; // the '/'
            if seg.contains('*') {
                if seg != "*" {
                    return Err(PatternError::PartialWildcard(text.to_owned()));
                }
                literal_len.get_or_insert(offset);
            }
            offset += seg.len();
        }
        Ok(Self {
            text: text.to_owned(),
            literal_len: literal_len.unwrap_or(text.len()),
            exact: false,
        })
    }

    /// True if this pattern names exactly one ID.
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// The literal prefix: the whole ID for an exact pattern, else everything up to and
    /// including the `/` before the first `*`.
    pub fn literal_prefix(&self) -> &str {
        &self.text[..self.literal_len]
    }

    /// Does `id` match?
    pub fn matches(&self, id: &SpiffeId) -> bool {
        let id = id.as_str();
        if self.exact {
            return id == self.text;
        }
        if !id.starts_with(self.literal_prefix()) {
            return false;
        }
        let mut want = self.text[self.literal_len..].split('/');
        let mut have = id[self.literal_len..].split('/');
        loop {
            match (want.next(), have.next()) {
                (None, None) => return true,
                (Some("*"), Some(_)) => {}
                (Some(w), Some(h)) if w == h => {}
                _ => return false,
            }
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for SpiffePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffePattern({})", self.text)
    }
}

impl fmt::Display for SpiffePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn exact_and_wildcards() {
        let exact = SpiffePattern::parse("spiffe://td/ns/shop/sa/web").unwrap();
        assert!(exact.is_exact());
        assert!(exact.matches(&id("spiffe://td/ns/shop/sa/web")));
        assert!(!exact.matches(&id("spiffe://td/ns/shop/sa/web2")));

        let ns = SpiffePattern::parse("spiffe://td/ns/shop/sa/*").unwrap();
        assert!(!ns.is_exact());
        assert_eq!(ns.literal_prefix(), "spiffe://td/ns/shop/sa/");
        assert!(ns.matches(&id("spiffe://td/ns/shop/sa/web")));
        assert!(ns.matches(&id("spiffe://td/ns/shop/sa/db")));
        assert!(
            !ns.matches(&id("spiffe://td/ns/shop/sa/web/extra")),
            "* is one segment"
        );
        assert!(!ns.matches(&id("spiffe://td/ns/shop/sa")));
        assert!(!ns.matches(&id("spiffe://td/ns/shopping/sa/web")));
        assert!(!ns.matches(&id("spiffe://other/ns/shop/sa/web")));

        let any_ns = SpiffePattern::parse("spiffe://td/ns/*/sa/admin").unwrap();
        assert_eq!(any_ns.literal_prefix(), "spiffe://td/ns/");
        assert!(any_ns.matches(&id("spiffe://td/ns/a/sa/admin")));
        assert!(!any_ns.matches(&id("spiffe://td/ns/a/sa/web")));
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in [
            "spiffe://td/ns/shop/sa/web-*",
            "spiffe://*/ns/shop/sa/web",
            "spiffe://td*/ns/a",
            "spiffe://td/ns/**/sa/x",
        ] {
            assert!(
                matches!(
                    SpiffePattern::parse(bad),
                    Err(PatternError::PartialWildcard(_))
                ),
                "{bad}"
            );
        }
        for bad in [
            "",
            "spiffe://td/ns//sa/*",
            "spiffe://TD/ns/*",
            "https://td/*",
            "spiffe://td/ns/../*",
        ] {
            assert!(
                matches!(SpiffePattern::parse(bad), Err(PatternError::Invalid { .. })),
                "{bad}"
            );
        }
    }
}
