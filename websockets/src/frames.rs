//! The WebSocket protocol's frames (SPEC §6) as types, and the dialects that render them.
//!
//! A `Dialect` is chosen at the handshake by the endpoint: `Native` (`/ws`, and Socrate's
//! `/?token=`), `Mozilla` (`/socket`, `/`), `VPush` (`/push/socket`), Thunderpush over
//! SockJS (`/connect/{server}/{session}/websocket`) or over a bare WebSocket
//! (`/connect/websocket`). It decides only how frames look; every dialect sees the same
//! deliveries. A delivery is rendered once per
//! dialect (`Rendered`), however many sockets of that dialect receive it.

use std::sync::OnceLock;

use common::clock::rfc3339;
use common::message::{Delivery, Event};
use common::store::MessageBody;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// How a socket's frames look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SPEC §6 JSON frames with a `type`.
    Native,
    /// Mozilla push 2012: message objects, `token: T` first frame.
    Mozilla,
    /// VPush: `{"message": "..."}` both ways.
    VPush,
    /// Thunderpush over SockJS's WebSocket transport: `a[{"payload", "channel"?}]`
    /// messages, text commands inside SockJS frames (`crate::thunder`).
    SockJs,
    /// Thunderpush over SockJS's raw WebSocket endpoint: `{"payload", "channel"?}` and
    /// bare text commands.
    ThunderRaw,
}

impl Dialect {
    /// Whether the socket speaks Thunderpush's commands (`CONNECT`, `SUBSCRIBE`, …).
    pub fn is_thunderpush(self) -> bool {
        matches!(self, Dialect::SockJs | Dialect::ThunderRaw)
    }
}

/// A delivery and its frames, rendered on first use per dialect.
pub struct Rendered {
    pub delivery: Delivery,
    /// The socket (on this node) that published it, which does not get it back.
    pub skip: Option<u64>,
    api_base: String,
    native: OnceLock<Option<Utf8Bytes>>,
    mozilla: OnceLock<Option<Utf8Bytes>>,
    vpush: OnceLock<Option<Utf8Bytes>>,
    sockjs: OnceLock<Option<Utf8Bytes>>,
    thunder_raw: OnceLock<Option<Utf8Bytes>>,
    /// An entry of its stream that no socket gets (an addressed message cancelled or
    /// expired before it reached this edge): it only moves the stream's cursor on.
    withheld: bool,
}

impl Rendered {
    /// `delivery` as an entry no socket receives (see `withheld`).
    pub fn withheld(delivery: Delivery, api_base: &str) -> Rendered {
        Rendered {
            withheld: true,
            ..Rendered::new(delivery, None, api_base)
        }
    }

    pub fn new(delivery: Delivery, skip: Option<u64>, api_base: &str) -> Rendered {
        Rendered {
            delivery,
            skip,
            api_base: api_base.to_owned(),
            native: OnceLock::new(),
            mozilla: OnceLock::new(),
            vpush: OnceLock::new(),
            sockjs: OnceLock::new(),
            thunder_raw: OnceLock::new(),
            withheld: false,
        }
    }

    /// The frame for `dialect`; `None` when the dialect has no frame for this delivery.
    pub fn frame(&self, dialect: Dialect) -> Option<&Utf8Bytes> {
        if self.withheld {
            return None;
        }
        let (cell, render): (_, fn(&Rendered) -> Option<String>) = match dialect {
            Dialect::Native => (&self.native, |r| native_frame(&r.delivery)),
            Dialect::Mozilla => (&self.mozilla, |r| r.delivery.mozilla_frame(&r.api_base)),
            Dialect::VPush => (&self.vpush, |r| vpush_frame(&r.delivery)),
            Dialect::SockJs => (&self.sockjs, |r| {
                thunder_message(&r.delivery).map(|m| crate::thunder::sockjs_array(&m))
            }),
            Dialect::ThunderRaw => (&self.thunder_raw, |r| thunder_message(&r.delivery)),
        };
        cell.get_or_init(|| render(self).map(Utf8Bytes::from))
            .as_ref()
    }
}

/// `{"type": "message", "id", "channel"?, "seq"?, "data", "createdAt", "expiresAt"?}`.
fn native_frame(delivery: &Delivery) -> Option<String> {
    let frame = match &delivery.event {
        Event::ChannelMessage { message } => {
            let mut frame = json!({
                "type": "message",
                "id": message.id,
                "channel": message.channel,
                "data": message.data.value(),
                "createdAt": rfc3339(message.created_us),
            });
            if let Some(position) = &delivery.position {
                frame["seq"] = json!(position.offset);
            }
            if let Some(expires) = message.expires_us {
                frame["expiresAt"] = json!(rfc3339(expires));
            }
            frame
        }
        Event::UserMessage { message } => json!({
            "type": "message",
            "id": message.id,
            "data": message.data.value(),
            "createdAt": rfc3339(message.created_us),
        }),
        Event::AddressedMessage { message } => common::message::addressed_frame(message),
        Event::QueueMessage { .. } | Event::Logout { .. } | Event::Broadcast { .. } => return None,
    };
    Some(frame.to_string())
}

