//! The live database on SQLite: the edge registry (`Nodes`) and presence (`Presence`), in
//! their own file with `synchronous=OFF` (see `super`'s docs). Presence rows belong to a
//! node; readers join them with the nodes that are alive, so a dead node's presence stops
//! counting at once and its rows go when the node is pruned.

use async_trait::async_trait;
use rusqlite::{Row, params};

use super::{Db, DbKind, limit_value, to_u64};
use crate::config::StoreConfig;
use crate::ids::{AppId, ChannelName, UserId};
use crate::store::{
    Alive, NodeHeartbeat, NodeRecord, NodeStatus, Nodes, Ping, Presence, PresenceCount, StoreResult,
};

/// The live schema, applied on every open.
pub(super) const SCHEMA: &str = include_str!("live.sql");

/// Joins presence `p` with the alive nodes (`?` = heartbeat at or after).
const ALIVE: &str = "JOIN edge_nodes n ON n.node_id = p.node_id
     AND n.heartbeat_us >= ? AND n.monitor_down = 0";

/// The live database: `Nodes` and `Presence`.
pub struct SqliteLive {
    db: Db,
}

impl SqliteLive {
    /// Opens `store.sqlite_live_path`; a file that cannot be opened (e.g. damaged by a
    /// power cut, as `synchronous=OFF` allows) is deleted and created anew — it holds
    /// nothing heartbeats do not rebuild.
    pub async fn open(config: &StoreConfig) -> anyhow::Result<SqliteLive> {
        let path = &config.sqlite_live_path;
        match Db::open(path, config, DbKind::Live).await {
            Ok(db) => Ok(SqliteLive { db }),
            Err(e) if path.exists() => {
                tracing::warn!(error = %e, path = %path.display(), "recreating the live database");
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.as_os_str().to_owned();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
                Ok(SqliteLive {
                    db: Db::open(path, config, DbKind::Live).await?,
                })
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Ping for SqliteLive {
    async fn ping(&self) -> StoreResult<()> {
        self.db.ping().await
    }
}

fn node_from_row(row: &Row<'_>) -> rusqlite::Result<NodeRecord> {
    let status: String = row.get(3)?;
    Ok(NodeRecord {
        id: row.get(0)?,
        url: row.get(1)?,
        connections: to_u64(row.get(2)?),
        status: if status == "draining" {
            NodeStatus::Draining
        } else {
            NodeStatus::Up
        },
        started_us: row.get(4)?,
        heartbeat_us: row.get(5)?,
        checked_us: row.get(6)?,
        check_failures: row.get(7)?,
        monitor_down: row.get(8)?,
    })
}

#[async_trait]
impl Nodes for SqliteLive {
    async fn upsert_node(&self, hb: &NodeHeartbeat) -> StoreResult<()> {
        let hb = hb.clone();
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO edge_nodes (node_id, url, connections, status, started_us, heartbeat_us)
                     VALUES (?, ?, ?, ?, ?, ?)
                     ON CONFLICT (node_id) DO UPDATE SET url = excluded.url,
                       connections = excluded.connections, status = excluded.status,
                       heartbeat_us = excluded.heartbeat_us",
                )?
                .execute(params![
                    hb.id,
                    hb.url,
                    i64::try_from(hb.connections).unwrap_or(i64::MAX),
                    hb.status.as_str(),
                    hb.started_us,
                    hb.now_us
                ])?;
                Ok(())
            })
            .await
    }

    async fn remove_node(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.db
            .write(move |c| {
                c.prepare_cached("DELETE FROM presence WHERE node_id = ?")?
                    .execute([&id])?;
                c.prepare_cached("DELETE FROM edge_nodes WHERE node_id = ?")?
                    .execute([&id])?;
                Ok(())
            })
            .await
    }

    async fn nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        self.db
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT node_id, url, connections, status, started_us, heartbeat_us,
                            checked_us, check_failures, monitor_down
                     FROM edge_nodes ORDER BY node_id",
                )?;
                let rows = stmt.query_map([], node_from_row)?;
                rows.collect()
            })
            .await
    }

    async fn record_node_check(
        &self,
        url: &str,
        ok: bool,
        now_us: i64,
        failures_before_down: u32,
    ) -> StoreResult<()> {
        let url = url.to_owned();
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE edge_nodes SET checked_us = ?1,
                       check_failures = CASE WHEN ?2 THEN 0 ELSE check_failures + 1 END,
                       monitor_down = CASE WHEN ?2 THEN 0
                                           WHEN check_failures + 1 >= ?3 THEN 1
                                           ELSE monitor_down END
                     WHERE url = ?4",
                )?
                .execute(params![now_us, ok, failures_before_down, url])?;
                Ok(())
            })
            .await
    }

    async fn prune_nodes(&self, before_us: i64) -> StoreResult<u64> {
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "DELETE FROM presence WHERE node_id IN
                       (SELECT node_id FROM edge_nodes WHERE heartbeat_us < ?)",
                )?
                .execute([before_us])?;
                let n = c
                    .prepare_cached("DELETE FROM edge_nodes WHERE heartbeat_us < ?")?
                    .execute([before_us])?;
                // Rows of nodes that are gone from the registry altogether.
                c.prepare_cached(
                    "DELETE FROM presence WHERE node_id NOT IN (SELECT node_id FROM edge_nodes)",
                )?
                .execute([])?;
                Ok(n as u64)
            })
            .await
    }
}

