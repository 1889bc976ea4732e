//! The path normaliser (docs/path-contract.md): never panics; its output is a fixed point,
//! starts with `/`, has no empty, `.` or `..` segment, is printable ASCII, and a rule's
//! prefix the output is under is never left by a `..` the normaliser let through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_policy::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = normalize(raw) else {
        return;
    };
    assert_eq!(
        normalize(&out).as_deref(),
        Ok(&*out),
        "not a fixed point: {raw:?}"
    );
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
    assert!(
        out.bytes().all(|b| b.is_ascii_graphic()),
        "{raw:?} -> {out:?}"
    );
    let segments: Vec<&str> = out.split('/').skip(1).collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        assert!(!matches!(*seg, "." | ".."), "{raw:?} -> {out:?}");
        assert!(!seg.is_empty() || i == last, "{raw:?} -> {out:?}");
        assert!(!seg.contains([';', '\\']), "{raw:?} -> {out:?}");
    }
    // What a decoding backend sees has no separator or dot segment the proxy did not.
    let lower = out.to_ascii_lowercase();
    for esc in ["%2f", "%5c", "%2e", "%25", "%3b", "%00"] {
        assert!(!lower.contains(esc), "{raw:?} -> {out:?}");
    }
});
