//! The client listener's connections: actix-http's bare answers made JSON, and a time limit on
//! every request head, not only a connection's first.
//!
//! A request that actix-http's HTTP/1 parser refuses (a bad request line, a header line without
//! a colon, conflicting lengths, too many headers) or whose head does not arrive in time never
//! reaches a handler: the parser answers 400, 431 or 408 itself, with an empty body, and offers
//! no hook to change that. The gate's contract is a JSON error with a stable code for every
//! client mistake, so each client connection is wrapped in a [`ClientConnection`], which
//! recognises exactly those answers on their way out and writes the gate's JSON error in their
//! place. Nothing else the gate sends can be mistaken for one: every answer of its own carries
//! a JSON body, so none has `content-length: 0` under one of those three statuses.
//!
//! actix-http times only a connection's first request head. On a kept-alive connection a
//! client could start a second head and never finish it, holding the connection for ever, one
//! byte at a time if it liked. The wrapper times every later head itself ([`HeadClock`]) and
//! answers 408 `request_timeout` when one is not complete in time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use memchr::memmem;
use prometheus_client::metrics::counter::Counter;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Bare answers replaced since start, exported as `signal_gate_malformed_http_total`.
static REPLACED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The count of bare answers sent as JSON, to register with the metrics.
pub fn malformed_http_counter() -> Counter {
    REPLACED.clone()
}

/// A client connection whose bare parser answers are replaced by JSON errors on the way out,
/// and whose request heads are timed.
pub struct ClientConnection<T> {
    io: T,
    replacing: Option<Replacement>,
    head: HeadClock,
}

/// A searcher for the blank line that ends a head, built once.
static HEAD_END: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\r\n\r\n"));

/// Whether `bytes`, after the four bytes in `window`, hold the blank line that ends a head;
/// `window` then holds the last four bytes seen.
fn ends_head(window: &mut u32, bytes: &[u8]) -> bool {
    const BLANK_LINE: u32 = u32::from_be_bytes(*b"\r\n\r\n");
    // Across the boundary with the previous read, byte by byte; within this read, memmem.
    for byte in bytes.iter().take(3) {
        *window = (*window << 8) | u32::from(*byte);
        if *window == BLANK_LINE {
            return true;
        }
    }
    if HEAD_END.find(bytes).is_some() {
        return true;
    }
    for byte in bytes.iter().skip(bytes.len().saturating_sub(4).max(3)) {
        *window = (*window << 8) | u32::from(*byte);
    }
    false
}

/// Request heads of one connection, timed from their first byte.
struct HeadClock {
    limit: Duration,
    stage: Stage,
}

/// Where a connection is between requests.
enum Stage {
    /// Between requests: the clock starts with the first byte of the next head.
    Awaiting {
        deadline: Option<Pin<Box<Sleep>>>,
        /// The last four bytes read, to find the blank line that ends a head across reads.
        window: u32,
    },
    /// A head is complete; the request's body and answer are the handlers' to time.
    InRequest,
    /// Switched to the WebSocket protocol: no more heads.
    Upgraded,
}

const AWAITING: Stage = Stage::Awaiting {
    deadline: None,
    window: 0,
};

impl HeadClock {
    fn new(limit: Duration) -> HeadClock {
        HeadClock {
            limit,
            stage: AWAITING,
        }
    }

    /// Notes bytes read from the client; starts the clock on a head's first byte and stops it
    /// at the blank line that ends the head.
    fn read(&mut self, bytes: &[u8], cx: &mut Context<'_>) {
        let Stage::Awaiting { deadline, window } = &mut self.stage else {
            return;
        };
        if bytes.is_empty() {
            return;
        }
        if ends_head(window, bytes) {
            self.stage = Stage::InRequest;
            return;
        }
        if deadline.is_none() {
            let mut sleep = Box::pin(tokio::time::sleep(self.limit));
            // Polled once so that it wakes this connection when it runs out.
            let _ = sleep.as_mut().poll(cx);
            *deadline = Some(sleep);
        }
    }

    /// Notes an answer going out: the end of a request, unless it is an interim `100
    /// Continue`, or the switch to the WebSocket protocol.
    fn wrote(&mut self, bytes: &[u8]) {
        let status = bytes.get(8..13);
        if status == Some(b" 101 ") {
            self.stage = Stage::Upgraded;
        } else if matches!(self.stage, Stage::InRequest) && status != Some(b" 100 ") {
            self.stage = AWAITING;
        }
    }

    /// Whether a started head has run out of time.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.stage {
            Stage::Awaiting {
                deadline: Some(sleep),
                ..
            } => sleep.as_mut().poll(cx).is_ready(),
            _ => false,
        }
    }
}

/// The JSON answer being written in place of a bare one.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// Length of the bare answer, reported as written once the replacement is out.
    replaces: usize,
}

impl<T> ClientConnection<T> {
    /// Wraps `io`; a request head must be complete within `head_limit` of its first byte.
    pub fn new(io: T, head_limit: Duration) -> Self {
        Self {
            io,
            replacing: None,
            head: HeadClock::new(head_limit),
        }
    }
}

/// The status lines actix-http writes for requests it cannot parse or that arrive too slowly,
/// each with the gate's code for it.
const BARE_ANSWERS: [(&[u8], u16, &str, &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        400,
        "malformed_request",
        "The request is not valid HTTP/1.1.",
    ),
    (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n",
        408,
        "request_timeout",
        "The request's headers did not arrive in time.",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
        431,
        "headers_too_large",
        "The request has too many headers.",
    ),
];

