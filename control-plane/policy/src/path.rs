//! Request path normalisation: policy matches exactly the path the app will receive.
//!
//! Before authorization every path is brought to one canonical form, and the request is
//! forwarded in that form:
//!
//! 1. percent-encoded *unreserved* characters are decoded (`/%61dmin` -> `/admin`), other
//!    escapes are kept with uppercase hex;
//! 2. repeated slashes are merged (`//a///b` -> `/a/b`);
//! 3. dot segments are removed as in RFC 3986 §5.2.4 (`/a/./b/../c` -> `/a/c`).
//!
//! Targets that different servers read differently are refused (400) instead of being
//! guessed at: backslashes, encoded `/` `\` `.` (`%2F` `%5C` `%2E`), encoded `%` (double
//! encoding, `%25`), malformed escapes, and control characters. This closes the
//! path-confusion class of L7 policy bypasses.

/// Why a path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A backslash, which some servers treat as `/`.
    #[error("path contains a backslash")]
    Backslash,
    /// `%2F`, `%5C`, `%2E` or `%25`.
    #[error("path contains an ambiguous percent-encoding ({0})")]
    AmbiguousEscape(String),
    /// `%` not followed by two hex digits.
    #[error("path contains a malformed percent-encoding")]
    BadEscape,
    /// A control character or non-ASCII byte.
    #[error("path contains a control or non-ASCII character")]
    BadChar,
    /// Not an origin-form path.
    #[error("path must start with `/`")]
    NotAbsolute,
}

/// Normalises `raw` (the path part of a request target, without query).
pub fn normalize(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(raw)?;
    Ok(remove_dot_segments(&decoded))
}

fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let (Some(hi), Some(lo)) = (hex_val(hex[0]), hex_val(hex[1])) else {
                    return Err(PathError::BadEscape);
                };
                let c = hi << 4 | lo;
                match c {
                    b'/' | b'\\' | b'.' | b'%' => {
                        return Err(PathError::AmbiguousEscape(format!("%{c:02X}")));
                    }
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                        out.push(c as char)
                    }
                    _ => {
                        out.push('%');
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
                    }
                }
                i += 3;
                continue;
            }
            0x00..=0x20 | 0x7f..=0xff => return Err(PathError::BadChar),
            _ => out.push(b as char),
        }
        i += 1;
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §5.2.4 on a path that starts with `/`, with empty segments dropped.
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" => trailing_slash = i == last,
            "." => trailing_slash = i == last,
            ".." => {
                stack.pop();
                trailing_slash = i == last;
            }
            s => {
                stack.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (input, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/admin/..", "/"),
            ("/%61dmin", "/admin"),
            ("/a%7Eb", "/a~b"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/a/.hidden", "/a/.hidden"),
            ("/a/..b", "/a/..b"),
            ("//", "/"),
        ] {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn ambiguous_targets_are_refused() {
        for (input, want) in [
            ("/a\\b", PathError::Backslash),
            ("/a%2Fb", PathError::AmbiguousEscape("%2F".into())),
            ("/a%2fb", PathError::AmbiguousEscape("%2F".into())),
            ("/a%5Cb", PathError::AmbiguousEscape("%5C".into())),
            ("/%2e%2e/admin", PathError::AmbiguousEscape("%2E".into())),
            ("/a%252Fb", PathError::AmbiguousEscape("%25".into())),
            ("/a%2", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("/a\tb", PathError::BadChar),
            ("/a b", PathError::BadChar),
            ("/é", PathError::BadChar),
            ("a/b", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ] {
            assert_eq!(normalize(input), Err(want), "{input}");
        }
    }
}
