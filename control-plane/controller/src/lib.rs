//! vigil-controller: the control plane.
//!
//! ```text
//!   local dir (YAML) ── PolicyDir ─────┐
//!   Kubernetes API ──── reflectors ────┴─ Source ──► Index (vigil-index) ─watch─► Policy.Sync ─► proxies
//!                                                                             (acks)      ◄─
//!   CA state dir ──► CertificateAuthority ──────────────────────────────────► Identity.Certify
//!                                                                      admin: /metrics /status
//! ```
//!
//! Owns: the CA at runtime (maintenance, the controller's own certificate), the sources
//! and their one reload loop ([`source`]), the gRPC servers, the admin server and the status report. The compiler lives in
//! `vigil-index`, the wire contract in `vigil-api`, the CRD types in `vigil-crds`.

pub mod admin;
pub mod app;
pub mod ca;
pub mod config;
pub mod grpc;
pub mod k8s;
pub mod local;
pub mod metrics;
pub mod source;
pub mod state;
pub mod status;

pub use app::Controller;
pub use config::ControllerArgs;
