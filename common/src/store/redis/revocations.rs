//! The `Revocations` concern on Redis: one sorted set per app, user → the µs before which
//! their tokens are refused. `ZADD GT` only ever moves a time forward, atomically; µs since
//! the epoch stay below 2^53, so the score (a double) holds them exactly.

use async_trait::async_trait;

use super::RedisStore;
use crate::ids::{AppId, UserId};
use crate::store::{Revocations, StoreResult};

#[async_trait]
impl Revocations for RedisStore {
    async fn revoke_before(&self, app: &AppId, user: &UserId, at_us: i64) -> StoreResult<()> {
        let key = self.key(format_args!("revoked:{app}"));
        self.query(
            redis::cmd("ZADD")
                .arg(&key)
                .arg("GT")
                .arg(at_us)
                .arg(user.as_str()),
        )
        .await
    }

    async fn not_before(&self, app: &AppId, user: &UserId) -> StoreResult<Option<i64>> {
        let key = self.key(format_args!("revoked:{app}"));
        let score: Option<f64> = self
            .query(redis::cmd("ZSCORE").arg(&key).arg(user.as_str()))
            .await?;
        #[allow(clippy::cast_possible_truncation)]
        Ok(score.map(|s| s as i64))
    }
}
