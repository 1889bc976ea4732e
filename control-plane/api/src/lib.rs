//! The controller <-> proxy wire contract.
//!
//! - [`pb`]: the generated protobuf types and tonic clients/servers for
//!   `proto/vigil/api/v1/*.proto` (`Identity.Certify`, `Policy.Sync`, and
//!   `Policy.Watch` + `Policy.Ack` for older proxies, `Policy.Resolve`);
//! - [`convert`]: conversions between the wire types and Vigil's domain types. Domain ->
//!   wire is total; wire -> domain fails on anything unspecified or malformed, and the
//!   proxy turns such a failure into a deny-all policy (fail closed), never a permissive one.

pub mod convert;

use std::{sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

/// Generated from the protos (prost + tonic).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("vigil.api.v1");
}

/// A gRPC channel to the controller at `address` (host:port) over TLS with `config` (see
/// `vigil_cert_authority::tls::control_client_config`, which verifies the controller's
/// SPIFFE ID — the TLS server name is not used).
pub async fn connect(
    address: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let address = address.to_string();
    Endpoint::from_static("http://vigil-controller")
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_| {
            let (address, config) = (address.clone(), config.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                let _ = tcp.set_nodelay(true);
                let name = ServerName::try_from("vigil-controller.invalid")
                    .map_err(std::io::Error::other)?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}

/// Parses a workload reference `namespace/name`.
pub fn parse_workload(s: &str) -> Option<(&str, &str)> {
    let (ns, name) = s.split_once('/')?;
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 253
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (ok(ns) && ok(name)).then_some((ns, name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn workload_refs() {
        assert_eq!(
            super::parse_workload("shop/orders"),
            Some(("shop", "orders"))
        );
        for bad in [
            "shop",
            "/orders",
            "shop/",
            "Shop/orders",
            "shop/or ders",
            "a/b/c",
        ] {
            assert_eq!(super::parse_workload(bad), None, "{bad}");
        }
    }
}
