//! Vigil's identity core, shared by the proxy and the controller.
//!
//! This crate owns everything about *who* a workload is:
//!
//! - [`spiffe`]: the one SPIFFE ID parser/formatter;
//! - [`authority`]: the CA — a persistent root -> issuer hierarchy ([`state`]) that signs
//!   SVIDs for *authenticated* identities ([`csr`], [`issuer`], [`ttl`]) and rotates itself;
//! - [`bundle`]: trust bundles (PEM and SPIFFE JWKS);
//! - [`token`]: bootstrap tokens for local mode;
//! - [`svid`], [`verify`], [`tls`]: reading SVIDs, SPIFFE-aware rustls verifiers, and the
//!   one place that builds rustls configs;
//! - [`creds`], [`rotation`]: a workload's current credentials and when to renew them.
//!
//! It does not own transport (the controller's gRPC API), policy (who may talk to whom), or
//! any I/O beyond the CA state directory.

pub mod authority;
pub mod bundle;
pub mod creds;
pub mod csr;
pub mod issuer;
pub mod keys;
pub mod pemfile;
pub mod rotation;
pub mod spiffe;
pub mod state;
pub mod svid;
pub mod tls;
pub mod token;
pub mod ttl;
pub mod verify;

pub use authority::{
    CaError, CertificateAuthority, InitOptions, IssueError, IssuedSvid, RootSource,
};
pub use bundle::TrustBundle;
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
