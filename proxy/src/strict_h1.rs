//! Strict HTTP/1.1 framing, enforced on the bytes *before* hyper parses them.
//!
//! Request smuggling needs two parsers to disagree about where a request ends. hyper is
//! lenient in places (bare LF line endings; with both Content-Length and
//! Transfer-Encoding it quietly prefers the latter), so every byte the client sends passes
//! through [`StrictH1`] first, which follows the framing itself and refuses:
//!
//! - bare LF or bare CR in a request head, obsolete line folding, malformed header lines;
//! - more than one Content-Length, a non-numeric Content-Length;
//! - Content-Length together with Transfer-Encoding, Transfer-Encoding other than exactly
//!   `chunked`, Transfer-Encoding on HTTP/1.0;
//! - malformed chunk sizes, chunk data not followed by CRLF, malformed trailers.
//!
//! A bad *head* is replaced by a request line hyper cannot parse, so hyper answers `400`
//! and closes the connection: one writer, no interleaving. A bad *chunked body* ends the
//! stream with an error (the request is already in flight; the connection is dropped).
//! A head larger than the limit is passed through unvalidated so hyper answers `431`.
//!
//! A request carrying `Upgrade` may switch the connection to another protocol. Whatever
//! the client sends after it is *held* — not validated, not given to hyper — until the
//! proxy decides: a `101 Switching Protocols` sets the connection's [`UpgradeSwitch`] and
//! the held bytes (and all that follow) belong to the new protocol; any other answer
//! carries `Connection: close` (see `serve::http`), so nothing after an upgrade request
//! is ever parsed as another HTTP request.

use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use self::grammar::{
    Framing, check_crlf, check_field_line, early_violation, head_end, parse_chunk_line,
    validate_head,
};

mod fast;
mod grammar;

/// Bytes that make hyper fail to parse a request line, so it responds 400 and closes.
const POISON: &[u8] = b"\x00 / HTTP/1.1\r\n\r\n";
/// Longest chunk-size line (size + extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// Wraps a client stream and enforces strict HTTP/1.1 request framing on what it reads.
#[derive(Debug)]
pub struct StrictH1<T> {
    inner: T,
    state: State,
    /// Validated bytes ready for hyper.
    out: BytesMut,
    max_head: usize,
    violation: Option<Violation>,
    /// A body violation, reported after the bytes validated before it are delivered.
    pending_error: Option<io::Error>,
    /// The request being read asked to upgrade: hold what follows its body.
    upgrade_requested: bool,
    switch: UpgradeSwitch,
}

/// Set when the proxy answered an upgrade request with `101 Switching Protocols`: from
/// then on the connection carries the new protocol and [`StrictH1`] passes it through.
/// Setting it wakes a read that waits for it (one that holds all it may hold).
#[derive(Clone, Debug, Default)]
pub struct UpgradeSwitch(Arc<SwitchState>);

#[derive(Debug, Default)]
struct SwitchState {
    set: AtomicBool,
    /// A read waiting for the switch.
    waiting: Mutex<Option<Waker>>,
}

impl UpgradeSwitch {
    /// The connection switched protocols.
    pub fn set(&self) {
        self.0.set.store(true, Ordering::Release);
        let waiting = self
            .0
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = waiting {
            w.wake();
        }
    }

    /// Whether it has.
    pub fn is_set(&self) -> bool {
        self.0.set.load(Ordering::Acquire)
    }

    /// Wakes `waker` when the switch is set; whether it is set already (then nothing
    /// will wake it).
    fn wake_when_set(&self, waker: &Waker) -> bool {
        *self
            .0
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
        self.is_set()
    }
}

