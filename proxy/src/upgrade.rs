//! HTTP/1.1 Upgrade (WebSocket, and any other protocol a client switches to) on the HTTP
//! path: recognising an upgrade request, keeping its `Upgrade`/`Connection` headers
//! across the hop-by-hop stripping, and the tunnel that carries the new protocol once
//! both sides said `101 Switching Protocols`.
//!
//! The request is authorized like any other (the destination's inbound judges method,
//! path and headers), so a denied upgrade is a 403 and nothing reaches the app. Between
//! the proxies an upgrade travels on a connection of its own (mesh mTLS, HTTP/1.1), never
//! on a pooled one: the tunnel lives as long as the WebSocket does, and
//! closing it — quarantine, revocation, a policy that no longer allows it — closes only
//! it. `h2c` is never tunnelled (the proxies speak HTTP/2 themselves): an `Upgrade: h2c`
//! request is served as the HTTP/1.1 request it also is.

use std::{future::Future, time::Instant};

use http::{HeaderMap, HeaderValue, Request, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::{
    http_util::has_header,
    metrics::labels::{Closed, Direction, Flow},
    shared::Shared,
};

/// Why a request's `Upgrade` header cannot be forwarded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed Upgrade header")]
pub(crate) struct MalformedUpgrade;

/// The protocols an HTTP/1.1 request asks to switch to (`Upgrade`, listed in
/// `Connection` as RFC 9110 §7.8 requires), without `h2c`; `None` when it asks for no
/// upgrade the proxy tunnels. A value that is not a list of `protocol[/version]` tokens is
/// an error (the request is refused rather than guessed at).
pub(crate) fn requested<B>(req: &Request<B>) -> Result<Option<HeaderValue>, MalformedUpgrade> {
    let headers = req.headers();
    if req.version() != Version::HTTP_11 || !has_header(headers, &header::UPGRADE) {
        return Ok(None);
    }
    if !connection_lists(headers, "upgrade") {
        return Ok(None); // not an upgrade request; `Upgrade` is dropped as hop-by-hop
    }
    let mut protocols = Vec::new();
    for value in headers.get_all(header::UPGRADE) {
        let value = value.to_str().map_err(|_| MalformedUpgrade)?;
        for p in value.split(',').map(str::trim) {
            if !is_protocol(p) {
                return Err(MalformedUpgrade);
            }
            let name = p.split('/').next().unwrap_or_default();
            if !name.eq_ignore_ascii_case("h2c") {
                protocols.push(p);
            }
        }
    }
    if protocols.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&protocols.join(", "))
        .map(Some)
        .map_err(|_| MalformedUpgrade)
}

/// The protocol a `101` answer switched to (its `Upgrade` header), if well formed.
pub(crate) fn chosen(headers: &HeaderMap) -> Option<HeaderValue> {
    let v = headers.get(header::UPGRADE)?;
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.split(',').map(str::trim).all(is_protocol)).then(|| v.clone())
}

/// Puts the upgrade headers back after hop-by-hop stripping.
pub(crate) fn restore(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(header::UPGRADE, protocols);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Whether some `Connection` header lists `option` (case-insensitive).
fn connection_lists(headers: &HeaderMap, option: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|o| o.trim().eq_ignore_ascii_case(option))
}

/// `token [ "/" token ]` (RFC 9110 §7.8).
fn is_protocol(p: &str) -> bool {
    let mut parts = p.splitn(2, '/');
    let name = parts.next().unwrap_or_default();
    is_token(name) && parts.next().is_none_or(is_token)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// How a tunnel ended.
#[derive(Debug)]
pub(crate) struct Ended {
    /// Bytes from the client to the server side, and back.
    pub(crate) up: u64,
    pub(crate) down: u64,
    /// Set when policy closed it.
    pub(crate) closed: Option<Closed>,
    /// An upgrade that never completed, or an I/O error.
    pub(crate) error: Option<String>,
    pub(crate) started: Instant,
}

impl Ended {
    /// Counts the tunnel's bytes (`rx`: from the side that asked, as for opaque TCP) and
    /// a policy close, and says how it ended in the diagnostic log.
    pub(crate) fn record(&self, shared: &Shared, direction: Direction, peer: &str) {
        shared.metrics.bytes(direction, Flow::Rx, self.up);
        shared.metrics.bytes(direction, Flow::Tx, self.down);
        if let Some(reason) = self.closed {
            shared.metrics.close(direction, reason);
        }
        tracing::info!(
            direction = direction.as_str(),
            peer,
            bytes_rx = self.up,
            bytes_tx = self.down,
            secs = self.started.elapsed().as_secs_f64(),
            closed = self.closed.map(Closed::as_str).unwrap_or(""),
            error = self.error.as_deref().unwrap_or(""),
            "upgraded connection ended"
        );
    }
}

/// Carries the switched protocol between `client` (the side that asked) and `server`
/// (the side that answered 101) until either ends or `closer` resolves with a reason.
pub(crate) async fn tunnel(
    client: OnUpgrade,
    server: OnUpgrade,
    closer: impl Future<Output = Closed>,
) -> Ended {
    let started = Instant::now();
    let mut ended = Ended {
        up: 0,
        down: 0,
        closed: None,
        error: None,
        started,
    };
    tokio::pin!(closer);
    let both = async { tokio::try_join!(client, server) };
    let (client, server) = tokio::select! {
        r = both => match r {
            Ok(pair) => pair,
            Err(e) => {
                ended.error = Some(format!("upgrade failed: {e}"));
                return ended;
            }
        },
        reason = &mut closer => {
            ended.closed = Some(reason);
            return ended;
        }
    };
    let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
    tokio::select! {
        r = crate::copy::bidirectional(&mut client, &mut server) => match r {
            Ok((up, down)) => (ended.up, ended.down) = (up, down),
            Err(e) => ended.error = Some(e.to_string()),
        },
        reason = closer => ended.closed = Some(reason),
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/ws").version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn upgrade_requests_are_recognised_and_h2c_is_not_tunnelled() {
        let ws = [("upgrade", "websocket"), ("connection", "Upgrade")];
        assert_eq!(
            requested(&req(Version::HTTP_11, &ws)).unwrap().unwrap(),
            "websocket"
        );
        let listed = [
            ("upgrade", "foo/2, h2c, bar"),
            ("connection", "keep-alive, UPGRADE"),
        ];
        assert_eq!(
            requested(&req(Version::HTTP_11, &listed)).unwrap().unwrap(),
            "foo/2, bar"
        );
        for not in [
            req(Version::HTTP_10, &ws),
            req(Version::HTTP_11, &[("upgrade", "websocket")]),
            req(Version::HTTP_11, &[("connection", "upgrade")]),
            req(
                Version::HTTP_11,
                &[("upgrade", "h2c"), ("connection", "upgrade")],
            ),
        ] {
            assert_eq!(requested(&not), Ok(None), "{:?}", not.headers());
        }
        for bad in [
            "",
            "web socket",
            "websocket/",
            "/1",
            "a/b/c",
            "ws, ",
            "\"ws\"",
        ] {
            let r = req(
                Version::HTTP_11,
                &[("upgrade", bad), ("connection", "upgrade")],
            );
            assert_eq!(requested(&r), Err(MalformedUpgrade), "{bad:?}");
        }
    }

    #[test]
    fn chosen_protocol_must_be_well_formed() {
        let mut h = HeaderMap::new();
        assert!(chosen(&h).is_none());
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(chosen(&h).unwrap(), "websocket");
        h.insert(header::UPGRADE, HeaderValue::from_static("web socket"));
        assert!(chosen(&h).is_none());
    }
}
