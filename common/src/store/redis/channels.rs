//! The `Channels` concern on Redis: a channel's configuration, its stream (`stream:<S>`,
//! `S` = `c/<app>/<channel>`) and history entries at their offsets, trimmed to the
//! configured size as each publish appends; expiry (`keep:<S>`), `replaceId` (the latest
//! kept entry of a `replaceId` hides the earlier ones) and idempotency keys. One publish
//! is one script, so concurrent publishers get dense, unique offsets and one idempotency
//! key gives one fresh publish.
//!
//! Keys (after the prefix; `S` is the stream key, channel names hold no `|`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `channel:<app>:<channel>` | hash | `size`, `ttl` (`''` for none), `created_us`, `updated_us` |
//! | `stream:<S>` | hash | `epoch`, `head` (last offset), `last_us` (latest creation time), `active` (`1`/`0`) |
//! | `log:<S>` | zset | offsets of the kept entries (score = member = offset) |
//! | `entries:<S>` | hash | offset → `<created_us>\n<ChannelMessage JSON>` |
//! | `keep:<S>` | zset | offset → µs after which the entry is gone (history ttl, message expiry) |
//! | `rids:<S>` | hash | offset → its `replaceId` |
//! | `rid:<S>\|<replaceId>` | zset | offsets of the entries with that `replaceId` |
//! | `history_streams` | set | `S` of every channel with history on (what pruning visits; written only by configuration) |
//! | `idem:<app>:<channel>\|<key>` | string | the first result of an idempotency key, expiring with it (plus a minute's grace) |
//! | `published:<app>:<channel>\|<id>` | string | a publish's result for a minute, so that a retry of the same publish (its reply lost with the connection) returns it instead of appending again |
//!
//! Lua numbers are doubles: µs times and offsets stay below 2^53, and are turned into
//! strings with `%d` (never `tostring`, which rounds to 14 digits).

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::RedisStore;
use crate::ids::{AppId, ChannelName};
use crate::message::ChannelMessage;
use crate::store::{
    ChannelInfo, Channels, History, Idempotency, Publication, StoreError, StoreResult,
};
use crate::stream::{Position, StreamKey, new_epoch};

/// Lua shared by the channel scripts.
pub(super) const LIB: &str = r"
local function d(n) return string.format('%d', n) end
-- Removes the entries of stream S at the given offsets (strings) from every index.
local function drop_entries(P, S, offsets)
  for _, o in ipairs(offsets) do
    local rid = redis.call('HGET', P .. 'rids:' .. S, o)
    if rid then
      redis.call('ZREM', P .. 'rid:' .. S .. '|' .. rid, o)
      redis.call('HDEL', P .. 'rids:' .. S, o)
    end
    redis.call('HDEL', P .. 'entries:' .. S, o)
    redis.call('ZREM', P .. 'keep:' .. S, o)
    redis.call('ZREM', P .. 'log:' .. S, o)
  end
  return #offsets
end
-- Drops the entries at or below offset `upto` (every entry when `upto` is nil).
local function trim(P, S, upto)
  local bound = upto and d(upto) or '+inf'
  return drop_entries(P, S, redis.call('ZRANGEBYSCORE', P .. 'log:' .. S, '-inf', bound))
end
-- Whether the entry at offset o (string) is gone at `now` (its keep time has passed).
local function gone(P, S, o, now)
  local keep = redis.call('ZSCORE', P .. 'keep:' .. S, o)
  return keep ~= false and tonumber(keep) <= now
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

/// ARGV: P, app, channel, S, size, ttl ('' for none), now_us, new epoch. Returns
/// {epoch, head, active}.
static CONFIGURE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, app, ch, S, size, ttl, now, epoch = unpack(ARGV)
local conf = P .. 'channel:' .. app .. ':' .. ch
redis.call('HSET', conf, 'size', size, 'ttl', ttl, 'updated_us', now)
redis.call('HSETNX', conf, 'created_us', now)
local on = size ~= '' or ttl ~= ''
local meta = P .. 'stream:' .. S
if redis.call('EXISTS', meta) == 0 then
  redis.call('HSET', meta, 'epoch', epoch, 'head', 0, 'last_us', 0)
