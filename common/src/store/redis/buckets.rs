//! The `Buckets` concern on Redis: one string per record holding its JSON, written once
//! (`SET NX`, so an id is never reused) and kept for a week after the bucket's 24 hours,
//! long enough for notifications shown from it to report their clicks.
//!
//! Keys (after the prefix):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `ppg_bucket:<id>` | string | the bucket's JSON (`common::store::Bucket`) |
//! | `ppg_expiring` | zset | bucket ids by the end of their lifetime (what `prune_buckets` visits; one entry per bucket, written at its creation) |
//! | `ppg_context:<id>` | string | the context's JSON (`common::store::BucketContext`) |
//! | `ppg_message:<id>` | string | a sent message's JSON (`common::store::BucketMessage`), kept a week past its expiry |

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::RedisStore;
use crate::clock::now_us;
use crate::ids::AppId;
use crate::store::buckets::{BUCKET_LIFETIME_US, Bucket, BucketContext, BucketMessage, Buckets};
use crate::store::{StoreError, StoreResult};

/// How long records outlive a bucket's use, ms.
const RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

impl RedisStore {
    /// Writes `record` at `key` unless it exists, expiring `RETENTION_MS` after `until_us`.
    async fn put_once(
        &self,
        key: String,
        record: &impl Serialize,
        until_us: i64,
    ) -> StoreResult<()> {
        let json = serde_json::to_string(record)
            .map_err(|e| StoreError::Internal(format!("bucket record: {e}")))?;
        let expire_at_ms = until_us.div_euclid(1_000).saturating_add(RETENTION_MS);
        let stored: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(json)
                    .arg("NX")
                    .arg("PXAT")
                    .arg(expire_at_ms),
            )
            .await?;
        match stored {
            Some(_) => Ok(()),
            None => Err(StoreError::Internal(format!("{key} already exists"))),
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, key: String) -> StoreResult<Option<T>> {
        let text: Option<String> = self.query(redis::cmd("GET").arg(&key)).await?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Internal(format!("{key}: {e}")))
        })
        .transpose()
    }
}

#[async_trait]
impl Buckets for RedisStore {
    async fn create_bucket(&self, bucket: &Bucket) -> StoreResult<()> {
        let key = self.key(format_args!("ppg_bucket:{}", bucket.id));
        self.put_once(key, bucket, bucket.expires_us).await?;
        self.query::<()>(
            redis::cmd("ZADD")
                .arg(self.key(format_args!("ppg_expiring")))
                .arg(bucket.expires_us)
                .arg(&bucket.id),
        )
        .await
    }

    async fn prune_buckets(&self, before_us: i64, limit: usize) -> StoreResult<Vec<String>> {
        let expiring = self.key(format_args!("ppg_expiring"));
        let ids: Vec<String> = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&expiring)
                    .arg("-inf")
                    .arg(format!("({before_us}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        if ids.is_empty() {
            return Ok(ids);
        }
        // Contexts and messages expire by their own TTLs.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in &ids {
            pipe.cmd("DEL")
                .arg(self.key(format_args!("ppg_bucket:{id}")))
                .ignore()
                .cmd("ZREM")
                .arg(&expiring)
                .arg(id)
                .ignore();
        }
        self.pipe::<()>(&pipe).await?;
        Ok(ids)
    }

    async fn bucket(&self, app: &AppId, id: &str) -> StoreResult<Option<Bucket>> {
        let key = self.key(format_args!("ppg_bucket:{id}"));
        let bucket: Option<Bucket> = self.get_json(key).await?;
        Ok(bucket.filter(|b| &b.app == app))
    }

    async fn create_bucket_context(&self, context: &BucketContext) -> StoreResult<()> {
        let key = self.key(format_args!("ppg_context:{}", context.id));
        // A context lives as long as its bucket can be used, at most.
        let until = context
            .created_us
            .saturating_add(BUCKET_LIFETIME_US)
            .max(now_us());
        self.put_once(key, context, until).await
    }

    async fn bucket_context(&self, id: &str) -> StoreResult<Option<BucketContext>> {
        let key = self.key(format_args!("ppg_context:{id}"));
        self.get_json(key).await
    }

    async fn create_bucket_messages(&self, messages: &[BucketMessage]) -> StoreResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for m in messages {
            let json = serde_json::to_string(m)
                .map_err(|e| StoreError::Internal(format!("bucket message: {e}")))?;
            let expire_at_ms = m.expires_us.div_euclid(1_000).saturating_add(RETENTION_MS);
            pipe.cmd("SET")
                .arg(self.key(format_args!("ppg_message:{}", m.id)))
                .arg(json)
                .arg("PXAT")
                .arg(expire_at_ms)
                .ignore();
        }
        self.pipe::<()>(&pipe).await
    }

    async fn bucket_message(&self, id: &str) -> StoreResult<Option<BucketMessage>> {
        let key = self.key(format_args!("ppg_message:{id}"));
        self.get_json(key).await
    }
}
