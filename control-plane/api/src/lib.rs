//! The controller <-> proxy wire contract.
//!
//! - [`pb`]: the generated protobuf types and tonic clients/servers for
//!   `proto/vigil/api/v1/*.proto` (`Identity.Certify`, `Policy.Watch`, `Policy.Ack`);
//! - [`convert`]: conversions between the wire types and Vigil's domain types. Domain ->
//!   wire is total; wire -> domain fails on anything unspecified or malformed, and the
//!   proxy turns such a failure into a deny-all policy (fail closed), never a permissive one.

pub mod convert;

/// Generated from the protos (prost + tonic).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("vigil.api.v1");
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
