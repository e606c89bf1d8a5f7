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
//! Frame size and frames per second per connection are bounded. An unauthenticated socket
//! connects to signal-server only when it first has a frame to relay ([`Upstream`]).

mod fragments;
pub mod frames;

use std::time::{Duration, Instant};

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Session};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as UpstreamCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use crate::decision::{DecisionLog, Endpoint, Reason};
use crate::domain::{canonical_path, is_verification_path, ClientAddress};
use crate::gate::Gate;
use fragments::{Assembled, Assembler, ClientMessage};
use frames::WebSocketMessage;

/// Largest frame relayed; signal-server's own messages are far smaller.
const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Frames a client may send per second, with a burst of twice that.
const FRAMES_PER_SECOND: f64 = 50.0;
/// How long the upstream WebSocket handshake may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upgrade headers not passed to signal-server: the hop's own (the gate makes its own
/// handshake), and the client's claims about its address or TLS, which Jetty's forwarded-header
/// handling would read (the gate passes the address it resolved instead). Headers the client
/// names in `Connection` are the hop's too. Everything else passes as a proxy would pass it
/// (`Authorization`, `User-Agent`, `X-Signal-Agent`, `X-Signal-Receive-Stories`, ...).
const HOP_HEADERS: [&str; 20] = [
    "host",
    "connection",
    "upgrade",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "proxy-authorization",
    "proxy-connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "forwarded",
    "x-real-ip",
    "x-forwarded-for",
    "x-proxied-https",
    "proxy-auth-cert",
    "proxy-ssl-id",
];

/// `GET /v1/websocket/`: relays the socket to signal-server, guarding every client frame.
///
/// An upgrade that presents credentials, or asks for any other socket under `/v1/websocket/`,
/// connects upstream before the client is accepted, so signal-server's verdict on it reaches the
/// client as it would without the gate. A plain unauthenticated `/v1/websocket/` is accepted at
/// once and connects upstream on its first frame for signal-server (see [`Upstream`]).
pub async fn websocket(request: HttpRequest, body: Payload, gate: Data<Gate>) -> HttpResponse {
    if !is_plain_path(request.path()) {
        // `/v1/websocket/../verification/...` and the like: not a socket, and never relayed.
        return crate::routes::unrouted(request, body, gate).await;
    }
    let address = gate.client_address(&request);
    let Ok(target) = UpstreamTarget::for_request(&request, &gate, address.ip()) else {
        return HttpResponse::BadRequest().json(json!({
            "code": "invalid_request", "message": "The upgrade request cannot be relayed."
        }));
    };
    // The upgrade is checked before signal-server is asked for anything.
    let Ok((response, session, stream)) = actix_ws::handle(&request, body) else {
        return HttpResponse::BadRequest().json(json!({
            "code": "invalid_request", "message": "Expected a WebSocket upgrade."
        }));
    };
    let upstream = if opens_upstream_at_once(&request) {
        match target.connect().await {
            Ok(stream) => Upstream::open(stream),
            Err(error) => {
                tracing::warn!(error = %error, "could not open signal-server's WebSocket");
                return HttpResponse::BadGateway().json(json!({
                    "code": "upstream_unavailable", "message": "The server is unavailable."
                }));
            }
        }
    } else {
        Upstream::Waiting(Box::new(target))
    };
    let stream = stream.max_frame_size(MAX_FRAME_BYTES);
    actix_web::rt::spawn(relay(session, stream, upstream, gate, address));
    response
}

/// Whether `path` is already in canonical form (a trailing slash aside), so that the path
/// relayed is the path the client's proxy routed on and no other.
fn is_plain_path(path: &str) -> bool {
    canonical_path(path).is_ok_and(|canonical| {
        path == canonical || path.strip_suffix('/') == Some(canonical.as_str())
    })
}

/// Whether signal-server must see this upgrade before the client is accepted: it presents
/// credentials the way signal-server reads them (an `Authorization` header, or both `login`
/// and `password` in the query), or it is another socket, such as provisioning, on which
/// signal-server speaks first. Only a plain unauthenticated socket may wait.
fn opens_upstream_at_once(request: &HttpRequest) -> bool {
    if request.headers().contains_key("authorization") {
        return true;
    }
    if !matches!(request.path(), "/v1/websocket/" | "/v1/websocket") {
        return true;
    }
    let Some(query) = request.uri().query() else {
        return false;
    };
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        return true;
    };
    let has = |name: &str| pairs.iter().any(|(key, _)| key == name);
    has("login") && has("password")
}

type UpstreamStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type UpstreamSink = futures_util::stream::SplitSink<UpstreamStream, Message>;
type UpstreamSource = futures_util::stream::SplitStream<UpstreamStream>;

/// Where signal-server's side of one client's socket is opened, and with which headers.
struct UpstreamTarget {
    url: String,
    headers: HeaderMap,
}

impl UpstreamTarget {
    fn for_request(
        request: &HttpRequest,
        gate: &Gate,
        client: std::net::IpAddr,
    ) -> anyhow::Result<Self> {
        let mut url = gate.upstream.base().clone();
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| anyhow::anyhow!("cannot make a ws URL"))?;
        url.set_path(request.path());
        url.set_query(request.uri().query());
        let named_in_connection: Vec<String> = request
            .headers()
            .get_all("connection")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|token| token.trim().to_ascii_lowercase())
            .collect();
        let mut headers = HeaderMap::new();
        for (name, value) in request.headers() {
            let name = name.as_str();
            let hop = HOP_HEADERS.contains(&name)
                || name.starts_with("x-forwarded-")
                || named_in_connection.iter().any(|named| named == name);
            if hop {
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes())?;
            headers.append(name, value.as_bytes().try_into()?);
        }
        headers.insert("x-forwarded-for", client.to_string().parse()?);
        Ok(Self {
            url: url.into(),
            headers,
        })
    }

    async fn connect(&self) -> anyhow::Result<UpstreamStream> {
        let mut request = self.url.as_str().into_client_request()?;
        request.headers_mut().extend(self.headers.clone());
        // Small buffers: an idle relayed connection should cost kilobytes, not tungstenite's
        // default 128 KiB a side; they grow for the frames that need it.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), false);
        let (stream, _) = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, connecting).await??;
        Ok(stream)
    }
}

