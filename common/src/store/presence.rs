//! Who is connected, cluster-wide (SPEC §4 Users, channel users; §5 Thunderpush): the
//! `Presence` concern. Each edge owns its rows — how many sockets of each user, and of each
//! user in each channel, it holds — and writes changes in small batches. Readers count only
//! nodes that are alive (fresh heartbeat, not marked down by the monitor), so the presence
//! of a dead node disappears with it. Not durable state: it lives off the fsync'd writer.

use async_trait::async_trait;

use super::StoreResult;
use crate::ids::{AppId, ChannelName, UserId};

/// The number of sockets one node holds for a user (in a channel, or in all).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresenceCount {
    pub app: AppId,
    pub user: UserId,
    /// `None`: the user's sockets on the node; `Some`: those subscribed to the channel.
    pub channel: Option<ChannelName>,
    /// 0 removes the row.
    pub connections: u64,
}

/// Which nodes count: heartbeat at or after `heartbeat_after_us`, not marked down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alive {
    pub heartbeat_after_us: i64,
}

/// Cluster-wide presence.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Sets this node's counts (absolute values; 0 removes).
    async fn set_presence(&self, node: &str, counts: &[PresenceCount]) -> StoreResult<()>;
    /// Forgets everything `node` held (it starts or leaves).
    async fn clear_presence(&self, node: &str) -> StoreResult<()>;
    /// Distinct users of `app` connected on alive nodes.
    async fn users_online(&self, app: &AppId, alive: Alive) -> StoreResult<u64>;
    /// Sockets of `user` on alive nodes.
    async fn user_connections(&self, app: &AppId, user: &UserId, alive: Alive) -> StoreResult<u64>;
    /// Users subscribed to `channel` on alive nodes, sorted, at most `limit`, each with
    /// how many of its sockets are (Thunderpush lists a user once per socket).
    async fn channel_users(
        &self,
        app: &AppId,
        channel: &ChannelName,
        alive: Alive,
        limit: usize,
    ) -> StoreResult<Vec<(UserId, u64)>>;
    /// Sockets subscribed to `channel` on alive nodes.
    async fn channel_connections(
        &self,
        app: &AppId,
        channel: &ChannelName,
        alive: Alive,
    ) -> StoreResult<u64>;
}
