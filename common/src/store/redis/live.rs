//! The live concerns on Redis: the edge registry (`Nodes`) and presence (`Presence`).
//!
//! A node is a hash `P node:<id>` listed in the set `P nodes`. Presence is owned by the
//! node that reports it: per app, a hash of user → sockets (`…:users`) and one per channel
//! (`…:ch:<channel>`), every such key listed in the node's set `P presence:<node>` so that
//! clearing, removing or pruning the node deletes exactly its keys; `P presence_nodes`
//! lists the nodes that hold any, so pruning also finds presence whose node is gone.
//!
//! Readers count only alive nodes — heartbeat at or after `Alive::heartbeat_after_us` and
//! not marked down by the monitor — and do so in one script, so a dead node's presence
//! stops counting at once. Their cost is one hash read per alive node.
//!
//! Every one of these keys expires `live_ttl` (`store.redis_live_ttl_ms`) after the node's
//! last heartbeat, monitor or not: a heartbeat renews the node's hash, and renews all its
//! presence keys together once the set that lists them is down to half its lease; a
//! presence key gets the lease when created (`PEXPIRE … NX`, Redis 7). So no presence key
//! of a node expires before the set does, and the set only after heartbeats stopped. Ids
//! left in `P nodes` / `P presence_nodes` by expired hashes are dropped by the readers.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::RedisStore;
use crate::ids::{AppId, ChannelName, UserId};
use crate::store::{
    Alive, NodeHeartbeat, NodeRecord, NodeStatus, Nodes, Presence, PresenceCount, StoreError,
    StoreResult,
};

/// Lua shared by the scripts below: `alive(P, after)` is the ids of the alive nodes (and
/// forgets the ids whose hash expired); `clear(P, node)` deletes the node's presence keys.
const LIB: &str = r"
local function alive(P, after)
  local out = {}
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
    local v = redis.call('HMGET', P .. 'node:' .. id, 'heartbeat_us', 'monitor_down')
    if not v[1] then
      redis.call('SREM', P .. 'nodes', id)
      redis.call('SREM', P .. 'presence_nodes', id)
    elseif tonumber(v[1]) >= after and v[2] ~= '1' then
      out[#out + 1] = id
    end
  end
  return out
end
local function clear(P, node)
  local set = P .. 'presence:' .. node
  for _, key in ipairs(redis.call('SMEMBERS', set)) do redis.call('DEL', key) end
  redis.call('DEL', set)
  redis.call('SREM', P .. 'presence_nodes', node)
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

/// ARGV: P, node. Forgets the node and its presence.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, node = ARGV[1], ARGV[2]
clear(P, node)
redis.call('DEL', P .. 'node:' .. node)
redis.call('SREM', P .. 'nodes', node)
return 1
",
    )
});

/// ARGV: P, id, url, connections, status, heartbeat_us, started_us, live_ttl_ms. A node's
/// heartbeat: its hash, its lease, and its presence keys' lease when half gone.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[8])
local key = P .. 'node:' .. id
redis.call('HSET', key, 'url', ARGV[3], 'connections', ARGV[4], 'status', ARGV[5],
  'heartbeat_us', ARGV[6])
redis.call('HSETNX', key, 'started_us', ARGV[7])
redis.call('PEXPIRE', key, ttl)
redis.call('SADD', P .. 'nodes', id)
local set = P .. 'presence:' .. id
local left = redis.call('PTTL', set)
if left == -1 or (left >= 0 and left < ttl / 2) then
  for _, k in ipairs(redis.call('SMEMBERS', set)) do redis.call('PEXPIRE', k, ttl) end
  redis.call('PEXPIRE', set, ttl)
end
return 1
",
    )
});

/// ARGV: P, node. Forgets the node's presence.
static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
clear(ARGV[1], ARGV[2])
return 1
",
    )
});

/// ARGV: P, before_us. Nodes whose heartbeat is older go, with their presence, as does
/// presence of nodes no longer registered; how many nodes went.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, before = ARGV[1], tonumber(ARGV[2])
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  local hb = redis.call('HGET', P .. 'node:' .. id, 'heartbeat_us')
  if not hb or tonumber(hb) < before then
    clear(P, id)
    redis.call('DEL', P .. 'node:' .. id)
    redis.call('SREM', P .. 'nodes', id)
    n = n + 1
  end
