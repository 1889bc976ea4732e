//! HTTP plumbing shared by both directions: body type, proxy-generated responses,
//! hop-by-hop header handling, request IDs.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri, header,
    uri::{Authority, PathAndQuery, Scheme},
};

/// Boxed error for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type of both listeners.
pub use crate::resp_body::Body;

/// Response header carrying the request ID on responses the proxy generates.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-vigil-request-id");
/// Request header telling the app who the (verified) caller is. Any copy sent by the
/// client is removed first, so the app can trust it.
pub const PEER_ID: HeaderName = HeaderName::from_static("x-vigil-peer-id");
/// Between proxies: the protocol the request arrived in at the client side, where the
/// mesh hop speaks the other one — `HTTP/1.1` for an HTTP/1 request on the HTTP/2 mesh
/// connection, `HTTP/2` for an HTTP/2 one on an HTTP/1.1 mesh connection (see
/// `outbound/http.rs`). It chooses the protocol the far side speaks to its app, nothing
/// else; the outbound removes it from what its app sends.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("vigil-orig-proto");

/// A short proxy-generated response with a request ID (never names the policy).
pub fn error_response(status: StatusCode, request_id: RequestId) -> Response<Body> {
    let reason = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let body = format!("{reason} (request id {request_id})\n");
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id.to_string()) {
        h.insert(REQUEST_ID, v);
    }
    resp
}

/// The response to a HEAD request keeps its status and headers and loses its body. hyper
/// does this itself for HTTP/1.1; over HTTP/2 a body after a HEAD goes out as DATA
/// frames, a protocol error the client answers with a reset instead of reading the
/// status (RFC 9113 §8.1). Every response the proxies serve passes through here.
pub fn without_body_for_head(resp: Response<Body>, head: bool) -> Response<Body> {
    if !head {
        return resp;
    }
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, full(Bytes::new()))
}

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Body::full(b)
}

/// The hop-by-hop headers (RFC 9110 §7.6.1) besides those `Connection` names, and `TE`
/// (kept when it is `trailers`). `Connection` comes first: `strip_hop_by_hop` relies on it.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// `TE`'s index for [`hop_by_hop_index`] (past the end of [`HOP_BY_HOP`]).
const TE_INDEX: usize = 8;

/// `name`'s index in [`HOP_BY_HOP`], [`TE_INDEX`] for `TE`, else `None`. A match on the
/// (lowercase) name: its length picks at most two comparisons, where comparing against
/// each `HeaderName` in turn cost a few hundred instructions per message.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "proxy-authenticate" => 1,
        "proxy-authorization" => 2,
        "trailer" => 3,
        "transfer-encoding" => 4,
        "upgrade" => 5,
        "keep-alive" => 6,
        "proxy-connection" => 7,
        "te" => TE_INDEX,
        _ => return None,
    })
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present notes which hop-by-hop names occur (most messages
    // carry none, an HTTP/1.1 app's response often only `Connection`): a hashed removal
    // costs far more than a comparison, so only those present are removed.
    let mut present = 0u16;
    let mut te = false;
    // Whether a `Connection` value may name other headers: not the `keep-alive` or
    // `close` nearly every message says.
    let mut names_headers = false;
    for (n, v) in &*headers {
        match hop_by_hop_index(n) {
            Some(TE_INDEX) => te = true,
            Some(0) => {
                present |= 1;
                let v = v.as_bytes();
                names_headers |=
                    !v.eq_ignore_ascii_case(b"keep-alive") && !v.eq_ignore_ascii_case(b"close");
            }
            Some(i) => present |= 1 << i,
            None => {}
        }
    }
    if present == 0 && !te {
        return;
    }
    if names_headers {
        // `header::CONNECTION` is `HOP_BY_HOP[0]`: the headers it names go too.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // `keep-alive`, `close`, `upgrade`: removed below anyway, or not a header at
            // all; naming them here would allocate for every such message.
            .filter(|n| {
                !n.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|h| n.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(n);
        }
    }
    // `TE: trailers` must survive for gRPC over HTTP/2; any other TE value is hop-by-hop.
    if te && headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// Most distinct header names [`has_header`] compares in turn before it hashes instead.
const SCAN_MAX: usize = 16;

/// Whether `headers` holds `name`. A message's few names are compared in turn — a
/// standard name compares as one byte, a custom one by its length first — which costs a
/// third of hashing `name` for a lookup (counted: ~105 instructions per lookup, most of
/// them for a name that is absent); a map with many names is searched by hash as usual.
pub fn has_header(headers: &HeaderMap, name: &HeaderName) -> bool {
    if headers.keys_len() <= SCAN_MAX {
        headers.keys().any(|k| k == name)
    } else {
        headers.contains_key(name)
    }
}

/// Removes every `name` field from `headers`; hashes only when there may be one (see
/// [`has_header`]).
pub fn remove_header(headers: &mut HeaderMap, name: &HeaderName) {
    if has_header(headers, name) {
        headers.remove(name);
    }
}

/// Joins the `Cookie` fields of a request bound from HTTP/2 to HTTP/1.1 into one, as RFC
/// 9113 §8.2.3 asks: an HTTP/2 client may split its cookies into several fields, and an
/// HTTP/1.1 server reads one (RFC 6265 §5.4). Hashes only when there may be a cookie.
pub fn join_cookies(headers: &mut HeaderMap) {
    if !has_header(headers, &header::COOKIE) {
        return;
    }
    let mut fields = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (fields.next(), fields.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    // Each part was a valid value, and "; " is too: so is the whole.
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(header::COOKIE, v);
    }
}

/// `http://<authority><path_and_query>` from parts already parsed: both are shared
/// (reference-counted), not formatted and parsed again.
pub fn http_uri(
    authority: Authority,
    path_and_query: PathAndQuery,
) -> Result<Uri, http::uri::InvalidUriParts> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts)
}

