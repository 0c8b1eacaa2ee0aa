//! Webhooks (SPEC §4 Webhooks; PushPushGo's event batches): the `Webhooks` concern. Each
//! app has at most one webhook — a URL, a signing secret, the event kinds it wants and how
//! it batches — and a persistent **outbox** of events waiting to reach it.
//!
//! Events enter the outbox in the same transaction as the state change that causes them:
//! the `Messages` transitions record `sent`, `delivered`, `cancelled` and `expired` there
//! themselves; `record_events` adds the events that have no stored state change of their
//! own (`clicked`, `close`, `connected`, `disconnected`). Either way an event is kept only
//! when the app's webhook wants its kind.
//!
//! Dispatch is a lease: `claim_batch` gives one dispatcher at a time an app's oldest events
//! (≤ `max_batch`) once the batch is due, and `settle_batch` ends the lease — the events
//! are gone when they were sent, or the app backs off and the same events (same ids) are
//! offered again. A dispatcher that dies mid-batch simply lets its lease run out.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::ids::{AppId, UserId};

/// The kinds of event a webhook can ask for (SPEC §4), by their wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An addressed message was stored and handed to the edges.
    Sent,
    /// It reached its recipient (written to a socket, or acknowledged in ack mode).
    Delivered,
    /// The recipient's client reported a click (`event` frame).
    Clicked,
    /// The recipient's client reported the notification closed (`event` frame).
    Close,
    /// It expired while `PENDING`.
    Expired,
    /// It was cancelled while `PENDING`.
    Cancelled,
    /// A user's socket opened.
    Connected,
    /// A user's socket closed.
    Disconnected,
    /// A PushPushGo bucket's receiver is gone: its push service answered 404/410 (for
    /// bucket callbacks only; not a kind a Herald webhook asks for).
    Unregistered,
}

impl EventKind {
    /// Every kind a Herald webhook can ask for, in the order SPEC §4 lists them (all but
    /// the bucket-only `Unregistered`).
    pub const ALL: [EventKind; 8] = [
        EventKind::Delivered,
        EventKind::Clicked,
        EventKind::Close,
        EventKind::Sent,
        EventKind::Expired,
        EventKind::Cancelled,
        EventKind::Connected,
        EventKind::Disconnected,
    ];

    /// The wire name (`delivered`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sent => "sent",
            EventKind::Delivered => "delivered",
            EventKind::Clicked => "clicked",
            EventKind::Close => "close",
            EventKind::Expired => "expired",
            EventKind::Cancelled => "cancelled",
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::Unregistered => "unregistered",
        }
    }

    /// The kind named `name` (exactly as `as_str` writes it).
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .chain([EventKind::Unregistered])
            .find(|k| k.as_str() == name)
    }
}

/// How a webhook's batches are written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BatchFormat {
    /// Herald's (SPEC §4): `{"messages": [{"id", "messageId", "foreignId", "recipient",
    /// "result": {"kind"}, "ts"}]}`, signed with `X-Herald-Signature`.
    #[default]
    Herald,
    /// A PushPushGo CORE bucket's callback (seed `002`): `{"messages": [{"messageId",
    /// "foreignId"?, "result": {"kind"}, "ts"}]}`, unsigned, with the bucket's headers.
    PushPushGo { headers: Vec<(String, String)> },
}

impl BatchFormat {
    /// As stored: `None` for Herald's, else JSON.
    pub fn to_stored(&self) -> Option<String> {
        match self {
            BatchFormat::Herald => None,
            other => serde_json::to_string(other).ok(),
        }
    }

    /// From `to_stored`'s text; `None` if it is not one.
    pub fn from_stored(text: Option<&str>) -> Option<BatchFormat> {
        match text {
            None | Some("") => Some(BatchFormat::Herald),
            Some(text) => serde_json::from_str(text).ok(),
        }
    }
}

