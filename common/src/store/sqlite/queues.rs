//! The `Queues` concern on SQLite: Mozilla tokens, queues and messages. A token's messages
//! carry their offset in the token's stream (`t/<token id>`), assigned with the `streams`
//! row inside the appending transaction.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::{SqliteStore, limit_value};
use crate::message::{QueueBody, QueueMessage};
use crate::store::{After, Appended, Queue, QueueScope, Queues, StoreResult};
use crate::stream::{Position, StreamKey, new_epoch};

const QUEUE_COLUMNS: &str = "queue_id, token_id, domain, read_us";
pub(super) const MESSAGE_COLUMNS: &str = "m.key, m.queue_id, m.token_id, m.created_us, m.title, m.body, \
     m.action_url, m.icon_url, m.replace_id, m.read_key, m.stream_offset";

/// Keeps a message only if no later message of its queue shares its replaceId.
const LATEST_OF_REPLACE_ID: &str = "(m.replace_id IS NULL OR NOT EXISTS (
    SELECT 1 FROM mozilla_messages n
    WHERE n.queue_id = m.queue_id AND n.replace_id = m.replace_id
      AND (n.created_us > m.created_us OR (n.created_us = m.created_us AND n.key > m.key))))";

fn queue_from_row(row: &Row<'_>) -> rusqlite::Result<Queue> {
    Ok(Queue {
        id: row.get(0)?,
        token: row.get(1)?,
        domain: row.get(2)?,
        read_us: row.get(3)?,
    })
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<QueueMessage> {
    Ok(QueueMessage {
        key: row.get(0)?,
        queue: row.get(1)?,
        token: row.get(2)?,
        created_us: row.get(3)?,
        body: QueueBody {
            title: row.get(4)?,
            body: row.get(5)?,
            action_url: row.get(6)?,
            icon_url: row.get(7)?,
            replace_id: row.get(8)?,
            read: row.get(9)?,
        },
    })
}

/// A message row with its stream offset (the last of `MESSAGE_COLUMNS`).
pub(super) fn message_at_from_row(row: &Row<'_>) -> rusqlite::Result<(QueueMessage, u64)> {
    let offset: i64 = row.get(10)?;
    Ok((message_from_row(row)?, offset.max(0) as u64))
}

/// SQL for "in scope", pushing its parameter.
fn scope_sql(scope: QueueScope<'_>, params: &mut Vec<Value>) -> &'static str {
    match scope {
        QueueScope::Queue(id) => {
            params.push(Value::Text(id.to_owned()));
            "m.queue_id = ?"
        }
        QueueScope::Token(token) => {
            params.push(Value::Text(token.to_owned()));
            "m.token_id = ?"
        }
    }
}

/// SQL for "strictly after", pushing its parameters.
fn after_sql(after: &After, params: &mut Vec<Value>) -> &'static str {
    match after {
        After::Start => "1",
        After::Time(us) => {
            params.push(Value::Integer(*us));
            "m.created_us > ?"
        }
        After::Message { created_us, key } => {
            params.extend([
                Value::Integer(*created_us),
                Value::Integer(*created_us),
                Value::Text(key.clone()),
            ]);
            "(m.created_us > ? OR (m.created_us = ? AND m.key > ?))"
        }
    }
}

fn select_messages(
    conn: &Connection,
    filters: &[&str],
    params: Vec<Value>,
) -> rusqlite::Result<Vec<QueueMessage>> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM mozilla_messages m WHERE {}
         ORDER BY m.created_us, m.key LIMIT ?",
        filters.join(" AND ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params), message_from_row)?;
    rows.collect()
}

fn find_message(
    conn: &Connection,
    scope: QueueScope<'_>,
    key: &str,
) -> rusqlite::Result<Option<QueueMessage>> {
    let mut params = Vec::new();
    let scope = scope_sql(scope, &mut params);
    params.extend([Value::Text(key.to_owned()), Value::Integer(1)]);
    Ok(select_messages(conn, &[scope, "m.key = ?"], params)?.pop())
}

#[async_trait]
impl Queues for SqliteStore {
    async fn create_token(&self, token: &str, own_queue: &str, now_us: i64) -> StoreResult<()> {
        let (token, queue) = (token.to_owned(), own_queue.to_owned());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO mozilla_tokens (token_id, own_queue_id, created_us) VALUES (?, ?, ?)",
            )?
            .execute(params![token, queue, now_us])?;
            c.prepare_cached(
                "INSERT INTO mozilla_queues (queue_id, token_id, domain, read_us, created_us)
                 VALUES (?, ?, NULL, 0, ?)",
            )?
            .execute(params![queue, token, now_us])?;
            c.prepare_cached("INSERT INTO streams (stream, epoch) VALUES (?, ?)")?
                .execute(params![
                    StreamKey::mozilla_token(&token).as_str(),
                    new_epoch()
                ])?;
            Ok(())
        })
        .await
    }

    async fn token_exists(&self, token: &str) -> StoreResult<bool> {
        let token = token.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT 1 FROM mozilla_tokens WHERE token_id = ?")?
                .exists([token])
        })
        .await
    }

    async fn delete_token(&self, token: &str) -> StoreResult<()> {
        let token = token.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM mozilla_messages WHERE token_id = ?")?
                .execute([&token])?;
            c.prepare_cached("DELETE FROM mozilla_queues WHERE token_id = ?")?
                .execute([&token])?;
            c.prepare_cached("DELETE FROM mozilla_tokens WHERE token_id = ?")?
                .execute([&token])?;
            c.prepare_cached("DELETE FROM streams WHERE stream = ?")?
                .execute([StreamKey::mozilla_token(&token).as_str()])?;
            Ok(())
        })
        .await
    }

    async fn create_queue(
        &self,
        token: &str,
        domain: &str,
        new_id: &str,
        now_us: i64,
    ) -> StoreResult<Option<Queue>> {
        let (token, domain, new_id) = (token.to_owned(), domain.to_owned(), new_id.to_owned());
        self.write(move |c| {
            if !c
                .prepare_cached("SELECT 1 FROM mozilla_tokens WHERE token_id = ?")?
                .exists([&token])?
            {
                return Ok(None);
            }
            let existing = c
                .prepare_cached(&format!(
                    "SELECT {QUEUE_COLUMNS} FROM mozilla_queues WHERE token_id = ? AND domain = ?"
                ))?
                .query_row([&token, &domain], queue_from_row)
                .optional()?;
            if existing.is_some() {
                return Ok(existing);
            }
            c.prepare_cached(
                "INSERT INTO mozilla_queues (queue_id, token_id, domain, read_us, created_us)
                 VALUES (?, ?, ?, 0, ?)",
            )?
            .execute(params![new_id, token, domain, now_us])?;
            Ok(Some(Queue {
                id: new_id,
                token,
                domain: Some(domain),
                read_us: 0,
            }))
        })
        .await
    }

    async fn queue(&self, id: &str) -> StoreResult<Option<Queue>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {QUEUE_COLUMNS} FROM mozilla_queues WHERE queue_id = ?"
            ))?
            .query_row([id], queue_from_row)
            .optional()
        })
        .await
    }

    async fn domain_queues(&self, token: &str) -> StoreResult<Vec<Queue>> {
        let token = token.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {QUEUE_COLUMNS} FROM mozilla_queues
                 WHERE token_id = ? AND domain IS NOT NULL ORDER BY domain"
            ))?;
            let rows = stmt.query_map([token], queue_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn delete_queue(&self, token: &str, id: &str) -> StoreResult<bool> {
        let (token, id) = (token.to_owned(), id.to_owned());
        self.write(move |c| {
            let deleted = c
                .prepare_cached(
                    "DELETE FROM mozilla_queues
                     WHERE queue_id = ? AND token_id = ? AND domain IS NOT NULL",
                )?
                .execute([id, token])?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn advance_read_timestamp(&self, id: &str, read_us: i64) -> StoreResult<Option<i64>> {
        let id = id.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE mozilla_queues SET read_us = MAX(read_us, ?) WHERE queue_id = ?
                 RETURNING read_us",
            )?
            .query_row(params![read_us, id], |r| r.get(0))
            .optional()
        })
        .await
    }

    async fn add_queue_message(&self, message: &QueueMessage) -> StoreResult<Option<Appended>> {
        let m = message.clone();
        self.write(move |c| {
            let queue_exists = c
                .prepare_cached("SELECT 1 FROM mozilla_queues WHERE queue_id = ? AND token_id = ?")?
                .exists([&m.queue, &m.token])?;
            if !queue_exists {
                return Ok(None);
            }
            // Inside the write transaction (one writer per process, BEGIN IMMEDIATE across
            // processes): offsets are dense and unique, times increase per stream.
            let stream = StreamKey::mozilla_token(&m.token);
            let Some((epoch, offset, created_us)) = c
                .prepare_cached(
                    "UPDATE streams SET head = head + 1, last_us = MAX(last_us + 1, ?)
                     WHERE stream = ? RETURNING epoch, head, last_us",
                )?
                .query_row(params![m.created_us, stream.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get(2)?))
                })
                .optional()?
            else {
                return Ok(None);
            };
            c.prepare_cached(
                "INSERT INTO mozilla_messages (key, queue_id, token_id, stream_offset, created_us,
                   title, body, action_url, icon_url, replace_id, read_key)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                m.key,
                m.queue,
                m.token,
                offset,
                created_us,
                m.body.title,
                m.body.body,
                m.body.action_url,
                m.body.icon_url,
                m.body.replace_id,
                m.body.read
            ])?;
            Ok(Some(Appended {
                created_us,
                position: Position {
                    epoch,
                    offset: offset.max(0) as u64,
                },
            }))
        })
        .await
    }

    async fn queue_message(
        &self,
        scope: QueueScope<'_>,
        key: &str,
    ) -> StoreResult<Option<QueueMessage>> {
        let (scope, key) = (OwnedScope::from(scope), key.to_owned());
        self.read(move |c| find_message(c, scope.as_scope(), &key))
            .await
    }

    async fn list_queue_messages(
        &self,
        scope: QueueScope<'_>,
        after: &After,
        limit: usize,
    ) -> StoreResult<Vec<QueueMessage>> {
        let mut params = Vec::new();
        let scope = scope_sql(scope, &mut params);
        let after = after_sql(after, &mut params);
        params.push(limit_value(limit));
        self.read(move |c| select_messages(c, &[scope, after, LATEST_OF_REPLACE_ID], params))
            .await
    }
}

/// A `QueueScope` that can move into a blocking closure.
enum OwnedScope {
    Queue(String),
    Token(String),
}

impl From<QueueScope<'_>> for OwnedScope {
    fn from(scope: QueueScope<'_>) -> Self {
        match scope {
            QueueScope::Queue(id) => OwnedScope::Queue(id.to_owned()),
            QueueScope::Token(token) => OwnedScope::Token(token.to_owned()),
        }
    }
}

impl OwnedScope {
    fn as_scope(&self) -> QueueScope<'_> {
        match self {
            OwnedScope::Queue(id) => QueueScope::Queue(id),
            OwnedScope::Token(token) => QueueScope::Token(token),
        }
    }
}
