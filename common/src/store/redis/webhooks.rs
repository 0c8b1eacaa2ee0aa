//! The `Webhooks` concern on Redis: each app's webhook hash (configuration, lease,
//! backoff, counters) and its outbox. `record_event` (Lua, in `OUTBOX_LIB`) appends an
//! event only if the app's webhook wants its kind, and is called by the very script that
//! makes the change it reports (a message's creation or transition), so the event and the
//! change are one atomic step. A claim checks and takes the lease in one script, so two
//! dispatchers never hold one app.
//!
//! Keys (after the prefix):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `webhook:<app>` | hash | `url`, `secret`, `events` (`,sent,delivered,`), `max_batch`, `max_delay_ms`, `updated_us`, `lease_holder`, `lease_until_us`, `next_attempt_us`, `failures`, `last_error`, `last_attempt_us`, `last_success_us`, `dropped`, `seq` (the outbox's last sequence number) |
//! | `outbox:<app>` | zset | event ids by sequence number, oldest first |
//! | `outbox_events:<app>` | hash | event id → the event as JSON (all values strings) |
//! | `webhook_apps` | set | apps with a webhook: what a claim looks through (written only by configuration) |

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;
use serde::Deserialize;

use super::RedisStore;
use crate::ids::{AppId, UserId};
use crate::store::{
    Batch, BatchFormat, BatchOutcome, EventKind, OutboxLimits, StoreError, StoreResult, Webhook,
    WebhookEvent, WebhookState, Webhooks,
};

/// Lua for the outbox, shared with the `Messages` scripts. Optional arguments are encoded
/// `-` (none) or `+<value>`.
pub(super) const OUTBOX_LIB: &str = r"
local function d(n) return string.format('%d', n) end
local function opt(v) if v == '-' then return nil end return string.sub(v, 2) end
-- Appends an event to `app`'s outbox if its webhook wants `kind`; 1 if it did.
local function record_event(P, app, id, kind, message, foreign, recipient, at, recorded)
  local hook = P .. 'webhook:' .. app
  local events = redis.call('HGET', hook, 'events')
  if not events or not string.find(events, ',' .. kind .. ',', 1, true) then return 0 end
  local seq = redis.call('HINCRBY', hook, 'seq', 1)
  redis.call('ZADD', P .. 'outbox:' .. app, seq, id)
  local e = {id = id, kind = kind, at = at, recorded = recorded}
  e.message, e.foreign, e.recipient = message, foreign, recipient
  redis.call('HSET', P .. 'outbox_events:' .. app, id, cjson.encode(e))
  return 1
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{OUTBOX_LIB}\n{body}"))
}

/// ARGV: P, app, url, secret, events, max_batch, max_delay_ms, updated_us, format ('' for
/// Herald's).
static PUT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, app, url, secret, events, max_batch, max_delay, updated, format = unpack(ARGV)
local hook = P .. 'webhook:' .. app
redis.call('HSET', hook, 'url', url, 'secret', secret, 'events', events, 'max_batch', max_batch,
  'max_delay_ms', max_delay, 'updated_us', updated, 'next_attempt_us', 0, 'format', format)
for _, f in ipairs({'lease_until_us', 'failures', 'dropped', 'seq'}) do
  redis.call('HSETNX', hook, f, 0)
end
redis.call('SADD', P .. 'webhook_apps', app)
return 1
",
    )
});

/// ARGV: P, app. 1 if there was a webhook.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, app = unpack(ARGV)
redis.call('SREM', P .. 'webhook_apps', app)
redis.call('DEL', P .. 'outbox:' .. app, P .. 'outbox_events:' .. app)
return redis.call('DEL', P .. 'webhook:' .. app)
",
    )
});

/// ARGV: P, recorded_us, then per event 7 values: app, id, kind, message, foreign,
/// recipient (optional encoding), at_us. How many were kept.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, recorded = ARGV[1], ARGV[2]
local kept = 0
for i = 3, #ARGV, 7 do
  kept = kept + record_event(P, ARGV[i], ARGV[i + 1], ARGV[i + 2], opt(ARGV[i + 3]),
    opt(ARGV[i + 4]), opt(ARGV[i + 5]), ARGV[i + 6], recorded)