/// Unique-enough request IDs: a random per-process prefix and a counter.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

/// One request's ID: the process's prefix and the request's number. It is formatted
/// (24 hex digits) only where something shows it — an error response, the access log —
/// not for every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId {
    prefix: u64,
    n: u32,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}{:08x}", self.prefix, self.n)
    }
}

impl RequestIds {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        Self {
            prefix: u64::from_be_bytes(vigil_cert_authority::keys::random_bytes::<8>(false)),
            next: AtomicU64::new(0),
        }
    }

    /// The next ID.
    pub fn next(&self) -> RequestId {
        RequestId {
            prefix: self.prefix,
            n: self.next.fetch_add(1, Ordering::Relaxed) as u32,
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// hyper's HTTP/1 write strategy on every connection (servers and clients, mesh and app
/// sides): `false` copies a message's head and body into one buffer written at once,
/// instead of queueing them for a vectored write. Measured (`make bench-count`, RESULTS
/// change 25): the queue's bookkeeping cost the sidecar pair 1.3 k instructions and one
/// allocation per small request; on a TLS connection rustls copies the pieces into one
/// record either way. The price is one more in-cache copy of each body chunk, and a
/// write buffer a connection keeps at the largest size it reached — bounded by
/// [`H1_CLIENT_BUF`] on the clients, whose reads make the chunks the servers write.
pub(crate) const H1_WRITEV: bool = false;

/// hyper's buffer limit on the HTTP/1 clients (towards the app, towards the mesh): reads
/// grow to it under a large body (hyper's default, ~400 KB, was kept by a connection
/// once reached) and a flattened write ([`H1_WRITEV`]) flushes at it, so a pooled
/// connection that carried a large body keeps at most about twice this. Servers use
/// `--max-header-bytes`.
pub(crate) const H1_CLIENT_BUF: usize = 64 * 1024;

/// How much longer an HTTP/2 header list may be than the HTTP/1.1 head it carries: the
/// list counts 32 bytes of overhead per field where the head counts 4 (`: ` and CRLF),
/// hyper's HTTP/1.1 reads at most 100 fields, and the mesh hop adds the pseudo-header
/// fields, `:authority` (the destination's) and `vigil-orig-proto`. A mesh hop's HTTP/2
/// limits are the HTTP/1.1 ones plus this, so that what crosses the HTTP/1.1 hop crosses
/// the HTTP/2 hop too (`--mesh-http1 auto` takes either, by load).
pub(crate) const H2_LIST_SLACK: usize = 32 * (100 + 8) + 512;

/// HTTP/2 flow control, both directions of every mesh connection: each stream may have
/// this much in flight unacknowledged...
pub(crate) const STREAM_WINDOW: u32 = 256 * 1024;

/// ...and the connection as a whole room for every stream's window at once. A stream
/// whose reader stopped (a client that stops reading a download, an app that stops
/// reading an upload) then holds at most its own window, never the connection's: the
/// other requests on the same pooled connection keep flowing. (hyper's defaults — a
/// 2 MB stream and a 5 MB connection window for clients — let three stalled downloads
/// stop every request to that destination.) What a stalled stream costs is bounded by
/// the stream window; the connection window is only a ceiling.
pub(crate) fn connection_window(max_streams: u32) -> u32 {
    STREAM_WINDOW
        .saturating_mul(max_streams.max(1))
        .min(i32::MAX.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looked up by comparison (few names) or by hash (many), the answers are the map's
    /// own; removal takes every value, whatever case the name arrived in.
    #[test]
    fn has_and_remove_header_agree_with_the_map() {
        let names = [
            header::HOST,
            header::UPGRADE,
            PEER_ID,
            ORIG_PROTO,
            HeaderName::from_static("x-vigil-peer-i"),
            HeaderName::from_static("x-vigil-peer-idx"),
            HeaderName::from_static("upgrade-insecure-requests"),
        ];
        for extra in [0usize, 3, SCAN_MAX - 1, SCAN_MAX, SCAN_MAX + 1, 200] {
            for present in 0u32..(1 << names.len()) {
                let mut h = HeaderMap::new();
                for i in 0..extra {
                    h.append(
                        HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap(),
                        HeaderValue::from_static("v"),
                    );
                }
                for (i, n) in names.iter().enumerate() {
                    if present & (1 << i) != 0 {
                        h.append(n.clone(), HeaderValue::from_static("a"));
                        h.append(n.clone(), HeaderValue::from_static("b"));
                    }
                }
                for n in &names {
                    assert_eq!(has_header(&h, n), h.contains_key(n), "{n} with {extra}");
                }
                let mut removed = h.clone();
                remove_header(&mut removed, &PEER_ID);
                assert!(!removed.contains_key(&PEER_ID));
                h.remove(&PEER_ID);
                assert_eq!(removed, h);
            }
        }
        // A name as a client may send it: parsed to the same lowercase name.
        let mut h = HeaderMap::new();
        h.append(
            HeaderName::from_bytes(b"X-Vigil-Peer-Id").unwrap(),
            HeaderValue::from_static("spiffe://forged"),
        );
        h.append(header::HOST, HeaderValue::from_static("a"));
        assert!(has_header(&h, &PEER_ID));
        remove_header(&mut h, &PEER_ID);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn hop_by_hop_headers_go_but_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["te", "x-keep"]);
        let mut h = HeaderMap::new();
        h.insert(header::TE, "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
        // Names in `Connection` are case-insensitive, listed or not among the known ones.
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "Keep-Alive, X-Other ,CLOSE".parse().unwrap(),
        );
        h.insert("x-other", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);
        // Every value of a repeated hop-by-hop header goes, and those of repeated
        // `Connection` headers name headers too.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "keep-alive".parse().unwrap());
        h.append(header::CONNECTION, "x-a".parse().unwrap());
        h.append(header::CONNECTION, "x-b".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("x-b", "1".parse().unwrap());
        h.append("x-b", "2".parse().unwrap());
        h.append(header::TRANSFER_ENCODING, "gzip".parse().unwrap());
        h.append(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.append(header::ACCEPT, "*/*".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn the_hop_by_hop_index_names_each_header_in_its_place() {
        for (i, h) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(h), Some(i), "{h}");
        }
        assert_eq!(hop_by_hop_index(&header::TE), Some(TE_INDEX));
        assert_eq!(TE_INDEX, HOP_BY_HOP.len());
        for other in [
            header::HOST,
            header::ACCEPT,
            HeaderName::from_static("x-upgrade"),
        ] {
            assert_eq!(hop_by_hop_index(&other), None, "{other}");
        }
    }

    #[test]
    fn request_ids_are_unique() {
        let ids = RequestIds::new();
        let a = ids.next().to_string();
        assert_eq!(a.len(), 24);
        assert_ne!(a, ids.next().to_string());
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // The counter is the last 8 digits, big-endian.
        assert_eq!(&a[16..], "00000000");
        assert_eq!(&ids.next().to_string()[16..], "00000002");
        ids.next.store(0xab_cdef, Ordering::Relaxed);
        let b = ids.next().to_string();
        assert_eq!((&b[..16], &b[16..]), (&a[..16], "00abcdef"));
    }

    #[test]
    fn hop_by_hop_headers_go_whichever_is_first() {
        for name in HOP_BY_HOP.iter().chain([&header::TE]) {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, "a".parse().unwrap());
            h.insert(name.clone(), "x".parse().unwrap());
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} stays: {h:?}");
            assert!(h.contains_key(header::HOST));
        }
    }

    /// Split cookies become one field in order; one field, or none, is left alone; other
    /// headers are untouched.
    #[test]
    fn cookies_split_for_http2_are_joined_in_order() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3; d=4"));
        join_cookies(&mut h);
        let cookies: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3; d=4"]);
        assert_eq!(h.get(header::ACCEPT).unwrap(), "*/*");
        assert_eq!(h.len(), 2);

        let mut one = HeaderMap::new();
        one.append(header::COOKIE, HeaderValue::from_static("a=1;b=2"));
        join_cookies(&mut one);
        assert_eq!(one.get(header::COOKIE).unwrap(), "a=1;b=2");
        let mut none = HeaderMap::new();
        none.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        join_cookies(&mut none);
        assert_eq!(none.len(), 1);
        assert!(none.get(header::COOKIE).is_none());
    }

    #[test]
    fn http_uri_shares_the_parts() {
        let uri = http_uri(
            Authority::from_static("127.0.0.1:8080"),
            PathAndQuery::from_static("/a?b=c"),
        )
        .unwrap();
        assert_eq!(uri, "http://127.0.0.1:8080/a?b=c");
    }
}
