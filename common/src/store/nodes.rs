//! The edge registry (SPEC §7, §9): the `Nodes` concern. Edges write their heartbeat, the
//! monitor its verdict; `/nodes/` and `connectionUri` read it. Not durable state: it lives
//! off the fsync'd writer.

use async_trait::async_trait;

use super::StoreResult;

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
        self.status == NodeStatus::Up && !self.monitor_down && self.is_alive(now_us, ttl_us)
    }

    /// Its sockets count (presence): heartbeat fresh, not failed by the monitor.
    pub fn is_alive(&self, now_us: i64, ttl_us: i64) -> bool {
        !self.monitor_down && now_us.saturating_sub(self.heartbeat_us) <= ttl_us
    }
}

/// The edge registry.
#[async_trait]
pub trait Nodes: Send + Sync + 'static {
    /// Inserts or refreshes an edge's row; leaves the monitor's columns alone.
    async fn upsert_node(&self, heartbeat: &NodeHeartbeat) -> StoreResult<()>;
    /// Removes an edge and the presence it owns.
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
    /// Deletes nodes whose heartbeat is older than `before_us`, with their presence; how
    /// many nodes.
    async fn prune_nodes(&self, before_us: i64) -> StoreResult<u64>;
}
