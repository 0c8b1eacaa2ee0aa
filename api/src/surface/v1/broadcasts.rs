//! `/api/v1/broadcasts` (SPEC §4 Broadcasts; Socrate's global messages): `POST`
//! `{message|data|template, topic?, expiresAt?|ttl?}` → 201 GlobalMessage; `GET` with
//! `topic`, `createdFrom`, `createdTo`, `expiresFrom`, `expiresTo`, `limit`, `nextToken` →
//! `{items, nextToken}`, newest first. The GlobalMessage object is `{id, message|data,
//! topic?, createdAt, expiresAt?}`; the message each recipient reached gets is listed under
//! `GET /api/v1/messages?globalMessageId=<id>`.

use common::clock::rfc3339;
use common::store::{BroadcastFilter, GlobalMessage, MessageBody};
use serde_json::{Value, json};

use super::messages::{
    DEFAULT_LIMIT, MAX_LIMIT, content, next_token, query_cursor, query_param, query_time,
};
use super::{Outcome, Request, V1Request, created, ok};
use crate::service::broadcasts::BroadcastSend;

/// The GlobalMessage object.
fn global_json(m: &GlobalMessage) -> Value {
    let mut item = json!({"id": m.id, "createdAt": rfc3339(m.created_us)});
    match &m.body {
        MessageBody::Text(text) => item["message"] = json!(text),
        MessageBody::Data(data) => item["data"] = data.value(),
    }
    if let Some(topic) = &m.topic {
        item["topic"] = json!(topic);
    }
    if let Some(expires) = m.expires_us {
        item["expiresAt"] = json!(rfc3339(expires));
    }
    item
}

/// `POST /api/v1/broadcasts`.
pub async fn send(r: Request) -> Outcome {
    let caller = r.authorize("messages:send")?;
    let body = r.json()?;
    let (content, topic, expires_us) = content(&body)?;
    let send = BroadcastSend {
        app: caller.app.id.clone(),
        content,
        topic,
        expires_us,
    };
    created(global_json(&r.state.services.broadcast(send).await?))
}

/// `GET /api/v1/broadcasts`.
pub async fn list(r: Request) -> Outcome {
    let caller = r.authorize("messages:read")?;
    let filter = BroadcastFilter {
        topic: query_param(&r, "topic")?,
        created: (query_time(&r, "createdFrom")?, query_time(&r, "createdTo")?),
        expires: (query_time(&r, "expiresFrom")?, query_time(&r, "expiresTo")?),
    };
    let limit = r.query_limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let cursor = query_cursor(&r)?;
    let (items, next) = r
        .state
        .services
        .list_broadcasts(&caller.app.id, &filter, cursor.as_ref(), limit)
        .await?;
    let items: Vec<Value> = items.iter().map(global_json).collect();
    ok(json!({"items": items, "nextToken": next.as_ref().map(next_token)}))
}
