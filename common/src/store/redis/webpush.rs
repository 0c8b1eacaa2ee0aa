//! The `WebPush` concern on Redis: the app's VAPID pair kept by the first writer
//! (`SET NX`), a hash of subscriptions per user (registration is one script: same endpoint
//! → that subscription, else refused at `MAX_SUBSCRIPTIONS`), and the push queue as one
//! hash per job plus sixteen sorted sets of job ids by their next claimable time (due, or
//! the end of a lease), chosen by the job id's first hex digit so no single key takes every
//! write. A claim is one script that re-scores what it takes to the lease's end.
//!
//! Keys (after the prefix; a user id is always last):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `vapid:<app>` | string | `<private> <public>` (base64url) |
//! | `webpush:<app>:<user>` | hash | subscription id → JSON `{endpoint, p256dh, auth, created_us}` (the time as a string) |
//! | `push:<id>` | hash | `app`, `user` (empty for a bucket message), `message_id`, `attempts` |
//! | `push_due:<0-f>` | zset | job ids by next claimable time, µs |

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;
use serde::{Deserialize, Serialize};

use super::RedisStore;
use crate::ids::{AppId, UserId};
use crate::store::webpush::{Added, MAX_SUBSCRIPTIONS, PushJob, PushSubscription, WebPush};
use crate::store::{StoreError, StoreResult};

/// The due sets' suffixes: the first hex digit of a job id.
const SHARDS: &str = "0123456789abcdef";

/// A subscription as stored in the user's hash. The time is a string: the registration
/// script rewrites the JSON with Lua's cjson, which would print a µs timestamp as a
/// 14-digit float.
#[derive(Serialize, Deserialize)]
struct Stored {
    endpoint: String,
    p256dh: String,
    auth: String,
    created_us: String,
}

/// KEYS: the user's hash. ARGV: id, the new subscription's JSON, endpoint, p256dh, auth,
/// most allowed. Reply: {'existing', id, json} | {'new'} | {'full'}.
static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local s = cjson.decode(all[i + 1])
  if s.endpoint == ARGV[3] then
    s.p256dh, s.auth = ARGV[4], ARGV[5]
    local json = cjson.encode(s)
    redis.call('HSET', KEYS[1], all[i], json)
    return {'existing', all[i], json}
  end
end
if #all / 2 >= tonumber(ARGV[6]) then return {'full'} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'new'}
",
    )
});

/// ARGV: P, now_us, lease end µs, limit. Per claimed job: {id, app, user, message_id,
/// attempts}.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local P, now, until_us, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
for shard in string.gmatch('0123456789abcdef', '.') do
  if #out >= limit then break end
  local due = P .. 'push_due:' .. shard
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit - #out)) do
    local j = redis.call('HMGET', P .. 'push:' .. id, 'app', 'user', 'message_id', 'attempts')
    if j[1] then
      redis.call('ZADD', due, until_us, id)
      out[#out + 1] = {id, j[1], j[2], j[3], j[4]}
    else
      redis.call('ZREM', due, id)
    end
  end
end
return out
",
    )
});

/// KEYS: the job's hash, its due set. ARGV: id, due µs.
static RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
",
    )
});

fn bad(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("web push {what}: {detail}"))
}

impl RedisStore {
    fn subscriptions_key(&self, app: &AppId, user: &UserId) -> String {
        self.key(format_args!("webpush:{app}:{}", user.as_str()))
    }

    fn job_key(&self, id: &str) -> String {
        self.key(format_args!("push:{id}"))
    }

    /// The due set of job `id`.
    fn due_key(&self, id: &str) -> String {
        let shard = id
            .chars()
            .next()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| SHARDS.contains(*c))
            .unwrap_or('0');
        self.key(format_args!("push_due:{shard}"))
    }
}

fn subscription(
    app: &AppId,
    user: &UserId,
    id: String,
    json: &str,
) -> StoreResult<PushSubscription> {
    let s: Stored = serde_json::from_str(json).map_err(|e| bad("subscription", e))?;
    Ok(PushSubscription {
        id,
        app: app.clone(),
        user: user.clone(),
        endpoint: s.endpoint,
        p256dh: s.p256dh,
        auth: s.auth,
        created_us: s
            .created_us
            .parse()
            .map_err(|_| bad("subscription created_us", &s.created_us))?,
    })
}

#[async_trait]
impl WebPush for RedisStore {
    async fn vapid_key(
        &self,
        app: &AppId,
        candidate: (String, String),
    ) -> StoreResult<(String, String)> {
        let key = self.key(format_args!("vapid:{app}"));
        let value = format!("{} {}", candidate.0, candidate.1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(&value)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key);
        let (stored,): (String,) = self.pipe(&pipe).await?;
        match stored.split_once(' ') {
            Some((private, public)) => Ok((private.to_owned(), public.to_owned())),
            None => Err(bad("vapid key", "not a pair")),
        }
    }

