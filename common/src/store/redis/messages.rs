//! The `Messages` concern on Redis: one hash per addressed message, at its offset of the
//! recipient's inbox stream (`i/<app>/<user>`). Creating a message and each status
//! transition is one script that also writes the webhook event (`sent`, `delivered`,
//! `cancelled`, `expired`) through `record_event`, and a transition happens only from
//! `PENDING` (and to `DELIVERED` only while unexpired), so racing writers make it once.
//!
//! Keys (after the prefix; message ids are hex, a user id is always last):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `msg:<app>:<id>` | hash | `recipient`, `offset`, `foreign_id`, `kind` (`text`/`data`), `body`, `topic`, `status`, `created_us`, `expires_us`, `delivered_us`, `delivered_via` (`websocket`/`webpush`), `cancelled_us`, `expired_us`, `global_message_id`, `bucket` (absent fields are none) |
//! | `stream:i/<app>/<user>` | hash | the inbox stream's `epoch`, `head`, `last_us`, `active` |
//! | `inbox:<app>:<user>` | zset | message ids by inbox offset |
//! | `msgs:<app>` | zset | message ids by creation time: the app's listing (ties by id) |
//! | `msgs_to:<app>:<user>` | zset | the same for one recipient |
//! | `msgs_global:<app>:<broadcast>` | zset | the same for one broadcast |
//! | `expiring:<app>` | zset | `PENDING` messages with an expiry, by expiry |
//! | `expiring_apps` | set | apps that have had expiring messages: what the sweep visits |

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::webhooks::{OUTBOX_LIB, optional};
use super::{Fields, RedisStore};
use crate::ids::{AppId, UserId};
use crate::message::JsonText;
use crate::store::{
    AddressedMessage, ListCursor, MessageBody, MessageFilter, MessageStatus, Messages, StoreError,
    StoreResult, Transition, Via,
};
use crate::stream::{Position, new_epoch};

/// Lua shared by the message scripts (after `OUTBOX_LIB`).
const LIB: &str = r"
local function msg_key(P, app, id) return P .. 'msg:' .. app .. ':' .. id end
-- {code, field, value, …}: code '0' no such message, '1' refused, '2' done.
local function reply(code, key)
  local out = {code}
  for _, v in ipairs(redis.call('HGETALL', key)) do out[#out + 1] = v end
  return out
end
local COLUMN = {DELIVERED = 'delivered_us', CANCELLED = 'cancelled_us', EXPIRED = 'expired_us'}
local EVENT = {DELIVERED = 'delivered', CANCELLED = 'cancelled', EXPIRED = 'expired'}
-- The id of message `id`'s webhook event `kind`: each happens once per message, so a hash
-- of the two is unique (and the same if a script is retried).
local function event_id(app, id, kind)
  return string.sub(redis.sha1hex(app .. ':' .. id .. ':' .. kind), 1, 32)
end
-- Records message `id`'s event `kind` for its app's webhook, and for the callback of the
-- PushPushGo bucket that sent it (the webhook of app 'ppg.<bucket>'), if one did.
local function message_event(P, app, id, kind, foreign, user, bucket, at)
  record_event(P, app, event_id(app, id, kind), kind, id, foreign, user, at, at)
  if bucket then
    local callback = 'ppg.' .. bucket
    record_event(P, callback, event_id(callback, id, kind), kind, id, foreign, user, at, at)
  end
end
-- Moves message `id` from PENDING to `to` at `at` (DELIVERED only while unexpired, and
-- then `via` a channel), recording its webhook event.
local function transition(P, app, id, to, at, via)
  local key = msg_key(P, app, id)
  local m = redis.call('HMGET', key, 'status', 'expires_us', 'foreign_id', 'recipient', 'bucket')
  if not m[1] then return {'0'} end
  -- This very transition ran before (a retry after the reply was lost): done.
  if m[1] == to and redis.call('HGET', key, COLUMN[to]) == at then return reply('2', key) end
  if m[1] ~= 'PENDING' or (to == 'DELIVERED' and m[2] and tonumber(m[2]) <= tonumber(at)) then
    return reply('1', key)
  end
  redis.call('HSET', key, 'status', to, COLUMN[to], at)
  if to == 'DELIVERED' then redis.call('HSET', key, 'delivered_via', via) end
  redis.call('ZREM', P .. 'expiring:' .. app, id)
  message_event(P, app, id, EVENT[to], m[3] or nil, m[4], m[5] or nil, at)
  return reply('2', key)
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{OUTBOX_LIB}\n{LIB}\n{body}"))
}

