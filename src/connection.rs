//! The client listener's connections, with actix-http's bare answers made JSON.
//!
//! A request that actix-http's HTTP/1 parser refuses (a bad request line, a header line without
//! a colon, conflicting lengths, too many headers) or whose head does not arrive in time never
//! reaches a handler: the parser answers 400, 431 or 408 itself, with an empty body, and offers
//! no hook to change that. The gate's contract is a JSON error with a stable code for every
//! client mistake, so each client connection is wrapped in [`JsonBareErrors`], which recognises
//! exactly those answers on their way out and writes the gate's JSON error in their place.
//!
//! Nothing else the gate sends can be mistaken for one: every answer of its own carries a
//! JSON body, so none has `content-length: 0` under one of those three statuses.

use std::io;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{ready, Context, Poll};

use memchr::memmem;
use prometheus_client::metrics::counter::Counter;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bare answers replaced since start, exported as `signal_gate_malformed_http_total`.
static REPLACED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The count of bare answers sent as JSON, to register with the metrics.
pub fn malformed_http_counter() -> Counter {
    REPLACED.clone()
}

/// A connection whose bare parser answers are replaced by JSON errors on the way out.
pub struct JsonBareErrors<T> {
    io: T,
    replacing: Option<Replacement>,
}

/// The JSON answer being written in place of a bare one.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// Length of the bare answer, reported as written once the replacement is out.
    replaces: usize,
}

impl<T> JsonBareErrors<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            replacing: None,
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

/// Where the first bare answer in `buf` starts, how long it is, and what replaces it.
fn find_bare_answer(buf: &[u8]) -> Option<(usize, usize, Vec<u8>)> {
    let (start, answer) = BARE_ANSWERS
        .iter()
        .filter_map(|answer| memmem::find(buf, answer.0).map(|start| (start, answer)))
        .min_by_key(|(start, _)| *start)?;
    let end = memmem::find(&buf[start..], b"\r\n\r\n")? + 4;
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

impl<T: AsyncWrite + Unpin> JsonBareErrors<T> {
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

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonBareErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
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

impl<T: AsyncRead + Unpin> AsyncRead for JsonBareErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn written(chunks: &[&[u8]]) -> String {
        let mut out = JsonBareErrors::new(Vec::new());
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
