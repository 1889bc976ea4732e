//! Protocol detection: the outer layer (plaintext, mesh TLS, other TLS — the ClientHello
//! read by rustls) and the inner protocol (HTTP/1, HTTP/2, opaque). Never panics, and a
//! decision does not change when more bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::detect::{classify, classify_outer};

fuzz_target!(|data: &[u8]| {
    for n in [data.len() / 2, data.len()] {
        let _ = classify_outer(&data[..n]);
    }
    if let Some(first) = classify(&data[..data.len() / 2]) {
        assert_eq!(
            classify(data),
            Some(first),
            "decided, then changed its mind"
        );
    }
    if let (Some(a), Some(b)) = (
        classify_outer(&data[..data.len() / 2]),
        classify_outer(data),
    ) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
});