end
redis.call('HSET', meta, 'active', on and 1 or 0)
if on then
  redis.call('SADD', P .. 'history_streams', S)
  if size ~= '' then
    trim(P, S, tonumber(redis.call('HGET', meta, 'head')) - tonumber(size))
  end
else
  redis.call('SREM', P .. 'history_streams', S)
  trim(P, S, nil)
end
local v = redis.call('HMGET', meta, 'epoch', 'head', 'active')
return v
",
    )
});

/// ARGV: P, app, channel, S, message id, created_us, expires_us (''), replaceId (''),
/// the message JSON, idempotency key (''), its expires_us, its Redis TTL in ms.
/// Returns {'repeat', id, created_us, expires_us, epoch, offset} or
/// {'fresh', created_us, epoch, offset} ('' where there is none).
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, app, ch, S, id, created, expires, rid, json, key, key_expires, key_ttl = unpack(ARGV)
created = tonumber(created)
-- This very publish ran before (a retry after its reply was lost): the same result.
local done = P .. 'published:' .. app .. ':' .. ch .. '|' .. id
local before = redis.call('GET', done)
if before then
  local f = {}
  for part in string.gmatch(before .. '\n', '([^\n]*)\n') do f[#f + 1] = part end
  return {'fresh', f[1], f[2], f[3]}
end
local idem = P .. 'idem:' .. app .. ':' .. ch .. '|' .. key
if key ~= '' then
  local earlier = redis.call('GET', idem)
  if earlier then
    local f = {}
    for part in string.gmatch(earlier .. '\n', '([^\n]*)\n') do f[#f + 1] = part end
    if tonumber(f[6]) > created then
      return {'repeat', f[1], f[2], f[5], f[3], f[4]}
    end
  end
end
local epoch, offset = '', ''
local conf = redis.call('HMGET', P .. 'channel:' .. app .. ':' .. ch, 'size', 'ttl')
local meta = P .. 'stream:' .. S
if (conf[1] and conf[1] ~= '') or (conf[2] and conf[2] ~= '') then
  local m = redis.call('HMGET', meta, 'epoch', 'head', 'last_us', 'active')
  if m[4] == '1' then
    local head = tonumber(m[2]) + 1
    created = math.max(tonumber(m[3]) + 1, created)
    redis.call('HSET', meta, 'head', d(head), 'last_us', d(created))
    epoch, offset = m[1], d(head)
    redis.call('ZADD', P .. 'log:' .. S, offset, offset)
    redis.call('HSET', P .. 'entries:' .. S, offset, d(created) .. '\n' .. json)
    local keep = nil
    if conf[2] ~= '' then keep = created + tonumber(conf[2]) * 1000000 end
    if expires ~= '' then
      keep = keep and math.min(keep, tonumber(expires)) or tonumber(expires)
    end
    if keep then redis.call('ZADD', P .. 'keep:' .. S, d(keep), offset) end
    if rid ~= '' then
      redis.call('HSET', P .. 'rids:' .. S, offset, rid)
      redis.call('ZADD', P .. 'rid:' .. S .. '|' .. rid, offset, offset)
    end
    if conf[1] ~= '' then trim(P, S, head - tonumber(conf[1])) end
  end
end
if key ~= '' then
  local value = table.concat({id, d(created), epoch, offset, expires, key_expires}, '\n')
  redis.call('SET', idem, value, 'PX', key_ttl)
end
redis.call('SET', done, table.concat({d(created), epoch, offset}, '\n'), 'PX', 60000)
return {'fresh', d(created), epoch, offset}
",
    )
});

