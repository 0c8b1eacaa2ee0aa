//! The `Streams` concern on SQLite: heads from the `streams` table, entries from wherever
//! a stream's kind keeps them (a Mozilla token's messages, a channel's history, a user's
//! addressed messages — every status: the edge settles each before a socket gets it).

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use super::channels::{CHANNEL_COLUMNS, channel_message_from_row};
use super::messages::{COLUMNS as INBOX_COLUMNS, message_from_row as inbox_message_from_row};
use super::queues::{MESSAGE_COLUMNS, message_at_from_row};
use super::{SqliteStore, limit_value, offset_value, to_u64};
use crate::message::Delivery;
use crate::store::{MAX_HEADS, StoreResult, Streams};
use crate::stream::{Position, StreamKey, StreamKind};

/// The epoch of an active stream (a channel whose history was turned off is inactive).
fn active_epoch(c: &Connection, stream: &StreamKey) -> rusqlite::Result<Option<String>> {
    c.prepare_cached("SELECT epoch FROM streams WHERE stream = ? AND active = 1")?
        .query_row([stream.as_str()], |r| r.get(0))
        .optional()
}

fn position(epoch: &str, offset: u64) -> Position {
    Position {
        epoch: epoch.to_owned(),
        offset,
    }
}

#[async_trait]
impl Streams for SqliteStore {
    async fn stream_heads(&self, streams: &[StreamKey]) -> StoreResult<Vec<(StreamKey, Position)>> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Value> = streams
            .iter()
            .take(MAX_HEADS)
            .map(|k| Value::Text(k.as_str().to_owned()))
            .collect();
        self.read(move |c| {
            let sql = format!(
                "SELECT stream, epoch, head FROM streams WHERE active = 1 AND stream IN ({})",
                vec!["?"; keys.len()].join(", ")
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(keys), |r| {
                let epoch: String = r.get(1)?;
                Ok((
                    StreamKey::from(r.get::<_, String>(0)?),
                    position(&epoch, to_u64(r.get(2)?)),
                ))
            })?;
            rows.collect()
        })
        .await
    }

    async fn read_stream(
        &self,
        stream: &StreamKey,
        after: u64,
        limit: usize,
        now_us: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let (sql, params) = match stream.kind() {
            Some(StreamKind::MozillaToken(token)) => (
                format!(
                    "SELECT {MESSAGE_COLUMNS} FROM mozilla_messages m
                     WHERE m.token_id = ? AND m.stream_offset > ?
                     ORDER BY m.stream_offset LIMIT ?"
                ),
                vec![
                    Value::Text(token.to_owned()),
                    offset_value(after),
                    limit_value(limit),
                ],
            ),
            Some(StreamKind::Channel { app, channel }) => (
                format!(
                    "SELECT {CHANNEL_COLUMNS} FROM channel_messages m
                     WHERE m.app = ? AND m.channel = ? AND m.stream_offset > ?
                       AND (m.keep_until_us IS NULL OR m.keep_until_us > ?)
                     ORDER BY m.stream_offset LIMIT ?"
                ),
                vec![
                    Value::Text(app.to_owned()),
                    Value::Text(channel.to_owned()),
                    offset_value(after),
                    Value::Integer(now_us),
                    limit_value(limit),
                ],
            ),
            Some(StreamKind::Inbox { app, user }) => (
                format!(
                    "SELECT {INBOX_COLUMNS} FROM messages
                     WHERE app = ? AND recipient = ? AND stream_offset > ?
                     ORDER BY stream_offset LIMIT ?"
                ),
                vec![
                    Value::Text(app.to_owned()),
                    Value::Text(user.to_owned()),
                    offset_value(after),
                    limit_value(limit),
                ],
            ),
            _ => return Ok(Vec::new()),
        };
        let stream = stream.clone();
        self.read(move |c| {
            let Some(epoch) = active_epoch(c, &stream)? else {
                return Ok(Vec::new());
            };
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query(params_from_iter(params))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let delivery = match stream.kind() {
                    Some(StreamKind::MozillaToken(_)) => {
                        let (message, offset) = message_at_from_row(row)?;
                        Delivery::queue_message(message, position(&epoch, offset))
                    }
                    Some(StreamKind::Inbox { .. }) => {
                        let (offset, message) = inbox_message_from_row(row)?;
                        Delivery::addressed(message, position(&epoch, offset))
                    }
                    _ => {
                        let (message, offset) = channel_message_from_row(row)?;
                        Delivery::channel_message(message, Some(position(&epoch, offset)))
                    }
                };
                out.push(delivery);
            }
            Ok(out)
        })
        .await
    }
}
