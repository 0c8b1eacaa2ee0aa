//! The `Queues` concern on Redis: Mozilla tokens, queues and messages. A token's messages
//! carry their offset in the token's stream (`t/<token>`), taken from its `stream:<S>`
//! hash by the script that stores the message, so concurrent appends get dense, unique
//! offsets and creation times that increase per token.
//!
//! Keys (after the prefix; token and queue ids are hex):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `token:<token>` | hash | `own_queue`, `created_us` |
//! | `queue:<id>` | hash | `token`, `domain` (absent for the token's own queue), `read_us`, `created_us` |
//! | `domains:<token>` | hash | domain → its queue id |
//! | `qmsg:<token>` | hash | key → `<offset>\n<created_us>\n<QueueMessage JSON>` |
//! | `qlog:<token>` | zset | keys by creation time (ties by key, as zsets order them): the token's listing |
//! | `qqlog:<queue>` | zset | the same for one queue |
//! | `qoff:<token>` | zset | keys by stream offset: replay |
//! | `qrid:<queue>\|<replaceId>` | zset | keys with that `replaceId`, by creation time |

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::RedisStore;
use crate::message::QueueMessage;
use crate::store::{After, Appended, Queue, QueueScope, Queues, StoreError, StoreResult};
use crate::stream::{Position, new_epoch};

const LIB: &str = r"
local function d(n) return string.format('%d', n) end
-- Deletes the messages `keys` of `token` from every index; their queue is `queue`.
local function drop_messages(P, token, queue, keys)
  for _, k in ipairs(keys) do
    local record = redis.call('HGET', P .. 'qmsg:' .. token, k)
    if record then
      local rid = cjson.decode(string.match(record, '^[^\n]*\n[^\n]*\n(.*)$')).body.replaceId
      if rid then redis.call('ZREM', P .. 'qrid:' .. queue .. '|' .. rid, k) end
    end
    redis.call('HDEL', P .. 'qmsg:' .. token, k)
    redis.call('ZREM', P .. 'qlog:' .. token, k)
    redis.call('ZREM', P .. 'qqlog:' .. queue, k)
    redis.call('ZREM', P .. 'qoff:' .. token, k)
  end
end
-- Deletes queue `id` of `token` with its messages.
local function drop_queue(P, token, id)
  drop_messages(P, token, id, redis.call('ZRANGE', P .. 'qqlog:' .. id, 0, -1))
  local domain = redis.call('HGET', P .. 'queue:' .. id, 'domain')
  if domain then redis.call('HDEL', P .. 'domains:' .. token, domain) end
  redis.call('DEL', P .. 'queue:' .. id, P .. 'qqlog:' .. id)
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

/// ARGV: P, token, own queue, now_us, epoch.
static CREATE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, token, own, now, epoch = unpack(ARGV)
if redis.call('EXISTS', P .. 'token:' .. token) == 1 then
  return redis.error_reply('token ' .. token .. ' exists')
end
redis.call('HSET', P .. 'token:' .. token, 'own_queue', own, 'created_us', now)
redis.call('HSET', P .. 'queue:' .. own, 'token', token, 'read_us', 0, 'created_us', now)
redis.call('HSET', P .. 'stream:t/' .. token, 'epoch', epoch, 'head', 0, 'last_us', 0, 'active', 1)
return 1
",
    )
});

/// ARGV: P, token.
static DELETE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, token = unpack(ARGV)
local own = redis.call('HGET', P .. 'token:' .. token, 'own_queue')
for _, id in ipairs(redis.call('HVALS', P .. 'domains:' .. token)) do drop_queue(P, token, id) end
if own then drop_queue(P, token, own) end
redis.call('DEL', P .. 'token:' .. token, P .. 'domains:' .. token, P .. 'qmsg:' .. token,
  P .. 'qlog:' .. token, P .. 'qoff:' .. token, P .. 'stream:t/' .. token)
return 1
",
    )
});

