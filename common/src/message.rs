//! The message model: what is stored, what travels from API to edge inside an envelope's
//! payload (`Delivery`), and how each is rendered to clients. Rendering lives here, once,
//! because the API (HTTP responses) and the edge (socket frames, recovery) must agree byte
//! for byte.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::us_to_secs;
use crate::ids::{AppId, ChannelName, UserId};
use crate::stream::{Position, StreamKey};
use crate::token::TokenId;

/// The optional fields a site posts to a Mozilla queue (seed 003), or — for a read mark —
/// only `read`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(rename = "actionUrl", skip_serializing_if = "Option::is_none")]
    pub action_url: Option<String>,
    #[serde(rename = "iconUrl", skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
    #[serde(rename = "replaceId", skip_serializing_if = "Option::is_none")]
    pub replace_id: Option<String>,
    /// Set on a read mark (`action=read`): the key of the message that was read. A read
    /// mark is a message of its own in the token's own queue, so devices that were
    /// offline find it in history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
}

impl QueueBody {
    /// The body of a read mark for message `key`.
    pub fn read_mark(key: &str) -> QueueBody {
        QueueBody {
            read: Some(key.to_owned()),
            ..QueueBody::default()
        }
    }
}

/// One message posted to a Mozilla queue, addressed to the queue's owning token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    /// 32 hex characters, unique.
    pub key: String,
    /// The queue it was posted to.
    pub queue: String,
    /// The owner of that queue: whose sockets receive it.
    pub token: TokenId,
    /// Creation time, microseconds since the epoch; orders messages with `key`.
    pub created_us: i64,
    pub body: QueueBody,
}

/// A queue's public URL, the capability a site posts to.
pub fn queue_url(api_base: &str, queue_id: &str) -> String {
    format!("{api_base}/queue/{queue_id}/")
}

impl QueueMessage {
    /// The Mozilla message object M: `{key, timestamp, queue, body}`.
    pub fn to_mozilla_json(&self, api_base: &str) -> serde_json::Value {
        json!({
            "key": self.key,
            "timestamp": us_to_secs(self.created_us),
            "queue": queue_url(api_base, &self.queue),
            "body": self.body,
        })
    }
}

/// A published JSON value, kept as the exact text it was published as: Thunderpush hands
/// its subscribers the posted body verbatim (`{"payload": "<the body's text>"}`, spacing
/// and escapes included), so the text is what travels and what is stored.
///
/// Serialized (envelopes, `Delivery`) as a JSON *string* holding that text — a raw value
/// would not survive the internally tagged `Event` — so surfaces render it with
/// [`JsonText::value`] (a parsed value) or [`JsonText::text`] (the verbatim text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(String);

impl JsonText {
    /// `text` if it is one JSON value (RFC 8259), kept byte for byte.
    pub fn parse(text: impl Into<String>) -> Result<JsonText, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(JsonText(text))
    }

    /// Text read back from the store, where only `parse`d or serialized text was written.
    pub fn stored(text: String) -> JsonText {
        JsonText(text)
    }

    /// The verbatim text.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// The value the text holds (`null` if the text were ever not JSON, which `parse` and
    /// `From<Value>` rule out).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// The value as a text message: a JSON string as its contents, any other value as its
    /// JSON text (VPush `{"message": "..."}`).
    pub fn as_message_text(&self) -> String {
        match serde_json::from_str::<String>(&self.0) {
            Ok(s) => s,
            Err(_) => self.0.clone(),
        }
    }
}

impl From<serde_json::Value> for JsonText {
    fn from(value: serde_json::Value) -> JsonText {
        JsonText(value.to_string())
    }
}

/// A message published to a channel (SPEC §4 Channels), by HTTP or by a client socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMessage {
    /// 32 hex characters (UUIDv7), unique.
    pub id: String,
    pub app: AppId,
    pub channel: ChannelName,
    /// The published JSON value, as published.
    pub data: JsonText,
    pub created_us: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_id: Option<String>,
}

