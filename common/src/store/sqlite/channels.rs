//! The `Channels` concern on SQLite: channel configuration, history rows at their stream
//! offsets (`c/<app>/<channel>`), trimming to the configured size, expiry, and idempotency
//! keys — all of one publish inside one transaction.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, limit_value, offset_value, to_u64};
use crate::ids::{AppId, ChannelName};
use crate::message::{ChannelMessage, JsonText};
use crate::store::{ChannelInfo, Channels, History, Idempotency, Publication, StoreResult};
use crate::stream::{Position, StreamKey, new_epoch};

/// The columns `channel_message_from_row` reads, `m` being `channel_messages`.
pub(super) const CHANNEL_COLUMNS: &str = "m.id, m.app, m.channel, m.data, m.created_us, \
     m.expires_us, m.replace_id, m.stream_offset";

/// Keeps a message only if no later kept message of its channel shares its replaceId.
const LATEST_OF_REPLACE_ID: &str = "(m.replace_id IS NULL OR NOT EXISTS (
    SELECT 1 FROM channel_messages n
    WHERE n.app = m.app AND n.channel = m.channel AND n.replace_id = m.replace_id
      AND n.stream_offset > m.stream_offset
      AND (n.keep_until_us IS NULL OR n.keep_until_us > ?4)))";

/// A history row (`CHANNEL_COLUMNS`) and its offset.
pub(super) fn channel_message_from_row(row: &Row<'_>) -> rusqlite::Result<(ChannelMessage, u64)> {
    let text = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let data: String = row.get(3)?;
    let message = ChannelMessage {
        id: row.get(0)?,
        app: AppId::parse(row.get::<_, String>(1)?).map_err(|e| text(1, e.to_string()))?,
        channel: ChannelName::parse(row.get::<_, String>(2)?)
            .map_err(|e| text(2, e.to_string()))?,
        data: JsonText::stored(data),
        created_us: row.get(4)?,
        expires_us: row.get(5)?,
        replace_id: row.get(6)?,
    };
    Ok((message, to_u64(row.get(7)?)))
}

fn history_of(size: Option<i64>, ttl: Option<i64>) -> History {
    History {
        size: size.map(to_u64),
        ttl: ttl.map(to_u64),
    }
}