/// Values per message in `CREATE`'s arguments.
const CREATE_STRIDE: usize = 11;

/// ARGV: P, missing_only ('1' skips ids the app has), new epoch, then per message:
/// app, id, recipient, foreign_id, kind, body, topic, created_us, expires_us,
/// global_message_id, bucket (optional encoding where optional). Per message {epoch,
/// offset}, or {} when skipped.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, missing_only, new_epoch = ARGV[1], ARGV[2] == '1', ARGV[3]
local out = {}
for i = 4, #ARGV, 11 do
  local app, id, user, foreign, kind, body, topic, created, expires, global, bucket =
    unpack(ARGV, i, i + 10)
  local key = msg_key(P, app, id)
  local existing = redis.call('HGET', key, 'offset')
  if existing and missing_only then
    out[#out + 1] = {}
  elseif existing then
    -- Created before (a retry after the reply was lost): the same position.
    local epoch = redis.call('HGET', P .. 'stream:i/' .. app .. '/' .. user, 'epoch')
    out[#out + 1] = {epoch, existing}
  else
    local meta = P .. 'stream:i/' .. app .. '/' .. user
    if redis.call('EXISTS', meta) == 0 then
      redis.call('HSET', meta, 'epoch', new_epoch, 'head', 0, 'last_us', 0, 'active', 1)
    end
    local s = redis.call('HMGET', meta, 'epoch', 'head', 'last_us')
    local head = tonumber(s[2]) + 1
    redis.call('HSET', meta, 'head', d(head),
      'last_us', d(math.max(tonumber(s[3]) + 1, tonumber(created))))
    redis.call('HSET', key, 'id', id, 'app', app, 'recipient', user, 'offset', d(head),
      'kind', kind, 'body', body, 'status', 'PENDING', 'created_us', created)
    foreign, topic, expires, global = opt(foreign), opt(topic), opt(expires), opt(global)
    bucket = opt(bucket)
    if foreign then redis.call('HSET', key, 'foreign_id', foreign) end
    if bucket then redis.call('HSET', key, 'bucket', bucket) end
    if topic then redis.call('HSET', key, 'topic', topic) end
    if expires then
      redis.call('HSET', key, 'expires_us', expires)
      redis.call('ZADD', P .. 'expiring:' .. app, expires, id)
      redis.call('SADD', P .. 'expiring_apps', app)
    end
    redis.call('ZADD', P .. 'inbox:' .. app .. ':' .. user, d(head), id)
    redis.call('ZADD', P .. 'msgs:' .. app, created, id)
    redis.call('ZADD', P .. 'msgs_to:' .. app .. ':' .. user, created, id)
    if global then
      redis.call('HSET', key, 'global_message_id', global)
      redis.call('ZADD', P .. 'msgs_global:' .. app .. ':' .. global, created, id)
    end
    message_event(P, app, id, 'sent', foreign, user, bucket, created)
    out[#out + 1] = {s[1], d(head)}
  end
end
return out
",
    )
});

/// ARGV: P, app, to, at_us, via (for DELIVERED), then message ids. One `reply` per id.
static TRANSITION: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, app, to, at, via = unpack(ARGV, 1, 5)
local out = {}
for i = 6, #ARGV do
  out[#out + 1] = transition(P, app, ARGV[i], to, at, via)
end
return out
",
    )
});

/// ARGV: P, now_us, limit. The messages moved to EXPIRED ('2' replies), at most `limit`.
static EXPIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
for _, app in ipairs(redis.call('SMEMBERS', P .. 'expiring_apps')) do
  local due = redis.call('ZRANGEBYSCORE', P .. 'expiring:' .. app, '-inf', now,
    'LIMIT', 0, limit - #out)
  for _, id in ipairs(due) do
    local r = transition(P, app, id, 'EXPIRED', now, nil)
    if r[1] == '2' then out[#out + 1] = r else
      redis.call('ZREM', P .. 'expiring:' .. app, id)
    end
  end
  if redis.call('EXISTS', P .. 'expiring:' .. app) == 0 then
    redis.call('SREM', P .. 'expiring_apps', app)
  end
  if #out >= limit then break end
end
return out
",
    )
});

