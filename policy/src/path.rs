//! Request path normalisation: policy is matched against exactly the path the app
//! receives, and that path means the same thing to every common backend.
//!
//! The contract, with the reason for every rule and the backends it protects, is
//! docs/path-contract.md. In short, every path is brought to one canonical form, the
//! request is authorized on it and forwarded in that form:
//!
//! 1. percent-encoded *unreserved* characters are decoded (`/%61dmin` -> `/admin`), other
//!    escapes are kept with uppercase hex;
//! 2. repeated slashes are merged (`//a///b` -> `/a/b`);
//! 3. dot segments are removed as in RFC 3986 §5.2.4 (`/a/./b/../c` -> `/a/c`).
//!
//! A target that some common backend would resolve to a different resource than another
//! is refused (400) instead of being guessed at ([`PathError`] lists the forms): a
//! backslash, `;` (path parameters), encodings of `/ \ . % ; ? #` and of control
//! characters, malformed escapes, escapes that are not UTF-8 or that Unicode
//! compatibility folding or Windows "best fit" turn into ASCII, raw bytes outside
//! visible ASCII, segments ending in a dot or a space, and NTFS stream names (`:$`).

use std::borrow::Cow;

mod decode;
#[cfg(test)]
mod tests;

/// Why a path was refused. Each variant is one form from docs/path-contract.md.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A backslash, which Windows servers (IIS, ASP.NET) and some static file servers
    /// treat as `/`.
    #[error("path contains a backslash")]
    Backslash,
    /// `;`: Java servlet containers (Tomcat, Jetty, Undertow, Spring) cut each segment at
    /// `;` (`/public/..;/admin` is `/admin` to them), other servers keep it.
    #[error("path contains `;` (path parameters are read differently by different servers)")]
    PathParameter,
    /// `%2F`, `%5C`, `%2E`, `%25`, `%3B`, `%3F` or `%23`: a server that decodes before
    /// routing sees a separator, a dot segment, a second round of decoding, a path
    /// parameter, a query or a fragment.
    #[error("path contains an ambiguous percent-encoding ({0})")]
    AmbiguousEscape(String),
    /// `%00`–`%1F` or `%7F`: decoded, a NUL or line break truncates or splits the path.
    #[error("path contains an encoded control character ({0})")]
    EncodedControl(String),
    /// `%` not followed by two hex digits (including IIS's `%uXXXX`).
    #[error("path contains a malformed percent-encoding")]
    BadEscape,
    /// Percent-encoded bytes that are not UTF-8 (overlong forms such as `%C0%AE` decode
    /// to `.` in lenient decoders).
    #[error("path contains percent-encoded bytes that are not UTF-8")]
    BadUtf8,
    /// A percent-encoded character that Unicode compatibility folding (NFKC) or a
    /// Windows "best fit" code page turns into ASCII (`%EF%BC%8F`, fullwidth `/`).
    #[error("path contains {0:?} (U+{code:04X}), which some servers fold to ASCII", code = u32::from(*.0))]
    Confusable(char),
    /// A control character, a space or a byte outside ASCII, unencoded.
    #[error("path contains a control, space or non-ASCII character")]
    BadChar,
    /// A segment ending in `.` or a space, which Windows servers drop (`/admin.` is
    /// `/admin` on IIS; `/..%20/` is `/../`).
    #[error("path segment {0:?} ends in a dot or a space")]
    TrailingDotOrSpace(String),
    /// `:$`, an NTFS alternate data stream (`/web.config::$DATA`).
    #[error("path names an NTFS data stream (`:$`)")]
    DataStream,
    /// Not an origin-form path.
    #[error("path must start with `/`")]
    NotAbsolute,
}

/// Normalises `raw` (the path part of a request target, without query): `raw` itself,
/// borrowed, when it is already in canonical form (most request paths: no allocation).
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if is_plain_canonical(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_slow(raw).map(Cow::Owned)
}

/// True for a path that [`normalize_slow`] returns unchanged, checked in one pass without
/// allocating (most request paths): it starts with `/`, has only visible ASCII other than
/// `\ ; % # ?` (nothing to decode, nothing refused by character), no empty segment except
/// a trailing one, no segment ending in `.` (which also rules out `.` and `..`), and no
/// `:$`. Anything else takes the full path.
fn is_plain_canonical(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut prev = b'/';
    for &b in &bytes[1..] {
        let ok = match b {
            b'/' => prev != b'/' && prev != b'.',
            b'$' => prev != b':',
            b'\\' | b';' | b'%' | b'#' | b'?' => false,
            0x21..=0x7e => true,
            _ => false,
        };
        if !ok {
            return false;
        }
        prev = b;
    }
    prev != b'.'
}

/// The full normalisation (see the module docs).
fn normalize_slow(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode::decode_unreserved(raw)?;
    let path = if is_canonical(&decoded) {
        decoded
    } else {
        remove_dot_segments(&decoded)
    };
    for segment in path.split('/') {
        check_segment(segment)?;
    }
    Ok(path)
}

/// The checks on one segment of the canonical path (escapes already validated).
fn check_segment(segment: &str) -> Result<(), PathError> {
    if segment.ends_with('.') || segment.ends_with("%20") {
        return Err(PathError::TrailingDotOrSpace(segment.to_owned()));
    }
    if decode::ascii_view(segment).contains(":$") {
        return Err(PathError::DataStream);
    }
    Ok(())
}

/// True when [`remove_dot_segments`] would return `path` unchanged: no `.` or `..`
/// segment and no empty one except a trailing slash. Most paths are, and the check
/// allocates nothing (the request path's common case).
fn is_canonical(path: &str) -> bool {
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg == "." || seg == ".." || (seg.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// RFC 3986 §5.2.4 on a path that starts with `/`, with empty segments dropped.
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" | "." => trailing_slash = i == last,
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