#[async_trait]
impl Presence for SqliteLive {
    async fn set_presence(&self, node: &str, counts: &[PresenceCount]) -> StoreResult<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let (node, counts) = (node.to_owned(), counts.to_vec());
        self.db
            .write(move |c| {
                let mut upsert = c.prepare_cached(
                    "INSERT INTO presence (node_id, app, channel, user_id, connections)
                     VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (node_id, app, channel, user_id)
                     DO UPDATE SET connections = excluded.connections",
                )?;
                let mut delete = c.prepare_cached(
                    "DELETE FROM presence
                     WHERE node_id = ? AND app = ? AND channel = ? AND user_id = ?",
                )?;
                for count in &counts {
                    let channel = count.channel.as_ref().map_or("", |ch| ch.as_str());
                    let (app, user) = (count.app.as_str(), count.user.as_str());
                    if count.connections == 0 {
                        delete.execute(params![node, app, channel, user])?;
                    } else {
                        let n = i64::try_from(count.connections).unwrap_or(i64::MAX);
                        upsert.execute(params![node, app, channel, user, n])?;
                    }
                }
                Ok(())
            })
            .await
    }

    async fn clear_presence(&self, node: &str) -> StoreResult<()> {
        let node = node.to_owned();
        self.db
            .write(move |c| {
                c.prepare_cached("DELETE FROM presence WHERE node_id = ?")?
                    .execute([node])?;
                Ok(())
            })
            .await
    }

    async fn users_online(&self, app: &AppId, alive: Alive) -> StoreResult<u64> {
        let app = app.clone();
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT COUNT(DISTINCT p.user_id) FROM presence p {ALIVE}
                     WHERE p.app = ? AND p.channel = ''"
                );
                c.prepare_cached(&sql)?
                    .query_row(params![alive.heartbeat_after_us, app.as_str()], |r| {
                        r.get::<_, i64>(0).map(to_u64)
                    })
            })
            .await
    }

    async fn user_connections(&self, app: &AppId, user: &UserId, alive: Alive) -> StoreResult<u64> {
        let (app, user) = (app.clone(), user.clone());
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT COALESCE(SUM(p.connections), 0) FROM presence p {ALIVE}
                     WHERE p.app = ? AND p.channel = '' AND p.user_id = ?"
                );
                c.prepare_cached(&sql)?.query_row(
                    params![alive.heartbeat_after_us, app.as_str(), user.as_str()],
                    |r| r.get::<_, i64>(0).map(to_u64),
                )
            })
            .await
    }

    async fn channel_users(
        &self,
        app: &AppId,
        channel: &ChannelName,
        alive: Alive,
        limit: usize,
    ) -> StoreResult<Vec<(UserId, u64)>> {
        let (app, channel) = (app.clone(), channel.clone());
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT p.user_id, SUM(p.connections) FROM presence p {ALIVE}
                     WHERE p.app = ? AND p.channel = ?
                     GROUP BY p.user_id ORDER BY p.user_id LIMIT ?"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(
                    params![
                        alive.heartbeat_after_us,
                        app.as_str(),
                        channel.as_str(),
                        limit_value(limit)
                    ],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1).map(to_u64)?)),
                )?;
                // Ids were valid when written; skip anything that is not (never expected).
                Ok(rows
                    .filter_map(|r| {
                        let (id, n) = r.ok()?;
                        Some((UserId::parse(id).ok()?, n))
                    })
                    .collect())
            })
            .await
    }

    async fn channel_connections(
        &self,
        app: &AppId,
        channel: &ChannelName,
        alive: Alive,
    ) -> StoreResult<u64> {
        let (app, channel) = (app.clone(), channel.clone());
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT COALESCE(SUM(p.connections), 0) FROM presence p {ALIVE}
                     WHERE p.app = ? AND p.channel = ?"
                );
                c.prepare_cached(&sql)?.query_row(
                    params![alive.heartbeat_after_us, app.as_str(), channel.as_str()],
                    |r| r.get::<_, i64>(0).map(to_u64),
                )
            })
            .await
    }
}