end
for _, id in ipairs(redis.call('SMEMBERS', P .. 'presence_nodes')) do
  if redis.call('SISMEMBER', P .. 'nodes', id) == 0 then clear(P, id) end
end
return n
",
    )
});

/// ARGV: P, url, ok ('1'/'0'), now_us, failures_before_down. A monitor check of every
/// node registered under `url`.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, url, ok, now, limit = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4], tonumber(ARGV[5])
for _, id in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  local key = P .. 'node:' .. id
  if redis.call('HGET', key, 'url') == url then
    if ok then
      redis.call('HSET', key, 'checked_us', now, 'check_failures', 0, 'monitor_down', 0)
    else
      local failures = redis.call('HINCRBY', key, 'check_failures', 1)
      redis.call('HSET', key, 'checked_us', now)
      if failures >= limit then redis.call('HSET', key, 'monitor_down', 1) end
    end
  end
end
return 1
",
    )
});

/// ARGV: P. Every node as 9 strings: id, url, connections, status, started_us,
/// heartbeat_us, checked_us ('' if never), check_failures, monitor_down.
static NODES: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P = ARGV[1]
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  local v = redis.call('HMGET', P .. 'node:' .. id, 'url', 'connections', 'status',
    'started_us', 'heartbeat_us', 'checked_us', 'check_failures', 'monitor_down')
  if v[1] then
    out[#out + 1] = id
    for i = 1, 8 do out[#out + 1] = v[i] or '' end
  end
end
return out
",
    )
});

/// ARGV: P, after_us, key suffix (`:<app>:users` or `:<app>:ch:<channel>`), mode, user.
/// Over the alive nodes' hashes with that suffix: mode `distinct` → how many distinct
/// users; `user` → the sum of `user`'s sockets; `sum` → the sum of all sockets; `all` →
/// user, sockets, user, sockets… summed per user, unsorted.
static READ: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, after, suffix, mode, user = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local total, seen, distinct = 0, {}, 0
for _, id in ipairs(alive(P, after)) do
  local key = P .. 'presence:' .. id .. suffix
  if mode == 'user' then
    total = total + tonumber(redis.call('HGET', key, user) or '0')
  else
    local flat = redis.call('HGETALL', key)
    for i = 1, #flat, 2 do
      local u, n = flat[i], tonumber(flat[i + 1])
      if seen[u] == nil then distinct = distinct + 1; seen[u] = 0 end
      seen[u] = seen[u] + n
      total = total + n
    end
  end
end
if mode == 'distinct' then return distinct end
if mode == 'all' then
  local out = {}
  for u, n in pairs(seen) do out[#out + 1] = u; out[#out + 1] = n end
  return out
end
return total
",
    )
});

impl RedisStore {
    /// The key suffix of a presence hash: a user's sockets (`None`) or a channel's.
    fn presence_suffix(app: &AppId, channel: Option<&ChannelName>) -> String {
        match channel {
            None => format!(":{app}:users"),
            Some(channel) => format!(":{app}:ch:{channel}"),
        }
    }

    async fn read_presence<T: redis::FromRedisValue>(
        &self,
        alive: Alive,
        suffix: String,
        mode: &str,
        user: &str,
    ) -> StoreResult<T> {
        let args = [
            self.prefix.clone(),
            alive.heartbeat_after_us.to_string(),
            suffix,
            mode.to_owned(),
            user.to_owned(),
        ];
        self.script(&READ, &[], &args).await
    }
}

#[async_trait]
impl Nodes for RedisStore {
    async fn upsert_node(&self, hb: &NodeHeartbeat) -> StoreResult<()> {
        let args = [
            self.prefix.clone(),
            hb.id.clone(),
            hb.url.clone(),
            hb.connections.to_string(),
            hb.status.as_str().to_owned(),
            hb.now_us.to_string(),
            hb.started_us.to_string(),
            self.live_ttl_ms().to_string(),
        ];
        self.script::<i64>(&HEARTBEAT, &[], &args).await.map(drop)
    }

    async fn remove_node(&self, id: &str) -> StoreResult<()> {
        let args = [self.prefix.clone(), id.to_owned()];
        self.script::<i64>(&REMOVE, &[], &args).await.map(drop)
    }

