//! Everything Herald keeps, behind one async trait per concern (DESIGN.md §3), so that
//! processes never depend on a backend (`sqlite/`, the embedded default, or `redis/`): `Queues` (Mozilla tokens, queues, messages), `Streams` (positions and replay of
//! any resumable stream), `Channels` (history, idempotency), `Messages` (addressed
//! messages and their status), `Webhooks` (configuration and outbox), `Templates`, `Broadcasts`, `Contexts` (VPush),
//! `WebPush` (VAPID keys, subscriptions, the push queue), `Buckets` (PushPushGo CORE buckets and contexts), `Revocations` (force logout), `Nodes` (the edge registry) and `Presence` (who is
//! connected).
//!
//! A method returns only after the backend has made its effect durable where the concern
//! is durable (queues, streams, channels, messages, webhooks, Web Push, revocations), which is what lets the API answer
//! 2xx after a write; nodes and presence are live state that is rebuilt by heartbeats and
//! never waits behind the durable writer. Absence is expressed in return types (`Option`,
//! `bool`); `StoreError` is reserved for the store itself failing. Each trait has its
//! conformance module in `conformance/`, which every backend passes.

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{StoreBackend, StoreConfig};

pub mod broadcasts;
pub mod buckets;
pub mod channels;
#[cfg(test)]
pub(crate) mod conformance;
pub mod contexts;
pub mod messages;
pub mod metrics;
pub mod nodes;
pub mod presence;
pub mod queues;
pub mod redis;
pub mod revocations;
pub mod sqlite;
pub mod streams;
pub mod templates;
pub mod webhooks;
pub mod webpush;

pub use broadcasts::{BroadcastFilter, Broadcasts, GlobalMessage};
pub use buckets::{
    Bucket, BucketContext, BucketMessage, Buckets, Callback, ContextKind, Credential,
};
pub use channels::{ChannelInfo, Channels, History, Idempotency, Publication};
pub use contexts::{Context, Contexts};
pub use messages::{
    AddressedMessage, ListCursor, MessageBody, MessageFilter, MessageStatus, Messages, Transition,
    Via,
};
pub use nodes::{NodeHeartbeat, NodeRecord, NodeStatus, Nodes};
pub use presence::{Alive, Presence, PresenceCount};
pub use queues::{After, Appended, Queue, QueueScope, Queues};
pub use revocations::Revocations;
pub use streams::{MAX_HEADS, Streams};
pub use templates::{Template, Templates};
pub use webhooks::{
    Batch, BatchFormat, BatchOutcome, EventKind, OutboxLimits, Webhook, WebhookEvent, WebhookState,
    Webhooks,
};
pub use webpush::{Added, PushJob, PushSubscription, WebPush};

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

/// A cheap round trip proving a backend answers, writes included.
#[async_trait]
pub trait Ping: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;
}

/// Every concern of the configured backend.
#[derive(Clone)]
pub struct Stores {
    pub queues: Arc<dyn Queues>,
    pub streams: Arc<dyn Streams>,
    pub channels: Arc<dyn Channels>,
    pub messages: Arc<dyn Messages>,
    pub webhooks: Arc<dyn Webhooks>,
    pub templates: Arc<dyn Templates>,
    pub broadcasts: Arc<dyn Broadcasts>,
    pub contexts: Arc<dyn Contexts>,
    pub webpush: Arc<dyn WebPush>,
    pub buckets: Arc<dyn Buckets>,
    pub revocations: Arc<dyn Revocations>,
    pub nodes: Arc<dyn Nodes>,
    pub presence: Arc<dyn Presence>,
    /// What `probe` pings: each separate database behind the concerns.
    pings: Vec<Arc<dyn Ping>>,
}

/// How long a health check waits for the store.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Stores {
    /// A `/health` check: every database answers (writes included) within
    /// `PROBE_TIMEOUT`, or why not.
    pub async fn probe(&self) -> Result<(), String> {
        for ping in &self.pings {
            match tokio::time::timeout(PROBE_TIMEOUT, ping.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
            }
        }
        Ok(())
    }
}

/// Opens the configured backend.
pub async fn open(config: &StoreConfig) -> anyhow::Result<Stores> {
    match config.backend {
        StoreBackend::Sqlite => {
            let durable = Arc::new(sqlite::SqliteStore::open(config).await?);
            let live = Arc::new(sqlite::SqliteLive::open(config).await?);
            Ok(Stores {
                queues: durable.clone(),
                streams: durable.clone(),
                channels: durable.clone(),
                messages: durable.clone(),
                webhooks: durable.clone(),
                templates: durable.clone(),
                broadcasts: durable.clone(),
                contexts: durable.clone(),
                webpush: durable.clone(),
                buckets: durable.clone(),
                revocations: durable.clone(),
                nodes: live.clone(),
                presence: live.clone(),
                pings: vec![durable, live],
            })
        }
        StoreBackend::Redis => {
            let redis = redis::RedisStore::open(&config.redis_url, &config.redis_prefix)
                .await?
                .with_live_ttl(std::time::Duration::from_millis(config.redis_live_ttl_ms));
            let redis = Arc::new(redis);
            Ok(Stores {
                queues: redis.clone(),
                streams: redis.clone(),
                channels: redis.clone(),
                messages: redis.clone(),
                webhooks: redis.clone(),
                templates: redis.clone(),
                broadcasts: redis.clone(),
                contexts: redis.clone(),
                webpush: redis.clone(),
                buckets: redis.clone(),
                revocations: redis.clone(),
                nodes: redis.clone(),
                presence: redis.clone(),
                pings: vec![redis],
            })
        }
    }
}
