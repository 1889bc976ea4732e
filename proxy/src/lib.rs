//! vigil-proxy: the sidecar data plane.
//!
//! Owns everything between the workload and the network: interception ([`init`]), the
//! [`inbound`] and [`outbound`] listeners, mTLS with SPIFFE identities ([`tls_state`]),
//! protocol [`detect`]ion, the one authorization step (`authz`, over the policy evaluator of
//! `vigil-policy`, which also owns path normalisation), the registry of live connections
//! that policy changes re-check ([`connections`]), strict HTTP/1 framing ([`strict_h1`]),
//! forwarding, hot reload of credentials and policy ([`identity`], [`policy_store`],
//! [`files`]), the [`admin`] server, [`metrics`], the [`access_log`] and the record of
//! recent mTLS [`peers`].
//!
//! It does not own identity issuance or policy compilation: credentials and policy arrive
//! through stores (from files, or streamed by the controller) and are only consumed here.

pub mod access_log;
pub mod admin;
pub mod app;
mod authz;
mod checkin;
pub mod config;
pub mod connections;
pub mod control;
pub mod copy;
mod date;
pub mod detect;
pub mod files;
mod h2_body;
mod h2_client;
mod h2_server;
mod head_timer;
pub mod http_util;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod io;
pub mod limits;
pub mod link_layout;
pub mod listen;
mod log_limit;
mod memory;
pub mod metrics;
pub mod outbound;
pub mod peers;
mod pending;
pub mod policy_store;
pub mod ratelimit;
pub mod req_body;
pub mod request_log;
pub mod resp_body;
mod serve;
pub mod shared;
pub mod strict_h1;
mod sweeper;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls_errors;
pub mod tls_state;
mod upgrade;
pub mod wait_ready;

pub use app::Proxy;
