//! The `Broadcasts` concern on Redis: one hash per broadcast (`broadcast:<app>:<id>`:
//! `id`, `app`, `kind`, `body`, `topic`, `created_us`, `expires_us`) and, per app, a
//! sorted set of ids by creation time (`broadcasts:<app>`) listed newest first by the same
//! script as messages (`messages::LIST`).

use async_trait::async_trait;

use super::messages::LIST;
use super::{Fields, RedisStore};
use crate::ids::AppId;
use crate::message::JsonText;
use crate::store::broadcasts::{BroadcastFilter, Broadcasts, GlobalMessage};
use crate::store::{ListCursor, MessageBody, MessageFilter, StoreResult};

/// A broadcast from `LIST`'s reply for it (`'2', field, value, …`).
fn broadcast_of(app: &AppId, reply: &[String]) -> StoreResult<GlobalMessage> {
    let mut f = Fields::new("broadcast", reply.get(1..).unwrap_or_default());
    let body = f.take("body").unwrap_or_default();
    Ok(GlobalMessage {
        id: f.take("id").unwrap_or_default(),
        app: app.clone(),
        body: if f.take("kind").as_deref() == Some("data") {
            MessageBody::Data(JsonText::stored(body))
        } else {
            MessageBody::Text(body)
        },
        topic: f.take("topic"),
        created_us: f.int("created_us")?.unwrap_or(0),
        expires_us: f.int("expires_us")?,
    })
}

#[async_trait]
impl Broadcasts for RedisStore {
    async fn create_broadcast(&self, message: &GlobalMessage) -> StoreResult<()> {
        let m = message;
        let key = self.key(format_args!("broadcast:{}:{}", m.app, m.id));
        let (kind, body) = match &m.body {
            MessageBody::Text(text) => ("text", text.as_str()),
            MessageBody::Data(data) => ("data", data.text()),
        };
        let mut record = redis::cmd("HSET");
        record
            .arg(&key)
            .arg("id")
            .arg(&m.id)
            .arg("app")
            .arg(m.app.as_str())
            .arg("kind")
            .arg(kind)
            .arg("body")
            .arg(body)
            .arg("created_us")
            .arg(m.created_us);
        if let Some(topic) = &m.topic {
            record.arg("topic").arg(topic);
        }
        if let Some(expires) = m.expires_us {
            record.arg("expires_us").arg(expires);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .add_command(record)
            .ignore()
            .cmd("ZADD")
            .arg(self.key(format_args!("broadcasts:{}", m.app)))
            .arg(m.created_us)
            .arg(&m.id)
            .ignore();
        self.pipe(&pipe).await
    }

    async fn list_broadcasts(
        &self,
        app: &AppId,
        filter: &BroadcastFilter,
        cursor: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<Vec<GlobalMessage>> {
        let filter = MessageFilter {
            topic: filter.topic.clone(),
            created: filter.created,
            expires: filter.expires,
            ..MessageFilter::default()
        };
        let cursor = cursor
            .map(|c| (c.created_us.to_string(), c.id.clone()))
            .unwrap_or_default();
        let args = self.list_args(
            format!("broadcast:{app}:"),
            self.key(format_args!("broadcasts:{app}")),
            true,
            cursor,
            limit,
            &filter,
        );
        let replies: Vec<Vec<String>> = self.script(&LIST, &[], &args).await?;
        replies.iter().map(|r| broadcast_of(app, r)).collect()
    }
}
