//! CSR handling: whatever the bytes, `public_key` returns a key only for a CSR whose
//! self-signature verifies, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vigil_cert_authority::csr::public_key(data);
});
