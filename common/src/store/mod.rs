//! The `Store` trait: every piece of persistent state Herald keeps, behind one async
//! interface so processes never depend on a backend. A method returns only after the
//! backend has made its effect durable, which is what lets the API answer 2xx after a
//! write. Backends: `sqlite` (default). Absence is expressed in return types
//! (`Option`, `bool`); `StoreError` is reserved for the store itself failing.

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{StoreBackend, StoreConfig};
use crate::message::{Delivery, QueueMessage};
use crate::stream::{Position, StreamKey};
use crate::token::TokenId;

#[cfg(test)]
pub(crate) mod conformance;
pub mod sqlite;

/// The store failed; the caller's request may be retried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Busy, locked, unreachable or out of space: worth retrying later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (corruption, a bug).
    #[error("store failure: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

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

/// Whether an edge accepts new sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Up,
    /// Shutting down: keeps its sockets for a moment, takes no new ones.
    Draining,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Up => "up",
            NodeStatus::Draining => "draining",
        }
    }
}

/// What an edge writes about itself on every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHeartbeat {
    pub id: String,
    pub url: String,
    pub connections: u64,
    pub status: NodeStatus,
    pub started_us: i64,
    pub now_us: i64,
}

/// An edge as the store knows it: its heartbeat plus the monitor's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub url: String,
    pub connections: u64,
    pub status: NodeStatus,
    pub started_us: i64,
    pub heartbeat_us: i64,
    pub checked_us: Option<i64>,
    pub check_failures: u32,
    /// Set by the monitor after repeated failed handshakes; cleared by a good one.
    pub monitor_down: bool,
}

impl NodeRecord {
    /// Offered to clients: up, heartbeat fresh, not failed by the monitor.
    pub fn is_healthy(&self, now_us: i64, ttl_us: i64) -> bool {
        self.status == NodeStatus::Up
            && !self.monitor_down
            && now_us.saturating_sub(self.heartbeat_us) <= ttl_us
    }
}

/// Every persistent operation Herald performs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip proving the store answers, writes included.
    async fn ping(&self) -> StoreResult<()>;

    // --- Mozilla tokens and queues (SPEC §3) ---

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

    // --- Mozilla messages ---

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

    // --- Streams (SPEC §7: positions, resume and edge recovery) ---

    /// The current position (epoch, last offset) of each of `streams` that exists; streams
    /// that do not exist are left out. At most `MAX_HEADS` keys per call.
    async fn stream_heads(&self, streams: &[StreamKey]) -> StoreResult<Vec<(StreamKey, Position)>>;
    /// What `stream` holds strictly after `after` in its current epoch, by offset, at most
    /// `limit` entries, as the deliveries to replay. Offsets may have holes (deleted
    /// entries); an unknown stream reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamKey,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;

    // --- Edge registry (SPEC §7, §9) ---

    /// Inserts or refreshes an edge's row; leaves the monitor's columns alone.
    async fn upsert_node(&self, heartbeat: &NodeHeartbeat) -> StoreResult<()>;
    async fn remove_node(&self, id: &str) -> StoreResult<()>;
    async fn nodes(&self) -> StoreResult<Vec<NodeRecord>>;
    /// Records a monitor check on every node registered under `url`: success clears
    /// failures, `failures_before_down` consecutive failures mark them down.
    async fn record_node_check(
        &self,
        url: &str,
        ok: bool,
        now_us: i64,
        failures_before_down: u32,
    ) -> StoreResult<()>;
    /// Deletes nodes whose heartbeat is older than `before_us`; how many.
    async fn prune_nodes(&self, before_us: i64) -> StoreResult<u64>;
}

/// Most stream keys one `stream_heads` call takes.
pub const MAX_HEADS: usize = 256;

/// How long a health check waits for the store.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A `/health` check of the store: `ping` within `PROBE_TIMEOUT`, or why not.
pub async fn probe(store: &dyn Store) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

/// Opens the configured backend.
pub async fn open(config: &StoreConfig) -> anyhow::Result<Arc<dyn Store>> {
    match config.backend {
        StoreBackend::Sqlite => Ok(Arc::new(sqlite::SqliteStore::open(config).await?)),
    }
}
