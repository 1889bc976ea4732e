//! The proxy's policy file (YAML or JSON) and its compiler: never panic; a policy that
//! compiles can evaluate any request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_policy::{HttpRequest, Peer, Policy, ProxyPolicy, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(model) = serde_saphyr::from_str::<ProxyPolicy>(text) else {
        return;
    };
    let Ok(policy) = Policy::compile(model) else {
        return;
    };
    let headers = http::HeaderMap::new();
    let id = vigil_cert_authority::SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
    for path in ["/", "/admin", "/a/b/"] {
        for peer in [Peer::Authenticated(&id), Peer::Unauthenticated] {
            let _ = policy.evaluate(
                &Request {
                    peer,
                    source_ip: Some([10, 0, 0, 1].into()),
                    port: 8080,
                    http: Some(HttpRequest {
                        method: "GET",
                        path,
                        headers: &headers,
                    }),
                },
                1_800_000_000,
            );
        }
    }
});
