//! Message templates (SPEC §4 Templates; PushPushGo's "context", a reusable message): the
//! `Templates` concern. A template is stored as the JSON object a message sent with it
//! carries (`{title?, body?, data?, actionUrl?, icon?}`) and an optional lifetime; a send
//! copies it into each message, so deleting a template never changes a message.

use async_trait::async_trait;

use super::StoreResult;
use crate::ids::AppId;
use crate::message::JsonText;

/// A template of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// 32 hex characters (UUIDv7), unique in the app.
    pub id: String,
    /// The JSON object a message sent with it carries as its `data`.
    pub content: JsonText,
    /// Seconds a message sent with it waits for its recipient, unless the send says.
    pub ttl: Option<u64>,
    /// µs since the epoch.
    pub created_us: i64,
}

/// Templates of each app.
#[async_trait]
pub trait Templates: Send + Sync + 'static {
    async fn create_template(&self, app: &AppId, template: &Template) -> StoreResult<()>;
    async fn template(&self, app: &AppId, id: &str) -> StoreResult<Option<Template>>;
    /// False if there was no such template.
    async fn delete_template(&self, app: &AppId, id: &str) -> StoreResult<bool>;
}
