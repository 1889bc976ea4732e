//! The HTTP/1.1 grammar [`super::StrictH1`] enforces (RFC 9112): request lines, field
//! lines, framing headers, chunk-size lines — pure functions over bytes, no I/O.

/// How a validated head frames its body.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Where the first `\r\n\r\n` in `buf` ends (the length of the head it closes), found
/// by looking back from each `\n` (a search for the 4-byte needle costs more to set up
/// than a head of a few lines takes to walk).
pub(super) fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf)
        .find(|&i| i >= 3 && buf[i - 3..i] == *b"\r\n\r")
        .map(|i| i + 1)
}

/// Problems visible before the head is complete (so a never-ending bad head is refused
/// early rather than buffered up to the limit).
pub(super) fn early_violation(buf: &[u8]) -> Option<&'static str> {
    for i in memchr::memchr2_iter(b'\r', b'\n', buf) {
        if buf[i] == b'\n' {
            if i == 0 || buf[i - 1] != b'\r' {
                return Some("bare LF in request head");
            }
        } else if buf.get(i + 1).is_some_and(|&n| n != b'\n') {
            return Some("bare CR in request head");
        }
    }
    None
}

/// The head's framing, and whether it carries `Upgrade` (the request may switch the
/// connection to another protocol).
pub(super) fn validate_head(head: &[u8]) -> Result<(Framing, bool), &'static str> {
    match super::fast::validate_head(head) {
        Some(valid) => Ok(valid),
        None => validate_head_fully(head),
    }
}

/// [`validate_head`] by the grammar alone: what decides every head the one-pass check
/// does not accept outright, and why one is refused.
pub(super) fn validate_head_fully(head: &[u8]) -> Result<(Framing, bool), &'static str> {
    if let Some(v) = early_violation(head) {
        return Err(v);
    }
    // `head` ends with CRLF CRLF; split into lines without their CRLF.
    let body = &head[..head.len() - 4];
    let mut lines = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().ok_or("empty request head")?;
    let http10 = check_request_line(request_line)?;
    let mut fields = FramingFields::default();
    for line in lines {
        let (name, value) = check_field_line(line)?;
        fields.field(name, value)?;
    }
    fields.framing(http10)
}

/// What a head's field lines say about its framing, read one field at a time: the rules
/// both the full grammar and the one-pass check (`super::fast`) apply.
#[derive(Default)]
pub(super) struct FramingFields {
    content_length: Option<u64>,
    chunked: bool,
    upgrade: bool,
}

impl FramingFields {
    /// One field line's name and (trimmed) value.
    pub(super) fn field(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        self.upgrade |= name.eq_ignore_ascii_case(b"upgrade");
        if name.eq_ignore_ascii_case(b"content-length") {
            if self.content_length.is_some() {
                return Err("more than one Content-Length");
            }
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                return Err("invalid Content-Length");
            }
            let s = std::str::from_utf8(value).map_err(|_| "invalid Content-Length")?;
            self.content_length = Some(s.parse().map_err(|_| "invalid Content-Length")?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Any other value is refused at once, so `chunked` means one was seen.
            if self.chunked {
                return Err("more than one Transfer-Encoding");
            }
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err("Transfer-Encoding other than `chunked`");
            }
            self.chunked = true;
        }
        Ok(())
    }

    /// The head's framing, and whether it asks to upgrade.
    pub(super) fn framing(self, http10: bool) -> Result<(Framing, bool), &'static str> {
        let framing = match (self.content_length, self.chunked) {
            (Some(_), true) => return Err("both Content-Length and Transfer-Encoding"),
            (_, true) if http10 => return Err("Transfer-Encoding on HTTP/1.0"),
            (_, true) => Framing::Chunked,
            (Some(n), false) => Framing::Length(n),
            (None, false) => Framing::None,
        };
        Ok((framing, self.upgrade))
    }
}

/// `METHOD SP target SP HTTP/1.x`; returns true for HTTP/1.0.
fn check_request_line(line: &[u8]) -> Result<bool, &'static str> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) || target.is_empty() {
        return Err("malformed request line");
    }
    match version {
        b"HTTP/1.1" => Ok(false),
        b"HTTP/1.0" => Ok(true),
        _ => Err("unsupported HTTP version"),
    }
}

/// `name ":" OWS value OWS`, no obs-fold; returns name and trimmed value.
pub(super) fn check_field_line(line: &[u8]) -> Result<(&[u8], &[u8]), &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return Err("obsolete line folding");
    }
    let colon = memchr::memchr(b':', line).ok_or("header line without `:`")?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
        return Err("invalid header name (whitespace before `:`?)");
    }
    let value = trim_ows(&line[colon + 1..]);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("control character in header value");
    }
    Ok((name, value))
}

pub(super) fn check_crlf(line: &[u8]) -> Result<(), &'static str> {
    if line.len() >= 2 && line[line.len() - 2] == b'\r' {
        Ok(())
    } else {
        Err("bare LF in chunked framing")
    }
}

pub(super) fn parse_chunk_line(line: &[u8]) -> Result<u64, &'static str> {
    check_crlf(line)?;
    let body = &line[..line.len() - 2];
    if body.contains(&b'\r') || body.contains(&b'\n') {
        return Err("bare CR in chunk size");
    }
    let size = match body.iter().position(|&b| b == b';') {
        Some(i) => &body[..i],
        None => body,
    };
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err("invalid chunk size");
    }
    let s = std::str::from_utf8(size).map_err(|_| "invalid chunk size")?;
    u64::from_str_radix(s, 16).map_err(|_| "invalid chunk size")
}

pub(super) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// `tchar` (RFC 9110 §5.6.2), by byte: checked for every byte of every header name.
pub(super) static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};
