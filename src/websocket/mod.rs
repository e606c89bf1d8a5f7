//! The WebSocket guard: `/v1/websocket/` relayed to signal-server frame by frame, except
//! requests for the verification-session API, which the gate answers itself with a 403 frame.
//!
//! signal-server answers the verification endpoints inside its WebSocket too, and accepts
//! connections without credentials (UPSTREAM.md section 10), so a gate that only owned the
//! HTTP paths would be decorative. Every client frame is decoded; a verification request in
//! any path spelling ([`crate::domain::is_verification_path`]) never leaves the gate; a frame
//! that does not parse closes the socket with 1007, as signal-server does. Everything else
//! (requests, responses, server pushes, pings, close codes) passes unchanged in both
//! directions, one frame at a time, so a slow side slows the other instead of filling memory.
//! Frame size and frames per second per connection are bounded.

pub mod frames;

use std::time::{Duration, Instant};

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as UpstreamCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use crate::decision::{DecisionLog, Endpoint, Reason};
use crate::domain::is_verification_path;
use crate::gate::Gate;
use frames::WebSocketMessage;

/// Largest frame relayed; signal-server's own messages are far smaller.
const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Frames a client may send per second, with a burst of twice that.
const FRAMES_PER_SECOND: f64 = 50.0;
/// How long the upstream WebSocket handshake may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers passed to signal-server as the proxy would pass them.
const FORWARDED_HEADERS: [&str; 4] = [
    "authorization",
    "user-agent",
    "x-signal-agent",
    "accept-language",
];

/// `GET /v1/websocket/`: connects upstream first, then accepts the client.
pub async fn websocket(request: HttpRequest, body: Payload, gate: Data<Gate>) -> HttpResponse {
    let address = gate.client_address(&request);
    let upstream = match connect_upstream(&request, &gate, address.ip()).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::warn!(error = %error, "could not open signal-server's WebSocket");
            return HttpResponse::BadGateway().json(json!({
                "code": "upstream_unavailable", "message": "The server is unavailable."
            }));
        }
    };
    let (response, session, stream) = match actix_ws::handle(&request, body) {
        Ok(parts) => parts,
        Err(_) => {
            return HttpResponse::BadRequest().json(json!({
                "code": "invalid_request", "message": "Expected a WebSocket upgrade."
            }))
        }
    };
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let block = address.block_label();
    actix_web::rt::spawn(relay(session, stream, upstream, gate, block));
    response
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_upstream(
    request: &HttpRequest,
    gate: &Gate,
    client: std::net::IpAddr,
) -> anyhow::Result<Upstream> {
    let mut url = gate.upstream.base().clone();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .map_err(|()| anyhow::anyhow!("cannot make a ws URL"))?;
    url.set_path(request.path());
    url.set_query(request.uri().query());
    let mut upstream_request = url.as_str().into_client_request()?;
    let headers = upstream_request.headers_mut();
    for name in FORWARDED_HEADERS {
        if let Some(value) = request.headers().get(name) {
            headers.insert(name, value.as_bytes().try_into()?);
        }
    }
    headers.insert("x-forwarded-for", client.to_string().parse()?);
    // Small buffers: an idle relayed connection should cost kilobytes, not tungstenite's
    // default 128 KiB a side; they grow for the frames that need it.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connecting =
        tokio_tungstenite::connect_async_with_config(upstream_request, Some(config), false);
    let (stream, _) = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, connecting).await??;
    Ok(stream)
}

/// What to do with one binary frame from the client.
enum Guarded {
    Relay,
    Answer(Vec<u8>),
    Malformed,
}

fn guard(bytes: &[u8]) -> Guarded {
    let Ok(message) = WebSocketMessage::parse(bytes) else {
        return Guarded::Malformed;
    };
    let is_request = message.is_request();
    let Some(request) = message.request.filter(|_| is_request) else {
        return Guarded::Relay;
    };
    if !request.path.as_deref().is_some_and(is_verification_path) {
        return Guarded::Relay;
    }
    let body = json!({
        "code": "use_http_endpoints",
        "message": "Verification is not served over the WebSocket; use POST /v1/register \
                    and POST /v1/verify.",
    });
    let answer = WebSocketMessage::response(
        request.id.unwrap_or(0),
        403,
        "Forbidden",
        body.to_string().into_bytes(),
    );
    Guarded::Answer(answer.to_bytes())
}

/// A token bucket of frames for one connection.
struct FrameBudget {
    tokens: f64,
    last: Instant,
}

