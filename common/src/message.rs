//! The message model: what is stored, what travels from API to edge inside an envelope's
//! payload (`Delivery`), and how each is rendered to clients. Rendering lives here, once,
//! because the API (HTTP responses) and the edge (socket frames, recovery) must agree byte
//! for byte.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::us_to_secs;
use crate::token::TokenId;

/// The optional fields a site posts to a Mozilla queue (seed 003).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(rename = "actionUrl", skip_serializing_if = "Option::is_none")]
    pub action_url: Option<String>,
    #[serde(rename = "replaceId", skip_serializing_if = "Option::is_none")]
    pub replace_id: Option<String>,
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

/// The Mozilla socket frame telling every device of a token that `key` was read.
pub fn mozilla_read_json(key: &str) -> serde_json::Value {
    json!({ "read": key })
}

/// What one envelope asks the edges to do. Serialized as the envelope payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delivery {
    /// Push a stored queue message to its token's sockets.
    QueueMessage { message: QueueMessage },
    /// Tell a token's sockets that a message was read (multi-device read sync).
    QueueRead { token: TokenId, key: String },
}

impl Delivery {
    /// The token whose sockets this delivery is for.
    pub fn token(&self) -> &str {
        match self {
            Delivery::QueueMessage { message } => &message.token,
            Delivery::QueueRead { token, .. } => token,
        }
    }

    /// The ZeroMQ routing key: `q.<token id>.` (the trailing dot keeps prefix
    /// subscriptions from matching longer ids).
    pub fn routing_key(&self) -> String {
        format!("q.{}.", self.token())
    }

    /// The identity edges de-duplicate on when a recovery replays this delivery.
    pub fn dedup_key(&self) -> String {
        match self {
            Delivery::QueueMessage { message } => format!("m:{}", message.key),
            Delivery::QueueRead { key, .. } => format!("r:{key}"),
        }
    }

    /// The Mozilla-dialect text frame for this delivery.
    pub fn mozilla_frame(&self, api_base: &str) -> String {
        match self {
            Delivery::QueueMessage { message } => message.to_mozilla_json(api_base),
            Delivery::QueueRead { key, .. } => mozilla_read_json(key),
        }
        .to_string()
    }
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
    fn deliveries_round_trip_and_route_by_token() {
        for d in [
            Delivery::QueueMessage { message: message() },
            Delivery::QueueRead {
                token: "t1".into(),
                key: "k".into(),
            },
        ] {
            let bytes = serde_json::to_vec(&d).unwrap();
            assert_eq!(serde_json::from_slice::<Delivery>(&bytes).unwrap(), d);
            assert_eq!(d.routing_key(), "q.t1.");
        }
        let read = Delivery::QueueRead {
            token: "t".into(),
            key: "k".into(),
        };
        assert_eq!(read.mozilla_frame("http://x"), r#"{"read":"k"}"#);
        assert_ne!(
            read.dedup_key(),
            Delivery::QueueMessage { message: message() }.dedup_key()
        );
    }
}
