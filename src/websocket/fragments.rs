//! Client messages put back together from their frames.
//!
//! actix-ws can join continuation frames itself, but then a fragment never reaches the gate's
//! per-connection rate bound: a client could send empty continuation frames without end. The
//! relay reads raw frames, counts each one, and joins fragments here, within the same size
//! bound as a whole frame.

use actix_web::web::Bytes;
use actix_ws::{CloseReason, Item, Message};

/// A whole message from the client.
#[derive(Debug, PartialEq)]
pub enum ClientMessage {
    Binary(Bytes),
    Text(String),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseReason>),
}

/// What one frame makes.
#[derive(Debug, PartialEq)]
pub enum Assembled {
    Whole(ClientMessage),
    /// A fragment of a message still open.
    Partial,
    /// A frame the protocol does not allow here; the socket closes with this code.
    Refused(u16),
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    Binary,
}

/// The fragments of the message in progress, if any.
pub struct Assembler {
    max_bytes: usize,
    open: Option<(Kind, Vec<u8>)>,
}

impl Assembler {
    pub fn new(max_bytes: usize) -> Assembler {
        Assembler {
            max_bytes,
            open: None,
        }
    }

    pub fn push(&mut self, frame: Message) -> Assembled {
        let whole = match frame {
            Message::Binary(bytes) => ClientMessage::Binary(bytes),
            Message::Text(text) => ClientMessage::Text(text.to_string()),
            Message::Ping(bytes) => ClientMessage::Ping(bytes),
            Message::Pong(bytes) => ClientMessage::Pong(bytes),
            Message::Close(reason) => ClientMessage::Close(reason),
            Message::Nop => return Assembled::Partial,
            Message::Continuation(item) => return self.fragment(item),
        };
        Assembled::Whole(whole)
    }

    fn fragment(&mut self, item: Item) -> Assembled {
        // 1002: protocol error, 1007: not UTF-8, 1009: too big.
        let (first, bytes, last) = match item {
            Item::FirstText(bytes) => (Some(Kind::Text), bytes, false),
            Item::FirstBinary(bytes) => (Some(Kind::Binary), bytes, false),
            Item::Continue(bytes) => (None, bytes, false),
            Item::Last(bytes) => (None, bytes, true),
        };
        match (first, self.open.as_mut()) {
            (Some(kind), None) => self.open = Some((kind, Vec::new())),
            (None, Some(_)) => {}
            _ => return Assembled::Refused(1002),
        }
        let Some((kind, joined)) = self.open.as_mut() else {
            return Assembled::Refused(1002);
        };
        if joined.len() + bytes.len() > self.max_bytes {
            return Assembled::Refused(1009);
        }
        joined.extend_from_slice(&bytes);
        if !last {
            return Assembled::Partial;
        }
        let (kind, joined) = (*kind, std::mem::take(joined));
        self.open = None;
        match kind {
            Kind::Binary => Assembled::Whole(ClientMessage::Binary(Bytes::from(joined))),
            Kind::Text => match String::from_utf8(joined) {
                Ok(text) => Assembled::Whole(ClientMessage::Text(text)),
                Err(_) => Assembled::Refused(1007),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(item: Item) -> Message {
        Message::Continuation(item)
    }

    #[test]
    fn fragments_join_into_one_message_within_the_bound() {
        let mut assembler = Assembler::new(8);
        let first = Bytes::from_static(b"ab");
        assert_eq!(
            assembler.push(part(Item::FirstBinary(first))),
            Assembled::Partial
        );
        assert_eq!(
            assembler.push(part(Item::Continue(Bytes::new()))),
            Assembled::Partial
        );
        let last = assembler.push(part(Item::Last(Bytes::from_static(b"cd"))));
        let joined = ClientMessage::Binary(Bytes::from_static(b"abcd"));
        assert_eq!(last, Assembled::Whole(joined));

        let text = Bytes::from_static(b"12345");
        assert_eq!(
            assembler.push(part(Item::FirstText(text))),
            Assembled::Partial
        );
        let over = assembler.push(part(Item::Last(Bytes::from_static(b"6789"))));
        assert_eq!(over, Assembled::Refused(1009));
    }

    #[test]
    fn fragments_out_of_order_are_a_protocol_error() {
        let mut assembler = Assembler::new(8);
        let stray = assembler.push(part(Item::Continue(Bytes::new())));
        assert_eq!(stray, Assembled::Refused(1002));
        assert_eq!(
            assembler.push(part(Item::FirstBinary(Bytes::new()))),
            Assembled::Partial
        );
        let again = assembler.push(part(Item::FirstText(Bytes::new())));
        assert_eq!(again, Assembled::Refused(1002));
    }
}