/// ARGV: P, token, domain, new id, now_us. Returns {id, read_us}, or {} for no token.
static CREATE_QUEUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, token, domain, id, now = unpack(ARGV)
if redis.call('EXISTS', P .. 'token:' .. token) == 0 then return {} end
local existing = redis.call('HGET', P .. 'domains:' .. token, domain)
if existing then
  return {existing, redis.call('HGET', P .. 'queue:' .. existing, 'read_us')}
end
redis.call('HSET', P .. 'queue:' .. id, 'token', token, 'domain', domain, 'read_us', 0,
  'created_us', now)
redis.call('HSET', P .. 'domains:' .. token, domain, id)
return {id, '0'}
",
    )
});

/// ARGV: P, token, queue id. 1 if the token's domain queue was deleted.
static DELETE_QUEUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, token, id = unpack(ARGV)
local q = redis.call('HMGET', P .. 'queue:' .. id, 'token', 'domain')
if q[1] ~= token or not q[2] then return 0 end
drop_queue(P, token, id)
return 1
",
    )
});

/// ARGV: P, queue id, read_us. The stored read timestamp, or nil for no queue.
static ADVANCE_READ: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, id, read = unpack(ARGV)
local key = P .. 'queue:' .. id
local now = redis.call('HGET', key, 'read_us')
if not now then return false end
if tonumber(read) > tonumber(now) then
  redis.call('HSET', key, 'read_us', read)
  return read
end
return now
",
    )
});

/// ARGV: P, token, queue, key, created_us, replaceId (''), QueueMessage JSON. Returns
/// {created_us, epoch, offset}, or {} when the queue is not the token's.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, token, queue, key, created, rid, json = unpack(ARGV)
if redis.call('HGET', P .. 'queue:' .. queue, 'token') ~= token then return {} end
local meta = P .. 'stream:t/' .. token
local m = redis.call('HMGET', meta, 'epoch', 'head', 'last_us')
if not m[1] then return {} end
-- Stored before under this key (a retry after the reply was lost): the same result.
local stored = redis.call('HGET', P .. 'qmsg:' .. token, key)
if stored then
  local offset, at = string.match(stored, '^([^\n]*)\n([^\n]*)\n')
  return {at, m[1], offset}
end
local head = tonumber(m[2]) + 1
created = math.max(tonumber(m[3]) + 1, tonumber(created))
redis.call('HSET', meta, 'head', d(head), 'last_us', d(created))
redis.call('HSET', P .. 'qmsg:' .. token, key, d(head) .. '\n' .. d(created) .. '\n' .. json)
redis.call('ZADD', P .. 'qlog:' .. token, d(created), key)
redis.call('ZADD', P .. 'qqlog:' .. queue, d(created), key)
redis.call('ZADD', P .. 'qoff:' .. token, d(head), key)
if rid ~= '' then redis.call('ZADD', P .. 'qrid:' .. queue .. '|' .. rid, d(created), key) end
return {d(created), m[1], d(head)}
",
    )
});

/// ARGV: P, token, listing zset (full key), after kind ('start', 'time', 'message'),
/// after created_us, after key, limit. Records of the messages strictly after, oldest
/// first, hiding those a later message of their queue with the same replaceId replaces.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, token, listing, kind, after_us, after_key, limit = unpack(ARGV)
limit = tonumber(limit)
local from = '-inf'
if kind == 'time' then from = '(' .. after_us elseif kind == 'message' then from = after_us end
local out, skip = {}, 0
while #out < limit do
  local page = redis.call('ZRANGEBYSCORE', listing, from, '+inf', 'WITHSCORES', 'LIMIT', skip, 256)
  if #page == 0 then break end
  skip = skip + #page / 2
  for i = 1, #page, 2 do
    if #out >= limit then break end
    local k, c = page[i], page[i + 1]
    local keep = not (kind == 'message' and c == after_us and k <= after_key)
    local record = keep and redis.call('HGET', P .. 'qmsg:' .. token, k)
    if not record then keep = false end
    if keep then
      local m = cjson.decode(string.match(record, '^[^\n]*\n[^\n]*\n(.*)$'))
      local rid = m.body.replaceId
      if rid then
        local later = redis.call('ZRANGEBYSCORE', P .. 'qrid:' .. m.queue .. '|' .. rid, c, '+inf',
          'WITHSCORES')
        for j = 1, #later, 2 do
          if later[j + 1] ~= c or later[j] > k then keep = false; break end
        end
      end
    end
    if keep then out[#out + 1] = record end
  end
end
return out
",
    )
});

