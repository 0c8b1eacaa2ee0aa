//! The `Buckets` concern on SQLite: `ppg_buckets`, `ppg_contexts` and `ppg_messages`, one
//! row per record holding its JSON (records are written once and read whole).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{SqliteStore, limit_value};
use crate::ids::AppId;
use crate::store::buckets::{Bucket, BucketContext, BucketMessage, Buckets};
use crate::store::{StoreError, StoreResult};

fn to_json(record: &impl Serialize) -> StoreResult<String> {
    serde_json::to_string(record).map_err(|e| StoreError::Internal(format!("bucket record: {e}")))
}

fn from_json<T: DeserializeOwned>(text: Option<String>) -> rusqlite::Result<Option<T>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })
    })
    .transpose()
}

#[async_trait]
impl Buckets for SqliteStore {
    async fn create_bucket(&self, bucket: &Bucket) -> StoreResult<()> {
        let (id, app, record) = (bucket.id.clone(), bucket.app.clone(), to_json(bucket)?);
        let expires_us = bucket.expires_us;
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO ppg_buckets (id, app, expires_us, record) VALUES (?, ?, ?, ?)",
            )?
            .execute(params![id, app.as_str(), expires_us, record])?;
            Ok(())
        })
        .await
    }

    async fn bucket(&self, app: &AppId, id: &str) -> StoreResult<Option<Bucket>> {
        let (app, id) = (app.clone(), id.to_owned());
        self.read(move |c| {
            let text = c
                .prepare_cached("SELECT record FROM ppg_buckets WHERE id = ? AND app = ?")?
                .query_row([id.as_str(), app.as_str()], |r| r.get(0))
                .optional()?;
            from_json(text)
        })
        .await
    }

    async fn create_bucket_context(&self, context: &BucketContext) -> StoreResult<()> {
        let (id, app, record) = (context.id.clone(), context.app.clone(), to_json(context)?);
        let bucket = context.bucket.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO ppg_contexts (id, app, bucket, record) VALUES (?, ?, ?, ?)",
            )?
            .execute(params![id, app.as_str(), bucket, record])?;
            Ok(())
        })
        .await
    }

    async fn bucket_context(&self, id: &str) -> StoreResult<Option<BucketContext>> {
        let id = id.to_owned();
        self.read(move |c| {
            let text = c
                .prepare_cached("SELECT record FROM ppg_contexts WHERE id = ?")?
                .query_row([id.as_str()], |r| r.get(0))
                .optional()?;
            from_json(text)
        })
        .await
    }

    async fn create_bucket_messages(&self, messages: &[BucketMessage]) -> StoreResult<()> {
        let rows = messages
            .iter()
            .map(|m| Ok((m.id.clone(), m.app.clone(), m.bucket.clone(), to_json(m)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO ppg_messages (id, app, bucket, record) VALUES (?, ?, ?, ?)",
            )?;
            for (id, app, bucket, record) in &rows {
                stmt.execute(params![id, app.as_str(), bucket, record])?;
            }
            Ok(())
        })
        .await
    }

    async fn prune_buckets(&self, before_us: i64, limit: usize) -> StoreResult<Vec<String>> {
        self.write(move |c| {
            let ids = c
                .prepare_cached(
                    "DELETE FROM ppg_buckets WHERE id IN
                       (SELECT id FROM ppg_buckets WHERE expires_us < ? LIMIT ?)
                     RETURNING id",
                )?
                .query_map(params![before_us, limit_value(limit)], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            for id in &ids {
                c.prepare_cached("DELETE FROM ppg_contexts WHERE bucket = ?")?
                    .execute([id])?;
                c.prepare_cached("DELETE FROM ppg_messages WHERE bucket = ?")?
                    .execute([id])?;
            }
            Ok(ids)
        })
        .await
    }

    async fn bucket_message(&self, id: &str) -> StoreResult<Option<BucketMessage>> {
        let id = id.to_owned();
        self.read(move |c| {
            let text = c
                .prepare_cached("SELECT record FROM ppg_messages WHERE id = ?")?
                .query_row([id.as_str()], |r| r.get(0))
                .optional()?;
            from_json(text)
        })
        .await
    }
}
