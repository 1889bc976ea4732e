//! Percent-decoding for [`super::normalize`]: which escapes are decoded, which are kept
//! (uppercased), and which make the path ambiguous.

use unicode_normalization::UnicodeNormalization;

use super::PathError;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Characters that Windows "best fit" code pages map to ASCII separators while Unicode
/// compatibility folding keeps them (the "WorstFit" class): yen and won signs become `\`
/// in Japanese and Korean code pages; division, fraction and set-minus slashes become
/// `/` or `\`.
const BEST_FIT: &[char] = &[
    '\u{00A5}', '\u{20A9}', '\u{2215}', '\u{2216}', '\u{2044}', '\u{29F5}', '\u{29F8}', '\u{29F9}',
];

/// Decodes escaped unreserved characters, uppercases the other escapes and refuses the
/// forms that backends read differently.
pub(super) fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'%' => {
                let c = escape_at(bytes, i)?;
                match c {
                    b'/' | b'\\' | b'.' | b'%' | b';' | b'?' | b'#' => {
                        return Err(PathError::AmbiguousEscape(format!("%{c:02X}")));
                    }
                    0x00..=0x1f | 0x7f => {
                        return Err(PathError::EncodedControl(format!("%{c:02X}")));
                    }
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                        out.push(char::from(c));
                        i += 3;
                    }
                    0x80..=0xff => i = non_ascii_run(bytes, i, &mut out)?,
                    _ => {
                        push_escape(&mut out, c);
                        i += 3;
                    }
                }
            }
            // `#` and `?` cannot be in a parsed path; refused should a caller pass one.
            0x00..=0x20 | 0x7f..=0xff | b'#' | b'?' => return Err(PathError::BadChar),
            b => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// A run of escaped bytes ≥ 0x80 starting at `start`: must be UTF-8 whose characters do
/// not fold to ASCII. Kept escaped. Returns the index after the run.
fn non_ascii_run(bytes: &[u8], start: usize, out: &mut String) -> Result<usize, PathError> {
    let mut run = Vec::new();
    let mut i = start;
    while bytes.get(i) == Some(&b'%') {
        let c = escape_at(bytes, i)?;
        if c < 0x80 {
            break;
        }
        run.push(c);
        i += 3;
    }
    let text = std::str::from_utf8(&run).map_err(|_| PathError::BadUtf8)?;
    for ch in text.chars() {
        if BEST_FIT.contains(&ch) || ch.nfkc().any(|folded| folded.is_ascii()) {
            return Err(PathError::Confusable(ch));
        }
    }
    for c in run {
        push_escape(out, c);
    }
    Ok(i)
}

/// The byte escaped at `bytes[i..i + 3]` (`bytes[i]` is `%`).
fn escape_at(bytes: &[u8], i: usize) -> Result<u8, PathError> {
    let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
    match (hex_val(hex[0]), hex_val(hex[1])) {
        (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
        _ => Err(PathError::BadEscape),
    }
}

fn push_escape(out: &mut String, c: u8) {
    out.push('%');
    out.push(char::from(HEX[usize::from(c >> 4)]));
    out.push(char::from(HEX[usize::from(c & 0xf)]));
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `segment` (of an already decoded path) with its ASCII escapes decoded, as a backend
/// that decodes before acting sees it. Non-ASCII escapes are left as they are.
pub(super) fn ascii_view(segment: &str) -> std::borrow::Cow<'_, str> {
    if !segment.contains('%') {
        return segment.into();
    }
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        match escape_at(bytes, i) {
            Ok(c) if bytes[i] == b'%' && c < 0x80 => {
                out.push(char::from(c));
                i += 3;
            }
            _ => {
                out.push(char::from(bytes[i]));
                i += 1;
            }
        }
    }
    out.into()
}