end
return kept
",
    )
});

/// ARGV: P. Events in every app's outbox together.
static DEPTH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P = ARGV[1]
local depth = 0
for _, app in ipairs(redis.call('SMEMBERS', P .. 'webhook_apps')) do
  depth = depth + redis.call('ZCARD', P .. 'outbox:' .. app)
end
return depth
",
    )
});

/// ARGV: P, holder, now_us, lease_us, max_age_us, max_pending. The first app (by
/// next attempt) whose batch is due and free: {app, failures, event JSON…} with its lease
/// taken; {} when none is.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, holder, now, lease, max_age, max_pending = unpack(ARGV)
now, lease, max_age, max_pending = tonumber(now), tonumber(lease), tonumber(max_age),
  tonumber(max_pending)
local function oldest_recorded(app)
  local first = redis.call('ZRANGE', P .. 'outbox:' .. app, 0, 0)[1]
  if not first then return nil end
  return tonumber(cjson.decode(redis.call('HGET', P .. 'outbox_events:' .. app, first)).recorded)
end
local function drop(app, ids)
  if #ids == 0 then return 0 end
  redis.call('ZREM', P .. 'outbox:' .. app, unpack(ids))
  redis.call('HDEL', P .. 'outbox_events:' .. app, unpack(ids))
  return #ids
end
-- Drops events older than the retry window, then the oldest beyond max_pending; counted.
local function drop_overflow(app)
  local outbox = P .. 'outbox:' .. app
  local dropped = 0
  while true do
    local ids, old = redis.call('ZRANGE', outbox, 0, 99), {}
    for _, id in ipairs(ids) do
      local e = redis.call('HGET', P .. 'outbox_events:' .. app, id)
      if e and tonumber(cjson.decode(e).recorded) >= now - max_age then break end
      old[#old + 1] = id
    end
    dropped = dropped + drop(app, old)
    if #old < 100 then break end
  end
  local over = redis.call('ZCARD', outbox) - max_pending
  while over > 0 do
    local n = drop(app, redis.call('ZRANGE', outbox, 0, math.min(over, 1000) - 1))
    dropped, over = dropped + n, over - n
  end
  if dropped > 0 then redis.call('HINCRBY', P .. 'webhook:' .. app, 'dropped', dropped) end
end
local candidates = {}
for _, app in ipairs(redis.call('SMEMBERS', P .. 'webhook_apps')) do
  local w = redis.call('HMGET', P .. 'webhook:' .. app, 'lease_until_us', 'next_attempt_us',
    'failures', 'max_batch', 'max_delay_ms')
  if w[1] and tonumber(w[1]) <= now and tonumber(w[2]) <= now
     and redis.call('ZCARD', P .. 'outbox:' .. app) > 0 then
    candidates[#candidates + 1] = {app = app, next = tonumber(w[2]), failures = tonumber(w[3]),
      max_batch = tonumber(w[4]), max_delay = tonumber(w[5])}
  end
end
table.sort(candidates, function(a, b)
  if a.next ~= b.next then return a.next < b.next end
  return a.app < b.app
end)
for _, c in ipairs(candidates) do
  local outbox = P .. 'outbox:' .. c.app
  local due = c.failures > 0 or redis.call('ZCARD', outbox) >= c.max_batch
  if not due then
    local recorded = oldest_recorded(c.app)
    due = recorded ~= nil and recorded <= now - c.max_delay * 1000
  end
  if due then
    if c.failures > 0 then drop_overflow(c.app) end
    local ids = redis.call('ZRANGE', outbox, 0, c.max_batch - 1)
    if #ids > 0 then
      redis.call('HSET', P .. 'webhook:' .. c.app, 'lease_holder', holder,
        'lease_until_us', d(now + lease))
      local out = {c.app, d(c.failures)}
      for _, e in ipairs(redis.call('HMGET', P .. 'outbox_events:' .. c.app, unpack(ids))) do
        out[#out + 1] = e
      end
      return out
    end
  end
end
return {}
",
    )
});

