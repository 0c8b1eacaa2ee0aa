//! SQLite backend: the embedded default. The schema is `schema.sql` at the repository
//! root, applied idempotently on open. The file is shared safely by several processes on
//! one machine: WAL journal, `synchronous=FULL` (a commit is on disk before it returns),
//! a busy timeout, and `BEGIN IMMEDIATE` so writers queue at the start of a transaction.
//!
//! Each process has one writer thread owning one connection. Writes queue to it over a
//! bounded channel; it takes every job waiting (up to `MAX_BATCH`), runs each inside its
//! own SAVEPOINT within one transaction and answers them all after the single COMMIT
//! (group commit: one fsync for many requests, and no job is answered before its effect is
//! durable). Reads run on a small pool of `query_only` connections via `spawn_blocking`,
//! never on async worker threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{
    After, Appended, MAX_HEADS, NodeHeartbeat, NodeRecord, NodeStatus, Queue, QueueScope, Store,
    StoreError, StoreResult,
};
use crate::config::{StoreConfig, ms};
use crate::message::{Delivery, QueueBody, QueueMessage};
use crate::stream::{Position, StreamKey, StreamKind, new_epoch};

/// The schema, applied on every open (every statement is `IF NOT EXISTS`).
pub const SCHEMA: &str = include_str!("../../../schema.sql");
/// The `schema_meta.schema_version` that `SCHEMA` is.
const SCHEMA_VERSION: i64 = 2;
/// Version 1 → 2, before `SCHEMA` runs: move the old message table aside (its indexes
/// first, so the new ones can take their names).
const MIGRATE_1_BEFORE: &str = "
    DROP INDEX IF EXISTS mozilla_messages_by_queue;
    DROP INDEX IF EXISTS mozilla_messages_by_token;
    DROP INDEX IF EXISTS mozilla_messages_by_replace_id;
    DROP INDEX IF EXISTS mozilla_messages_by_created;
    DROP INDEX IF EXISTS mozilla_messages_by_token_read;
    ALTER TABLE mozilla_messages RENAME TO mozilla_messages_v1;";
/// Version 1 → 2, after `SCHEMA` ran: number each token's messages in creation order and
/// give every token its stream. Version 1's read marks were events, not messages: dropped.
const MIGRATE_1_AFTER: &str = "
    INSERT INTO mozilla_messages
        (key, queue_id, token_id, stream_offset, created_us, title, body, action_url, replace_id)
    SELECT key, queue_id, token_id,
           ROW_NUMBER() OVER (PARTITION BY token_id ORDER BY created_us, key),
           created_us, title, body, action_url, replace_id
    FROM mozilla_messages_v1;
    INSERT INTO streams (stream, epoch, head, last_us)
    SELECT 't/' || t.token_id, lower(hex(randomblob(4))),
           COALESCE(MAX(m.stream_offset), 0), COALESCE(MAX(m.created_us), 0)
    FROM mozilla_tokens t LEFT JOIN mozilla_messages m ON m.token_id = t.token_id
    GROUP BY t.token_id;
    DROP TABLE mozilla_messages_v1;";
/// Most write jobs committed in one transaction.
const MAX_BATCH: usize = 256;
/// Write jobs waiting for the writer thread before callers wait for room.
const WRITE_QUEUE: usize = 4_096;

type Job = Box<dyn WriteJob>;

