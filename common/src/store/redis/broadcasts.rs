//! The `Broadcasts` concern on Redis: one hash per broadcast (`broadcast:<app>:<id>`:
//! `id`, `app`, `kind`, `body`, `topic`, `created_us`, `expires_us`) and, per app, a
//! sorted set of ids by creation time (`broadcasts:<app>`) listed newest first by the same
//! script as messages (`messages::LIST`).

use std::collections::HashMap;

use async_trait::async_trait;

use super::RedisStore;
use super::messages::LIST;
use crate::ids::AppId;
use crate::message::JsonText;
use crate::store::broadcasts::{BroadcastFilter, Broadcasts, GlobalMessage};
use crate::store::{ListCursor, MessageBody, MessageFilter, StoreError, StoreResult};

fn bad(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("broadcast {what}: {detail}"))
}

/// A broadcast from `LIST`'s reply for it (`'2', field, value, …`).
fn broadcast_of(app: &AppId, reply: &[String]) -> StoreResult<GlobalMessage> {
    let mut f: HashMap<&str, &str> = reply
        .get(1..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|kv| (kv[0].as_str(), kv[1].as_str()))
        .collect();
    let mut take = |name: &str| f.remove(name).map(str::to_owned);
    let int = |name: &str, v: Option<String>| -> StoreResult<Option<i64>> {
        v.map(|v| v.parse::<i64>().map_err(|_| bad(name, v)))
            .transpose()
    };
    let body = take("body").unwrap_or_default();
    Ok(GlobalMessage {
        id: take("id").unwrap_or_default(),
        app: app.clone(),
        body: if take("kind").as_deref() == Some("data") {
            MessageBody::Data(JsonText::stored(body))
        } else {
            MessageBody::Text(body)
        },
        topic: take("topic"),
        created_us: int("created_us", take("created_us"))?.unwrap_or(0),
        expires_us: int("expires_us", take("expires_us"))?,
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