/// ARGV: P, app, holder, now_us, outcome ('sent' | 'failed'), error, retry_at_us, ids….
/// 1 if `holder` still held the lease.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, app, holder, now, outcome, err, retry_at = unpack(ARGV, 1, 7)
local hook = P .. 'webhook:' .. app
local held = redis.call('HGET', hook, 'lease_holder') == holder
if outcome == 'sent' then
  for i = 8, #ARGV do
    redis.call('ZREM', P .. 'outbox:' .. app, ARGV[i])
    redis.call('HDEL', P .. 'outbox_events:' .. app, ARGV[i])
  end
  if redis.call('EXISTS', hook) == 1 then
    redis.call('HSET', hook, 'failures', 0, 'last_attempt_us', now, 'last_success_us', now,
      'next_attempt_us', 0)
  end
elseif held then
  redis.call('HINCRBY', hook, 'failures', 1)
  redis.call('HSET', hook, 'last_error', err, 'last_attempt_us', now, 'next_attempt_us', retry_at)
end
if held then
  redis.call('HDEL', hook, 'lease_holder')
  redis.call('HSET', hook, 'lease_until_us', 0)
  return 1
end
return 0
",
    )
});

/// `-` for none, `+<value>` for a value: how optional arguments reach the scripts.
pub(super) fn optional(value: Option<&str>) -> String {
    match value {
        None => "-".into(),
        Some(v) => format!("+{v}"),
    }
}

/// An outbox entry as the scripts store it.
#[derive(Deserialize)]
struct StoredEvent {
    id: String,
    kind: String,
    message: Option<String>,
    foreign: Option<String>,
    recipient: Option<String>,
    at: String,
}

fn bad(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("webhook {what}: {detail}"))
}

fn event(app: &AppId, json: &str) -> StoreResult<WebhookEvent> {
    let e: StoredEvent = serde_json::from_str(json).map_err(|e| bad("event", e))?;
    Ok(WebhookEvent {
        id: e.id,
        app: app.clone(),
        kind: EventKind::parse(&e.kind).ok_or_else(|| bad("event kind", &e.kind))?,
        message_id: e.message,
        foreign_id: e.foreign,
        recipient: e
            .recipient
            .map(UserId::parse)
            .transpose()
            .map_err(|e| bad("recipient", e))?,
        at_us: e.at.parse().map_err(|_| bad("event time", &e.at))?,
    })
}

/// The webhook and its state from its hash's fields.
fn webhook_of(
    app: &AppId,
    mut f: HashMap<String, String>,
    pending: u64,
) -> StoreResult<(Webhook, WebhookState)> {
    let mut take = |name: &str| f.remove(name);
    let mut int = |name: &str| -> StoreResult<Option<i64>> {
        take(name)
            .map(|v| v.parse::<i64>().map_err(|_| bad(name, v)))
            .transpose()
    };
    let max_batch = int("max_batch")?.unwrap_or(0);
    let max_delay_ms = int("max_delay_ms")?.unwrap_or(0);
    let updated_us = int("updated_us")?.unwrap_or(0);
    let failures = int("failures")?.unwrap_or(0);
    let last_attempt_us = int("last_attempt_us")?;
    let last_success_us = int("last_success_us")?;
    let next_attempt_us = int("next_attempt_us")?.unwrap_or(0);
    let dropped = int("dropped")?.unwrap_or(0);
    let events = f.remove("events").unwrap_or_default();
    let webhook = Webhook {
        app: app.clone(),
        url: f.remove("url").unwrap_or_default(),
        secret: f.remove("secret").unwrap_or_default(),
        events: events
            .split(',')
            .filter(|k| !k.is_empty())
            .map(|k| EventKind::parse(k).ok_or_else(|| bad("events", k)))
            .collect::<StoreResult<_>>()?,
        max_batch: u32::try_from(max_batch).map_err(|e| bad("max_batch", e))?,
        max_delay_ms: max_delay_ms.max(0).unsigned_abs(),
        updated_us,
        format: {
            let text = f.remove("format");
            BatchFormat::from_stored(text.as_deref())
                .ok_or_else(|| bad("format", text.unwrap_or_default()))?
        },
    };
    let state = WebhookState {
        pending,
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        last_error: f.remove("last_error"),
        last_attempt_us,
        last_success_us,
        next_attempt_us,
        dropped: dropped.max(0).unsigned_abs(),
    };
    Ok((webhook, state))
}

