//! signal-server's WebSocket framing (`WebSocketProtocol.proto`, proto2, package
//! `signalservice`; UPSTREAM.md section 10): every binary frame is one `WebSocketMessage`.

use prost::Message;

/// `WebSocketMessage.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum FrameType {
    Unknown = 0,
    Request = 1,
    Response = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestFrame {
    #[prost(string, optional, tag = "1")]
    pub verb: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub path: Option<String>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub body: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "4")]
    pub id: Option<u64>,
    #[prost(string, repeated, tag = "5")]
    pub headers: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseFrame {
    #[prost(uint64, optional, tag = "1")]
    pub id: Option<u64>,
    #[prost(uint32, optional, tag = "2")]
    pub status: Option<u32>,
    #[prost(string, optional, tag = "3")]
    pub message: Option<String>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub body: Option<Vec<u8>>,
    #[prost(string, repeated, tag = "5")]
    pub headers: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WebSocketMessage {
    #[prost(enumeration = "FrameType", optional, tag = "1")]
    pub r#type: Option<i32>,
    #[prost(message, optional, tag = "2")]
    pub request: Option<RequestFrame>,
    #[prost(message, optional, tag = "3")]
    pub response: Option<ResponseFrame>,
}

impl WebSocketMessage {
    /// A request frame, as clients and servers send them.
    pub fn request(id: u64, verb: &str, path: &str, body: Option<Vec<u8>>) -> WebSocketMessage {
        WebSocketMessage {
            r#type: Some(FrameType::Request as i32),
            request: Some(RequestFrame {
                verb: Some(verb.to_owned()),
                path: Some(path.to_owned()),
                body,
                id: Some(id),
                headers: Vec::new(),
            }),
            response: None,
        }
    }

    /// A response frame for request `id`.
    pub fn response(id: u64, status: u32, message: &str, body: Vec<u8>) -> WebSocketMessage {
        WebSocketMessage {
            r#type: Some(FrameType::Response as i32),
            request: None,
            response: Some(ResponseFrame {
                id: Some(id),
                status: Some(status),
                message: Some(message.to_owned()),
                body: Some(body),
                headers: vec!["content-type:application/json".to_owned()],
            }),
        }
    }

    pub fn is_request(&self) -> bool {
        self.r#type == Some(FrameType::Request as i32)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// # Errors
    /// When the bytes are not a `WebSocketMessage`.
    pub fn parse(bytes: &[u8]) -> Result<WebSocketMessage, prost::DecodeError> {
        WebSocketMessage::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let frame = WebSocketMessage::request(7, "PUT", "/v1/verification/session/x/code", None);
        let parsed = WebSocketMessage::parse(&frame.to_bytes()).expect("valid frame");
        assert!(parsed.is_request());
        assert_eq!(parsed.request.and_then(|r| r.id), Some(7));
        assert!(WebSocketMessage::parse(&[0xff, 0xff, 0xff]).is_err());
    }
}
