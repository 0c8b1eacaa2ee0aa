//! SQLite backend: the embedded default, in two database files.
//!
//! The **durable** database (`store.sqlite_path`, schema `schema.sql` at the repository
//! root, migrated on open from older versions) holds what a 2xx promises: queues, streams,
//! channels and their history, idempotency keys, revocations. It is shared safely by
//! several processes on one machine: WAL journal, `synchronous=FULL` (a commit is on disk
//! before it returns), a busy timeout, and `BEGIN IMMEDIATE` so writers queue at the start
//! of a transaction.
//!
//! The **live** database (`store.sqlite_live_path`, schema `live.sql` beside this file)
//! holds what heartbeats rebuild — the edge registry and presence — with
//! `synchronous=OFF`, so that it never waits behind an fsync; a live file that cannot be
//! opened is deleted and recreated.
//!
//! Each database has, per process, one writer thread owning one connection. Writes queue to
//! it over a bounded channel; it takes every job waiting (up to `MAX_BATCH`), runs each
//! inside its own SAVEPOINT within one transaction and answers them all after the single
//! COMMIT (group commit: one fsync for many requests, and no job is answered before its
//! effect is durable). Reads run on a small pool of `query_only` connections via
//! `spawn_blocking`, never on async worker threads.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::metrics::{STORE_METRICS, observe};
use super::{Ping, StoreError, StoreResult};
use crate::config::{StoreConfig, ms};

mod broadcasts;
mod buckets;
mod channels;
mod contexts;
mod live;
mod messages;
mod queues;
mod revocations;
mod streams;
mod templates;
mod webhooks;
mod webpush;

pub use live::SqliteLive;

/// The durable schema, applied on every open (every statement is `IF NOT EXISTS`).
pub const SCHEMA: &str = include_str!("../../../../schema.sql");
/// The `schema_meta.schema_version` that `SCHEMA` is.
const SCHEMA_VERSION: i64 = 4;
/// Version 1 → 2, before `SCHEMA` runs: move the old message table aside (its indexes
/// first, so the new ones can take their names); the edge registry moved to the live file.
const MIGRATE_1_BEFORE: &str = "
    DROP INDEX IF EXISTS mozilla_messages_by_queue;
    DROP INDEX IF EXISTS mozilla_messages_by_token;
    DROP INDEX IF EXISTS mozilla_messages_by_replace_id;
    DROP INDEX IF EXISTS mozilla_messages_by_created;
    DROP INDEX IF EXISTS mozilla_messages_by_token_read;
    ALTER TABLE mozilla_messages RENAME TO mozilla_messages_v1;
    DROP TABLE IF EXISTS edge_nodes;";
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

/// Which of the two databases, and so how it is opened and what schema it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbKind {
    Durable,
    Live,
}

impl DbKind {
    fn synchronous(self) -> &'static str {
        match self {
            DbKind::Durable => "FULL",
            DbKind::Live => "OFF",
        }
    }

    fn thread_name(self) -> &'static str {
        match self {
            DbKind::Durable => "sqlite-writer",
            DbKind::Live => "sqlite-live-writer",
        }
    }
}

/// One database file: its writer thread and its reader pool.
struct Db {
    writer: mpsc::Sender<Job>,
    readers: Arc<ReaderPool>,
}