impl FrameBudget {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * FRAMES_PER_SECOND;
        self.tokens = (self.tokens + refill).min(2.0 * FRAMES_PER_SECOND);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

type UpstreamSink = futures_util::stream::SplitSink<Upstream, Message>;

/// After one frame: go on, or close the client's side with this reason.
enum Next {
    Continue,
    Close(Option<CloseReason>),
}

fn closing(code: u16) -> Next {
    Next::Close(Some(CloseReason {
        code: CloseCode::from(code),
        description: None,
    }))
}

async fn relay(
    mut client: Session,
    mut from_client: actix_ws::AggregatedMessageStream,
    upstream: Upstream,
    gate: Data<Gate>,
    block: String,
) {
    let (mut to_upstream, mut from_upstream) = upstream.split();
    let mut budget = FrameBudget {
        tokens: 2.0 * FRAMES_PER_SECOND,
        last: Instant::now(),
    };
    loop {
        let next = tokio::select! {
            incoming = from_client.next() => match incoming {
                Some(Ok(message)) => {
                    let frame = ClientFrame { gate: &gate, block: &block, budget: &mut budget };
                    frame.relay(message, &mut client, &mut to_upstream).await
                }
                _ => closing(1007),
            },
            outgoing = from_upstream.next() => match outgoing {
                Some(Ok(message)) => to_client(message, &mut client).await,
                _ => closing(1011),
            },
        };
        if let Next::Close(reason) = next {
            let _ = to_upstream.close().await;
            let _ = client.close(reason).await;
            return;
        }
    }
}

/// One frame from the client, with what deciding on it needs.
struct ClientFrame<'a> {
    gate: &'a Gate,
    block: &'a str,
    budget: &'a mut FrameBudget,
}

impl ClientFrame<'_> {
    async fn relay(
        self,
        message: AggregatedMessage,
        client: &mut Session,
        to_upstream: &mut UpstreamSink,
    ) -> Next {
        let forwarded = match message {
            AggregatedMessage::Binary(bytes) => {
                if !self.budget.take() {
                    return closing(1008);
                }
                match guard(&bytes) {
                    Guarded::Relay => to_upstream.send(Message::Binary(bytes)).await,
                    Guarded::Answer(frame) => {
                        let log = DecisionLog::new(Endpoint::Websocket, self.block.to_owned());
                        log.finish(Reason::WebsocketVerification, 403, &self.gate.metrics);
                        return match client.binary(frame).await {
                            Ok(()) => Next::Continue,
                            Err(_) => Next::Close(None),
                        };
                    }
                    Guarded::Malformed => return closing(1007),
                }
            }
            AggregatedMessage::Text(text) => {
                to_upstream
                    .send(Message::Text(text.to_string().into()))
                    .await
            }
            AggregatedMessage::Ping(bytes) => to_upstream.send(Message::Ping(bytes)).await,
            AggregatedMessage::Pong(bytes) => to_upstream.send(Message::Pong(bytes)).await,
            AggregatedMessage::Close(reason) => {
                let frame = reason.map(|r| CloseFrame {
                    code: UpstreamCode::from(u16::from(r.code)),
                    reason: r.description.unwrap_or_default().into(),
                });
                let _ = to_upstream.send(Message::Close(frame)).await;
                return Next::Close(None);
            }
        };
        match forwarded {
            Ok(()) => Next::Continue,
            Err(_) => closing(1011),
        }
    }
}

/// One frame from signal-server, passed on unchanged.
async fn to_client(message: Message, client: &mut Session) -> Next {
    let sent = match message {
        Message::Binary(bytes) => client.binary(bytes).await,
        Message::Text(text) => client.text(text.as_str().to_owned()).await,
        Message::Ping(bytes) => client.ping(&bytes).await,
        Message::Pong(bytes) => client.pong(&bytes).await,
        Message::Close(frame) => {
            return Next::Close(frame.map(|f| CloseReason {
                code: CloseCode::from(u16::from(f.code)),
                description: Some(f.reason.as_str().to_owned()).filter(|d| !d.is_empty()),
            }));
        }
        Message::Frame(_) => Ok(()),
    };
    match sent {
        Ok(()) => Next::Continue,
        Err(_) => Next::Close(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_requests_are_answered_and_others_relayed() {
        let verification = WebSocketMessage::request(9, "POST", "/v1/%76erification/session", None);
        let Guarded::Answer(bytes) = guard(&verification.to_bytes()) else {
            panic!("answered")
        };
        let answer = WebSocketMessage::parse(&bytes).expect("a frame");
        let response = answer.response.expect("a response");
        assert_eq!((response.id, response.status), (Some(9), Some(403)));

        let ordinary = WebSocketMessage::request(10, "GET", "/v1/keys", None);
        assert!(matches!(guard(&ordinary.to_bytes()), Guarded::Relay));
        let reply = WebSocketMessage::response(1, 200, "OK", Vec::new());
        assert!(matches!(guard(&reply.to_bytes()), Guarded::Relay));
        assert!(matches!(guard(&[0xff, 0x01]), Guarded::Malformed));
    }
}
