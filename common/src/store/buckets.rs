//! PushPushGo CORE buckets and their contexts (SPEC §5 PushPushGo, seed `002`; the
//! `/v1` surface): the `Buckets` concern. A bucket holds an app's provider credentials
//! (Herald sends with `vapid` ones: a VAPID key pair) and where its events go (an HTTP
//! callback with extra headers, or nowhere); it can be used for 24 hours after it was
//! created, as the original's buckets. A context is a reusable message of one bucket —
//! `data` (a notification), `silent` or `raw` — kept as the JSON object it was created
//! with. A send stores one message per receiver (`BucketMessage`) and queues it for the
//! Web Push sender (`WebPush`). All are written once and never changed; ids are lowercase
//! UUIDs, unique across apps, since PushPushGo's client SDKs post events with the context
//! and message ids alone.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::ids::AppId;
use crate::message::JsonText;

/// How long a bucket can be used after it was created by default (the original's 24
/// hours; `webpush.bucket_lifetime_ms`), µs.
pub const BUCKET_LIFETIME_US: i64 = 24 * 3600 * 1_000_000;

/// One provider credential of a bucket: a VAPID key pair (the only provider Herald sends
/// with; the others need the outside world).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Lowercase UUID; receivers name it as `credentialId`.
    pub id: String,
    /// The provider type as given (`vapid`).
    pub provider: String,
    /// base64url, unpadded.
    pub public_key: String,
    pub private_key: String,
}

/// Where a bucket's events are POSTed in batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// An absolute http(s) URL.
    pub url: String,
    /// Extra request headers, in the order given.
    pub headers: Vec<(String, String)>,
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Lowercase UUID.
    pub id: String,
    pub app: AppId,
    /// In the order the request listed them (the SDK pairs them by position).
    pub credentials: Vec<Credential>,
    /// `None`: `callbackConfig {"type": "none"}`.
    pub callback: Option<Callback>,
    /// µs since the epoch.
    pub created_us: i64,
    /// No context or send after this, µs since the epoch.
    pub expires_us: i64,
}

/// What a context pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextKind {
    /// A notification with actions (`/context/data`).
    Data,
    /// No notification; data for the app only (`/context/silent`).
    Silent,
    /// Per-platform payloads as given (`/context/raw`).
    Raw,
}

impl ContextKind {
    /// The path segment and wire name (`data`, `silent`, `raw`).
    pub fn as_str(self) -> &'static str {
        match self {
            ContextKind::Data => "data",
            ContextKind::Silent => "silent",
            ContextKind::Raw => "raw",
        }
    }

    /// The kind named `name` (exactly as `as_str` writes it).
    pub fn parse(name: &str) -> Option<ContextKind> {
        [ContextKind::Data, ContextKind::Silent, ContextKind::Raw]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A reusable message of a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketContext {
    /// Lowercase UUID, unique across apps.
    pub id: String,
    pub app: AppId,
    pub bucket: String,
    pub kind: ContextKind,
    /// The JSON object it was created with.
    pub content: JsonText,
    /// µs since the epoch.
    pub created_us: i64,
}

/// One message of a send: a context pushed to one receiver (a browser's subscription) with
/// one of the bucket's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMessage {
    /// Lowercase UUID (`messageId`).
    pub id: String,
    pub app: AppId,
    pub bucket: String,
    pub context: String,
    /// The credential (`credentialId`) it is signed with.
    pub credential: String,
    /// The receiver's subscription: push service URL and RFC 8291 keys (base64url).
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    /// The sender's id of the receiver, reported with its events.
    pub foreign_id: Option<String>,
    /// µs since the epoch.
    pub created_us: i64,
    /// Not pushed after this, µs since the epoch.
    pub expires_us: i64,
}

/// PushPushGo CORE buckets and contexts.
#[async_trait]
pub trait Buckets: Send + Sync + 'static {
    async fn create_bucket(&self, bucket: &Bucket) -> StoreResult<()>;
    /// Bucket `id` of `app` (expired or not); `None` for another app's.
    async fn bucket(&self, app: &AppId, id: &str) -> StoreResult<Option<Bucket>>;
    async fn create_bucket_context(&self, context: &BucketContext) -> StoreResult<()>;
    /// Context `id`, whatever its app (client events name a context alone).
    async fn bucket_context(&self, id: &str) -> StoreResult<Option<BucketContext>>;
    /// Stores the messages of a send, all in one transaction.
    async fn create_bucket_messages(&self, messages: &[BucketMessage]) -> StoreResult<()>;
    /// Message `id`, whatever its app.
    async fn bucket_message(&self, id: &str) -> StoreResult<Option<BucketMessage>>;
    /// Removes up to `limit` buckets that stopped being usable before `before_us`; the ids
    /// removed. Their contexts and messages go with them, or soon after (a backend may let
    /// them expire by themselves).
    async fn prune_buckets(&self, before_us: i64, limit: usize) -> StoreResult<Vec<String>>;
}

/// How long a bucket's records are kept after its lifetime, µs: the notifications it sent
/// still report their clicks meanwhile.
pub const BUCKET_RETENTION_US: i64 = 7 * 24 * 3600 * 1_000_000;

/// The app id under which bucket `bucket`'s callback is a webhook with its own outbox
/// (`ppg.<bucket>`; configured app ids may not start with `ppg.`). `None` for an id that
/// cannot be one.
pub fn callback_app(bucket: &str) -> Option<AppId> {
    AppId::parse(format!("ppg.{bucket}")).ok()
}