/// Searchers for [`BARE_ANSWERS`], built once: building one for every write was 7% of a
/// refusal's time under a flood (docs/benchmarks.md).
static BARE_ANSWER_FINDERS: LazyLock<[memmem::Finder<'static>; 3]> =
    LazyLock::new(|| BARE_ANSWERS.map(|answer| memmem::Finder::new(answer.0)));

/// Where the first bare answer in `buf` starts, how long it is, and what replaces it.
fn find_bare_answer(buf: &[u8]) -> Option<(usize, usize, Vec<u8>)> {
    let (start, answer) = BARE_ANSWER_FINDERS
        .iter()
        .zip(&BARE_ANSWERS)
        .filter_map(|(finder, answer)| finder.find(buf).map(|start| (start, answer)))
        .min_by_key(|(start, _)| *start)?;
    let end = HEAD_END.find(&buf[start..])? + 4;
    Some((start, end, json_answer(answer.1, answer.2, answer.3)))
}

fn json_answer(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body = json!({ "code": code, "message": message }).to_string();
    let reason = match status {
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<T: AsyncWrite + Unpin> ClientConnection<T> {
    /// Writes what is left of the replacement; ready with the bare answer's length when done.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(replacement) = self.replacing.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while replacement.written < replacement.bytes.len() {
            let rest = &replacement.bytes[replacement.written..];
            match ready!(Pin::new(&mut self.io).poll_write(cx, rest))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => replacement.written += n,
            }
        }
        let replaces = replacement.replaces;
        self.replacing = None;
        REPLACED.inc();
        Poll::Ready(Ok(replaces))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientConnection<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            this.head.wrote(buf);
            match find_bare_answer(buf) {
                None => return Pin::new(&mut this.io).poll_write(cx, buf),
                // What comes before it (answers to earlier pipelined requests) goes out as is.
                Some((start, _, _)) if start > 0 => {
                    return Pin::new(&mut this.io).poll_write(cx, &buf[..start]);
                }
                Some((_, replaces, bytes)) => {
                    this.replacing = Some(Replacement {
                        bytes,
                        written: 0,
                        replaces,
                    });
                }
            }
        }
        this.poll_replacement(cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientConnection<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.head.expired(cx) {
            // Best effort: the client may not be reading either. The error ends the connection.
            let answer = json_answer(408, BARE_ANSWERS[1].2, BARE_ANSWERS[1].3);
            let _ = Pin::new(&mut this.io).poll_write(cx, &answer);
            REPLACED.inc();
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let before = buf.filled().len();
        let read = ready!(Pin::new(&mut this.io).poll_read(cx, buf));
        this.head.read(&buf.filled()[before..], cx);
        Poll::Ready(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn written(chunks: &[&[u8]]) -> String {
        let mut out = ClientConnection::new(Vec::new(), Duration::from_secs(5));
        for chunk in chunks {
            out.write_all(chunk).await.expect("written");
        }
        String::from_utf8(out.io).expect("text")
    }

    #[tokio::test]
    async fn bare_parser_answers_become_json_and_everything_else_passes_unchanged() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\
                     date: Fri, 04 Dec 2026 20:35:08 GMT\r\n\r\n";
        let out = written(&[bare]).await;
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.ends_with(
            r#"{"code":"malformed_request","message":"The request is not valid HTTP/1.1."}"#
        ));

        let json = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(written(&[json]).await.as_bytes(), json);

        let slow =
            b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert!(written(&[slow])
            .await
            .contains(r#""code":"request_timeout""#));
        let many = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(written(&[many])
            .await
            .contains(r#""code":"headers_too_large""#));
    }

    #[tokio::test]
    async fn the_head_clock_runs_between_requests_only() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut clock = HeadClock::new(Duration::from_secs(5));
        let is = |clock: &HeadClock| match &clock.stage {
            Stage::Awaiting { deadline, .. } => ("awaiting", deadline.is_some()),
            Stage::InRequest => ("in request", false),
            Stage::Upgraded => ("upgraded", false),
        };
        clock.read(b"POST /v1/register HTTP/1.1\r\nHost: x\r", &mut cx);
        assert_eq!(is(&clock), ("awaiting", true), "a head has started");
        clock.read(b"\n\r\n{}", &mut cx);
        assert_eq!(
            is(&clock),
            ("in request", false),
            "the blank line ends it across reads"
        );
        clock.wrote(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(
            is(&clock),
            ("in request", false),
            "an interim answer ends nothing"
        );
        clock.wrote(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        assert_eq!(
            is(&clock),
            ("awaiting", false),
            "the clock waits for a first byte"
        );
        clock.read(b"GET /v1/websocket/ HTTP/1.1\r\n\r\n", &mut cx);
        clock.wrote(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        clock.read(b"\x82\x05hello", &mut cx);
        assert_eq!(is(&clock), ("upgraded", false), "frames are not heads");
    }

    #[tokio::test]
    async fn a_bare_answer_after_a_pipelined_one_is_replaced_and_the_first_kept() {
        let first = "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}";
        let both = format!("{first}HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        let out = written(&[both.as_bytes()]).await;
        assert!(out.starts_with(first), "{out}");
        let second = &out[first.len()..];
        assert!(second.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json"));
        assert!(second.contains("malformed_request"));
    }
}
