//! SPIFFE ID parsing: never panics, and a parsed ID prints as text that parses back to
//! the same ID.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_cert_authority::SpiffeId;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(s) {
        let again = SpiffeId::parse(id.as_str()).expect("a printed ID parses");
        assert_eq!(again, id);
        assert!(id.as_str().starts_with("spiffe://"));
    }
});
