//! The `Messages` concern on SQLite: one `messages` row per recipient at its offset of the
//! recipient's inbox stream (`i/<app>/<user>` in `streams`), status transitions as one
//! conditional `UPDATE … WHERE status = 'PENDING'` (so a transition happens once however
//! many writers race) with its webhook event (`sent`, `delivered`, `cancelled`, `expired`)
//! written to the outbox in the same transaction, and keyset listing newest first.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::{Listing, SqliteStore, limit_value, offset_value, to_u64, webhooks};
use crate::ids::{AppId, UserId};
use crate::message::JsonText;
use crate::store::{
    AddressedMessage, EventKind, ListCursor, MessageBody, MessageFilter, MessageStatus, Messages,
    StoreResult, Transition, Via,
};
use crate::stream::{Position, StreamKey, new_epoch};

/// The columns `message_from_row` reads.
pub(super) const COLUMNS: &str = "id, app, recipient, foreign_id, kind, body, topic, status, created_us, \
     expires_us, delivered_us, cancelled_us, expired_us, global_message_id, stream_offset, delivered_via, bucket";

fn conversion(i: usize, e: impl ToString) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.to_string().into())
}

/// A row (`COLUMNS`) and its inbox offset.
pub(super) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<(u64, AddressedMessage)> {
    let kind: String = row.get(4)?;
    let body: String = row.get(5)?;
    let status: String = row.get(7)?;
    let via: Option<String> = row.get(15)?;
    let message = AddressedMessage {
        id: row.get(0)?,
        app: AppId::parse(row.get::<_, String>(1)?).map_err(|e| conversion(1, e))?,
        recipient: UserId::parse(row.get::<_, String>(2)?).map_err(|e| conversion(2, e))?,
        foreign_id: row.get(3)?,
        body: match kind.as_str() {
            "data" => MessageBody::Data(JsonText::stored(body)),
            _ => MessageBody::Text(body),
        },
        topic: row.get(6)?,
        status: MessageStatus::parse(&status).ok_or_else(|| conversion(7, status))?,
        created_us: row.get(8)?,
        expires_us: row.get(9)?,
        delivered_us: row.get(10)?,
        delivered_via: match via {
            Some(via) => Some(Via::parse(&via).ok_or_else(|| conversion(15, via))?),
            None => None,
        },
        cancelled_us: row.get(11)?,
        expired_us: row.get(12)?,
        global_message_id: row.get(13)?,
        bucket: row.get(16)?,
    };
    Ok((to_u64(row.get(14)?), message))
}

fn by_id(c: &Connection, app: &str, id: &str) -> rusqlite::Result<Option<AddressedMessage>> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE app = ? AND id = ?"
    ))?
    .query_row([app, id], message_from_row)
    .optional()
    .map(|m| m.map(|(_, m)| m))
}

/// The next position of `stream` (created on first use), and a creation time later than
/// the stream's latest.
fn next_position(
    c: &Connection,
    stream: &StreamKey,
    created_us: i64,
) -> rusqlite::Result<(Position, i64)> {
    c.prepare_cached("INSERT INTO streams (stream, epoch) VALUES (?, ?) ON CONFLICT DO NOTHING")?
        .execute(params![stream.as_str(), new_epoch()])?;
    c.prepare_cached(
        "UPDATE streams SET head = head + 1, last_us = MAX(last_us + 1, ?)
         WHERE stream = ? RETURNING epoch, head, last_us",
    )?
    .query_row(params![created_us, stream.as_str()], |r| {
        Ok((
            Position {
                epoch: r.get(0)?,
                offset: to_u64(r.get(1)?),
            },
            r.get(2)?,
        ))
    })
}

fn insert(c: &Connection, m: &AddressedMessage) -> rusqlite::Result<Position> {
    let stream = StreamKey::inbox(&m.app, &m.recipient);
    let (position, _) = next_position(c, &stream, m.created_us)?;
    let (kind, body) = match &m.body {
        MessageBody::Text(text) => ("text", text.as_str()),
        MessageBody::Data(data) => ("data", data.text()),
    };
    c.prepare_cached(
        "INSERT INTO messages (app, id, recipient, stream_offset, foreign_id, kind, body, topic,
           status, created_us, expires_us, global_message_id, bucket)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, ?, ?)",
    )?
    .execute(params![
        m.app.as_str(),
        m.id,
        m.recipient.as_str(),
        offset_value(position.offset),
        m.foreign_id,
        kind,
        body,
        m.topic,
        m.created_us,
        m.expires_us,
        m.global_message_id,
        m.bucket,
    ])?;
    webhooks::message_event(c, EventKind::Sent, m, m.created_us)?;
    Ok(position)
}

/// Moves `id` from `PENDING` to `to` (`DELIVERED` only while unexpired, recording `via`):
/// one conditional update, so of racing writers exactly one makes the transition.
fn transition(
    c: &Connection,
    app: &AppId,
    id: &str,
    to: MessageStatus,
    via: Via,
    at_us: i64,
) -> rusqlite::Result<Option<Transition>> {
    let column = match to {
        MessageStatus::Pending => return Ok(by_id(c, app.as_str(), id)?.map(Transition::Refused)),
        MessageStatus::Delivered => "delivered_us",
        MessageStatus::Cancelled => "cancelled_us",
        MessageStatus::Expired => "expired_us",
    };
    let (set_via, unexpired) = if to == MessageStatus::Delivered {
        (
            ", delivered_via = ?5",
            " AND (expires_us IS NULL OR expires_us > ?4)",
        )
    } else {
        ("", "")
    };
    let mut stmt = c.prepare_cached(&format!(
        "UPDATE messages SET status = ?1, {column} = ?4{set_via}
         WHERE app = ?2 AND id = ?3 AND status = 'PENDING'{unexpired}"
    ))?;
    let changed = if to == MessageStatus::Delivered {
        stmt.execute(params![to.as_str(), app.as_str(), id, at_us, via.as_str()])?
    } else {
        stmt.execute(params![to.as_str(), app.as_str(), id, at_us])?
    };
    let Some(m) = by_id(c, app.as_str(), id)? else {
        return Ok(None);
    };
    if changed == 0 {
        return Ok(Some(Transition::Refused(m)));
    }
    webhooks::message_event(c, event_of(to), &m, at_us)?;
    Ok(Some(Transition::Done(m)))
}