/// The SQLite implementation of `Store`.
pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    readers: Arc<ReaderPool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database, switches it to WAL, applies the schema and
    /// starts the writer thread.
    pub async fn open(config: &StoreConfig) -> anyhow::Result<SqliteStore> {
        let path = config.sqlite_path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let busy = ms(config.busy_timeout_ms);
        let writer_path = path.clone();
        let conn = tokio::task::spawn_blocking(move || prepare_database(&writer_path, busy))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))?;
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(ReaderPool {
                path,
                busy,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(config.sqlite_readers.max(1))),
            }),
        })
    }

    /// Runs `work` on the writer connection inside the next committed batch.
    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = TypedJob {
            work: Some(work),
            outcome: None,
            reply,
        };
        self.writer
            .send(Box::new(job))
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer thread stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("the SQLite writer dropped a job".into()))?
    }

    /// Runs `work` on a pooled read-only connection off the async threads.
    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("reader pool closed".into()))?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.checkout().map_err(map_err)?;
            let result = work(&conn).map_err(map_err);
            pool.checkin(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

/// Opens the writer connection: WAL, pragmas, schema (migrating an older database).
fn prepare_database(path: &Path, busy: Duration) -> anyhow::Result<Connection> {
    let conn = open_connection(path, busy, false)?;
    enable_wal(&conn, busy)?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match apply_schema(&conn) {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(conn)
}

/// Brings the database to `SCHEMA_VERSION` inside the caller's transaction.
fn apply_schema(conn: &Connection) -> anyhow::Result<()> {
    let has_meta = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_meta'")?
        .exists([])?;
    let version: Option<i64> = if has_meta {
        conn.query_row(
            "SELECT CAST(value AS INTEGER) FROM schema_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?
    } else {
        None
    };
    match version {
        Some(v) if v > SCHEMA_VERSION => anyhow::bail!(
            "the database has schema version {v}, newer than this build's {SCHEMA_VERSION}"
        ),
        Some(1) => {
            tracing::info!("migrating the database from schema version 1 to 2");
            conn.execute_batch(MIGRATE_1_BEFORE)?;
            conn.execute_batch(SCHEMA)?;
            conn.execute_batch(MIGRATE_1_AFTER)?;
        }
        _ => conn.execute_batch(SCHEMA)?,
    }
    Ok(())
}

fn open_connection(path: &Path, busy: Duration, read_only: bool) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    if read_only {
        conn.pragma_update(None, "query_only", true)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Switching to WAL needs a moment of exclusive access, which the busy handler does not
/// always wait for when several processes start at once: retry until the busy timeout.
fn enable_wal(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    let deadline = Instant::now() + busy;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | CannotOpen | DiskFull | SystemIoFailure) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

struct ReaderPool {
    path: PathBuf,
    busy: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReaderPool {
    fn checkout(&self) -> rusqlite::Result<Connection> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match pooled {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path, self.busy, true),
        }
    }

    fn checkin(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

/// A write queued for the writer thread, type-erased.
trait WriteJob: Send {
    /// Runs the work inside a savepoint of the current transaction. `Err` means the
    /// transaction itself is broken (SQLite rolled it back, or a savepoint could not be
    /// released or undone): the whole batch must fail.
    fn apply(&mut self, conn: &Connection) -> StoreResult<()>;
    /// Answers the caller once the transaction's fate is known.
    fn complete(self: Box<Self>, commit: &StoreResult<()>);
}

struct TypedJob<T, F> {
    work: Option<F>,
    outcome: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> WriteJob for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn apply(&mut self, conn: &Connection) -> StoreResult<()> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        conn.execute_batch("SAVEPOINT job").map_err(map_err)?;
        let outcome = work(conn);
        let undone = match &outcome {
            Ok(_) => conn.execute_batch("RELEASE job"),
            Err(_) => conn.execute_batch("ROLLBACK TO job; RELEASE job"),
        };
        self.outcome = Some(outcome.map_err(map_err));
        undone.map_err(map_err)?;
        if conn.is_autocommit() {
            // SQLITE_FULL, IOERR, NOMEM… roll the whole transaction back by themselves.
            return Err(StoreError::Unavailable(
                "SQLite rolled the transaction back".into(),
            ));
        }
        Ok(())
    }

    fn complete(self: Box<Self>, commit: &StoreResult<()>) {
        let outcome = match commit {
            Err(e) => Err(e.clone()),
            Ok(()) => self
                .outcome
                .unwrap_or_else(|| Err(StoreError::Internal("write job never ran".into()))),
        };
        let _ = self.reply.send(outcome);
    }
}

fn writer_loop(conn: Connection, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let commit = commit_batch(&conn, &mut batch);
        if let Err(e) = &commit {
            tracing::warn!(jobs = batch.len(), error = %e, "SQLite batch failed");
        }
        for job in batch {
            job.complete(&commit);
        }
    }
}

/// Runs every job in one transaction. A job whose own work fails is undone alone; if the
/// transaction breaks, it is rolled back and every job of the batch fails with it, so no
/// caller is told "failed" about a write that in fact committed (or the reverse).
fn commit_batch(conn: &Connection, batch: &mut [Job]) -> StoreResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
    let applied = batch.iter_mut().try_for_each(|job| job.apply(conn));
    let committed = applied.and_then(|()| conn.execute_batch("COMMIT").map_err(map_err));
    if committed.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    committed
}

const QUEUE_COLUMNS: &str = "queue_id, token_id, domain, read_us";
const MESSAGE_COLUMNS: &str = "m.key, m.queue_id, m.token_id, m.created_us, m.title, m.body, \
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
fn message_at_from_row(row: &Row<'_>) -> rusqlite::Result<(QueueMessage, u64)> {
    let offset: i64 = row.get(10)?;
    Ok((message_from_row(row)?, offset.max(0) as u64))
}

fn offset_value(offset: u64) -> Value {
    Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX))
}