impl Db {
    /// Opens (creating if needed) the database, switches it to WAL, applies its schema and
    /// starts the writer thread.
    async fn open(path: &Path, config: &StoreConfig, kind: DbKind) -> anyhow::Result<Db> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let busy = ms(config.busy_timeout_ms);
        let writer_path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || prepare_database(&writer_path, busy, kind))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e:#}", path.display()))?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name(kind.thread_name().into())
            .spawn(move || writer_loop(conn, rx))?;
        Ok(Db {
            writer: tx,
            readers: Arc::new(ReaderPool {
                path: path.to_owned(),
                kind,
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
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let job = TypedJob {
            work: Some(work),
            outcome: None,
            reply,
        };
        let queue = &STORE_METRICS.write_queue;
        queue.inc();
        let result = match self.writer.send(Box::new(job)).await {
            Ok(()) => answer
                .await
                .map_err(|_| StoreError::Internal("the SQLite writer dropped a job".into()))
                .and_then(|outcome| outcome),
            Err(_) => {
                queue.dec();
                Err(StoreError::Unavailable(
                    "the SQLite writer thread stopped".into(),
                ))
            }
        };
        observe("write", started, &result);
        result
    }

    /// Runs `work` on a pooled read-only connection off the async threads.
    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let started = Instant::now();
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("reader pool closed".into()))?;
        let pool = self.readers.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.checkout().map_err(map_err)?;
            let result = work(&conn).map_err(map_err);
            pool.checkin(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))
        .and_then(|result| result);
        observe("read", started, &result);
        result
    }

    /// Through the writer: proves the writer thread runs and can take the write lock.
    async fn ping(&self) -> StoreResult<()> {
        self.write(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }
}

/// The durable database: `Queues`, `Streams`, `Channels`, `Contexts`, `Revocations`.
pub struct SqliteStore {
    db: Db,
}

impl SqliteStore {
    /// Opens `store.sqlite_path` (migrating an older schema).
    pub async fn open(config: &StoreConfig) -> anyhow::Result<SqliteStore> {
        let db = Db::open(&config.sqlite_path, config, DbKind::Durable).await?;
        Ok(SqliteStore { db })
    }

    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.db.write(work).await
    }

    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.db.read(work).await
    }
}

#[async_trait]
impl Ping for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db.ping().await
    }
}

/// Opens the writer connection: WAL, pragmas, schema (migrating an older database); sets
/// the process's `BUSY_TIMEOUT_US` to `busy` for every connection of the file.
fn prepare_database(path: &Path, busy: Duration, kind: DbKind) -> anyhow::Result<Connection> {
    BUSY_TIMEOUT_US.store(
        u64::try_from(busy.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    let conn = open_connection(path, kind, false)?;
    enable_wal(&conn, busy)?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let applied = match kind {
        DbKind::Durable => apply_schema(&conn),
        DbKind::Live => conn.execute_batch(live::SCHEMA).map_err(Into::into),
    };
    match applied {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(conn)
}

/// Brings the durable database to `SCHEMA_VERSION` inside the caller's transaction.
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
        Some(v) if v < SCHEMA_VERSION => {
            tracing::info!("migrating the database from schema version {v} to {SCHEMA_VERSION}");
            if v == 1 {
                conn.execute_batch(MIGRATE_1_BEFORE)?;
                conn.execute_batch(SCHEMA)?;
                conn.execute_batch(MIGRATE_1_AFTER)?;
            }
            add_missing_columns(conn)?;
            conn.execute_batch(SCHEMA)?;
        }
        _ => conn.execute_batch(SCHEMA)?,
    }
    Ok(())
}

/// Columns added to existing tables since version 2, as `(table, column, type)`; tables
/// added since are created by `SCHEMA` itself.
const ADDED_COLUMNS: [(&str, &str, &str); 3] = [
    // 3: which channel delivered a message, and how a webhook's batches are written.
    ("messages", "delivered_via", "TEXT"),
    ("webhooks", "format", "TEXT"),
    // 4: the PushPushGo bucket that sent a message to a Herald user.
    ("messages", "bucket", "TEXT"),
];

/// Adds each of `ADDED_COLUMNS` its table lacks (a database of version 2 or 3).
fn add_missing_columns(conn: &Connection) -> anyhow::Result<()> {
    for (table, column, kind) in ADDED_COLUMNS {
        let present = conn
            .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
            .exists([table, column])?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind};"))?;
        }
    }
    Ok(())
}

