//! VPush contexts (SPEC §5 VPush, seed `000`): the `Contexts` concern. A context is a named
//! channel an app created through the VPush API; its id is the channel's name.

use async_trait::async_trait;

use super::StoreResult;
use crate::ids::{AppId, ChannelName};

/// A VPush context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub id: ChannelName,
    pub name: Option<String>,
    pub created_us: i64,
}

/// Most contexts one listing returns.
pub const MAX_CONTEXTS: usize = 1_000;

/// VPush contexts of each app.
#[async_trait]
pub trait Contexts: Send + Sync + 'static {
    async fn create_context(&self, app: &AppId, context: &Context) -> StoreResult<()>;
    async fn context(&self, app: &AppId, id: &ChannelName) -> StoreResult<Option<Context>>;
    /// Oldest first, at most `MAX_CONTEXTS`.
    async fn contexts(&self, app: &AppId) -> StoreResult<Vec<Context>>;
}
