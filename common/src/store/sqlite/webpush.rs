//! The `WebPush` concern on SQLite: `webpush_keys` (one VAPID pair per app, kept by the
//! first writer), `webpush_subscriptions` (unique per user and endpoint) and the push queue
//! `webpush_jobs`, whose `next_us` is a job's due time or the end of its lease, so a claim
//! is one `UPDATE … RETURNING` over the due rows.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{SqliteStore, limit_value};
use crate::ids::{AppId, UserId};
use crate::store::StoreResult;
use crate::store::webpush::{Added, MAX_SUBSCRIPTIONS, PushJob, PushSubscription, WebPush};

const COLUMNS: &str = "id, app, user_id, endpoint, p256dh, auth, created_us";

fn conversion(i: usize, e: impl ToString) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.to_string().into())
}

fn subscription_from_row(row: &Row<'_>) -> rusqlite::Result<PushSubscription> {
    Ok(PushSubscription {
        id: row.get(0)?,
        app: AppId::parse(row.get::<_, String>(1)?).map_err(|e| conversion(1, e))?,
        user: UserId::parse(row.get::<_, String>(2)?).map_err(|e| conversion(2, e))?,
        endpoint: row.get(3)?,
        p256dh: row.get(4)?,
        auth: row.get(5)?,
        created_us: row.get(6)?,
    })
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<PushJob> {
    Ok(PushJob {
        id: row.get(0)?,
        app: AppId::parse(row.get::<_, String>(1)?).map_err(|e| conversion(1, e))?,
        user: row
            .get::<_, Option<String>>(2)?
            .map(|u| UserId::parse(u).map_err(|e| conversion(2, e)))
            .transpose()?,
        message_id: row.get(3)?,
        attempts: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(u32::MAX),
    })
}

#[async_trait]
impl WebPush for SqliteStore {
    async fn vapid_key(
        &self,
        app: &AppId,
        candidate: (String, String),
    ) -> StoreResult<(String, String)> {
        let app = app.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO webpush_keys (app, private_key, public_key) VALUES (?, ?, ?)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![app.as_str(), candidate.0, candidate.1])?;
            c.prepare_cached("SELECT private_key, public_key FROM webpush_keys WHERE app = ?")?
                .query_row([app.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        })
        .await
    }

    async fn add_subscription(&self, subscription: &PushSubscription) -> StoreResult<Added> {
        let s = subscription.clone();
        self.write(move |c| {
            let existing = c
                .prepare_cached(&format!(
                    "UPDATE webpush_subscriptions SET p256dh = ?, auth = ?
                     WHERE app = ? AND user_id = ? AND endpoint = ? RETURNING {COLUMNS}"
                ))?
                .query_row(
                    params![
                        s.p256dh,
                        s.auth,
                        s.app.as_str(),
                        s.user.as_str(),
                        s.endpoint
                    ],
                    subscription_from_row,
                )
                .optional()?;
            if let Some(existing) = existing {
                return Ok(Added::Existing(existing));
            }
            let held: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM webpush_subscriptions WHERE app = ? AND user_id = ?",
                )?
                .query_row([s.app.as_str(), s.user.as_str()], |r| r.get(0))?;
            if usize::try_from(held).unwrap_or(usize::MAX) >= MAX_SUBSCRIPTIONS {
                return Ok(Added::Full);
            }
            c.prepare_cached(&format!(
                "INSERT INTO webpush_subscriptions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ))?
            .execute(params![
                s.id,
                s.app.as_str(),
                s.user.as_str(),
                s.endpoint,
                s.p256dh,
                s.auth,
                s.created_us
            ])?;
            Ok(Added::New(s))
        })
        .await
    }

    async fn subscriptions(
        &self,
        app: &AppId,
        user: &UserId,
    ) -> StoreResult<Vec<PushSubscription>> {
        let (app, user) = (app.clone(), user.clone());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM webpush_subscriptions WHERE app = ? AND user_id = ?
                 ORDER BY created_us, id"
            ))?;
            let rows = stmt.query_map([app.as_str(), user.as_str()], subscription_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn remove_subscription(&self, app: &AppId, user: &UserId, id: &str) -> StoreResult<bool> {
        let (app, user, id) = (app.clone(), user.clone(), id.to_owned());
        self.write(move |c| {
            let removed = c
                .prepare_cached(
                    "DELETE FROM webpush_subscriptions WHERE app = ? AND user_id = ? AND id = ?",
                )?
                .execute([app.as_str(), user.as_str(), id.as_str()])?;
            Ok(removed > 0)
        })
        .await
    }

    async fn subscribed(&self, app: &AppId, users: &[UserId]) -> StoreResult<Vec<bool>> {
        let (app, users) = (app.clone(), users.to_vec());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM webpush_subscriptions WHERE app = ? AND user_id = ?)",
            )?;
            users
                .iter()
                .map(|u| stmt.query_row([app.as_str(), u.as_str()], |r| r.get(0)))
                .collect()
        })
        .await
    }

    async fn enqueue_pushes(&self, jobs: &[PushJob], due_us: i64) -> StoreResult<()> {
        let jobs = jobs.to_vec();
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO webpush_jobs (id, app, user_id, message_id, attempts, next_us)
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )?;
            for j in &jobs {
                stmt.execute(params![
                    j.id,
                    j.app.as_str(),
                    j.user.as_ref().map(UserId::as_str),
                    j.message_id,
                    j.attempts,
                    due_us
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn claim_pushes(
        &self,
        now_us: i64,
        lease_us: i64,
        limit: usize,
    ) -> StoreResult<Vec<PushJob>> {
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE webpush_jobs SET next_us = ?1
                 WHERE id IN (SELECT id FROM webpush_jobs WHERE next_us <= ?2
                              ORDER BY next_us, id LIMIT ?3)
                 RETURNING id, app, user_id, message_id, attempts",
            )?;
            let rows = stmt.query_map(
                params![now_us.saturating_add(lease_us), now_us, limit_value(limit)],
                job_from_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn retry_push(&self, id: &str, due_us: i64) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE webpush_jobs SET attempts = attempts + 1, next_us = ? WHERE id = ?",
            )?
            .execute(params![due_us, id])?;
            Ok(())
        })
        .await
    }

    async fn finish_push(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM webpush_jobs WHERE id = ?")?
                .execute([id])?;
            Ok(())
        })
        .await
    }
}