/// ARGV: P, S, after, limit, now_us, since_us ('' for none), filter ('1': hide entries
/// a later kept entry replaces, and those created before since_us; '0': only gone ones).
/// Returns offset, record, offset, record… of the kept entries after `after`, oldest
/// first, at most `limit`; empty unless the stream is active.
pub(super) static READ: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, S, after, limit, now, since, filter = unpack(ARGV)
after, limit, now = tonumber(after), tonumber(limit), tonumber(now)
since = since ~= '' and tonumber(since) or nil
if redis.call('HGET', P .. 'stream:' .. S, 'active') ~= '1' then return {} end
local out = {}
local from = '(' .. d(after)
while #out < 2 * limit do
  local page = redis.call('ZRANGEBYSCORE', P .. 'log:' .. S, from, '+inf', 'LIMIT', 0, 256)
  if #page == 0 then break end
  for _, o in ipairs(page) do
    if #out >= 2 * limit then break end
    local keep = not gone(P, S, o, now)
    local record = keep and redis.call('HGET', P .. 'entries:' .. S, o)
    if not record then keep = false end
    if keep and filter == '1' then
      if since and tonumber(string.match(record, '^(%d+)')) < since then keep = false end
      local rid = keep and redis.call('HGET', P .. 'rids:' .. S, o)
      if rid then
        local later = redis.call('ZRANGEBYSCORE', P .. 'rid:' .. S .. '|' .. rid, '(' .. o, '+inf')
        for _, l in ipairs(later) do
          if not gone(P, S, l, now) then keep = false; break end
        end
      end
    end
    if keep then out[#out + 1] = o; out[#out + 1] = record end
  end
  from = '(' .. page[#page]
end
return out
",
    )
});

/// ARGV: P, S, now_us. Drops the stream's entries whose keep time has passed; how many.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, S, now = unpack(ARGV)
return drop_entries(P, S, redis.call('ZRANGEBYSCORE', P .. 'keep:' .. S, '-inf', now))
",
    )
});

/// A stored entry (`<created_us>\n<json>`) as the message, with its stored creation time.
pub(super) fn entry(record: &str) -> StoreResult<ChannelMessage> {
    let bad = |e: String| StoreError::Internal(format!("channel entry: {e}"));
    let (created, json) = record
        .split_once('\n')
        .ok_or_else(|| bad("no creation time".into()))?;
    let mut message: ChannelMessage = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    message.created_us = created.parse().map_err(|_| bad(created.into()))?;
    Ok(message)
}

fn number<T: std::str::FromStr>(what: &str, value: &str) -> StoreResult<T> {
    value
        .parse()
        .map_err(|_| StoreError::Internal(format!("{what}: {value:?}")))
}

