//! Broadcasts (SPEC §4 Broadcasts; Socrate's "global messages"): the `Broadcasts` concern.
//! A broadcast is stored once, then reaches every connected recipient of its app (or those
//! whose token carries its topic) as one addressed message each, carrying
//! `global_message_id` (`Messages::create_missing_messages`). Listing is newest first with
//! the same keyset cursor as messages.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{ListCursor, MessageBody, StoreResult};
use crate::ids::AppId;

/// A broadcast as stored (and as it travels to the edges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalMessage {
    /// 32 hex characters (UUIDv7), unique in the app.
    pub id: String,
    pub app: AppId,
    pub body: MessageBody,
    /// Only sockets whose token lists this topic are reached; none: every socket.
    pub topic: Option<String>,
    /// µs since the epoch, as below.
    pub created_us: i64,
    pub expires_us: Option<i64>,
}

/// Filters of a listing; all that are set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastFilter {
    pub topic: Option<String>,
    /// `created_us` within `[from, to]` (either end open when `None`).
    pub created: (Option<i64>, Option<i64>),
    /// `expires_us` within `[from, to]`; one without expiry never matches a bound.
    pub expires: (Option<i64>, Option<i64>),
}

/// Broadcasts of each app.
#[async_trait]
pub trait Broadcasts: Send + Sync + 'static {
    async fn create_broadcast(&self, message: &GlobalMessage) -> StoreResult<()>;
    /// Broadcasts matching `filter`, newest first (creation time, then id), strictly after
    /// `cursor` in that order, at most `limit`.
    async fn list_broadcasts(
        &self,
        app: &AppId,
        filter: &BroadcastFilter,
        cursor: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<Vec<GlobalMessage>>;
}