/// A count or limit as an SQLite integer.
/// A newest-first keyset listing of one app's rows (`created_us`, `id`), built condition
/// by condition (every filter of messages and broadcasts).
struct Listing {
    sql: String,
    values: Vec<Value>,
}

impl Listing {
    /// `SELECT columns FROM table WHERE app = ?`.
    fn new(columns: &str, table: &str, app: &str) -> Listing {
        Listing {
            sql: format!("SELECT {columns} FROM {table} WHERE app = ?"),
            values: vec![Value::Text(app.to_owned())],
        }
    }

    /// `AND clause` with its one parameter.
    fn and(&mut self, clause: &str, value: Value) {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
        self.values.push(value);
    }

    /// `AND column = ?` when `value` is set.
    fn equal(&mut self, column: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.and(&format!("{column} = ?"), Value::Text(value.to_owned()));
        }
    }

    /// `created_us` and `expires_us` within their inclusive bounds (each end optional).
    fn ranges(&mut self, created: (Option<i64>, Option<i64>), expires: (Option<i64>, Option<i64>)) {
        for (clause, bound) in [
            ("created_us >= ?", created.0),
            ("created_us <= ?", created.1),
            ("expires_us >= ?", expires.0),
            ("expires_us <= ?", expires.1),
        ] {
            if let Some(bound) = bound {
                self.and(clause, Value::Integer(bound));
            }
        }
    }

    /// The statement: strictly after `cursor`, newest first, at most `limit`.
    fn finish(mut self, cursor: Option<&super::ListCursor>, limit: usize) -> (String, Vec<Value>) {
        if let Some(cursor) = cursor {
            self.and(
                "(created_us < ? OR (created_us = ? AND id < ?))",
                Value::Integer(cursor.created_us),
            );
            self.values.push(Value::Integer(cursor.created_us));
            self.values.push(Value::Text(cursor.id.clone()));
        }
        self.sql
            .push_str(" ORDER BY created_us DESC, id DESC LIMIT ?");
        self.values.push(limit_value(limit));
        (self.sql, self.values)
    }
}

fn limit_value(limit: usize) -> Value {
    Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX))
}

/// A stream offset as an SQLite integer.
fn offset_value(offset: u64) -> Value {
    Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX))
}

/// An SQLite integer read back as an offset or count.
fn to_u64(value: i64) -> u64 {
    value.max(0) as u64
}