/// An ephemeral message to every socket of one user (Thunderpush `POST users/{id}/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMessage {
    pub id: String,
    pub app: AppId,
    pub user: UserId,
    pub data: JsonText,
    pub created_us: i64,
}

/// The socket a client publish came from, which must not get its own message back
/// (VPush: "to every other subscriber").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub node: String,
    pub connection: u64,
}

/// What one envelope asks the edges to do: an event on a stream, at a position when the
/// stream is resumable. Serialized (JSON) as the envelope payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub stream: StreamKey,
    /// Where the event sits in its stream; `None` for an ephemeral event (at most once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    pub event: Event,
    /// Set when a client socket published it: that socket is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The events a delivery carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A stored message of one of a Mozilla token's queues (a read mark included).
    QueueMessage { message: QueueMessage },
    /// A channel message, stored at its position when the channel keeps history.
    ChannelMessage { message: ChannelMessage },
    /// An ephemeral message to one user's sockets.
    UserMessage { message: UserMessage },
    /// An addressed message with a status, at its position of the recipient's inbox.
    AddressedMessage {
        message: crate::store::AddressedMessage,
    },
    /// A broadcast: each edge turns it into an addressed message to each matching user
    /// connected there.
    Broadcast {
        message: crate::store::GlobalMessage,
    },
    /// Force logout: close the user's sockets whose tokens were issued before `before_us`
    /// (close 4003).
    Logout {
        app: AppId,
        user: UserId,
        before_us: i64,
    },
}

impl Delivery {
    /// A stored queue message at `position` of its token's stream.
    pub fn queue_message(message: QueueMessage, position: Position) -> Delivery {
        Delivery {
            stream: StreamKey::mozilla_token(&message.token),
            position: Some(position),
            event: Event::QueueMessage { message },
            origin: None,
        }
    }

    /// A broadcast, live to every edge (never stored as a stream entry).
    pub fn broadcast(message: crate::store::GlobalMessage) -> Delivery {
        Delivery {
            stream: StreamKey::broadcast(&message.app),
            position: None,
            event: Event::Broadcast { message },
            origin: None,
        }
    }

    /// A channel message, at `position` when the channel keeps history.
    pub fn channel_message(message: ChannelMessage, position: Option<Position>) -> Delivery {
        Delivery {
            stream: StreamKey::channel(&message.app, &message.channel),
            position,
            event: Event::ChannelMessage { message },
            origin: None,
        }
    }

    /// An ephemeral message to a user's sockets.
    pub fn user_message(message: UserMessage) -> Delivery {
        Delivery {
            stream: StreamKey::user(&message.app, &message.user),
            position: None,
            event: Event::UserMessage { message },
            origin: None,
        }
    }

    /// An addressed message at `position` of its recipient's inbox stream.
    pub fn addressed(message: crate::store::AddressedMessage, position: Position) -> Delivery {
        Delivery {
            stream: StreamKey::inbox(&message.app, &message.recipient),
            position: Some(position),
            event: Event::AddressedMessage { message },
            origin: None,
        }
    }

    /// Force logout of `user`'s sockets with tokens issued before `before_us`.
    pub fn logout(app: AppId, user: UserId, before_us: i64) -> Delivery {
        Delivery {
            stream: StreamKey::user(&app, &user),
            position: None,
            event: Event::Logout {
                app,
                user,
                before_us,
            },
            origin: None,
        }
    }

    /// The ZeroMQ routing key (`StreamKey::routing_key`).
    pub fn routing_key(&self) -> String {
        self.stream.routing_key()
    }

    /// The stream offset, 0 for an ephemeral event.
    pub fn offset(&self) -> u64 {
        self.position.as_ref().map_or(0, |p| p.offset)
    }

    /// The Mozilla-dialect text frame for this delivery (queue messages only).
    pub fn mozilla_frame(&self, api_base: &str) -> Option<String> {
        match &self.event {
            Event::QueueMessage { message } => Some(message.to_mozilla_json(api_base).to_string()),
            _ => None,
        }
    }
}

