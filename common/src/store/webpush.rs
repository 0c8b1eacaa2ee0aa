//! Web Push for Herald users (SPEC §4 Users, §5 PushPushGo): the `WebPush` concern. Each
//! app has one VAPID key pair, made on first use and the same for every API process (a
//! browser subscription is bound to the public key it was made with); each user may
//! register a few Web Push subscriptions (RFC 8030 endpoint plus the RFC 8291 keys), one
//! per endpoint; and a **push queue** holds the messages waiting to go out by Web Push:
//! addressed messages to a recipient with no live socket, and PushPushGo bucket messages.
//!
//! The queue is a lease, like the webhook outbox: `claim_pushes` hands due jobs to one
//! sender and makes them invisible for the lease; the sender ends each job with
//! `finish_push` (done, or nothing more to try) or `retry_push` (again later). A sender
//! that dies mid-job lets its lease run out and another takes the job: a push may then go
//! out twice, never zero times while it can still be sent.

use async_trait::async_trait;

use super::StoreResult;
use crate::ids::{AppId, UserId};

/// Most subscriptions one user may hold (browsers and devices); a further endpoint is
/// refused until one is removed.
pub const MAX_SUBSCRIPTIONS: usize = 10;

/// One browser's Web Push subscription (`PushSubscription.toJSON()`), as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSubscription {
    /// 32 hex characters, unique for the user.
    pub id: String,
    pub app: AppId,
    pub user: UserId,
    /// The push service's URL for this subscription (RFC 8030 §5).
    pub endpoint: String,
    /// The browser's P-256 public key, base64url (RFC 8291 `p256dh`).
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url (RFC 8291 `auth`).
    pub auth: String,
    /// µs since the epoch.
    pub created_us: i64,
}

/// What registering a subscription did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// It is new.
    New(PushSubscription),
    /// The user had this endpoint already: that subscription, its keys now the given ones.
    Existing(PushSubscription),
    /// The user holds `MAX_SUBSCRIPTIONS` already; nothing changed.
    Full,
}

/// A message waiting to go out by Web Push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushJob {
    /// 32 hex characters, unique.
    pub id: String,
    pub app: AppId,
    /// The recipient of an addressed message (`Messages`); `None` for a message of a
    /// PushPushGo bucket (`Buckets`), which names its receiver itself.
    pub user: Option<UserId>,
    /// The message it sends.
    pub message_id: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// VAPID keys, subscriptions and the push queue.
#[async_trait]
pub trait WebPush: Send + Sync + 'static {
    /// The app's VAPID key pair `(private, public)` (base64url): `candidate` when the app
    /// had none (it is stored), else the stored pair — so racing processes agree.
    async fn vapid_key(
        &self,
        app: &AppId,
        candidate: (String, String),
    ) -> StoreResult<(String, String)>;
    /// Registers `subscription` for its user (see `Added`).
    async fn add_subscription(&self, subscription: &PushSubscription) -> StoreResult<Added>;
    /// The user's subscriptions, oldest first.
    async fn subscriptions(&self, app: &AppId, user: &UserId)
    -> StoreResult<Vec<PushSubscription>>;
    /// Removes the user's subscription `id`; false if there was none.
    async fn remove_subscription(&self, app: &AppId, user: &UserId, id: &str) -> StoreResult<bool>;
    /// Which of `users` hold at least one subscription, in order.
    async fn subscribed(&self, app: &AppId, users: &[UserId]) -> StoreResult<Vec<bool>>;
    /// Queues `jobs`, each due at `due_us`.
    async fn enqueue_pushes(&self, jobs: &[PushJob], due_us: i64) -> StoreResult<()>;
    /// Up to `limit` jobs due at `now_us` and not held by a lease, each now leased until
    /// `now_us + lease_us`.
    async fn claim_pushes(
        &self,
        now_us: i64,
        lease_us: i64,
        limit: usize,
    ) -> StoreResult<Vec<PushJob>>;
    /// Makes job `id` due again at `due_us`, one more attempt counted; nothing if it is
    /// gone.
    async fn retry_push(&self, id: &str, due_us: i64) -> StoreResult<()>;
    /// Removes job `id` from the queue (idempotent).
    async fn finish_push(&self, id: &str) -> StoreResult<()>;
}
