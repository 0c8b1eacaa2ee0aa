//! Mozilla tokens, queues and their messages (SPEC §3): the `Queues` concern. A token's
//! messages, across all its queues, are one stream (`crate::stream`): appending gives the
//! next position of that stream.

use async_trait::async_trait;

use super::StoreResult;
use crate::message::QueueMessage;
use crate::stream::Position;
use crate::token::TokenId;

/// A Mozilla queue: the capability `id`, owned by one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub id: String,
    pub token: TokenId,
    /// `None` for the token's own queue (created with the token).
    pub domain: Option<String>,
    /// The read timestamp clients coordinate on; only moves forward.
    pub read_us: i64,
}

/// Which messages a listing covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueScope<'a> {
    /// One queue.
    Queue(&'a str),
    /// Every queue of a token (what the token's own queue shows).
    Token(&'a str),
}

/// A position in (created_us, key) order; listings return what comes strictly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Start,
    /// Messages created strictly later than this time.
    Time(i64),
    /// Messages strictly after this one.
    Message {
        created_us: i64,
        key: String,
    },
}

/// Where an appended message landed: its creation time and its stream position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub created_us: i64,
    pub position: Position,
}

/// Mozilla tokens, queues and messages.
#[async_trait]
pub trait Queues: Send + Sync + 'static {
    /// Registers a token, its own queue and its stream (a new epoch at offset 0).
    async fn create_token(&self, token: &str, own_queue: &str, now_us: i64) -> StoreResult<()>;
    async fn token_exists(&self, token: &str) -> StoreResult<bool>;
    /// Deletes a token with its queues, messages and stream (the monitor's own, on shutdown).
    async fn delete_token(&self, token: &str) -> StoreResult<()>;
    /// The token's queue for `domain`, created with `new_id` if it has none yet;
    /// `None` when the token does not exist.
    async fn create_queue(
        &self,
        token: &str,
        domain: &str,
        new_id: &str,
        now_us: i64,
    ) -> StoreResult<Option<Queue>>;
    async fn queue(&self, id: &str) -> StoreResult<Option<Queue>>;
    /// The token's domain queues (not its own queue), by domain.
    async fn domain_queues(&self, token: &str) -> StoreResult<Vec<Queue>>;
    /// Deletes a domain queue and its messages; false unless `token` owns it. The token's
    /// stream keeps its offsets: the deleted messages leave holes a reader skips.
    async fn delete_queue(&self, token: &str, id: &str) -> StoreResult<bool>;
    /// Moves the read timestamp forward to `read_us` (never back); the value now stored,
    /// or `None` for an unknown queue.
    async fn advance_read_timestamp(&self, id: &str, read_us: i64) -> StoreResult<Option<i64>>;

    /// Appends a message to its token's stream: the next offset of that stream, and a
    /// creation time of `message.created_us` or, if that is not later than the stream's
    /// latest, one microsecond after it — so within a token creation order is offset
    /// order and `since` paging never skips a message. `None` (nothing stored) if its
    /// queue no longer exists.
    async fn add_queue_message(&self, message: &QueueMessage) -> StoreResult<Option<Appended>>;
    async fn queue_message(
        &self,
        scope: QueueScope<'_>,
        key: &str,
    ) -> StoreResult<Option<QueueMessage>>;
    /// Oldest first, strictly after `after`, at most `limit`, and of the messages sharing a
    /// replaceId within a queue only the latest.
    async fn list_queue_messages(
        &self,
        scope: QueueScope<'_>,
        after: &After,
        limit: usize,
    ) -> StoreResult<Vec<QueueMessage>>;
}
