//! Addressed messages with a delivery status (SPEC §4 Messages; Socrate, PushPushGo): the
//! `Messages` concern. One message per recipient, created `PENDING` at the next position
//! of the recipient's inbox stream (`i/<app>/<user>`, DESIGN.md §4) so a socket can read
//! "after the last position it saw"; it leaves `PENDING` exactly once, for `DELIVERED`,
//! `CANCELLED` or `EXPIRED`, atomically in the store: never `DELIVERED` twice, never after
//! `CANCELLED` or `EXPIRED`, never `DELIVERED` once its expiry has passed. Each creation
//! and transition writes its webhook event (`sent`, `delivered`, `cancelled`, `expired`;
//! `webhooks.rs`) to the outbox in the same transaction, when the app's webhook wants it.
//!
//! Listing is newest first with a keyset cursor (`created`, `id`), so a walk page by page
//! never skips or repeats an item while new messages keep arriving (they sort before the
//! cursor).
//!

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{EventKind, StoreResult, WebhookEvent};
use crate::ids::{AppId, UserId, new_message_id};
use crate::message::JsonText;
use crate::stream::Position;

/// Where a message is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageStatus {
    Pending,
    Delivered,
    Cancelled,
    Expired,
}

impl MessageStatus {
    /// The name on the wire and in the store (`PENDING`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "PENDING",
            MessageStatus::Delivered => "DELIVERED",
            MessageStatus::Cancelled => "CANCELLED",
            MessageStatus::Expired => "EXPIRED",
        }
    }

    /// The status named `name` (exactly as `as_str` writes it).
    pub fn parse(name: &str) -> Option<MessageStatus> {
        [
            MessageStatus::Pending,
            MessageStatus::Delivered,
            MessageStatus::Cancelled,
            MessageStatus::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// How a `DELIVERED` message reached its recipient (SPEC §5 PushPushGo: one status, and
/// the channel that delivered it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Written to a live socket (or acknowledged over one, in ack mode).
    Websocket,
    /// Accepted by the push service of one of the recipient's Web Push subscriptions
    /// (RFC 8030 201), the recipient having no live socket.
    Webpush,
}

impl Via {
    /// The name on the wire and in the store (`websocket`, `webpush`).
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Websocket => "websocket",
            Via::Webpush => "webpush",
        }
    }

    /// The channel named `name` (exactly as `as_str` writes it).
    pub fn parse(name: &str) -> Option<Via> {
        [Via::Websocket, Via::Webpush]
            .into_iter()
            .find(|v| v.as_str() == name)
    }
}

/// What a message carries: Socrate's `message` string or any JSON `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum MessageBody {
    Text(String),
    Data(JsonText),
}

/// One addressed message, as stored (and as it travels to the edges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressedMessage {
    /// 32 hex characters (UUIDv7), unique in the app.
    pub id: String,
    pub app: AppId,
    pub recipient: UserId,
    /// The sender's own id for this recipient (PushPushGo `foreignId`).
    pub foreign_id: Option<String>,
    pub body: MessageBody,
    pub topic: Option<String>,
    pub status: MessageStatus,
    /// Microseconds since the epoch, as all the times below.
    pub created_us: i64,
    pub expires_us: Option<i64>,
    pub delivered_us: Option<i64>,
    /// Set with `delivered_us`: how it was delivered.
    pub delivered_via: Option<Via>,
    pub cancelled_us: Option<i64>,
    pub expired_us: Option<i64>,
    /// The broadcast it was created for (Socrate `globalMessageId`).
    pub global_message_id: Option<String>,
    /// The PushPushGo bucket that sent it to a Herald user (SPEC §5): its `sent`,
    /// `delivered`, `clicked` and `close` events also go to that bucket's callback (the
    /// webhook of app `ppg.<bucket>`, `store::buckets::callback_app`).
    #[serde(default)]
    pub bucket: Option<String>,
}

impl AddressedMessage {
    /// The webhook events of this message's `kind` happening at `at_us`: one for its app,
    /// and one for the callback of the PushPushGo bucket that sent it, if one did (each
    /// kept only where that webhook wants the kind, `Webhooks::record_events`).
    pub fn webhook_events(&self, kind: EventKind, at_us: i64) -> Vec<WebhookEvent> {
        let callback = self
            .bucket
            .as_deref()
            .and_then(super::buckets::callback_app);
        std::iter::once(self.app.clone())
            .chain(callback)
            .map(|app| WebhookEvent {
                id: new_message_id(),
                app,
                kind,
                message_id: Some(self.id.clone()),
                foreign_id: self.foreign_id.clone(),
                recipient: Some(self.recipient.clone()),
                at_us,
            })
            .collect()
    }
}