#[async_trait]
impl Webhooks for RedisStore {
    async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        let w = webhook;
        let mut events = String::from(",");
        for kind in &w.events {
            events.push_str(kind.as_str());
            events.push(',');
        }
        let args = [
            self.prefix.clone(),
            w.app.to_string(),
            w.url.clone(),
            w.secret.clone(),
            events,
            w.max_batch.to_string(),
            w.max_delay_ms.to_string(),
            w.updated_us.to_string(),
            w.format.to_stored().unwrap_or_default(),
        ];
        self.script::<i64>(&PUT, &[], &args).await.map(drop)
    }

    async fn webhook(&self, app: &AppId) -> StoreResult<Option<(Webhook, WebhookState)>> {
        let hook = self.key(format_args!("webhook:{app}"));
        let outbox = self.key(format_args!("outbox:{app}"));
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(&hook).cmd("ZCARD").arg(&outbox);
        let (fields, pending): (HashMap<String, String>, u64) = self.pipe(&pipe).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        webhook_of(app, fields, pending).map(Some)
    }

    async fn delete_webhook(&self, app: &AppId) -> StoreResult<bool> {
        let args = [self.prefix.clone(), app.to_string()];
        let deleted: i64 = self.script(&DELETE, &[], &args).await?;
        Ok(deleted == 1)
    }

    async fn record_events(&self, events: &[WebhookEvent]) -> StoreResult<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut args = vec![self.prefix.clone(), crate::clock::now_us().to_string()];
        for e in events {
            args.extend([
                e.app.to_string(),
                e.id.clone(),
                e.kind.as_str().to_owned(),
                optional(e.message_id.as_deref()),
                optional(e.foreign_id.as_deref()),
                optional(e.recipient.as_ref().map(UserId::as_str)),
                e.at_us.to_string(),
            ]);
        }
        self.script(&RECORD, &[], &args).await
    }

    async fn outbox_depth(&self) -> StoreResult<u64> {
        self.script(&DEPTH, &[], std::slice::from_ref(&self.prefix))
            .await
    }

    async fn claim_batch(
        &self,
        holder: &str,
        now_us: i64,
        limits: OutboxLimits,
    ) -> StoreResult<Option<Batch>> {
        let args = [
            self.prefix.clone(),
            holder.to_owned(),
            now_us.to_string(),
            limits.lease_us.to_string(),
            limits.max_age_us.to_string(),
            limits.max_pending.to_string(),
        ];
        let reply: Vec<String> = self.script(&CLAIM, &[], &args).await?;
        let [app, failures, events @ ..] = reply.as_slice() else {
            return Ok(None);
        };
        let app = AppId::parse(app.as_str()).map_err(|e| bad("app", e))?;
        let Some((webhook, _)) = self.webhook(&app).await? else {
            return Ok(None);
        };
        Ok(Some(Batch {
            webhook,
            events: events
                .iter()
                .map(|e| event(&app, e))
                .collect::<StoreResult<_>>()?,
            failures: failures.parse().map_err(|_| bad("failures", failures))?,
        }))
    }

    async fn settle_batch(
        &self,
        app: &AppId,
        holder: &str,
        ids: &[String],
        outcome: BatchOutcome,
        now_us: i64,
    ) -> StoreResult<bool> {
        let (kind, error, retry_at) = match outcome {
            BatchOutcome::Sent => ("sent", String::new(), String::new()),
            BatchOutcome::Failed { error, retry_at_us } => {
                ("failed", error, retry_at_us.to_string())
            }
        };
        let mut args = vec![
            self.prefix.clone(),
            app.to_string(),
            holder.to_owned(),
            now_us.to_string(),
            kind.to_owned(),
            error,
            retry_at,
        ];
        args.extend(ids.iter().cloned());
        let held: i64 = self.script(&SETTLE, &[], &args).await?;
        Ok(held == 1)
    }
}