fn as_sql(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The configured history of a channel, if it was ever configured.
fn configured(c: &Connection, app: &str, channel: &str) -> rusqlite::Result<Option<History>> {
    c.prepare_cached("SELECT history_size, history_ttl_s FROM channels WHERE app = ? AND name = ?")?
        .query_row([app, channel], |r| Ok(history_of(r.get(0)?, r.get(1)?)))
        .optional()
}

/// The head of a channel's stream while its history is on.
fn head(c: &Connection, stream: &StreamKey) -> rusqlite::Result<Option<Position>> {
    c.prepare_cached("SELECT epoch, head FROM streams WHERE stream = ? AND active = 1")?
        .query_row([stream.as_str()], |r| {
            Ok(Position {
                epoch: r.get(0)?,
                offset: to_u64(r.get(1)?),
            })
        })
        .optional()
}

/// The earlier result of an idempotency key still held at `now_us`.
fn earlier(
    c: &Connection,
    app: &str,
    key: &str,
    now_us: i64,
) -> rusqlite::Result<Option<Publication>> {
    c.prepare_cached(
        "SELECT message_id, created_us, stream_epoch, stream_offset, message_expires_us
         FROM idempotency_keys WHERE app = ? AND key = ? AND expires_us > ?",
    )?
    .query_row(params![app, key, now_us], |r| {
        let epoch: Option<String> = r.get(2)?;
        let offset: Option<i64> = r.get(3)?;
        Ok(Publication::Repeat {
            id: r.get(0)?,
            created_us: r.get(1)?,
            expires_us: r.get(4)?,
            position: epoch.zip(offset).map(|(epoch, offset)| Position {
                epoch,
                offset: to_u64(offset),
            }),
        })
    })
    .optional()
}

/// Appends `m` to its channel's history: next offset, creation time after the latest,
/// then trims to `history.size`. `None` if the stream is not active.
fn append(
    c: &Connection,
    m: &ChannelMessage,
    history: History,
) -> rusqlite::Result<Option<(i64, Position)>> {
    let stream = StreamKey::channel(&m.app, &m.channel);
    let Some((epoch, offset, created_us)) = c
        .prepare_cached(
            "UPDATE streams SET head = head + 1, last_us = MAX(last_us + 1, ?)
             WHERE stream = ? AND active = 1 RETURNING epoch, head, last_us",
        )?
        .query_row(params![m.created_us, stream.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let ttl_end =
        as_sql(history.ttl).map(|s| created_us.saturating_add(s.saturating_mul(1_000_000)));
    let keep_until = match (ttl_end, m.expires_us) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    c.prepare_cached(
        "INSERT INTO channel_messages (app, channel, stream_offset, id, data, created_us,
           expires_us, keep_until_us, replace_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        m.app.as_str(),
        m.channel.as_str(),
        offset,
        m.id,
        m.data.text(),
        created_us,
        m.expires_us,
        keep_until,
        m.replace_id
    ])?;
    if let Some(size) = as_sql(history.size) {
        c.prepare_cached(
            "DELETE FROM channel_messages WHERE app = ? AND channel = ? AND stream_offset <= ?",
        )?
        .execute(params![m.app.as_str(), m.channel.as_str(), offset - size])?;
    }
    let position = Position {
        epoch,
        offset: to_u64(offset),
    };
    Ok(Some((created_us, position)))
}

#[async_trait]
impl Channels for SqliteStore {
    async fn configure_channel(
        &self,
        app: &AppId,
        channel: &ChannelName,
        history: History,
        now_us: i64,
    ) -> StoreResult<ChannelInfo> {
        let (app, channel) = (app.clone(), channel.clone());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO channels (app, name, history_size, history_ttl_s, created_us, updated_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (app, name) DO UPDATE SET history_size = excluded.history_size,
                   history_ttl_s = excluded.history_ttl_s, updated_us = excluded.updated_us",
            )?
            .execute(params![
                app.as_str(),
                channel.as_str(),
                as_sql(history.size),
                as_sql(history.ttl),
                now_us
            ])?;
            let stream = StreamKey::channel(&app, &channel);
            c.prepare_cached(
                "INSERT INTO streams (stream, epoch, active) VALUES (?1, ?2, ?3)
                 ON CONFLICT (stream) DO UPDATE SET active = excluded.active",
            )?
            .execute(params![stream.as_str(), new_epoch(), history.is_on()])?;
            if !history.is_on() {
                c.prepare_cached("DELETE FROM channel_messages WHERE app = ? AND channel = ?")?
                    .execute([app.as_str(), channel.as_str()])?;
            } else if let Some(size) = as_sql(history.size) {
                c.prepare_cached(
                    "DELETE FROM channel_messages WHERE app = ?1 AND channel = ?2
                     AND stream_offset <= (SELECT head FROM streams WHERE stream = ?3) - ?4",
                )?
                .execute(params![app.as_str(), channel.as_str(), stream.as_str(), size])?;
            }
            Ok(ChannelInfo {
                history,
                head: head(c, &stream)?,
            })
        })
        .await
    }

    async fn channel(
        &self,
        app: &AppId,
        channel: &ChannelName,
    ) -> StoreResult<Option<ChannelInfo>> {
        let (app, channel) = (app.clone(), channel.clone());
        self.read(move |c| {
            let Some(history) = configured(c, app.as_str(), channel.as_str())? else {
                return Ok(None);
            };
            let head = head(c, &StreamKey::channel(&app, &channel))?;
            Ok(Some(ChannelInfo { history, head }))
        })
        .await
    }

    async fn publish_channel_message(
        &self,
        message: &ChannelMessage,
        idempotency: Option<&Idempotency>,
    ) -> StoreResult<Publication> {
        let (m, idempotency) = (message.clone(), idempotency.cloned());
        // Keys are scoped to the channel; channel names hold no space, so
        // "<channel> <key>" is unambiguous.
        let scoped = idempotency.map(|i| Idempotency {
            key: format!("{} {}", m.channel, i.key),
            expires_us: i.expires_us,
        });
        self.write(move |c| {
            let app = m.app.as_str();
            if let Some(key) = &scoped
                && let Some(repeat) = earlier(c, app, &key.key, m.created_us)?
            {
                return Ok(repeat);
            }
            let history = configured(c, app, m.channel.as_str())?.unwrap_or_default();
            let appended = if history.is_on() {
                append(c, &m, history)?
            } else {
                None
            };
            let (created_us, position) =
                appended.map_or((m.created_us, None), |(t, p)| (t, Some(p)));
            if let Some(key) = &scoped {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO idempotency_keys (app, key, message_id, created_us,
                       stream_epoch, stream_offset, message_expires_us, expires_us)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    app,
                    key.key,
                    m.id,
                    created_us,
                    position.as_ref().map(|p| p.epoch.clone()),
                    position
                        .as_ref()
                        .map(|p| i64::try_from(p.offset).unwrap_or(i64::MAX)),
                    m.expires_us,
                    key.expires_us
                ])?;
            }
            Ok(Publication::Fresh {
                created_us,
                position,
            })
        })
        .await
    }

    async fn channel_history(
        &self,
        app: &AppId,
        channel: &ChannelName,
        after: u64,
        limit: usize,
        now_us: i64,
    ) -> StoreResult<Vec<(u64, ChannelMessage)>> {
        let (app, channel) = (app.clone(), channel.clone());
        self.read(move |c| {
            let Some(history) = configured(c, app.as_str(), channel.as_str())? else {
                return Ok(Vec::new());
            };
            let since_us = as_sql(history.ttl).map_or(i64::MIN, |s| {
                now_us.saturating_sub(s.saturating_mul(1_000_000))
            });
            let sql = format!(
                "SELECT {CHANNEL_COLUMNS} FROM channel_messages m
                 WHERE m.app = ?1 AND m.channel = ?2 AND m.stream_offset > ?3
                   AND (m.keep_until_us IS NULL OR m.keep_until_us > ?4)
                   AND m.created_us >= ?5 AND {LATEST_OF_REPLACE_ID}
                 ORDER BY m.stream_offset LIMIT ?6"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    app.as_str(),
                    channel.as_str(),
                    offset_value(after),
                    now_us,
                    since_us,
                    limit_value(limit)
                ],
                |row| channel_message_from_row(row).map(|(m, offset)| (offset, m)),
            )?;
            rows.collect()
        })
        .await
    }

    async fn prune_channels(&self, now_us: i64) -> StoreResult<u64> {
        self.write(move |c| {
            let messages = c
                .prepare_cached("DELETE FROM channel_messages WHERE keep_until_us <= ?")?
                .execute([now_us])?;
            let keys = c
                .prepare_cached("DELETE FROM idempotency_keys WHERE expires_us <= ?")?
                .execute([now_us])?;
            Ok((messages + keys) as u64)
        })
        .await
    }
}
