//! Channels and their history (SPEC §4 Channels): the `Channels` concern. A channel is
//! ephemeral until it is given history (`size` messages and/or `ttl` seconds); then every
//! message published to it lands at the next position of its stream (`c/<app>/<channel>`)
//! and can be listed and replayed after a position. An idempotency key makes a publish
//! happen once: a repeat within the key's lifetime gets the first result back.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::ids::{AppId, ChannelName};
use crate::message::ChannelMessage;
use crate::stream::Position;

/// How much of a channel's past is kept. Both `None`: no history (ephemeral channel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The last `size` messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Messages younger than `ttl` seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

impl History {
    pub fn is_on(&self) -> bool {
        self.size.is_some() || self.ttl.is_some()
    }
}

/// A channel as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub history: History,
    /// The stream's position (last offset) while history is on.
    pub head: Option<Position>,
}

/// An idempotency key and until when it holds (µs). Keys are scoped to the app and the
/// channel: the same key on two channels is two publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub expires_us: i64,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// Stored (if the channel has history, at `position`) or just recorded under its
    /// idempotency key: deliver it.
    Fresh {
        created_us: i64,
        position: Option<Position>,
    },
    /// The idempotency key was used before: this is the first publish's result, and
    /// nothing is to be delivered.
    Repeat {
        id: String,
        created_us: i64,
        expires_us: Option<i64>,
        position: Option<Position>,
    },
}

/// Channels, their history and idempotency keys.
#[async_trait]
pub trait Channels: Send + Sync + 'static {
    /// Sets a channel's history (`History::default()` turns it off); the stream keeps its
    /// epoch and offsets across changes.
    async fn configure_channel(
        &self,
        app: &AppId,
        channel: &ChannelName,
        history: History,
        now_us: i64,
    ) -> StoreResult<ChannelInfo>;
    /// The channel's configuration, `None` if it was never configured (ephemeral).
    async fn channel(&self, app: &AppId, channel: &ChannelName)
    -> StoreResult<Option<ChannelInfo>>;
    /// Publishes `message`: with history on, appends it at the next position (creation
    /// time as for queue messages: later than the stream's latest) and trims what the
    /// history no longer keeps; with `idempotency`, records the result under the key, or
    /// returns the earlier result if the key is still held.
    async fn publish_channel_message(
        &self,
        message: &ChannelMessage,
        idempotency: Option<&Idempotency>,
    ) -> StoreResult<Publication>;
    /// Kept messages strictly after offset `after`, oldest first, at most `limit`; of the
    /// messages sharing a `replaceId` only the latest; expired ones left out.
    async fn channel_history(
        &self,
        app: &AppId,
        channel: &ChannelName,
        after: u64,
        limit: usize,
        now_us: i64,
    ) -> StoreResult<Vec<(u64, ChannelMessage)>>;
    /// Deletes expired history, and expired idempotency keys where the backend does not
    /// expire them by itself (Redis does); how many.
    async fn prune_channels(&self, now_us: i64) -> StoreResult<u64>;
}
