//! The `Templates` concern on SQLite: one `templates` row per template, its content kept as
//! the exact JSON text.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{SqliteStore, to_u64};
use crate::ids::AppId;
use crate::message::JsonText;
use crate::store::StoreResult;
use crate::store::templates::{Template, Templates};

fn template_from_row(row: &Row<'_>) -> rusqlite::Result<Template> {
    Ok(Template {
        id: row.get(0)?,
        content: JsonText::stored(row.get::<_, String>(1)?),
        ttl: row.get::<_, Option<i64>>(2)?.map(to_u64),
        created_us: row.get(3)?,
    })
}

#[async_trait]
impl Templates for SqliteStore {
    async fn create_template(&self, app: &AppId, template: &Template) -> StoreResult<()> {
        let (app, t) = (app.clone(), template.clone());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO templates (app, id, content, ttl, created_us) VALUES (?, ?, ?, ?, ?)",
            )?
            .execute(params![
                app.as_str(),
                t.id,
                t.content.text(),
                t.ttl.map(|v| v as i64),
                t.created_us
            ])?;
            Ok(())
        })
        .await
    }

    async fn template(&self, app: &AppId, id: &str) -> StoreResult<Option<Template>> {
        let (app, id) = (app.clone(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT id, content, ttl, created_us FROM templates WHERE app = ? AND id = ?",
            )?
            .query_row([app.as_str(), id.as_str()], template_from_row)
            .optional()
        })
        .await
    }

    async fn delete_template(&self, app: &AppId, id: &str) -> StoreResult<bool> {
        let (app, id) = (app.clone(), id.to_owned());
        self.write(move |c| {
            Ok(
                c.prepare_cached("DELETE FROM templates WHERE app = ? AND id = ?")?
                    .execute([app.as_str(), id.as_str()])?
                    == 1,
            )
        })
        .await
    }
}