/// ARGV: P, records (the key prefix of the listed hashes: `msg:<app>:`), index (full key), descending ('1': newest first by score then id, after
/// the cursor; '0': ascending by score, after `from`), cursor score, cursor id, limit,
/// then filters: status, topic, recipient, global (optional encoding), created from/to,
/// expires from/to ('' for open). Replies of the matching messages.
pub(super) static LIST: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, records, index, desc, c_score, c_id, limit, status, topic, recipient, global,
  created_from, created_to, expires_from, expires_to = unpack(ARGV)
limit = tonumber(limit)
status, topic, recipient, global = opt(status), opt(topic), opt(recipient), opt(global)
local function within(v, from, to)
  if from == '' and to == '' then return true end
  if not v then return false end
  v = tonumber(v)
  return (from == '' or v >= tonumber(from)) and (to == '' or v <= tonumber(to))
end
local function matches(f)
  return (not status or f.status == status) and (not topic or f.topic == topic)
    and (not recipient or f.recipient == recipient)
    and (not global or f.global_message_id == global)
    and within(f.created_us, created_from, created_to)
    and within(f.expires_us, expires_from, expires_to)
end
local out, skip = {}, 0
while #out < limit do
  local page
  if desc == '1' then
    local top = c_score == '' and '+inf' or c_score
    page = redis.call('ZREVRANGEBYSCORE', index, top, '-inf', 'WITHSCORES', 'LIMIT', skip, 256)
  else
    page = redis.call('ZRANGEBYSCORE', index, '(' .. c_score, '+inf', 'WITHSCORES', 'LIMIT', skip, 256)
  end
  if #page == 0 then break end
  skip = skip + #page / 2
  for i = 1, #page, 2 do
    if #out >= limit then break end
    local id, score = page[i], page[i + 1]
    if desc ~= '1' or c_score == '' or score ~= c_score or id < c_id then
      local key = P .. records .. id
      local flat = redis.call('HGETALL', key)
      local f = {}
      for j = 1, #flat, 2 do f[flat[j]] = flat[j + 1] end
      if f.id and matches(f) then out[#out + 1] = reply('2', key) end
    end
  end
end
return out
",
    )
});

fn bad(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("message {what}: {detail}"))
}

/// A script's reply for one message: its code ('0' none, '1' refused, '2' done) and the
/// message.
fn message_of(app: &AppId, reply: &[String]) -> StoreResult<Option<(u8, u64, AddressedMessage)>> {
    let Some((code, flat)) = reply.split_first() else {
        return Err(bad("reply", "empty"));
    };
    if code == "0" {
        return Ok(None);
    }
    let mut f = Fields::new("message", flat);
    let status = f.take("status").unwrap_or_default();
    let body = f.take("body").unwrap_or_default();
    let recipient = f.take("recipient").unwrap_or_default();
    let offset = f.int("offset")?.unwrap_or(0);
    let message = AddressedMessage {
        id: f.take("id").unwrap_or_default(),
        app: app.clone(),
        recipient: UserId::parse(recipient).map_err(|e| bad("recipient", e))?,
        foreign_id: f.take("foreign_id"),
        body: if f.take("kind").as_deref() == Some("data") {
            MessageBody::Data(JsonText::stored(body))
        } else {
            MessageBody::Text(body)
        },
        topic: f.take("topic"),
        status: MessageStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        created_us: f.int("created_us")?.unwrap_or(0),
        expires_us: f.int("expires_us")?,
        delivered_us: f.int("delivered_us")?,
        delivered_via: match f.take("delivered_via") {
            Some(via) => Some(Via::parse(&via).ok_or_else(|| bad("delivered_via", &via))?),
            None => None,
        },
        cancelled_us: f.int("cancelled_us")?,
        expired_us: f.int("expired_us")?,
        global_message_id: f.take("global_message_id"),
        bucket: f.take("bucket"),
    };
    let code = if code == "2" { 2 } else { 1 };
    Ok(Some((code, offset.max(0).unsigned_abs(), message)))
}