/// Filters of a listing; all that are set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    pub recipient: Option<UserId>,
    pub topic: Option<String>,
    pub status: Option<MessageStatus>,
    pub global_message_id: Option<String>,
    /// `created_us` within `[from, to]` (either end open when `None`).
    pub created: (Option<i64>, Option<i64>),
    /// `expires_us` within `[from, to]`; a message without expiry never matches a bound.
    pub expires: (Option<i64>, Option<i64>),
}

/// Where a newest-first listing stopped: the last item's creation time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub created_us: i64,
    pub id: String,
}

impl ListCursor {
    /// The cursor of the page after `items` — the last item's (`key`) — when the page is
    /// full (`limit` items); `None` at the end.
    pub fn next_page<T>(
        items: &[T],
        limit: usize,
        key: impl Fn(&T) -> (i64, &str),
    ) -> Option<ListCursor> {
        let last = items.last().filter(|_| items.len() == limit)?;
        let (created_us, id) = key(last);
        Some(ListCursor {
            created_us,
            id: id.to_owned(),
        })
    }
}

/// What a status transition found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The message was `PENDING` and is now in the asked status.
    Done(AddressedMessage),
    /// It was not `PENDING` (or, for `DELIVERED`, its expiry had passed): nothing changed;
    /// the message as it is.
    Refused(AddressedMessage),
}

/// Addressed messages and their status.
#[async_trait]
pub trait Messages: Send + Sync + 'static {
    /// Stores `messages` (all `PENDING`) in one transaction, each at the next position of
    /// its recipient's inbox stream (created on first use); their positions, in order.
    async fn create_messages(&self, messages: &[AddressedMessage]) -> StoreResult<Vec<Position>>;
    /// Like `create_messages`, skipping messages whose id the app already has (a
    /// broadcast reaching a user from two edges): the position of each one created,
    /// `None` for each skipped.
    async fn create_missing_messages(
        &self,
        messages: &[AddressedMessage],
    ) -> StoreResult<Vec<Option<Position>>>;
    /// The message `id` of `app`.
    async fn addressed_message(
        &self,
        app: &AppId,
        id: &str,
    ) -> StoreResult<Option<AddressedMessage>>;
    /// Moves message `id` from `PENDING` to `to` (not `PENDING`) at `at_us`; `DELIVERED`
    /// only while unexpired at `at_us`, and then `via` a socket (an acknowledgement).
    /// `None` if there is no such message.
    async fn transition_message(
        &self,
        app: &AppId,
        id: &str,
        to: MessageStatus,
        at_us: i64,
    ) -> StoreResult<Option<Transition>>;
    /// The recipient's `PENDING`, unexpired messages after inbox offset `after`, oldest
    /// first, at most `limit`, with their offsets.
    async fn pending_messages(
        &self,
        app: &AppId,
        recipient: &UserId,
        after: u64,
        limit: usize,
        now_us: i64,
    ) -> StoreResult<Vec<(u64, AddressedMessage)>>;
    /// Messages matching `filter`, newest first (by creation time, then id), strictly
    /// after `cursor` in that order, at most `limit`.
    async fn list_messages(
        &self,
        app: &AppId,
        filter: &MessageFilter,
        cursor: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<Vec<AddressedMessage>>;
    /// Moves each of `ids` (of `app`) from `PENDING` to `DELIVERED` `via` a channel at
    /// `at_us` where it still can (unexpired), in one transaction: what each found, in
    /// order (`None` for an unknown id).
    async fn deliver_messages(
        &self,
        app: &AppId,
        ids: &[String],
        via: Via,
        at_us: i64,
    ) -> StoreResult<Vec<Option<Transition>>>;
    /// Moves up to `limit` `PENDING` messages whose expiry is at or before `now_us` to
    /// `EXPIRED`; those messages, now expired.
    async fn expire_messages(
        &self,
        now_us: i64,
        limit: usize,
    ) -> StoreResult<Vec<AddressedMessage>>;
}