/// The webhook event of a transition to `to`.
fn event_of(to: MessageStatus) -> EventKind {
    match to {
        MessageStatus::Pending | MessageStatus::Delivered => EventKind::Delivered,
        MessageStatus::Cancelled => EventKind::Cancelled,
        MessageStatus::Expired => EventKind::Expired,
    }
}

/// The statement and parameters of a listing with `filter`, after `cursor`.
fn listing(
    app: &AppId,
    filter: &MessageFilter,
    cursor: Option<&ListCursor>,
    limit: usize,
) -> (String, Vec<Value>) {
    let mut listing = Listing::new(COLUMNS, "messages", app.as_str());
    listing.equal("recipient", filter.recipient.as_ref().map(UserId::as_str));
    listing.equal("topic", filter.topic.as_deref());
    listing.equal("status", filter.status.map(MessageStatus::as_str));
    listing.equal("global_message_id", filter.global_message_id.as_deref());
    listing.ranges(filter.created, filter.expires);
    listing.finish(cursor, limit)
}

#[async_trait]
impl Messages for SqliteStore {
    async fn create_messages(&self, messages: &[AddressedMessage]) -> StoreResult<Vec<Position>> {
        let messages = messages.to_vec();
        self.write(move |c| messages.iter().map(|m| insert(c, m)).collect())
            .await
    }

    async fn create_missing_messages(
        &self,
        messages: &[AddressedMessage],
    ) -> StoreResult<Vec<Option<Position>>> {
        let messages = messages.to_vec();
        self.write(move |c| {
            messages
                .iter()
                .map(|m| match by_id(c, m.app.as_str(), &m.id)? {
                    Some(_) => Ok(None),
                    None => insert(c, m).map(Some),
                })
                .collect()
        })
        .await
    }

    async fn addressed_message(
        &self,
        app: &AppId,
        id: &str,
    ) -> StoreResult<Option<AddressedMessage>> {
        let (app, id) = (app.clone(), id.to_owned());
        self.read(move |c| by_id(c, app.as_str(), &id)).await
    }

    async fn transition_message(
        &self,
        app: &AppId,
        id: &str,
        to: MessageStatus,
        at_us: i64,
    ) -> StoreResult<Option<Transition>> {
        let (app, id) = (app.clone(), id.to_owned());
        self.write(move |c| transition(c, &app, &id, to, Via::Websocket, at_us))
            .await
    }

    async fn deliver_messages(
        &self,
        app: &AppId,
        ids: &[String],
        via: Via,
        at_us: i64,
    ) -> StoreResult<Vec<Option<Transition>>> {
        let (app, ids) = (app.clone(), ids.to_vec());
        self.write(move |c| {
            ids.iter()
                .map(|id| transition(c, &app, id, MessageStatus::Delivered, via, at_us))
                .collect()
        })
        .await
    }

    async fn pending_messages(
        &self,
        app: &AppId,
        recipient: &UserId,
        after: u64,
        limit: usize,
        now_us: i64,
    ) -> StoreResult<Vec<(u64, AddressedMessage)>> {
        let (app, recipient) = (app.clone(), recipient.clone());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM messages
                 WHERE app = ? AND recipient = ? AND stream_offset > ? AND status = 'PENDING'
                   AND (expires_us IS NULL OR expires_us > ?)
                 ORDER BY stream_offset LIMIT ?"
            ))?;
            let rows = stmt.query_map(
                params![
                    app.as_str(),
                    recipient.as_str(),
                    offset_value(after),
                    now_us,
                    limit_value(limit)
                ],
                message_from_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn list_messages(
        &self,
        app: &AppId,
        filter: &MessageFilter,
        cursor: Option<&ListCursor>,
        limit: usize,
    ) -> StoreResult<Vec<AddressedMessage>> {
        let (sql, values) = listing(app, filter, cursor, limit);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), message_from_row)?;
            rows.map(|r| r.map(|(_, m)| m)).collect()
        })
        .await
    }

    async fn expire_messages(
        &self,
        now_us: i64,
        limit: usize,
    ) -> StoreResult<Vec<AddressedMessage>> {
        self.write(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "UPDATE messages SET status = 'EXPIRED', expired_us = ?1
                 WHERE (app, id) IN (SELECT app, id FROM messages
                                     WHERE status = 'PENDING' AND expires_us <= ?1 LIMIT ?2)
                 RETURNING {COLUMNS}"
            ))?;
            let expired = stmt
                .query_map(params![now_us, limit_value(limit)], message_from_row)?
                .map(|r| r.map(|(_, m)| m))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for m in &expired {
                webhooks::message_event(c, EventKind::Expired, m, now_us)?;
            }
            Ok(expired)
        })
        .await
    }
}