/// What was wrong with the framing (for logs and metrics).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("HTTP/1 framing violation: {0}")]
pub struct Violation(pub &'static str);

#[derive(Debug)]
enum State {
    /// Accumulating a request head.
    Head(Vec<u8>),
    /// Passing `n` more body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Passing `n` more bytes of chunk data.
    ChunkData(u64),
    /// Expecting the CRLF after chunk data; how many of its bytes were seen.
    ChunkCrlf(u8),
    /// Reading trailer lines after the last chunk; the current line.
    Trailers(Vec<u8>),
    /// After an upgrade request: bytes held back until the proxy decides (see the module
    /// docs); at most `max_head` of them are read.
    Held(Vec<u8>),
    /// No more validation (oversized head handed to hyper, an upgraded connection).
    Passthrough,
    /// A violation was reported; reads end.
    Done,
}

impl<T> StrictH1<T> {
    /// Enforces strict framing on `inner`; heads longer than `max_head` bytes go to hyper
    /// unvalidated (hyper must be configured with the same limit, so it answers 431).
    pub fn new(inner: T, max_head: usize) -> Self {
        Self {
            inner,
            state: State::Head(Vec::new()),
            out: BytesMut::new(),
            max_head,
            violation: None,
            pending_error: None,
            upgrade_requested: false,
            switch: UpgradeSwitch::default(),
        }
    }

    /// The switch the server sets when it answers an upgrade request with `101`.
    pub fn upgrade_switch(&self) -> UpgradeSwitch {
        self.switch.clone()
    }

    /// The state after a complete request: the next head, or — after an upgrade
    /// request — holding.
    fn next_message(&mut self) -> State {
        if std::mem::take(&mut self.upgrade_requested) {
            State::Held(Vec::new())
        } else {
            State::Head(Vec::new())
        }
    }

    /// The violation that ended validation, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Runs `input` through the state machine, appending validated bytes to `out`.
    /// Returns an error only for violations that cannot be answered with a 400.
    fn process(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            match &mut self.state {
                State::Passthrough => {
                    self.out.extend_from_slice(input);
                    return Ok(());
                }
                State::Done => return Ok(()),
                State::Held(held) => {
                    if self.switch.is_set() {
                        let held = std::mem::take(held);
                        self.out.extend_from_slice(&held);
                        self.state = State::Passthrough;
                        continue;
                    }
                    held.extend_from_slice(input);
                    return Ok(());
                }
                State::Head(buf) => {
                    // The common case: a whole head in one read, nothing buffered. It is
                    // validated where it lies, as the buffered path below would.
                    if buf.is_empty()
                        && input[0] != b'\r'
                        && input[0] != b'\n'
                        && let Some(end) = head_end(input)
                        && end <= self.max_head
                    {
                        let (head, rest) = input.split_at(end);
                        match validate_head(head) {
                            Ok((framing, upgrade)) => {
                                self.out.extend_from_slice(head);
                                self.head_done(framing, upgrade);
                                input = rest;
                                continue;
                            }
                            Err(v) => return self.reject_head(v),
                        }
                    }
                    // Empty lines before a request line are allowed (RFC 9112 §2.2).
                    if buf.as_slice() == b"\r" {
                        if input[0] != b'\n' {
                            return self.reject_head("bare CR before the request line");
                        }
                        buf.clear();
                        self.out.extend_from_slice(b"\r\n");
                        input = &input[1..];
                        continue;
                    }
                    if buf.is_empty() && (input[0] == b'\r' || input[0] == b'\n') {
                        if input[0] == b'\n' {
                            return self.reject_head("bare LF before the request line");
                        }
                        buf.push(b'\r');
                        input = &input[1..];
                        continue;
                    }
                    let start = buf.len().saturating_sub(3);
                    buf.extend_from_slice(input);
                    input = &[];
                    let end = head_end(&buf[start..]).map(|i| start + i);
                    let Some(end) = end else {
                        if buf.len() > self.max_head {
                            // What a byte-at-a-time client would have been refused for
                            // before the head grew too long: the same answer however
                            // the bytes were split into reads (found by fuzzing).
                            if let Some(v) = early_violation(&buf[..self.max_head]) {
                                return self.reject_head(v);
                            }
                            let all = std::mem::take(buf);
                            self.out.extend_from_slice(&all);
                            self.state = State::Passthrough;
                        } else if let Some(v) = early_violation(buf) {
                            return self.reject_head(v);
                        }
                        continue;
                    };
                    if end > self.max_head {
                        if let Some(v) = early_violation(&buf[..self.max_head]) {
                            return self.reject_head(v);
                        }
                        let all = std::mem::take(buf);
                        self.out.extend_from_slice(&all);
                        self.state = State::Passthrough;
                        continue;
                    }
                    let rest = buf.split_off(end);
                    let head = std::mem::take(buf);
                    match validate_head(&head) {
                        Ok((framing, upgrade)) => {
                            self.out.extend_from_slice(&head);
                            self.head_done(framing, upgrade);
                            // Re-process what followed the head under the new state.
                            self.process(&rest)?;
                        }
                        Err(v) => return self.reject_head(v),
                    }
                }
                State::Body(n) => {
                    let take = (*n).min(input.len() as u64) as usize;
                    self.out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *n -= take as u64;
                    if *n == 0 {
                        self.state = self.next_message();
                    }
                }
                State::ChunkSize(line) => {
                    let (byte, rest) = (input[0], &input[1..]);
                    input = rest;
                    self.out.extend_from_slice(&[byte]);
                    line.push(byte);
                    if line.len() > MAX_CHUNK_LINE {
                        return self.reject_body("chunk-size line too long");
                    }
                    if byte == b'\n' {
                        let size = match parse_chunk_line(line) {
                            Ok(size) => size,
                            Err(v) => return self.reject_body(v),
                        };
                        self.state = if size == 0 {
                            State::Trailers(Vec::new())
                        } else {
                            State::ChunkData(size)
                        };
                    }
                }
                State::ChunkData(n) => {
                    let take = (*n).min(input.len() as u64) as usize;
                    self.out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *n -= take as u64;
                    if *n == 0 {
                        self.state = State::ChunkCrlf(0);
                    }
                }
                State::ChunkCrlf(seen) => {
                    let want = if *seen == 0 { b'\r' } else { b'\n' };
                    if input[0] != want {
                        return self.reject_body("chunk data not followed by CRLF");
                    }
                    self.out.extend_from_slice(&input[..1]);
                    input = &input[1..];
                    if *seen == 0 {
                        *seen = 1;
                    } else {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailers(line) => {
                    let (byte, rest) = (input[0], &input[1..]);
                    input = rest;
                    self.out.extend_from_slice(&[byte]);
                    line.push(byte);
                    if line.len() > self.max_head {
                        return self.reject_body("trailers too long");
                    }
                    if byte == b'\n' {
                        if line.as_slice() == b"\r\n" {
                            self.state = self.next_message();
                        } else {
                            let checked = check_field_line(&line[..line.len() - 1])
                                .and_then(|_| check_crlf(line));
                            line.clear();
                            if let Err(v) = checked {
                                return self.reject_body(v);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A valid head was passed on: what its body needs next.
    fn head_done(&mut self, framing: Framing, upgrade: bool) {
        self.upgrade_requested = upgrade;
        self.state = match framing {
            Framing::None | Framing::Length(0) => self.next_message(),
            Framing::Length(n) => State::Body(n),
            Framing::Chunked => State::ChunkSize(Vec::new()),
        };
    }

    fn reject_head(&mut self, why: &'static str) -> io::Result<()> {
        self.violation = Some(Violation(why));
        self.out.extend_from_slice(POISON);
        self.state = State::Done;
        Ok(())
    }

    fn reject_body(&mut self, why: &'static str) -> io::Result<()> {
        Err(self.fail(why))
    }

    fn fail(&mut self, why: &'static str) -> io::Error {
        self.violation = Some(Violation(why));
        self.state = State::Done;
        io::Error::new(io::ErrorKind::InvalidData, Violation(why))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StrictH1<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.out.is_empty() {
                let n = self.out.len().min(buf.remaining());
                buf.put_slice(&self.out[..n]);
                self.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = self.pending_error.take() {
                return Poll::Ready(Err(e));
            }
            if matches!(self.state, State::Done) {
                return Poll::Ready(Ok(())); // EOF after a rejected head
            }
            let this = &mut *self;
            if let State::Held(held) = &mut this.state {
                if this.switch.is_set() {
                    let held = std::mem::take(held);
                    this.out.extend_from_slice(&held);
                    this.state = State::Passthrough;
                    continue;
                }
                if held.len() >= this.max_head {
                    // Enough held: nothing more is read until the answer is out. A `101`
                    // wakes this read (any other answer closes the connection). The
                    // wake-up is what the read contract asks — a reader above may rely
                    // on it (`io::ReadGate`) rather than poll again.
                    if this.switch.wake_when_set(cx.waker()) {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
            // Uninitialised: zeroing 8 KB per read was a third of the outbound's
            // instructions per HTTP/1.1 request (the socket fills what it returns).
            let mut scratch = [MaybeUninit::<u8>::uninit(); 8192];
            let mut rb = ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled();
                    if filled.is_empty() {
                        // EOF: hand over any partial head so hyper sees the truncation.
                        if let State::Head(partial) = &mut self.state {
                            let partial = std::mem::take(partial);
                            self.out.extend_from_slice(&partial);
                            self.state = State::Passthrough;
                            if !self.out.is_empty() {
                                continue;
                            }
                        }
                        return Poll::Ready(Ok(()));
                    }
                    if let Err(e) = self.process(filled) {
                        self.pending_error = Some(e);
                    }
                }
            }
        }
    }
}

// Writes (hyper's responses) pass through unchecked.
crate::io::write_through!(StrictH1);

/// The framing checks without I/O: `reads` are the successive reads from the client;
/// returns the bytes hyper would be given and the violation, if any. However the same
/// bytes are split into reads, the answer must be the same (the fuzz target
/// `strict_h1` holds it to that).
pub fn check_reads<'a>(
    reads: impl IntoIterator<Item = &'a [u8]>,
    max_head: usize,
) -> (Vec<u8>, Option<Violation>) {
    let mut s = StrictH1::new((), max_head);
    for read in reads {
        if s.process(read).is_err() || matches!(s.state, State::Done) {
            break;
        }
    }
    (s.out.to_vec(), s.violation)
}

#[cfg(test)]
mod tests;
