//! The `Contexts` concern on Redis (VPush contexts): a hash per context and, per app, a
//! sorted set of context ids by creation time for the listing; both written by one script
//! that refuses an id the app already has.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{RedisStore, created};
use crate::ids::{AppId, ChannelName};
use crate::store::contexts::{Context, Contexts, MAX_CONTEXTS};
use crate::store::{StoreError, StoreResult};

/// KEYS: the context's hash, the app's listing. ARGV: id, created_us, name ('' for none,
/// with ARGV[4] = '1' when there is a name).
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'created_us', ARGV[2])
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'name', ARGV[3]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
",
    )
});

impl RedisStore {
    fn context_key(&self, app: &AppId, id: &str) -> String {
        self.key(format_args!("context:{app}:{id}"))
    }
}

#[async_trait]
impl Contexts for RedisStore {
    async fn create_context(&self, app: &AppId, context: &Context) -> StoreResult<()> {
        let keys = [
            self.context_key(app, context.id.as_str()),
            self.key(format_args!("contexts:{app}")),
        ];
        let args = [
            context.id.as_str().to_owned(),
            context.created_us.to_string(),
            context.name.clone().unwrap_or_default(),
            if context.name.is_some() { "1" } else { "0" }.to_owned(),
        ];
        let reply = self.script(&CREATE, &keys, &args).await?;
        created(reply, "context", context.id.as_str())
    }

    async fn context(&self, app: &AppId, id: &ChannelName) -> StoreResult<Option<Context>> {
        let key = self.context_key(app, id.as_str());
        let (name, created): (Option<String>, Option<i64>) = self
            .query(redis::cmd("HMGET").arg(&key).arg("name").arg("created_us"))
            .await?;
        Ok(created.map(|created_us| Context {
            id: id.clone(),
            name,
            created_us,
        }))
    }

    async fn contexts(&self, app: &AppId) -> StoreResult<Vec<Context>> {
        // Ties in creation time are ordered by id, as ZRANGE orders equal scores.
        let listing = self.key(format_args!("contexts:{app}"));
        let ids: Vec<String> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(&listing)
                    .arg(0)
                    .arg(MAX_CONTEXTS as i64 - 1),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.context_key(app, id))
                .arg("name")
                .arg("created_us");
        }
        let rows: Vec<(Option<String>, Option<i64>)> = self.pipe(&pipe).await?;
        let mut contexts = Vec::with_capacity(ids.len());
        for (id, (name, created)) in ids.into_iter().zip(rows) {
            let id = ChannelName::parse(id)
                .map_err(|e| StoreError::Internal(format!("context id: {e}")))?;
            if let Some(created_us) = created {
                contexts.push(Context {
                    id,
                    name,
                    created_us,
                });
            }
        }
        Ok(contexts)
    }
}
