//! One pass over a complete request head that is plainly valid — what nearly every
//! client sends — instead of [`super::grammar::validate_head`]'s separate scans (line
//! ends, then each line's parts). It decides only heads it can accept outright: anything
//! else (every violation, and the rare forms it does not handle) returns `None`, and the
//! full grammar decides, with its reasons. Accepting exactly what the grammar accepts,
//! with the same framing, is tested against it on generated heads.

use super::grammar::{Framing, FramingFields, TCHAR, trim_ows};

/// Bytes allowed in a field value as it is scanned: HTAB, visible ASCII, space and
/// obs-text (RFC 9110 §5.5) — not CR, LF or other controls.
static VALUE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b == 0x09 || (b >= 0x20 && b != 0x7f);
        b += 1;
    }
    t
};

/// `head` (ending with CRLF CRLF) if it is plainly valid: its framing and whether it asks
/// to upgrade; `None` when the full grammar must decide.
pub(super) fn validate_head(head: &[u8]) -> Option<(Framing, bool)> {
    // Every line below, the last header line included, ends with CRLF: the scans stop at
    // its CR at the latest.
    let body = head.strip_suffix(b"\r\n")?;
    let (mut i, http10) = request_line(body)?;
    let mut fields = FramingFields::default();
    while i < body.len() {
        let start = i;
        while TCHAR[usize::from(body[i])] {
            i += 1;
        }
        if i == start || body[i] != b':' {
            return None;
        }
        let name = &body[start..i];
        i += 1;
        let value_start = i;
        while VALUE[usize::from(body[i])] {
            i += 1;
        }
        if body[i] != b'\r' || body.get(i + 1) != Some(&b'\n') {
            return None;
        }
        let value = trim_ows(&body[value_start..i]);
        i += 2;
        fields.field(name, value).ok()?;
    }
    fields.framing(http10).ok()
}

/// `METHOD SP target SP HTTP/1.x CRLF` at the start of `body`: where the next line
/// starts, and whether it is HTTP/1.0.
fn request_line(body: &[u8]) -> Option<(usize, bool)> {
    let mut i = 0;
    while body.get(i).is_some_and(|&b| TCHAR[usize::from(b)]) {
        i += 1;
    }
    if i == 0 || body.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    let target = i;
    while body
        .get(i)
        .is_some_and(|&b| b != b' ' && b != b'\r' && b != b'\n')
    {
        i += 1;
    }
    if i == target || body.get(i) != Some(&b' ') {
        return None;
    }
    let http10 = match body.get(i + 1..i + 11)? {
        b"HTTP/1.1\r\n" => false,
        b"HTTP/1.0\r\n" => true,
        _ => return None,
    };
    Some((i + 11, http10))
}
