//! Bootstrap tokens: verification of arbitrary text never panics and never succeeds
//! without the key; peeking never panics.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use vigil_cert_authority::{SpiffeId, token::TokenKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = TokenKey::from_bytes(&[7; 32]);
    let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = vigil_cert_authority::token::TokenClaims::peek_unverified(text);
    let genuine = key.mint(&id, Duration::from_secs(600), now);
    if text != genuine {
        assert!(
            key.verify(text, &id, now).is_err(),
            "forged token accepted: {text:?}"
        );
    }
});
