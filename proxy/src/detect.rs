//! Protocol detection from the first bytes of a connection.
//!
//! Two questions, each answered by reading (not peeking) a few bytes that are then
//! replayed with [`crate::io::PrefixedIo`]:
//!
//! 1. [`outer`]: is this mesh TLS (a ClientHello offering a `vigil/1` ALPN), other TLS, or
//!    plaintext? The ClientHello is parsed with rustls' own parser.
//! 2. [`inner`]: is the (decrypted or plaintext) stream HTTP/2 (the connection preface),
//!    HTTP/1 (a request line), or something else? A client that sends nothing — a
//!    server-first protocol — is opaque once `timeout` passes; nothing waits longer.
//!
//! Mesh clients can skip the second question: the ALPN `vigil/1+tcp` says "opaque",
//! `vigil/1+h2` says "HTTP/2", `vigil/1+h1` says "HTTP/1.1", plain `vigil/1` says
//! "detect". A client that names the protocol offers plain `vigil/1` after it where a
//! proxy that does not know the hint would still understand the stream (HTTP/1.1 is
//! detected), so proxies of different versions keep talking during a rolling upgrade.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use vigil_cert_authority::tls::ALPN_MESH;

/// Mesh TLS carrying an opaque stream.
pub const ALPN_TCP: &[u8] = b"vigil/1+tcp";
/// Mesh TLS carrying HTTP/2.
pub const ALPN_H2: &[u8] = b"vigil/1+h2";
/// Mesh TLS carrying HTTP/2, chosen by a server whose HTTP/1.1 hop also takes HTTP/2
/// requests (marked `vigil-orig-proto: HTTP/2`) and hands them to its app as HTTP/2: a
/// client learns from it that the destination's bodyless HTTP/2 requests may take that
/// hop. A server of an earlier version does not know it and chooses [`ALPN_H2`]; its app
/// would get such a request as HTTP/1.1.
pub const ALPN_H2_MARKED: &[u8] = b"vigil/1+h2+h1h2";
/// Mesh TLS carrying HTTP/1.1 (keep-alive, one request at a time).
pub const ALPN_H1: &[u8] = b"vigil/1+h1";
/// Every ALPN a mesh server accepts, in its order of preference (the server picks the
/// first of these the client offers: a hint before plain `vigil/1`).
pub const MESH_ALPNS: [&[u8]; 5] = [ALPN_H1, ALPN_TCP, ALPN_H2_MARKED, ALPN_H2, ALPN_MESH];

/// What a mesh client offers for an opaque stream.
pub const OFFER_TCP: &[&[u8]] = &[ALPN_TCP];
/// What a mesh client offers for HTTP/2 (the server's choice says whether it knows the
/// marked HTTP/1.1 hop).
pub const OFFER_H2: &[&[u8]] = &[ALPN_H2_MARKED, ALPN_H2];
/// What a mesh client offers for HTTP/1.1 (plain `vigil/1`, detected, for older servers).
pub const OFFER_H1: &[&[u8]] = &[ALPN_H1, ALPN_MESH];
/// What a mesh client offers when the server must detect the protocol (an upgrade's
/// HTTP/1.1 request, whose connection then becomes the upgraded protocol's).
pub const OFFER_DETECT: &[&[u8]] = &[ALPN_MESH];

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Most bytes read while looking for a ClientHello.
const MAX_HELLO: usize = 32 * 1024;
/// Longest method token considered when recognising an HTTP/1 request line.
const MAX_METHOD: usize = 24;

/// What the outer layer of a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outer {
    /// TLS whose ClientHello offers a mesh ALPN.
    MeshTls,
    /// TLS without a mesh ALPN (e.g. an app's own HTTPS from outside the mesh).
    OtherTls,
    /// Not TLS.
    Plaintext,
}

/// The application protocol of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge (gRPC included).
    Http2,
    /// Anything else.
    Opaque,
}

impl Proto {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Opaque => "tcp",
        }
    }

    /// The protocol a mesh ALPN announces, if it announces one.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Option<Self> {
        match alpn {
            Some(ALPN_TCP) => Some(Self::Opaque),
            Some(ALPN_H2 | ALPN_H2_MARKED) => Some(Self::Http2),
            Some(ALPN_H1) => Some(Self::Http1),
            _ => None,
        }
    }
}