impl RedisStore {
    async fn create(
        &self,
        messages: &[AddressedMessage],
        missing_only: bool,
    ) -> StoreResult<Vec<Option<Position>>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = Vec::with_capacity(3 + messages.len() * CREATE_STRIDE);
        args.extend([
            self.prefix.clone(),
            if missing_only { "1" } else { "0" }.to_owned(),
            new_epoch(),
        ]);
        for m in messages {
            let (kind, body) = match &m.body {
                MessageBody::Text(text) => ("text", text.clone()),
                MessageBody::Data(data) => ("data", data.text().to_owned()),
            };
            args.extend([
                m.app.to_string(),
                m.id.clone(),
                m.recipient.as_str().to_owned(),
                optional(m.foreign_id.as_deref()),
                kind.to_owned(),
                body,
                optional(m.topic.as_deref()),
                m.created_us.to_string(),
                optional(m.expires_us.map(|e| e.to_string()).as_deref()),
                optional(m.global_message_id.as_deref()),
                optional(m.bucket.as_deref()),
            ]);
        }
        let replies: Vec<Vec<String>> = self.script(&CREATE, &[], &args).await?;
        replies
            .into_iter()
            .map(|r| match r.as_slice() {
                [] => Ok(None),
                [epoch, offset] => Ok(Some(Position {
                    epoch: epoch.clone(),
                    offset: offset.parse().map_err(|_| bad("offset", offset))?,
                })),
                other => Err(bad("create reply", format!("{other:?}"))),
            })
            .collect()
    }

    async fn transitions(
        &self,
        app: &AppId,
        ids: &[String],
        to: MessageStatus,
        via: Via,
        at_us: i64,
    ) -> StoreResult<Vec<Option<Transition>>> {
        if to == MessageStatus::Pending {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(
                    self.addressed_message(app, id)
                        .await?
                        .map(Transition::Refused),
                );
            }
            return Ok(out);
        }
        let mut args = vec![
            self.prefix.clone(),
            app.to_string(),
            to.as_str().to_owned(),
            at_us.to_string(),
            via.as_str().to_owned(),
        ];
        args.extend(ids.iter().cloned());
        let replies: Vec<Vec<String>> = self.script(&TRANSITION, &[], &args).await?;
        replies
            .into_iter()
            .map(|reply| {
                Ok(message_of(app, &reply)?.map(|(code, _, m)| {
                    if code == 2 {
                        Transition::Done(m)
                    } else {
                        Transition::Refused(m)
                    }
                }))
            })
            .collect()
    }

    /// Messages of `app` from `index` (see `LIST`), with their ids read back from the
    /// index order.
    async fn listed(
        &self,
        app: &AppId,
        args: Vec<String>,
    ) -> StoreResult<Vec<(u64, AddressedMessage)>> {
        let replies: Vec<Vec<String>> = self.script(&LIST, &[], &args).await?;
        let mut out = Vec::with_capacity(replies.len());
        for reply in replies {
            if let Some((_, offset, m)) = message_of(app, &reply)? {
                out.push((offset, m));
            }
        }
        Ok(out)
    }

    /// The ids of `app`'s messages at inbox offsets after `after` (any status), then the
    /// messages; what `read_stream` replays for an inbox.
    pub(super) async fn inbox_entries(
        &self,
        app: &str,
        user: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, AddressedMessage)>> {
        let app = AppId::parse(app).map_err(|e| bad("app", e))?;
        let args = self.list_args(
            format!("msg:{app}:"),
            self.key(format_args!("inbox:{app}:{user}")),
            false,
            (after.to_string(), String::new()),
            limit,
            &MessageFilter::default(),
        );
        self.listed(&app, args).await
    }

    /// The arguments of `LIST` over the hashes `<records><id>` (after the prefix).
    pub(super) fn list_args(
        &self,
        records: String,
        index: String,
        descending: bool,
        cursor: (String, String),
        limit: usize,
        filter: &MessageFilter,
    ) -> Vec<String> {
        let bound = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        vec![
            self.prefix.clone(),
            records,
            index,
            if descending { "1" } else { "0" }.to_owned(),
            cursor.0,
            cursor.1,
            limit.to_string(),
            optional(filter.status.map(MessageStatus::as_str)),
            optional(filter.topic.as_deref()),
            optional(filter.recipient.as_ref().map(UserId::as_str)),
            optional(filter.global_message_id.as_deref()),
            bound(filter.created.0),
            bound(filter.created.1),
            bound(filter.expires.0),
            bound(filter.expires.1),
        ]
    }
}