/// A stored record (`<offset>\n<created_us>\n<json>`) as the message and its offset.
pub(super) fn record(text: &str) -> StoreResult<(QueueMessage, u64)> {
    let bad = |e: String| StoreError::Internal(format!("queue message: {e}"));
    let mut parts = text.splitn(3, '\n');
    let (Some(offset), Some(created), Some(json)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("truncated record".into()));
    };
    let mut message: QueueMessage = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    message.created_us = created.parse().map_err(|_| bad(created.into()))?;
    let offset = offset.parse().map_err(|_| bad(offset.into()))?;
    Ok((message, offset))
}

impl RedisStore {
    /// The token that owns queue `id`.
    async fn queue_token(&self, id: &str) -> StoreResult<Option<String>> {
        let key = self.key(format_args!("queue:{id}"));
        self.query(redis::cmd("HGET").arg(&key).arg("token")).await
    }

    /// Records of `token`'s messages at offsets after `after`, at most `limit`.
    pub(super) async fn token_entries(
        &self,
        token: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(QueueMessage, u64)>> {
        let offsets = self.key(format_args!("qoff:{token}"));
        let keys: Vec<String> = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&offsets)
                    .arg(format!("({after}"))
                    .arg("+inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let messages = self.key(format_args!("qmsg:{token}"));
        let records: Vec<Option<String>> = self
            .query(redis::cmd("HMGET").arg(&messages).arg(&keys))
            .await?;
        records.into_iter().flatten().map(|r| record(&r)).collect()
    }
}

#[async_trait]
impl Queues for RedisStore {
    async fn create_token(&self, token: &str, own_queue: &str, now_us: i64) -> StoreResult<()> {
        let args = [
            self.prefix.clone(),
            token.to_owned(),
            own_queue.to_owned(),
            now_us.to_string(),
            new_epoch(),
        ];
        self.script::<i64>(&CREATE_TOKEN, &[], &args)
            .await
            .map(drop)
    }

    async fn token_exists(&self, token: &str) -> StoreResult<bool> {
        let key = self.key(format_args!("token:{token}"));
        self.query(redis::cmd("EXISTS").arg(&key)).await
    }

    async fn delete_token(&self, token: &str) -> StoreResult<()> {
        let args = [self.prefix.clone(), token.to_owned()];
        self.script::<i64>(&DELETE_TOKEN, &[], &args)
            .await
            .map(drop)
    }

    async fn create_queue(
        &self,
        token: &str,
        domain: &str,
        new_id: &str,
        now_us: i64,
    ) -> StoreResult<Option<Queue>> {
        let args = [
            self.prefix.clone(),
            token.to_owned(),
            domain.to_owned(),
            new_id.to_owned(),
            now_us.to_string(),
        ];
        let reply: Vec<String> = self.script(&CREATE_QUEUE, &[], &args).await?;
        match reply.as_slice() {
            [] => Ok(None),
            [id, read] => Ok(Some(Queue {
                id: id.clone(),
                token: token.to_owned(),
                domain: Some(domain.to_owned()),
                read_us: read
                    .parse()
                    .map_err(|_| StoreError::Internal(format!("read_us: {read:?}")))?,
            })),
            other => Err(StoreError::Internal(format!("create_queue: {other:?}"))),
        }
    }

    async fn queue(&self, id: &str) -> StoreResult<Option<Queue>> {
        let key = self.key(format_args!("queue:{id}"));
        let (token, domain, read): (Option<String>, Option<String>, Option<i64>) = self
            .query(
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("token")
                    .arg("domain")
                    .arg("read_us"),
            )
            .await?;
        Ok(token.map(|token| Queue {
            id: id.to_owned(),
            token,
            domain,
            read_us: read.unwrap_or(0),
        }))
    }

