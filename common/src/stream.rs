//! Streams and positions (SPEC §7, DESIGN.md §4): every resumable stream — a Mozilla
//! token's messages today; a channel with history and a user's inbox next — has a position
//! `{epoch, offset}` that the store assigns inside the write that appends to it. Offsets
//! are dense and ordered per stream (1, 2, 3, … within one epoch); there is no order across
//! streams. The epoch names one life of the stream: a stream whose history is lost or
//! recreated starts a new epoch, so a reader holding an old position knows its offsets no
//! longer mean anything.
//!
//! Resume and edge recovery read "after a position", never a time window: an edge that
//! delivered up to offset 41 asks the store for what comes after 41.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{AppId, ChannelName, UserId};

/// The name of one stream. Opaque to most code; built and parsed only here.
///
/// Shapes: `t/<token id>` (a Mozilla token: all messages of its queues),
/// `c/<app>/<channel>` (a channel), `u/<app>/<user id>` (a user's sockets), `i/<app>/<user
/// id>` (a user's inbox), `b/<app>` (an app's broadcasts).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamKey(String);

/// What a stream key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind<'a> {
    /// A Mozilla token's stream, by token id (the SHA-256 the store keeps).
    MozillaToken(&'a str),
    /// A channel of an app.
    Channel { app: &'a str, channel: &'a str },
    /// A user of an app (the user id may contain `/`).
    User { app: &'a str, user: &'a str },
    /// A user's inbox of addressed messages.
    Inbox { app: &'a str, user: &'a str },
    /// An app's broadcasts, live only: every connection token's socket follows it.
    Broadcast { app: &'a str },
}

impl StreamKey {
    /// The stream of a Mozilla token (by its store id).
    pub fn mozilla_token(token_id: &str) -> StreamKey {
        StreamKey(format!("t/{token_id}"))
    }

    /// The stream of a channel.
    pub fn channel(app: &AppId, channel: &ChannelName) -> StreamKey {
        StreamKey(format!("c/{app}/{channel}"))
    }

    /// The stream of a user's sockets.
    pub fn user(app: &AppId, user: &UserId) -> StreamKey {
        StreamKey(format!("u/{app}/{user}"))
    }

    /// A user's inbox: the positions of the addressed messages to them.
    pub fn inbox(app: &AppId, user: &UserId) -> StreamKey {
        StreamKey(format!("i/{app}/{user}"))
    }

    /// An app's broadcasts (`b/<app>`).
    pub fn broadcast(app: &AppId) -> StreamKey {
        StreamKey(format!("b/{app}"))
    }

    /// Parses what the key names; `None` for a key of an unknown kind (e.g. from a newer
    /// process in a mixed-version cluster).
    pub fn kind(&self) -> Option<StreamKind<'_>> {
        let (prefix, rest) = self.0.split_once('/')?;
        let pair = || {
            rest.split_once('/')
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        };
        match prefix {
            "t" if !rest.is_empty() => Some(StreamKind::MozillaToken(rest)),
            "c" => pair().map(|(app, channel)| StreamKind::Channel { app, channel }),
            "u" => pair().map(|(app, user)| StreamKind::User { app, user }),
            "i" => pair().map(|(app, user)| StreamKind::Inbox { app, user }),
            "b" if !rest.is_empty() && !rest.contains('/') => {
                Some(StreamKind::Broadcast { app: rest })
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The channel name of a channel's stream (`""` for any other kind).
    pub fn channel_name(&self) -> &str {
        match self.kind() {
            Some(StreamKind::Channel { channel, .. }) => channel,
            _ => "",
        }
    }

    /// The ZeroMQ routing key of deliveries on this stream: the key and a `|` delimiter,
    /// so that a prefix subscription to one stream does not match a longer one.
    pub fn routing_key(&self) -> String {
        format!("{}|", self.0)
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for StreamKey {
    /// Wraps a key read back from the wire or the store.
    fn from(key: String) -> StreamKey {
        StreamKey(key)
    }
}

/// A place in a stream: what was appended at `offset` during `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Names the stream's current life (8 hex characters in SQLite).
    pub epoch: String,
    /// 1 for the first entry of an epoch, then +1 per entry; 0 means "before the first".
    pub offset: u64,
}

impl Position {
    /// The position before anything was appended in `epoch`.
    pub fn start(epoch: &str) -> Position {
        Position {
            epoch: epoch.to_owned(),
            offset: 0,
        }
    }
}

/// A new random epoch: 4 random bytes as 8 hex characters.
pub fn new_epoch() -> String {
    crate::token::random_hex(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_stream() {
        let key = StreamKey::mozilla_token("abc");
        assert_eq!(key.as_str(), "t/abc");
        assert_eq!(key.kind(), Some(StreamKind::MozillaToken("abc")));
        assert_eq!(key.routing_key(), "t/abc|");
        let app = AppId::parse("dev").unwrap();
        let channel = StreamKey::channel(&app, &ChannelName::parse("news").unwrap());
        assert_eq!(
            channel.kind(),
            Some(StreamKind::Channel {
                app: "dev",
                channel: "news"
            })
        );
        let broadcast = StreamKey::broadcast(&app);
        assert_eq!(broadcast.as_str(), "b/dev");
        assert_eq!(broadcast.kind(), Some(StreamKind::Broadcast { app: "dev" }));
        assert_eq!(StreamKey("b/".into()).kind(), None);
        let user = StreamKey::user(&app, &UserId::parse("a/b").unwrap());
        assert_eq!(
            user.kind(),
            Some(StreamKind::User {
                app: "dev",
                user: "a/b"
            })
        );
        for foreign in ["t/", "x/abc", "abc", "", "c/dev", "c//x", "u/dev/"] {
            assert_eq!(
                StreamKey::from(foreign.to_owned()).kind(),
                None,
                "{foreign}"
            );
        }
    }

    #[test]
    fn epochs_are_short_and_random() {
        let (a, b) = (new_epoch(), new_epoch());
        assert_eq!(a.len(), 8);
        assert_ne!(a, b);
        assert_eq!(Position::start(&a).offset, 0);
    }
}