#[async_trait]
impl Messages for RedisStore {
    async fn create_messages(&self, messages: &[AddressedMessage]) -> StoreResult<Vec<Position>> {
        let created = self.create(messages, false).await?;
        created
            .into_iter()
            .map(|p| p.ok_or_else(|| bad("create", "a message was skipped")))
            .collect()
    }

    async fn create_missing_messages(
        &self,
        messages: &[AddressedMessage],
    ) -> StoreResult<Vec<Option<Position>>> {
        self.create(messages, true).await
    }

    async fn addressed_message(
        &self,
        app: &AppId,
        id: &str,
    ) -> StoreResult<Option<AddressedMessage>> {
        let key = self.key(format_args!("msg:{app}:{id}"));
        let flat: Vec<String> = self.query(redis::cmd("HGETALL").arg(&key)).await?;
        if flat.is_empty() {
            return Ok(None);
        }
        let mut reply = vec!["1".to_owned()];
        reply.extend(flat);
        Ok(message_of(app, &reply)?.map(|(_, _, m)| m))
    }

    async fn transition_message(
        &self,
        app: &AppId,
        id: &str,
        to: MessageStatus,
        at_us: i64,
    ) -> StoreResult<Option<Transition>> {
        let mut done = self
            .transitions(
                app,
                std::slice::from_ref(&id.to_owned()),
                to,
                Via::Websocket,
                at_us,
            )
            .await?;
        Ok(done.pop().flatten())
    }

    async fn pending_messages(
        &self,
        app: &AppId,
        recipient: &UserId,
        after: u64,
        limit: usize,
        now_us: i64,
    ) -> StoreResult<Vec<(u64, AddressedMessage)>> {
        let filter = MessageFilter {
            status: Some(MessageStatus::Pending),
            ..MessageFilter::default()
        };
        let args = self.list_args(
            format!("msg:{app}:"),
            self.key(format_args!("inbox:{app}:{recipient}")),
            false,
            (after.to_string(), String::new()),
            limit,
            &filter,
        );
        // Unexpired ones only; an expired one waits for the sweep, which may be behind.
        let mut pending = self.listed(app, args).await?;
        pending.retain(|(_, m)| m.expires_us.is_none_or(|e| e > now_us));
        Ok(pending)
    }

    async fn list_messages(
        &self,
        app: &AppId,
        filter: &MessageFilter,
        cursor: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<Vec<AddressedMessage>> {
        let index = if let Some(global) = &filter.global_message_id {
            self.key(format_args!("msgs_global:{app}:{global}"))
        } else if let Some(user) = &filter.recipient {
            self.key(format_args!("msgs_to:{app}:{user}"))
        } else {
            self.key(format_args!("msgs:{app}"))
        };
        let cursor = cursor
            .map(|c| (c.created_us.to_string(), c.id.clone()))
            .unwrap_or_default();
        let args = self.list_args(format!("msg:{app}:"), index, true, cursor, limit, filter);
        let listed = self.listed(app, args).await?;
        Ok(listed.into_iter().map(|(_, m)| m).collect())
    }

    async fn deliver_messages(
        &self,
        app: &AppId,
        ids: &[String],
        via: Via,
        at_us: i64,
    ) -> StoreResult<Vec<Option<Transition>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.transitions(app, ids, MessageStatus::Delivered, via, at_us)
            .await
    }

    async fn expire_messages(
        &self,
        now_us: i64,
        limit: usize,
    ) -> StoreResult<Vec<AddressedMessage>> {
        let args = [self.prefix.clone(), now_us.to_string(), limit.to_string()];
        let replies: Vec<Vec<String>> = self.script(&EXPIRE, &[], &args).await?;
        replies
            .iter()
            .map(|reply| {
                // The app is a field of the message's hash, as every field is.
                let app = reply
                    .get(1..)
                    .unwrap_or_default()
                    .chunks_exact(2)
                    .find(|kv| kv[0] == "app")
                    .map(|kv| kv[1].as_str())
                    .ok_or_else(|| bad("expire", "a message without its app"))?;
                let app = AppId::parse(app).map_err(|e| bad("app", e))?;
                message_of(&app, reply)?
                    .map(|(_, _, m)| m)
                    .ok_or_else(|| bad("expire", "no message"))
            })
            .collect()
    }
}