/// An addressed message as the native WebSocket protocol renders it (docs/websocket.md),
/// and as its Web Push carries it: `{"type": "message", "id", "data", "createdAt",
/// "topic"?, "expiresAt"?}`, `data` being Socrate's `message` string or the `data` value.
pub fn addressed_frame(message: &crate::store::AddressedMessage) -> serde_json::Value {
    use crate::store::MessageBody;
    let data = match &message.body {
        MessageBody::Text(text) => serde_json::Value::String(text.clone()),
        MessageBody::Data(data) => data.value(),
    };
    let mut frame = json!({
        "type": "message",
        "id": message.id,
        "data": data,
        "createdAt": crate::clock::rfc3339(message.created_us),
    });
    if let Some(topic) = &message.topic {
        frame["topic"] = json!(topic);
    }
    if let Some(expires) = message.expires_us {
        frame["expiresAt"] = json!(crate::clock::rfc3339(expires));
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> QueueMessage {
        QueueMessage {
            key: "0".repeat(32),
            queue: "q1".into(),
            token: "t1".into(),
            created_us: 1_700_000_000_250_000,
            body: QueueBody {
                title: Some("hi".into()),
                replace_id: Some("r".into()),
                ..QueueBody::default()
            },
        }
    }

    #[test]
    fn renders_the_mozilla_message_object() {
        let m = message().to_mozilla_json("http://h:1");
        assert_eq!(
            m,
            json!({
                "key": "0".repeat(32),
                "timestamp": 1_700_000_000.25,
                "queue": "http://h:1/queue/q1/",
                "body": {"title": "hi", "replaceId": "r"},
            })
        );
    }

    #[test]
    fn deliveries_round_trip_on_their_tokens_stream() {
        let position = Position {
            epoch: "e1".into(),
            offset: 3,
        };
        let d = Delivery::queue_message(message(), position.clone());
        let bytes = serde_json::to_vec(&d).unwrap();
        assert_eq!(serde_json::from_slice::<Delivery>(&bytes).unwrap(), d);
        assert_eq!(d.stream, StreamKey::mozilla_token("t1"));
        assert_eq!(d.routing_key(), "t/t1|");
        assert_eq!(d.offset(), 3);
    }

    #[test]
    fn a_read_mark_renders_as_a_message_with_a_read_body() {
        let mark = QueueMessage {
            body: QueueBody::read_mark("k0"),
            ..message()
        };
        let frame: serde_json::Value = serde_json::from_str(
            &Delivery::queue_message(mark, Position::start("e"))
                .mozilla_frame("http://h:1")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(frame["body"], json!({"read": "k0"}));
        assert_eq!(frame["queue"], "http://h:1/queue/q1/");
    }

    #[test]
    fn json_text_keeps_the_published_text_through_an_envelope() {
        let text = "{\"a\": 1,  \"s\":\"x\\u00e9\"}";
        let data = JsonText::parse(text).unwrap();
        assert_eq!(data.text(), text);
        assert_eq!(data.value(), json!({"a": 1, "s": "x\u{e9}"}));
        let d = Delivery::user_message(UserMessage {
            id: "m".into(),
            app: AppId::parse("app").unwrap(),
            user: UserId::parse("u").unwrap(),
            data,
            created_us: 1,
        });
        let back: Delivery = serde_json::from_slice(&serde_json::to_vec(&d).unwrap()).unwrap();
        let Event::UserMessage { message } = back.event else {
            panic!("{back:?}")
        };
        assert_eq!(message.data.text(), text);
        assert!(JsonText::parse("not json").is_err());
        assert!(JsonText::parse("{} {}").is_err());
        assert_eq!(JsonText::from(json!("hi")).as_message_text(), "hi");
        assert_eq!(
            JsonText::from(json!({"k": 1})).as_message_text(),
            "{\"k\":1}"
        );
    }
}