/// Classifies the outer layer. Returns the bytes consumed, to replay.
pub async fn outer<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> std::io::Result<(Outer, Bytes)> {
    let mut buf = BytesMut::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + timeout;
    if read_more(io, &mut buf, deadline).await? == 0 {
        return Ok((Outer::Plaintext, buf.freeze()));
    }
    loop {
        if let Some(outer) = classify_outer(&buf) {
            return Ok((outer, buf.freeze()));
        }
        if read_more(io, &mut buf, deadline).await? == 0 {
            return Ok((Outer::OtherTls, buf.freeze()));
        }
    }
}

/// Classifies the outer layer from the bytes read so far (at least one): `None` while a
/// ClientHello is still incomplete. A ClientHello is read by rustls itself; one offering a
/// mesh ALPN is mesh TLS, any other TLS (or what rustls cannot read as a ClientHello) is
/// other TLS, and anything that is not a TLS handshake record is plaintext.
pub fn classify_outer(buf: &[u8]) -> Option<Outer> {
    // TLS handshake record: content type 22.
    if buf.first()? != &0x16 {
        return Some(Outer::Plaintext);
    }
    // Boxed: the acceptor is ~2.5 KB and the caller's future lives in every connection's
    // task.
    let mut acceptor = Box::new(rustls::server::Acceptor::default());
    let mut rd = buf;
    while !rd.is_empty() {
        match acceptor.read_tls(&mut rd) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Some(Outer::OtherTls),
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let mesh = accepted
                .client_hello()
                .alpn()
                .is_some_and(|mut protos| protos.any(|p| MESH_ALPNS.contains(&p)));
            Some(if mesh {
                Outer::MeshTls
            } else {
                Outer::OtherTls
            })
        }
        Ok(None) if buf.len() < MAX_HELLO => None,
        // Too long for a ClientHello, or not one rustls can read: not ours; policy decides
        // on it as opaque.
        Ok(None) | Err(_) => Some(Outer::OtherTls),
    }
}

/// Classifies the application protocol. Returns the bytes consumed, to replay.
pub async fn inner<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> std::io::Result<(Proto, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match classify(&buf) {
            Some(p) => return Ok((p, buf.freeze())),
            None => {
                if read_more(io, &mut buf, deadline).await? == 0 {
                    // Timeout or EOF before the bytes said anything: opaque.
                    let p = classify(&buf).unwrap_or(Proto::Opaque);
                    return Ok((p, buf.freeze()));
                }
            }
        }
    }
}

/// `Some` once the bytes decide; `None` if more are needed.
pub fn classify(buf: &[u8]) -> Option<Proto> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Some(Proto::Http2)
        } else {
            None
        };
    }
    // HTTP/1: an uppercase method token, then a space.
    for (i, &b) in buf.iter().enumerate().take(MAX_METHOD + 1) {
        match b {
            b'A'..=b'Z' | b'-' | b'_' => {}
            b' ' if i > 0 => return Some(Proto::Http1),
            _ => return Some(Proto::Opaque),
        }
    }
    if buf.len() > MAX_METHOD {
        return Some(Proto::Opaque);
    }
    None
}

/// Reads more into `buf` before `deadline`; 0 on EOF or timeout.
async fn read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
) -> std::io::Result<usize> {
    buf.reserve(2048);
    match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
        Ok(r) => r,
        Err(_) => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Proto::Http1));
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1"), Some(Proto::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Proto::Http2)
        );
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(Proto::Http1));
        assert_eq!(classify(b"\x00\x01binary"), Some(Proto::Opaque));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Proto::Opaque));
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(Proto::Opaque));
        assert_eq!(classify(&[b'A'; 40]), Some(Proto::Opaque));
    }

    #[tokio::test]
    async fn silent_clients_are_opaque_after_the_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let start = std::time::Instant::now();
        let (p, bytes) = inner(&mut server, Duration::from_millis(50)).await.unwrap();
        assert_eq!(p, Proto::Opaque);
        assert!(bytes.is_empty());
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn plaintext_is_not_tls() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (o, bytes) = outer(&mut server, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(o, Outer::Plaintext);
        assert_eq!(&bytes[..], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn garbage_after_a_tls_record_header_is_other_tls() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
            .await
            .unwrap();
        let (o, _) = outer(&mut server, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(o, Outer::OtherTls);
    }
}