    async fn add_subscription(&self, s: &PushSubscription) -> StoreResult<Added> {
        let json = serde_json::to_string(&Stored {
            endpoint: s.endpoint.clone(),
            p256dh: s.p256dh.clone(),
            auth: s.auth.clone(),
            created_us: s.created_us.to_string(),
        })
        .map_err(|e| bad("subscription", e))?;
        let keys = [self.subscriptions_key(&s.app, &s.user)];
        let args = [
            s.id.clone(),
            json,
            s.endpoint.clone(),
            s.p256dh.clone(),
            s.auth.clone(),
            MAX_SUBSCRIPTIONS.to_string(),
        ];
        let reply: Vec<String> = self.script(&ADD, &keys, &args).await?;
        match reply.as_slice() {
            [tag] if tag == "new" => Ok(Added::New(s.clone())),
            [tag] if tag == "full" => Ok(Added::Full),
            [tag, id, json] if tag == "existing" => Ok(Added::Existing(subscription(
                &s.app,
                &s.user,
                id.clone(),
                json,
            )?)),
            other => Err(bad("add reply", format!("{other:?}"))),
        }
    }

    async fn subscriptions(
        &self,
        app: &AppId,
        user: &UserId,
    ) -> StoreResult<Vec<PushSubscription>> {
        let all: Vec<(String, String)> = self
            .query(redis::cmd("HGETALL").arg(self.subscriptions_key(app, user)))
            .await?;
        let mut out = all
            .into_iter()
            .map(|(id, json)| subscription(app, user, id, &json))
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by(|a, b| (a.created_us, &a.id).cmp(&(b.created_us, &b.id)));
        Ok(out)
    }

    async fn remove_subscription(&self, app: &AppId, user: &UserId, id: &str) -> StoreResult<bool> {
        let removed: i64 = self
            .query(
                redis::cmd("HDEL")
                    .arg(self.subscriptions_key(app, user))
                    .arg(id),
            )
            .await?;
        Ok(removed > 0)
    }

    async fn subscribed(&self, app: &AppId, users: &[UserId]) -> StoreResult<Vec<bool>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("EXISTS").arg(self.subscriptions_key(app, user));
        }
        let found: Vec<i64> = self.pipe(&pipe).await?;
        Ok(found.into_iter().map(|n| n > 0).collect())
    }

    async fn enqueue_pushes(&self, jobs: &[PushJob], due_us: i64) -> StoreResult<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for j in jobs {
            pipe.cmd("HSET")
                .arg(self.job_key(&j.id))
                .arg("app")
                .arg(j.app.as_str())
                .arg("user")
                .arg(j.user.as_ref().map_or("", UserId::as_str))
                .arg("message_id")
                .arg(&j.message_id)
                .arg("attempts")
                .arg(j.attempts)
                .ignore()
                .cmd("ZADD")
                .arg(self.due_key(&j.id))
                .arg("NX")
                .arg(due_us)
                .arg(&j.id)
                .ignore();
        }
        self.pipe::<()>(&pipe).await
    }

    async fn claim_pushes(
        &self,
        now_us: i64,
        lease_us: i64,
        limit: usize,
    ) -> StoreResult<Vec<PushJob>> {
        let args = [
            self.prefix.clone(),
            now_us.to_string(),
            now_us.saturating_add(lease_us).to_string(),
            limit.to_string(),
        ];
        let replies: Vec<(String, String, String, String, u32)> =
            self.script(&CLAIM, &[], &args).await?;
        replies
            .into_iter()
            .map(|(id, app, user, message_id, attempts)| {
                Ok(PushJob {
                    id,
                    app: AppId::parse(app).map_err(|e| bad("job app", e))?,
                    user: if user.is_empty() {
                        None
                    } else {
                        Some(UserId::parse(user).map_err(|e| bad("job user", e))?)
                    },
                    message_id,
                    attempts,
                })
            })
            .collect()
    }

    async fn retry_push(&self, id: &str, due_us: i64) -> StoreResult<()> {
        let keys = [self.job_key(id), self.due_key(id)];
        let args = [id.to_owned(), due_us.to_string()];
        let _: i64 = self.script(&RETRY, &keys, &args).await?;
        Ok(())
    }

    async fn finish_push(&self, id: &str) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.job_key(id))
            .ignore()
            .cmd("ZREM")
            .arg(self.due_key(id))
            .arg(id)
            .ignore();
        self.pipe::<()>(&pipe).await
    }
}
