//! The `Revocations` concern on SQLite: one row per user with a revocation, its
//! not-before time only moving forward.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::ids::{AppId, UserId};
use crate::store::{Revocations, StoreResult};

#[async_trait]
impl Revocations for SqliteStore {
    async fn revoke_before(&self, app: &AppId, user: &UserId, at_us: i64) -> StoreResult<()> {
        let (app, user) = (app.clone(), user.clone());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO revocations (app, user_id, not_before_us) VALUES (?, ?, ?)
                 ON CONFLICT (app, user_id)
                 DO UPDATE SET not_before_us = MAX(not_before_us, excluded.not_before_us)",
            )?
            .execute(params![app.as_str(), user.as_str(), at_us])?;
            Ok(())
        })
        .await
    }

    async fn not_before(&self, app: &AppId, user: &UserId) -> StoreResult<Option<i64>> {
        let (app, user) = (app.clone(), user.clone());
        self.read(move |c| {
            c.prepare_cached("SELECT not_before_us FROM revocations WHERE app = ? AND user_id = ?")?
                .query_row([app.as_str(), user.as_str()], |r| r.get(0))
                .optional()
        })
        .await
    }
}