fn open_connection(path: &Path, kind: DbKind, read_only: bool) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_handler(Some(wait_for_lock))?;
    conn.pragma_update(None, "synchronous", kind.synchronous())?;
    conn.pragma_update(None, "foreign_keys", true)?;
    if read_only {
        conn.pragma_update(None, "query_only", true)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// How long a statement waits for a lock another process holds, in µs
/// (`store.busy_timeout_ms`). One value per process, as `wait_for_lock` is a plain function.
static BUSY_TIMEOUT_US: AtomicU64 = AtomicU64::new(5_000_000);

thread_local! {
    /// When this thread's current wait for a lock began.
    static WAITING_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The busy handler of every connection: called by SQLite with the number of earlier
/// calls for the same lock; `true` to try again, `false` to give up with `SQLITE_BUSY`
/// once `BUSY_TIMEOUT_US` has passed. SQLite's own handler (`sqlite3_busy_timeout`) sleeps
/// 1, 2, 5, 10 … 100 ms between tries, so a writer waiting on another process's commit
/// (well under a millisecond apart here) sat idle long after the lock was free: two API
/// processes then wrote at half the rate of one. This one tries again after 20 µs,
/// doubling to at most 500 µs.
fn wait_for_lock(attempt: i32) -> bool {
    let now = Instant::now();
    let since = WAITING_SINCE.with(|since| {
        if attempt == 0 || since.get().is_none() {
            since.set(Some(now));
        }
        since.get().unwrap_or(now)
    });
    let timeout = Duration::from_micros(BUSY_TIMEOUT_US.load(Ordering::Relaxed));
    if now.duration_since(since) >= timeout {
        return false;
    }
    let pause = 20u64 << attempt.clamp(0, 5);
    std::thread::sleep(Duration::from_micros(pause.min(500)));
    true
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

pub(super) fn map_err(e: rusqlite::Error) -> StoreError {
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
    kind: DbKind,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReaderPool {
    fn checkout(&self) -> rusqlite::Result<Connection> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match pooled {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path, self.kind, true),
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
        STORE_METRICS.write_queue.sub(batch.len() as i64);
        STORE_METRICS.write_batch.observe(batch.len() as f64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::message::{QueueBody, QueueMessage};
    use crate::store::{Queues, Streams};
    use crate::stream::StreamKey;

    fn config(dir: &tempfile::TempDir) -> StoreConfig {
        StoreConfig {
            sqlite_path: dir.path().join("sub/herald.db"),
            sqlite_live_path: dir.path().join("sub/herald-live.db"),
            ..StoreConfig::default()
        }
    }

    #[tokio::test]
    async fn passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let stores = crate::store::open(&config(&dir)).await.unwrap();
        crate::store::conformance::run_all(stores).await;
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

    /// Another process's open transaction holds the write lock: a write waits for it
    /// (`wait_for_lock`) and lands once it ends, or gives up as `Unavailable` (a 503, not
    /// a 500) after `store.busy_timeout_ms`.
    #[tokio::test]
    async fn a_write_waits_for_another_process_and_gives_up_after_the_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir);
        let store = SqliteStore::open(&config).await.unwrap();
        let other = Connection::open(&config.sqlite_path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = store.create_token("held", "own-held", 1).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

        let (started, start) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            start.recv().unwrap();
            // The other process's transaction ends while the write below waits.
            std::thread::sleep(Duration::from_millis(50));
            other.execute_batch("COMMIT").unwrap();
        });
        let write = store.create_token("waited", "own-waited", 1);
        started.send(()).unwrap();
        write.await.unwrap();
        holder.join().unwrap();
        assert!(store.token_exists("waited").await.unwrap());
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
        let conn = prepare_database(
            &dir.path().join("h.db"),
            Duration::from_secs(1),
            DbKind::Durable,
        )
        .unwrap();
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
        let conn = prepare_database(
            &dir.path().join("h.db"),
            Duration::from_secs(1),
            DbKind::Durable,
        )
        .unwrap();
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
        let replay = store.read_stream(&t1, 0, 10, 0).await.unwrap();
        let titles: Vec<_> = replay
            .iter()
            .map(|d| match &d.event {
                crate::message::Event::QueueMessage { message } => {
                    (d.offset(), message.body.title.clone().unwrap())
                }
                other => panic!("{other:?}"),
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
        assert_eq!(version, SCHEMA_VERSION.to_string());
    }

    #[tokio::test]
    async fn a_version_2_database_gets_the_columns_added_since() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir);
        drop(SqliteStore::open(&config).await.unwrap());
        Connection::open(&config.sqlite_path)
            .unwrap()
            .execute_batch(
                "ALTER TABLE messages DROP COLUMN delivered_via;
                 ALTER TABLE messages DROP COLUMN bucket;
                 ALTER TABLE webhooks DROP COLUMN format;
                 DROP TABLE webpush_jobs;
                 UPDATE schema_meta SET value = '2' WHERE key = 'schema_version';",
            )
            .unwrap();
        drop(SqliteStore::open(&config).await.unwrap());
        let conn = Connection::open(&config.sqlite_path).unwrap();
        let (version, columns, jobs): (String, i64, i64) = conn
            .query_row(
                "SELECT (SELECT value FROM schema_meta WHERE key = 'schema_version'),
                        (SELECT count(*) FROM pragma_table_info('messages')
                         WHERE name IN ('delivered_via', 'bucket')),
                        (SELECT count(*) FROM sqlite_master WHERE name = 'webpush_jobs')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((version.as_str(), columns, jobs), ("4", 2, 1));
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