fn optional(value: Option<u64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

impl RedisStore {
    /// Entries of channel stream `stream` after `after` (see `READ`).
    pub(super) async fn channel_entries(
        &self,
        stream: &StreamKey,
        after: u64,
        limit: usize,
        now_us: i64,
        hide: Option<Option<i64>>,
    ) -> StoreResult<Vec<(u64, ChannelMessage)>> {
        let args = [
            self.prefix.clone(),
            stream.as_str().to_owned(),
            after.to_string(),
            limit.to_string(),
            now_us.to_string(),
            hide.flatten().map(|s| s.to_string()).unwrap_or_default(),
            if hide.is_some() { "1" } else { "0" }.to_owned(),
        ];
        let flat: Vec<(String, String)> = self.script(&READ, &[], &args).await?;
        flat.iter()
            .map(|(offset, record)| Ok((number("offset", offset)?, entry(record)?)))
            .collect()
    }
}

#[async_trait]
impl Channels for RedisStore {
    async fn configure_channel(
        &self,
        app: &AppId,
        channel: &ChannelName,
        history: History,
        now_us: i64,
    ) -> StoreResult<ChannelInfo> {
        let stream = StreamKey::channel(app, channel);
        let args = [
            self.prefix.clone(),
            app.to_string(),
            channel.to_string(),
            stream.as_str().to_owned(),
            optional(history.size),
            optional(history.ttl),
            now_us.to_string(),
            new_epoch(),
        ];
        let (epoch, head, active): (String, String, String) =
            self.script(&CONFIGURE, &[], &args).await?;
        Ok(ChannelInfo {
            history,
            head: (active == "1")
                .then(|| number("head", &head).map(|offset| Position { epoch, offset }))
                .transpose()?,
        })
    }

    async fn channel(
        &self,
        app: &AppId,
        channel: &ChannelName,
    ) -> StoreResult<Option<ChannelInfo>> {
        let conf = self.key(format_args!("channel:{app}:{channel}"));
        let meta = self.key(format_args!("stream:{}", StreamKey::channel(app, channel)));
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(&conf)
            .arg("size")
            .arg("ttl")
            .arg("created_us")
            .cmd("HMGET")
            .arg(&meta)
            .arg("epoch")
            .arg("head")
            .arg("active");
        type Conf = (Option<String>, Option<String>, Option<String>);
        type Meta = (Option<String>, Option<String>, Option<String>);
        let ((size, ttl, created), (epoch, head, active)): (Conf, Meta) = self.pipe(&pipe).await?;
        if created.is_none() {
            return Ok(None);
        }
        let parse = |v: Option<String>| -> StoreResult<Option<u64>> {
            v.filter(|v| !v.is_empty())
                .map(|v| number("history", &v))
                .transpose()
        };
        let head = match (epoch, head, active.as_deref()) {
            (Some(epoch), Some(head), Some("1")) => Some(Position {
                epoch,
                offset: number("head", &head)?,
            }),
            _ => None,
        };
        Ok(Some(ChannelInfo {
            history: History {
                size: parse(size)?,
                ttl: parse(ttl)?,
            },
            head,
        }))
    }

    async fn publish_channel_message(
        &self,
        message: &ChannelMessage,
        idempotency: Option<&Idempotency>,
    ) -> StoreResult<Publication> {
        let m = message;
        let json = serde_json::to_string(m)
            .map_err(|e| StoreError::Internal(format!("channel message: {e}")))?;
        let (key, key_expires, key_ttl) = match idempotency {
            Some(i) => {
                let lifetime_ms = (i.expires_us.saturating_sub(m.created_us) / 1_000).max(0);
                // A minute's grace beyond the key's own expiry, which the script checks.
                let ttl = lifetime_ms.saturating_add(60_000);
                (i.key.clone(), i.expires_us.to_string(), ttl.to_string())
            }
            None => (String::new(), String::new(), String::new()),
        };
        let args = [
            self.prefix.clone(),
            m.app.to_string(),
            m.channel.to_string(),
            StreamKey::channel(&m.app, &m.channel).as_str().to_owned(),
            m.id.clone(),
            m.created_us.to_string(),
            m.expires_us.map(|e| e.to_string()).unwrap_or_default(),
            m.replace_id.clone().unwrap_or_default(),
            json,
            key,
            key_expires,
            key_ttl,
        ];
        let reply: Vec<String> = self.script(&PUBLISH, &[], &args).await?;
        let position = |epoch: &str, offset: &str| -> StoreResult<Option<Position>> {
            if epoch.is_empty() {
                return Ok(None);
            }
            Ok(Some(Position {
                epoch: epoch.to_owned(),
                offset: number("offset", offset)?,
            }))
        };
        match reply.as_slice() {
            [kind, created, epoch, offset] if kind == "fresh" => Ok(Publication::Fresh {
                created_us: number("created_us", created)?,
                position: position(epoch, offset)?,
            }),
            [kind, id, created, expires, epoch, offset] if kind == "repeat" => {
                Ok(Publication::Repeat {
                    id: id.clone(),
                    created_us: number("created_us", created)?,
                    expires_us: if expires.is_empty() {
                        None
                    } else {
                        Some(number("expires_us", expires)?)
                    },
                    position: position(epoch, offset)?,
                })
            }
            other => Err(StoreError::Internal(format!("publish reply: {other:?}"))),
        }
    }

    async fn channel_history(
        &self,
        app: &AppId,
        channel: &ChannelName,
        after: u64,
        limit: usize,
        now_us: i64,
    ) -> StoreResult<Vec<(u64, ChannelMessage)>> {
        let conf = self.key(format_args!("channel:{app}:{channel}"));
        let ttl: Option<String> = self.query(redis::cmd("HGET").arg(&conf).arg("ttl")).await?;
        let since = ttl
            .filter(|t| !t.is_empty())
            .map(|t| number::<i64>("ttl", &t))
            .transpose()?
            .map(|t| now_us.saturating_sub(t.saturating_mul(1_000_000)));
        let stream = StreamKey::channel(app, channel);
        self.channel_entries(&stream, after, limit, now_us, Some(since))
            .await
    }

    async fn prune_channels(&self, now_us: i64) -> StoreResult<u64> {
        let set = self.key(format_args!("history_streams"));
        let streams: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&set)).await?;
        let mut pruned = 0;
        for stream in streams {
            let args = [self.prefix.clone(), stream, now_us.to_string()];
            pruned += self.script::<u64>(&PRUNE, &[], &args).await?;
        }
        // Idempotency keys expire in Redis by themselves.
        Ok(pruned)
    }
}