    async fn nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let flat: Vec<String> = self
            .script(&NODES, &[], std::slice::from_ref(&self.prefix))
            .await?;
        let bad = |what: &str, value: &str| StoreError::Internal(format!("node {what}: {value:?}"));
        let mut nodes = flat
            .chunks_exact(9)
            .map(|v| {
                let int = |i: usize| v[i].parse::<i64>().map_err(|_| bad("field", &v[i]));
                Ok(NodeRecord {
                    id: v[0].clone(),
                    url: v[1].clone(),
                    connections: v[2].parse().map_err(|_| bad("connections", &v[2]))?,
                    status: if v[3] == "draining" {
                        NodeStatus::Draining
                    } else {
                        NodeStatus::Up
                    },
                    started_us: int(4)?,
                    heartbeat_us: int(5)?,
                    checked_us: if v[6].is_empty() { None } else { Some(int(6)?) },
                    check_failures: if v[7].is_empty() {
                        0
                    } else {
                        v[7].parse().map_err(|_| bad("check_failures", &v[7]))?
                    },
                    monitor_down: v[8] == "1",
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn record_node_check(
        &self,
        url: &str,
        ok: bool,
        now_us: i64,
        failures_before_down: u32,
    ) -> StoreResult<()> {
        let args = [
            self.prefix.clone(),
            url.to_owned(),
            if ok { "1" } else { "0" }.to_owned(),
            now_us.to_string(),
            failures_before_down.to_string(),
        ];
        self.script::<i64>(&CHECK, &[], &args).await.map(drop)
    }

    async fn prune_nodes(&self, before_us: i64) -> StoreResult<u64> {
        let args = [self.prefix.clone(), before_us.to_string()];
        self.script(&PRUNE, &[], &args).await
    }
}

#[async_trait]
impl Presence for RedisStore {
    async fn set_presence(&self, node: &str, counts: &[PresenceCount]) -> StoreResult<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let owned = self.key(format_args!("presence:{node}"));
        let ttl = self.live_ttl_ms();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SADD")
            .arg(self.key(format_args!("presence_nodes")))
            .arg(node)
            .ignore();
        for count in counts {
            let suffix = Self::presence_suffix(&count.app, count.channel.as_ref());
            let key = format!("{owned}{suffix}");
            if count.connections == 0 {
                pipe.cmd("HDEL").arg(&key).arg(count.user.as_str()).ignore();
            } else {
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg(count.user.as_str())
                    .arg(count.connections)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ttl)
                    .arg("NX")
                    .ignore()
                    .cmd("SADD")
                    .arg(&owned)
                    .arg(&key)
                    .ignore();
            }
        }
        pipe.cmd("PEXPIRE").arg(&owned).arg(ttl).arg("NX").ignore();
        self.pipe(&pipe).await
    }

    async fn clear_presence(&self, node: &str) -> StoreResult<()> {
        let args = [self.prefix.clone(), node.to_owned()];
        self.script::<i64>(&CLEAR, &[], &args).await.map(drop)
    }

    async fn users_online(&self, app: &AppId, alive: Alive) -> StoreResult<u64> {
        self.read_presence(alive, Self::presence_suffix(app, None), "distinct", "")
            .await
    }

    async fn user_connections(&self, app: &AppId, user: &UserId, alive: Alive) -> StoreResult<u64> {
        self.read_presence(
            alive,
            Self::presence_suffix(app, None),
            "user",
            user.as_str(),
        )
        .await
    }

    async fn channel_users(
        &self,
        app: &AppId,
        channel: &ChannelName,
        alive: Alive,
        limit: usize,
    ) -> StoreResult<Vec<(UserId, u64)>> {
        let flat: Vec<(String, u64)> = self
            .read_presence(alive, Self::presence_suffix(app, Some(channel)), "all", "")
            .await?;
        // Byte order, as SQLite's; ids were valid when written, skip anything that is not.
        let mut users: Vec<(UserId, u64)> = flat
            .into_iter()
            .filter_map(|(id, n)| Some((UserId::parse(id).ok()?, n)))
            .collect();
        users.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        users.truncate(limit);
        Ok(users)
    }

    async fn channel_connections(
        &self,
        app: &AppId,
        channel: &ChannelName,
        alive: Alive,
    ) -> StoreResult<u64> {
        self.read_presence(alive, Self::presence_suffix(app, Some(channel)), "sum", "")
            .await
    }
}
