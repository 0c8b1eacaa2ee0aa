//! The `Templates` concern on Redis: one hash per template (`content` as the exact JSON
//! text, `ttl`, `created_us`); created only if absent, in one script.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{RedisStore, created};
use crate::ids::AppId;
use crate::message::JsonText;
use crate::store::StoreResult;
use crate::store::templates::{Template, Templates};

static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'content', ARGV[1], 'created_us', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'ttl', ARGV[3]) end
return 1
",
    )
});

#[async_trait]
impl Templates for RedisStore {
    async fn create_template(&self, app: &AppId, template: &Template) -> StoreResult<()> {
        let key = self.key(format_args!("template:{app}:{}", template.id));
        let args = [
            template.content.text().to_owned(),
            template.created_us.to_string(),
            template.ttl.map(|t| t.to_string()).unwrap_or_default(),
        ];
        let reply = self.script(&CREATE, &[key], &args).await?;
        created(reply, "template", &template.id)
    }

    async fn template(&self, app: &AppId, id: &str) -> StoreResult<Option<Template>> {
        let key = self.key(format_args!("template:{app}:{id}"));
        let (content, ttl, created): (Option<String>, Option<u64>, Option<i64>) = self
            .query(
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("content")
                    .arg("ttl")
                    .arg("created_us"),
            )
            .await?;
        Ok(content.zip(created).map(|(content, created_us)| Template {
            id: id.to_owned(),
            content: JsonText::stored(content),
            ttl,
            created_us,
        }))
    }

    async fn delete_template(&self, app: &AppId, id: &str) -> StoreResult<bool> {
        let key = self.key(format_args!("template:{app}:{id}"));
        let deleted: u64 = self.query(redis::cmd("DEL").arg(&key)).await?;
        Ok(deleted == 1)
    }
}