/// An app's webhook configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub app: AppId,
    /// `http://…` URL the batches are POSTed to.
    pub url: String,
    /// HMAC-SHA256 key of `X-Herald-Signature`.
    pub secret: String,
    /// The kinds it wants, sorted, without repeats.
    pub events: Vec<EventKind>,
    /// Most events in one POST (1..=1000).
    pub max_batch: u32,
    /// Longest an event waits for a fuller batch, ms.
    pub max_delay_ms: u64,
    /// When it was last configured, µs since the epoch.
    pub updated_us: i64,
    /// How its batches are written.
    pub format: BatchFormat,
}

/// How delivery to an app's webhook is going.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookState {
    /// Events in the outbox.
    pub pending: u64,
    /// Failed attempts in a row (0 after a success).
    pub failures: u32,
    pub last_error: Option<String>,
    /// µs since the epoch.
    pub last_attempt_us: Option<i64>,
    pub last_success_us: Option<i64>,
    /// No attempt before this (backoff after failures), µs since the epoch.
    pub next_attempt_us: i64,
    /// Events dropped because they outlived the retry window or overflowed the outbox.
    pub dropped: u64,
}

/// One event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// 32 hex characters, unique; the same on every attempt to send it.
    pub id: String,
    pub app: AppId,
    pub kind: EventKind,
    /// The addressed message it is about (none for `connected` / `disconnected`).
    pub message_id: Option<String>,
    /// That message's `foreignId`.
    pub foreign_id: Option<String>,
    pub recipient: Option<UserId>,
    /// When it happened, µs since the epoch.
    pub at_us: i64,
}

/// A batch leased to one dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub webhook: Webhook,
    /// Oldest first, at most `webhook.max_batch`.
    pub events: Vec<WebhookEvent>,
    /// Failed attempts in a row before this one.
    pub failures: u32,
}

/// Limits of the outbox, from `[webhooks]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// How long the lease of a claimed batch lasts, µs.
    pub lease_us: i64,
    /// Events older than this are dropped (counted) rather than retried, µs.
    pub max_age_us: i64,
    /// Most events kept per app; the oldest beyond it are dropped (counted).
    pub max_pending: u64,
}

/// How sending a batch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The receiver answered 2xx: the events leave the outbox.
    Sent,
    /// It did not: the events stay, and no attempt is made before `retry_at_us`.
    Failed { error: String, retry_at_us: i64 },
}

/// Webhook configurations and their outbox.
#[async_trait]
pub trait Webhooks: Send + Sync + 'static {
    /// Sets the app's webhook (replacing any), keeping its outbox; a failing webhook is
    /// tried again at once.
    async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()>;
    /// The app's webhook and how delivery to it is going.
    async fn webhook(&self, app: &AppId) -> StoreResult<Option<(Webhook, WebhookState)>>;
    /// Removes the app's webhook and its outbox; false if it had none.
    async fn delete_webhook(&self, app: &AppId) -> StoreResult<bool>;
    /// Adds `events` to the outbox, each only if its app's webhook wants its kind; how
    /// many were kept.
    async fn record_events(&self, events: &[WebhookEvent]) -> StoreResult<usize>;
    /// Events waiting in every app's outbox together (the depth operators watch).
    async fn outbox_depth(&self) -> StoreResult<u64>;
    /// Leases to `holder` the oldest events of one app whose batch is due at `now_us`
    /// (full, or its oldest event waited `max_delay_ms`, or a retry came due) and that no
    /// unexpired lease holds; drops events beyond `limits` first. `None` when none is due.
    async fn claim_batch(
        &self,
        holder: &str,
        now_us: i64,
        limits: OutboxLimits,
    ) -> StoreResult<Option<Batch>>;
    /// Ends `holder`'s lease on `app` with `outcome` for the events `ids`: sent events
    /// leave the outbox; a failure is recorded and backs the app off. False (and the
    /// failure not recorded) when the lease had passed to another holder.
    async fn settle_batch(
        &self,
        app: &AppId,
        holder: &str,
        ids: &[String],
        outcome: BatchOutcome,
        now_us: i64,
    ) -> StoreResult<bool>;
}