/// An addressed message's content as text: Socrate's `message` as it is, `data` as its
/// JSON text.
fn addressed_text(body: &MessageBody) -> String {
    match body {
        MessageBody::Text(text) => text.clone(),
        MessageBody::Data(data) => data.text().to_owned(),
    }
}

/// `{"message": "<text>"}`: a string as it is, any other JSON value as its text.
fn vpush_frame(delivery: &Delivery) -> Option<String> {
    let text = match &delivery.event {
        Event::ChannelMessage { message } => message.data.as_message_text(),
        Event::UserMessage { message } => message.data.as_message_text(),
        Event::AddressedMessage { message } => match &message.body {
            MessageBody::Data(data) => data.as_message_text(),
            text => addressed_text(text),
        },
        Event::QueueMessage { .. } | Event::Logout { .. } | Event::Broadcast { .. } => return None,
    };
    Some(json!({ "message": text }).to_string())
}

/// Thunderpush's message, as the original sends it: `{"payload": "<the published JSON
/// text, verbatim>", "channel": "<ch>"}`, without `channel` for a user message.
fn thunder_message(delivery: &Delivery) -> Option<String> {
    let (text, channel) = match &delivery.event {
        Event::ChannelMessage { message } => {
            (message.data.text().to_owned(), Some(&message.channel))
        }
        Event::UserMessage { message } => (message.data.text().to_owned(), None),
        Event::AddressedMessage { message } => (addressed_text(&message.body), None),
        Event::QueueMessage { .. } | Event::Logout { .. } | Event::Broadcast { .. } => return None,
    };
    let payload = serde_json::to_string(&text).ok()?;
    Some(match channel {
        Some(channel) => {
            let channel = serde_json::to_string(channel.as_str()).ok()?;
            format!("{{\"payload\":{payload},\"channel\":{channel}}}")
        }
        None => format!("{{\"payload\":{payload}}}"),
    })
}

/// A frame a native client sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Ack {
        id: String,
    },
    Event {
        id: String,
        kind: String,
    },
    Subscribe {
        channel: String,
        #[serde(default)]
        since: Option<u64>,
        #[serde(default)]
        epoch: Option<String>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        data: Value,
    },
    Ping,
}

/// Why a client frame was refused: the `code` and `message` of the error frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
}

impl FrameError {
    pub fn new(code: &'static str, message: impl Into<String>) -> FrameError {
        FrameError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> FrameError {
        FrameError::new("bad_request", message)
    }
}

/// Parses a native client frame.
pub fn parse_native(text: &str) -> Result<ClientFrame, FrameError> {
    serde_json::from_str(text).map_err(|e| {
        FrameError::bad_request(format!(
            "expected a frame like {{\"type\": \"subscribe\", \"channel\": \"news\"}}: {e}"
        ))
    })
}

/// A VPush client frame: the JSON object `{"message": "..."}`; the text to publish.
pub fn parse_vpush(text: &str) -> Result<String, FrameError> {
    let refused = || FrameError::bad_request("expected {\"message\": \"<text>\"}");
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut frame)) => match frame.remove("message") {
            Some(Value::String(message)) => Ok(message),
            _ => Err(refused()),
        },
        _ => Err(refused()),
    }
}

/// `{"type": "error", "code", "message"}` (VPush: `{"error": ...}`).
pub fn error_frame(dialect: Dialect, error: &FrameError) -> Utf8Bytes {
    let frame = match dialect {
        Dialect::VPush => json!({"error": error.message, "code": error.code}),
        _ => json!({"type": "error", "code": error.code, "message": error.message}),
    };
    Utf8Bytes::from(frame.to_string())
}

/// `{"type": "resync", "channel"}`: the socket may have missed messages of the channel
/// that cannot be replayed.
pub fn resync_frame(channel: &str) -> Utf8Bytes {
    Utf8Bytes::from(json!({"type": "resync", "channel": channel}).to_string())
}

/// `{"type": "subscribed", "channel", "epoch"?, "seq"?}`: the socket follows the channel
/// live from here; for a channel with history, the position it is at (what a later
/// `subscribe` with `since` resumes after). Frames before it were the replay.
pub fn subscribed_frame(channel: &str, position: Option<&common::stream::Position>) -> Utf8Bytes {
    let mut frame = json!({"type": "subscribed", "channel": channel});
    if let Some(position) = position {
        frame["epoch"] = json!(position.epoch);
        frame["seq"] = json!(position.offset);
    }
    Utf8Bytes::from(frame.to_string())
}