fn node_from_row(row: &Row<'_>) -> rusqlite::Result<NodeRecord> {
    let status: String = row.get(3)?;
    Ok(NodeRecord {
        id: row.get(0)?,
        url: row.get(1)?,
        connections: row.get::<_, i64>(2)?.max(0) as u64,
        status: if status == "draining" {
            NodeStatus::Draining
        } else {
            NodeStatus::Up
        },
        started_us: row.get(4)?,
        heartbeat_us: row.get(5)?,
        checked_us: row.get(6)?,
        check_failures: row.get(7)?,
        monitor_down: row.get(8)?,
    })
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

fn limit_value(limit: usize) -> Value {
    Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX))
}

#[async_trait]
impl Store for SqliteStore {
    /// Through the writer: proves the writer thread runs and can take the write lock.
    async fn ping(&self) -> StoreResult<()> {
        self.write(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

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
                "SELECT stream, epoch, head FROM streams WHERE stream IN ({})",
                vec!["?"; keys.len()].join(", ")
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(keys), |r| {
                let head: i64 = r.get(2)?;
                Ok((
                    StreamKey::from(r.get::<_, String>(0)?),
                    Position {
                        epoch: r.get(1)?,
                        offset: head.max(0) as u64,
                    },
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
    ) -> StoreResult<Vec<Delivery>> {
        let Some(StreamKind::MozillaToken(token)) = stream.kind() else {
            return Ok(Vec::new());
        };
        let (stream, token) = (stream.clone(), token.to_owned());
        self.read(move |c| {
            let Some(epoch) = c
                .prepare_cached("SELECT epoch FROM streams WHERE stream = ?")?
                .query_row([stream.as_str()], |r| r.get::<_, String>(0))
                .optional()?
            else {
                return Ok(Vec::new());
            };
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM mozilla_messages m
                 WHERE m.token_id = ? AND m.stream_offset > ? ORDER BY m.stream_offset LIMIT ?"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let params = [Value::Text(token), offset_value(after), limit_value(limit)];
            let rows = stmt.query_map(params_from_iter(params), message_at_from_row)?;
            rows.map(|row| {
                let (message, offset) = row?;
                let position = Position {
                    epoch: epoch.clone(),
                    offset,
                };
                Ok(Delivery::queue_message(message, position))
            })
            .collect()
        })
        .await
    }

    async fn upsert_node(&self, hb: &NodeHeartbeat) -> StoreResult<()> {
        let hb = hb.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO edge_nodes (node_id, url, connections, status, started_us, heartbeat_us)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (node_id) DO UPDATE SET url = excluded.url,
                   connections = excluded.connections, status = excluded.status,
                   heartbeat_us = excluded.heartbeat_us",
            )?
            .execute(params![
                hb.id,
                hb.url,
                i64::try_from(hb.connections).unwrap_or(i64::MAX),
                hb.status.as_str(),
                hb.started_us,
                hb.now_us
            ])?;
            Ok(())
        })
        .await
    }

    async fn remove_node(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM edge_nodes WHERE node_id = ?")?
                .execute([id])?;
            Ok(())
        })
        .await
    }

    async fn nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT node_id, url, connections, status, started_us, heartbeat_us,
                        checked_us, check_failures, monitor_down
                 FROM edge_nodes ORDER BY node_id",
            )?;
            let rows = stmt.query_map([], node_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn record_node_check(
        &self,
        url: &str,
        ok: bool,
        now_us: i64,
        failures_before_down: u32,
    ) -> StoreResult<()> {
        let url = url.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE edge_nodes SET checked_us = ?1,
                   check_failures = CASE WHEN ?2 THEN 0 ELSE check_failures + 1 END,
                   monitor_down = CASE WHEN ?2 THEN 0
                                       WHEN check_failures + 1 >= ?3 THEN 1
                                       ELSE monitor_down END
                 WHERE url = ?4",
            )?
            .execute(params![now_us, ok, failures_before_down, url])?;
            Ok(())
        })
        .await
    }

    async fn prune_nodes(&self, before_us: i64) -> StoreResult<u64> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM edge_nodes WHERE heartbeat_us < ?")?
                .execute([before_us])?;
            Ok(n as u64)
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;

    fn config(dir: &tempfile::TempDir) -> StoreConfig {
        StoreConfig {
            sqlite_path: dir.path().join("sub/herald.db"),
            ..StoreConfig::default()
        }
    }

    #[tokio::test]
    async fn passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&config(&dir)).await.unwrap();
        super::super::conformance::run_all(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn opens_in_wal_mode_and_reapplies_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir);
        drop(SqliteStore::open(&config).await.unwrap());
        let again = SqliteStore::open(&config).await.unwrap();
        again.ping().await.unwrap();
        let conn = Connection::open(&config.sqlite_path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    /// Two stores on one file stand for two processes: each sees the other's commits,
    /// and concurrent writers from both all land.
    #[tokio::test]
    async fn two_openers_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir);
        let a = Arc::new(SqliteStore::open(&config).await.unwrap());
        let b = Arc::new(SqliteStore::open(&config).await.unwrap());
        let mut tasks = Vec::new();
        for i in 0..50 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let token = format!("token-{i}");
                store
                    .create_token(&token, &format!("own-{i}"), i)
                    .await
                    .unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for i in 0..50 {
            assert!(a.token_exists(&format!("token-{i}")).await.unwrap());
            assert!(b.token_exists(&format!("token-{i}")).await.unwrap());
        }
    }

    type Answer<T> = oneshot::Receiver<StoreResult<T>>;

    fn job<T, F>(work: F) -> (Job, Answer<T>)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        (
            Box::new(TypedJob {
                work: Some(work),
                outcome: None,
                reply,
            }),
            answer,
        )
    }

    fn insert_token(id: &'static str) -> impl FnOnce(&Connection) -> rusqlite::Result<usize> {
        move |c| c.execute("INSERT INTO mozilla_tokens VALUES (?, 'q', 1)", [id])
    }

    fn tokens(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT token_id FROM mozilla_tokens ORDER BY 1")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn run_batch(conn: &Connection, mut batch: Vec<Job>) -> StoreResult<()> {
        let commit = commit_batch(conn, &mut batch);
        for job in batch {
            job.complete(&commit);
        }
        commit
    }

    /// A job whose own work fails is undone alone; the rest of its batch commits.
    #[test]
    fn a_failed_job_is_undone_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let conn = prepare_database(&dir.path().join("h.db"), Duration::from_secs(1)).unwrap();
        let (a, a_answer) = job(insert_token("a"));
        let (duplicate, duplicate_answer) = job(insert_token("a"));
        let (c, c_answer) = job(insert_token("c"));
        run_batch(&conn, vec![a, duplicate, c]).unwrap();
        assert!(a_answer.blocking_recv().unwrap().is_ok());
        assert!(duplicate_answer.blocking_recv().unwrap().is_err());
        assert!(c_answer.blocking_recv().unwrap().is_ok());
        assert_eq!(tokens(&conn), ["a", "c"]);
    }

    /// When the transaction itself breaks (as SQLite does on a full disk), every job of the
    /// batch fails and nothing of it is committed, so no caller is misinformed.
    #[test]
    fn a_broken_transaction_fails_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let conn = prepare_database(&dir.path().join("h.db"), Duration::from_secs(1)).unwrap();
        let (x, x_answer) = job(insert_token("x"));
        let (breaker, _) = job(|c| c.execute_batch("ROLLBACK"));
        let (y, y_answer) = job(insert_token("y"));
        assert!(run_batch(&conn, vec![x, breaker, y]).is_err());
        assert!(
            x_answer.blocking_recv().unwrap().is_err(),
            "x was rolled back: not ok"
        );
        assert!(y_answer.blocking_recv().unwrap().is_err(), "y never ran");
        assert!(tokens(&conn).is_empty());
        let (z, z_answer) = job(insert_token("z"));
        run_batch(&conn, vec![z]).unwrap();
        assert!(
            z_answer.blocking_recv().unwrap().is_ok(),
            "the connection recovers"
        );
        assert_eq!(tokens(&conn), ["z"]);
    }

    /// A version-1 database (global creation order, no streams) opens as version 2: each
    /// token's messages numbered in creation order, streams at their last offset, appends
    /// going on from there.
    #[tokio::test]
    async fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir);
        std::fs::create_dir_all(config.sqlite_path.parent().unwrap()).unwrap();
        let old = Connection::open(&config.sqlite_path).unwrap();
        old.execute_batch(include_str!("testdata/schema-v1.sql"))
            .unwrap();
        old.execute_batch(
            "INSERT INTO mozilla_tokens VALUES ('t1', 'q1', 1), ('t2', 'q2', 1);
             INSERT INTO mozilla_queues VALUES ('q1', 't1', NULL, 0, 1), ('q2', 't2', NULL, 0, 1);
             INSERT INTO mozilla_messages (key, queue_id, token_id, created_us, title)
             VALUES ('b', 'q1', 't1', 20, 'second'), ('a', 'q1', 't1', 10, 'first'),
                    ('c', 'q1', 't1', 30, 'third');",
        )
        .unwrap();
        drop(old);

        let store = SqliteStore::open(&config).await.unwrap();
        let t1 = StreamKey::mozilla_token("t1");
        let t2 = StreamKey::mozilla_token("t2");
        let heads = store.stream_heads(&[t1.clone(), t2.clone()]).await.unwrap();
        let offsets: std::collections::HashMap<_, _> =
            heads.into_iter().map(|(k, p)| (k, p.offset)).collect();
        assert_eq!((offsets[&t1], offsets[&t2]), (3, 0));
        let replay = store.read_stream(&t1, 0, 10).await.unwrap();
        let titles: Vec<_> = replay
            .iter()
            .map(|d| match &d.event {
                crate::message::Event::QueueMessage { message } => {
                    (d.offset(), message.body.title.clone().unwrap())
                }
            })
            .collect();
        assert_eq!(
            titles,
            [
                (1, "first".into()),
                (2, "second".into()),
                (3, "third".into())
            ]
        );
        let next = QueueMessage {
            key: "d".into(),
            queue: "q1".into(),
            token: "t1".into(),
            created_us: 5,
            body: QueueBody::read_mark("a"),
        };
        let appended = store.add_queue_message(&next).await.unwrap().unwrap();
        assert_eq!((appended.position.offset, appended.created_us), (4, 31));
        drop(store);
        let conn = Connection::open(&config.sqlite_path).unwrap();
        let version: String = conn
            .query_row(
                "SELECT value FROM schema_meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, "2");
    }

    #[tokio::test]
    async fn a_newer_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir);
        drop(SqliteStore::open(&config).await.unwrap());
        Connection::open(&config.sqlite_path)
            .unwrap()
            .execute(
                "UPDATE schema_meta SET value = '99' WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        let err = SqliteStore::open(&config).await.err().expect("must fail");
        assert!(err.to_string().contains("schema version 99"), "{err:#}");
    }

    #[tokio::test]
    async fn an_unwritable_path_is_a_clear_error() {
        let config = StoreConfig {
            sqlite_path: PathBuf::from("/proc/herald/nope.db"),
            ..StoreConfig::default()
        };
        let err = SqliteStore::open(&config).await.err().expect("must fail");
        assert!(err.to_string().contains("/proc/herald"), "{err}");
    }
}