/// signal-server's side of one client's socket.
///
/// signal-server sends nothing unasked on an unauthenticated `/v1/websocket/` (it starts
/// deliveries only for an account, UPSTREAM.md section 10), so such a socket waits to connect
/// until its client sends a frame for signal-server. The client sees no difference, except
/// that an outage shows as a 1011 close on that frame instead of a 502 on the upgrade. What it
/// buys: an idle socket, or one that only tries verification requests, costs one descriptor in
/// the gate and nothing at all in signal-server.
enum Upstream {
    Waiting(Box<UpstreamTarget>),
    Open {
        to: UpstreamSink,
        from: UpstreamSource,
    },
}

impl Upstream {
    fn open(stream: UpstreamStream) -> Self {
        let (to, from) = stream.split();
        Self::Open { to, from }
    }

    fn is_open(&self) -> bool {
        matches!(self, Self::Open { .. })
    }

    /// Sends one frame, connecting first if this socket was waiting.
    async fn send(&mut self, message: Message) -> anyhow::Result<()> {
        if let Self::Waiting(target) = self {
            // Boxed: the handshake's state is kilobytes, and unboxed it would be carried in
            // every connection's task for its whole life.
            let stream = Box::pin(target.connect()).await.inspect_err(|error| {
                tracing::warn!(error = %error, "could not open signal-server's WebSocket");
            })?;
            *self = Self::open(stream);
        }
        match self {
            Self::Open { to, .. } => Ok(to.send(message).await?),
            Self::Waiting(_) => Err(anyhow::anyhow!("signal-server's side is not open")),
        }
    }

    /// The next frame from signal-server; a waiting socket has none to give.
    async fn next(&mut self) -> Option<tokio_tungstenite::tungstenite::Result<Message>> {
        match self {
            Self::Open { from, .. } => from.next().await,
            Self::Waiting(_) => std::future::pending().await,
        }
    }

    async fn close(&mut self) {
        if let Self::Open { to, .. } = self {
            let _ = to.close().await;
        }
    }
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
    mut from_client: actix_ws::MessageStream,
    mut upstream: Upstream,
    gate: Data<Gate>,
    address: ClientAddress,
) {
    let mut budget = FrameBudget {
        tokens: 2.0 * FRAMES_PER_SECOND,
        last: Instant::now(),
    };
    let mut assembler = Assembler::new(MAX_FRAME_BYTES);
    loop {
        let next = tokio::select! {
            incoming = from_client.next() => match incoming {
                // Every frame counts against the rate, fragments, pings and text included: any
                // of them costs signal-server, or the gate, a frame.
                Some(Ok(frame)) if !matches!(frame, actix_ws::Message::Close(_))
                    && !budget.take() => closing(1008),
                Some(Ok(frame)) => match assembler.push(frame) {
                    Assembled::Whole(message) => {
                        let frame = ClientFrame {
                            gate: &gate,
                            address,
                        };
                        frame.relay(message, &mut client, &mut upstream).await
                    }
                    Assembled::Partial => Next::Continue,
                    Assembled::Refused(code) => closing(code),
                },
                _ => closing(1007),
            },
            outgoing = upstream.next() => match outgoing {
                Some(Ok(message)) => to_client(message, &mut client).await,
                _ => closing(1011),
            },
        };
        if let Next::Close(reason) = next {
            upstream.close().await;
            let _ = client.close(reason).await;
            return;
        }
    }
}

/// One message from the client, with what deciding on it needs.
struct ClientFrame<'a> {
    gate: &'a Gate,
    address: ClientAddress,
}

impl ClientFrame<'_> {
    async fn relay(
        self,
        message: ClientMessage,
        client: &mut Session,
        upstream: &mut Upstream,
    ) -> Next {
        let forwarded = match message {
            ClientMessage::Binary(bytes) => match guard(&bytes) {
                Guarded::Relay => upstream.send(Message::Binary(bytes)).await,
                Guarded::Answer(frame) => {
                    let log = DecisionLog::new(Endpoint::Websocket, self.address);
                    log.finish(Reason::WebsocketVerification, 403, &self.gate.metrics);
                    return match client.binary(frame).await {
                        Ok(()) => Next::Continue,
                        Err(_) => Next::Close(None),
                    };
                }
                Guarded::Malformed => return closing(1007),
            },
            ClientMessage::Text(text) => upstream.send(Message::Text(text.into())).await,
            // A waiting socket answers pings itself rather than connecting for them.
            ClientMessage::Ping(bytes) if !upstream.is_open() => {
                return match client.pong(&bytes).await {
                    Ok(()) => Next::Continue,
                    Err(_) => Next::Close(None),
                };
            }
            ClientMessage::Pong(_) if !upstream.is_open() => return Next::Continue,
            ClientMessage::Ping(bytes) => upstream.send(Message::Ping(bytes)).await,
            ClientMessage::Pong(bytes) => upstream.send(Message::Pong(bytes)).await,
            ClientMessage::Close(reason) => {
                let frame = reason.map(|r| CloseFrame {
                    code: UpstreamCode::from(u16::from(r.code)),
                    reason: r.description.unwrap_or_default().into(),
                });
                if upstream.is_open() {
                    let _ = upstream.send(Message::Close(frame)).await;
                }
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