/// `{"type": "pong"}`.
pub fn pong_frame() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"type":"pong"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::ids::{AppId, ChannelName, UserId};
    use common::message::{ChannelMessage, UserMessage};
    use common::stream::Position;

    fn channel_message(data: Value) -> Delivery {
        let message = ChannelMessage {
            id: "m1".into(),
            app: AppId::parse("dev").unwrap(),
            channel: ChannelName::parse("news").unwrap(),
            data: data.into(),
            created_us: 1_689_692_400_000_000,
            expires_us: None,
            replace_id: None,
        };
        Delivery::channel_message(
            message,
            Some(Position {
                epoch: "e".into(),
                offset: 7,
            }),
        )
    }

    #[test]
    fn a_delivery_renders_once_per_dialect() {
        let rendered = Rendered::new(channel_message(json!({"a": 1})), None, "http://h");
        let native: Value = serde_json::from_str(rendered.frame(Dialect::Native).unwrap()).unwrap();
        assert_eq!(
            native,
            json!({"type": "message", "id": "m1", "channel": "news", "seq": 7,
                   "data": {"a": 1}, "createdAt": "2023-07-18T15:00:00Z"})
        );
        assert_eq!(
            rendered.frame(Dialect::VPush).unwrap().as_str(),
            r#"{"message":"{\"a\":1}"}"#
        );
        assert!(
            rendered.frame(Dialect::Mozilla).is_none(),
            "not a queue message"
        );
        let first = rendered.frame(Dialect::Native).unwrap().as_str().as_ptr();
        let again = rendered.frame(Dialect::Native).unwrap().as_str().as_ptr();
        assert_eq!(first, again, "rendered once");
    }

    #[test]
    fn thunderpush_gets_the_published_text_as_payload() {
        let text = "{\"a\": 1,  \"s\":\"x\\u00e9\"}";
        let mut delivery = channel_message(json!(null));
        if let Event::ChannelMessage { message } = &mut delivery.event {
            message.data = common::message::JsonText::parse(text).unwrap();
        }
        let rendered = Rendered::new(delivery, None, "");
        let raw = rendered.frame(Dialect::ThunderRaw).unwrap().as_str();
        assert_eq!(
            raw,
            r#"{"payload":"{\"a\": 1,  \"s\":\"x\\u00e9\"}","channel":"news"}"#
        );
        let parsed: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(parsed["payload"], text);
        assert_eq!(
            rendered.frame(Dialect::SockJs).unwrap().as_str(),
            format!("a[{raw}]")
        );
        let user = Delivery::user_message(UserMessage {
            id: "u1".into(),
            app: AppId::parse("dev").unwrap(),
            user: UserId::parse("alice").unwrap(),
            data: json!({"b": 2}).into(),
            created_us: 0,
        });
        let rendered = Rendered::new(user, None, "");
        assert_eq!(
            rendered.frame(Dialect::SockJs).unwrap().as_str(),
            r#"a[{"payload":"{\"b\":2}"}]"#
        );
    }

    #[test]
    fn vpush_strings_pass_as_they_are() {
        let rendered = Rendered::new(channel_message(json!("hello")), None, "");
        assert_eq!(
            rendered.frame(Dialect::VPush).unwrap().as_str(),
            r#"{"message":"hello"}"#
        );
        let user = Delivery::user_message(UserMessage {
            id: "u1".into(),
            app: AppId::parse("dev").unwrap(),
            user: UserId::parse("alice").unwrap(),
            data: json!(3).into(),
            created_us: 0,
        });
        let rendered = Rendered::new(user, None, "");
        let native: Value = serde_json::from_str(rendered.frame(Dialect::Native).unwrap()).unwrap();
        assert_eq!(native["data"], 3);
        assert!(native.get("channel").is_none());
    }

    #[test]
    fn client_frames_parse_or_say_why_not() {
        assert_eq!(
            parse_native(r#"{"type":"subscribe","channel":"news","since":4}"#).unwrap(),
            ClientFrame::Subscribe {
                channel: "news".into(),
                since: Some(4),
                epoch: None
            }
        );
        assert_eq!(
            parse_native(r#"{"type":"ping"}"#).unwrap(),
            ClientFrame::Ping
        );
        for bad in [
            "",
            "{}",
            r#"{"type":"nope"}"#,
            r#"{"type":"publish"}"#,
            "[1]",
        ] {
            assert_eq!(parse_native(bad).unwrap_err().code, "bad_request", "{bad}");
        }
        assert_eq!(parse_vpush(r#"{"message":"hi"}"#).unwrap(), "hi");
        assert!(parse_vpush(r#"{"message":1}"#).is_err());
        assert!(
            parse_vpush(r#"["hello"]"#).is_err(),
            "an array is not the object"
        );
    }
}
