//! The `Contexts` concern on SQLite: one row per VPush context.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{SqliteStore, limit_value};
use crate::ids::{AppId, ChannelName};
use crate::store::StoreResult;
use crate::store::contexts::{Context, Contexts, MAX_CONTEXTS};

fn context_from_row(row: &Row<'_>) -> rusqlite::Result<Context> {
    let id: String = row.get(0)?;
    Ok(Context {
        id: ChannelName::parse(id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        name: row.get(1)?,
        created_us: row.get(2)?,
    })
}

#[async_trait]
impl Contexts for SqliteStore {
    async fn create_context(&self, app: &AppId, context: &Context) -> StoreResult<()> {
        let (app, context) = (app.clone(), context.clone());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO vpush_contexts (app, id, name, created_us) VALUES (?, ?, ?, ?)",
            )?
            .execute(params![
                app.as_str(),
                context.id.as_str(),
                context.name,
                context.created_us
            ])?;
            Ok(())
        })
        .await
    }

    async fn context(&self, app: &AppId, id: &ChannelName) -> StoreResult<Option<Context>> {
        let (app, id) = (app.clone(), id.clone());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT id, name, created_us FROM vpush_contexts WHERE app = ? AND id = ?",
            )?
            .query_row([app.as_str(), id.as_str()], context_from_row)
            .optional()
        })
        .await
    }

    async fn contexts(&self, app: &AppId) -> StoreResult<Vec<Context>> {
        let app = app.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, created_us FROM vpush_contexts WHERE app = ?
                 ORDER BY created_us, id LIMIT ?",
            )?;
            let rows = stmt.query_map(
                params![app.as_str(), limit_value(MAX_CONTEXTS)],
                context_from_row,
            )?;
            rows.collect()
        })
        .await
    }
}
