//! The strict HTTP/1 framing checks: never panic, and give the same answer however the
//! same bytes are split into reads (a split-dependent answer is a smuggling gap).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::strict_h1::check_reads;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let max_head = 512;
    let (whole, whole_violation) = check_reads([bytes], max_head);
    // Split at one point, and byte by byte.
    let at = usize::from(split) % (bytes.len() + 1);
    let (a, b) = bytes.split_at(at);
    let (split_out, split_violation) = check_reads([a, b], max_head);
    let (bytewise, bytewise_violation) = check_reads(bytes.chunks(1), max_head);
    assert_eq!(
        whole_violation.is_some(),
        split_violation.is_some(),
        "split at {at}"
    );
    assert_eq!(
        whole_violation.is_some(),
        bytewise_violation.is_some(),
        "byte by byte"
    );
    if whole_violation.is_none() {
        assert_eq!(whole, split_out, "split at {at}");
        assert_eq!(whole, bytewise, "byte by byte");
    }
});
