//! Why a policy document is invalid: the one error type of compilation, shared by the
//! rule compiler (`compile.rs`) and the HTTP matcher compiler (`http_match.rs`).

use crate::pattern::PatternError;

/// Why a policy document is invalid. `at` says where (`inbound[3]`, `revoked.ids[0]`...).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A field has an invalid value.
    #[error("{at}: {what}")]
    Invalid {
        /// Where in the document.
        at: String,
        /// What is wrong.
        what: String,
    },
    /// A SPIFFE ID or pattern is invalid.
    #[error("{at}: {source}")]
    Pattern {
        /// Where in the document.
        at: String,
        /// What is wrong.
        source: PatternError,
    },
}
