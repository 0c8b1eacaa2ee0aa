//! The `Broadcasts` concern on SQLite: one `global_messages` row per broadcast, keyset
//! listing newest first.

use async_trait::async_trait;
use rusqlite::{Row, params, params_from_iter};

use super::{Listing, SqliteStore};
use crate::ids::AppId;
use crate::message::JsonText;
use crate::store::broadcasts::{BroadcastFilter, Broadcasts, GlobalMessage};
use crate::store::{ListCursor, MessageBody, StoreResult};

const COLUMNS: &str = "id, app, kind, body, topic, created_us, expires_us";

fn broadcast_from_row(row: &Row<'_>) -> rusqlite::Result<GlobalMessage> {
    let kind: String = row.get(2)?;
    let body: String = row.get(3)?;
    Ok(GlobalMessage {
        id: row.get(0)?,
        app: AppId::parse(row.get::<_, String>(1)?).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
        })?,
        body: match kind.as_str() {
            "data" => MessageBody::Data(JsonText::stored(body)),
            _ => MessageBody::Text(body),
        },
        topic: row.get(4)?,
        created_us: row.get(5)?,
        expires_us: row.get(6)?,
    })
}

#[async_trait]
impl Broadcasts for SqliteStore {
    async fn create_broadcast(&self, message: &GlobalMessage) -> StoreResult<()> {
        let m = message.clone();
        self.write(move |c| {
            let (kind, body) = match &m.body {
                MessageBody::Text(text) => ("text", text.as_str()),
                MessageBody::Data(data) => ("data", data.text()),
            };
            c.prepare_cached(
                "INSERT INTO global_messages (app, id, kind, body, topic, created_us, expires_us)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                m.app.as_str(),
                m.id,
                kind,
                body,
                m.topic,
                m.created_us,
                m.expires_us
            ])?;
            Ok(())
        })
        .await
    }

    async fn list_broadcasts(
        &self,
        app: &AppId,
        filter: &BroadcastFilter,
        cursor: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<Vec<GlobalMessage>> {
        let mut listing = Listing::new(COLUMNS, "global_messages", app.as_str());
        listing.equal("topic", filter.topic.as_deref());
        listing.ranges(filter.created, filter.expires);
        let (sql, values) = listing.finish(cursor, limit);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), broadcast_from_row)?;
            rows.collect()
        })
        .await
    }
}