    async fn domain_queues(&self, token: &str) -> StoreResult<Vec<Queue>> {
        let key = self.key(format_args!("domains:{token}"));
        let mut domains: Vec<(String, String)> =
            self.query(redis::cmd("HGETALL").arg(&key)).await?;
        domains.sort();
        let mut queues = Vec::with_capacity(domains.len());
        for (_, id) in domains {
            if let Some(queue) = self.queue(&id).await? {
                queues.push(queue);
            }
        }
        Ok(queues)
    }

    async fn delete_queue(&self, token: &str, id: &str) -> StoreResult<bool> {
        let args = [self.prefix.clone(), token.to_owned(), id.to_owned()];
        let deleted: i64 = self.script(&DELETE_QUEUE, &[], &args).await?;
        Ok(deleted == 1)
    }

    async fn advance_read_timestamp(&self, id: &str, read_us: i64) -> StoreResult<Option<i64>> {
        let args = [self.prefix.clone(), id.to_owned(), read_us.to_string()];
        self.script(&ADVANCE_READ, &[], &args).await
    }

    async fn add_queue_message(&self, message: &QueueMessage) -> StoreResult<Option<Appended>> {
        let m = message;
        let json = serde_json::to_string(m)
            .map_err(|e| StoreError::Internal(format!("queue message: {e}")))?;
        let args = [
            self.prefix.clone(),
            m.token.clone(),
            m.queue.clone(),
            m.key.clone(),
            m.created_us.to_string(),
            m.body.replace_id.clone().unwrap_or_default(),
            json,
        ];
        let reply: Vec<String> = self.script(&APPEND, &[], &args).await?;
        let number = |v: &str| -> StoreResult<i64> {
            v.parse()
                .map_err(|_| StoreError::Internal(format!("append reply: {v:?}")))
        };
        match reply.as_slice() {
            [] => Ok(None),
            [created, epoch, offset] => Ok(Some(Appended {
                created_us: number(created)?,
                position: Position {
                    epoch: epoch.clone(),
                    offset: number(offset)?.max(0).unsigned_abs(),
                },
            })),
            other => Err(StoreError::Internal(format!("append reply: {other:?}"))),
        }
    }

    async fn queue_message(
        &self,
        scope: QueueScope<'_>,
        key: &str,
    ) -> StoreResult<Option<QueueMessage>> {
        let token = match scope {
            QueueScope::Token(token) => token.to_owned(),
            QueueScope::Queue(id) => match self.queue_token(id).await? {
                Some(token) => token,
                None => return Ok(None),
            },
        };
        let messages = self.key(format_args!("qmsg:{token}"));
        let found: Option<String> = self
            .query(redis::cmd("HGET").arg(&messages).arg(key))
            .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let (message, _) = record(&found)?;
        Ok(match scope {
            QueueScope::Queue(id) if message.queue != id => None,
            _ => Some(message),
        })
    }

    async fn list_queue_messages(
        &self,
        scope: QueueScope<'_>,
        after: &After,
        limit: usize,
    ) -> StoreResult<Vec<QueueMessage>> {
        let (token, listing) = match scope {
            QueueScope::Token(token) => (token.to_owned(), self.key(format_args!("qlog:{token}"))),
            QueueScope::Queue(id) => match self.queue_token(id).await? {
                Some(token) => (token, self.key(format_args!("qqlog:{id}"))),
                None => return Ok(Vec::new()),
            },
        };
        let (kind, after_us, after_key) = match after {
            After::Start => ("start", String::new(), String::new()),
            After::Time(us) => ("time", us.to_string(), String::new()),
            After::Message { created_us, key } => ("message", created_us.to_string(), key.clone()),
        };
        let args = [
            self.prefix.clone(),
            token,
            listing,
            kind.to_owned(),
            after_us,
            after_key,
            limit.to_string(),
        ];
        let records: Vec<String> = self.script(&LIST, &[], &args).await?;
        records
            .iter()
            .map(|r| record(r).map(|(message, _)| message))
            .collect()
    }
}
