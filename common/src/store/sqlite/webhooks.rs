//! The `Webhooks` concern on SQLite: a `webhooks` row per app (configuration, lease,
//! backoff, counters) and the `webhook_outbox` table. An event is inserted with
//! `INSERT … SELECT … FROM webhooks WHERE instr(events, ',kind,')`, so it is kept only if
//! the app wants its kind, inside whatever transaction caused it; a claim and its lease are
//! one conditional update on the writer connection, so two dispatchers never hold one app.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, limit_value, to_u64};
use crate::ids::{AppId, UserId};
use crate::store::{
    AddressedMessage, Batch, BatchFormat, BatchOutcome, EventKind, OutboxLimits, StoreResult,
    Webhook, WebhookEvent, WebhookState, Webhooks,
};

/// `',sent,delivered,'`: the stored form of a kind list.
fn events_column(events: &[EventKind]) -> String {
    let mut column = String::from(",");
    for kind in events {
        column.push_str(kind.as_str());
        column.push(',');
    }
    column
}

fn conversion(i: usize, e: impl ToString) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.to_string().into())
}

/// Inserts one event if its app's webhook wants its kind; whether it did.
fn insert_event(c: &Connection, e: &WebhookEvent, recorded_us: i64) -> rusqlite::Result<bool> {
    let kind = format!(",{},", e.kind.as_str());
    let inserted = c
        .prepare_cached(
            "INSERT INTO webhook_outbox
               (id, app, kind, message_id, foreign_id, recipient, at_us, recorded_us)
             SELECT ?, app, ?, ?, ?, ?, ?, ? FROM webhooks
             WHERE app = ? AND instr(events, ?) > 0",
        )?
        .execute(params![
            e.id,
            e.kind.as_str(),
            e.message_id,
            e.foreign_id,
            e.recipient.as_ref().map(UserId::as_str),
            e.at_us,
            recorded_us,
            e.app.as_str(),
            kind,
        ])?;
    Ok(inserted == 1)
}

/// Records that `message` changed (`kind`) at `at_us`, inside the caller's transaction
/// (the `Messages` transitions): for its app's webhook, and for the callback of the
/// PushPushGo bucket that sent it, if one did.
pub(super) fn message_event(
    c: &Connection,
    kind: EventKind,
    message: &AddressedMessage,
    at_us: i64,
) -> rusqlite::Result<()> {
    for event in message.webhook_events(kind, at_us) {
        insert_event(c, &event, at_us)?;
    }
    Ok(())
}

const WEBHOOK_COLUMNS: &str =
    "app, url, secret, events, max_batch, max_delay_ms, updated_us, format";

fn webhook_from_row(row: &Row<'_>) -> rusqlite::Result<Webhook> {
    let events: String = row.get(3)?;
    Ok(Webhook {
        app: AppId::parse(row.get::<_, String>(0)?).map_err(|e| conversion(0, e))?,
        url: row.get(1)?,
        secret: row.get(2)?,
        events: events
            .split(',')
            .filter(|k| !k.is_empty())
            .map(|k| EventKind::parse(k).ok_or_else(|| conversion(3, k)))
            .collect::<rusqlite::Result<_>>()?,
        max_batch: u32::try_from(row.get::<_, i64>(4)?).map_err(|e| conversion(4, e))?,
        max_delay_ms: to_u64(row.get(5)?),
        updated_us: row.get(6)?,
        format: {
            let text: Option<String> = row.get(7)?;
            BatchFormat::from_stored(text.as_deref())
                .ok_or_else(|| conversion(7, text.unwrap_or_default()))?
        },
    })
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<WebhookEvent> {
    let kind: String = row.get(2)?;
    Ok(WebhookEvent {
        id: row.get(0)?,
        app: AppId::parse(row.get::<_, String>(1)?).map_err(|e| conversion(1, e))?,
        kind: EventKind::parse(&kind).ok_or_else(|| conversion(2, kind))?,
        message_id: row.get(3)?,
        foreign_id: row.get(4)?,
        recipient: row
            .get::<_, Option<String>>(5)?
            .map(UserId::parse)
            .transpose()
            .map_err(|e| conversion(5, e))?,
        at_us: row.get(6)?,
    })
}

/// Drops `app`'s events older than the retry window and beyond the per-app bound, adding
/// them to its `dropped` count.
fn drop_overflow(
    c: &Connection,
    app: &str,
    now_us: i64,
    limits: OutboxLimits,
) -> rusqlite::Result<()> {
    let old = c
        .prepare_cached("DELETE FROM webhook_outbox WHERE app = ? AND recorded_us < ?")?
        .execute(params![app, now_us.saturating_sub(limits.max_age_us)])?;
    let over = c
        .prepare_cached(
            "DELETE FROM webhook_outbox WHERE app = ?1 AND seq <= (
               SELECT seq FROM webhook_outbox WHERE app = ?1
               ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )?
        .execute(params![app, limit_value(limits.max_pending as usize)])?;
    if old + over > 0 {
        c.prepare_cached("UPDATE webhooks SET dropped = dropped + ? WHERE app = ?")?
            .execute(params![(old + over) as i64, app])?;
    }
    Ok(())
}

/// Whether `app`'s batch is due: a retry came due, the batch is full, or its oldest event
/// waited long enough.
fn due(
    c: &Connection,
    app: &str,
    max_batch: i64,
    max_delay_ms: i64,
    failures: i64,
    now_us: i64,
) -> rusqlite::Result<bool> {
    if failures > 0 {
        return Ok(true);
    }
    let (count, oldest): (i64, Option<i64>) = c
        .prepare_cached(
            "SELECT COUNT(*), MIN(recorded_us) FROM
               (SELECT recorded_us FROM webhook_outbox WHERE app = ? ORDER BY seq LIMIT ?)",
        )?
        .query_row(params![app, max_batch], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(count >= max_batch
        || oldest.is_some_and(|o| o <= now_us.saturating_sub(max_delay_ms.saturating_mul(1000))))
}

/// The apps whose batch is due at `now_us` and free to claim, with their `max_batch` and
/// failures in a row (a few at a time, longest waiting first).
fn due_apps(c: &Connection, now_us: i64) -> rusqlite::Result<Vec<(String, i64, i64)>> {
    let candidates: Vec<(String, i64, i64, i64)> = c
        .prepare_cached(
            "SELECT w.app, w.max_batch, w.max_delay_ms, w.failures FROM webhooks w
             WHERE w.lease_until_us <= ?1 AND w.next_attempt_us <= ?1
               AND EXISTS (SELECT 1 FROM webhook_outbox o WHERE o.app = w.app)
             ORDER BY w.next_attempt_us LIMIT 32",
        )?
        .query_map([now_us], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut due_now = Vec::new();
    for (app, max_batch, max_delay_ms, failures) in candidates {
        if due(c, &app, max_batch, max_delay_ms, failures, now_us)? {
            due_now.push((app, max_batch, failures));
        }
    }
    Ok(due_now)
}

fn claim(
    c: &Connection,
    holder: &str,
    now_us: i64,
    limits: OutboxLimits,
) -> rusqlite::Result<Option<Batch>> {
    for (app, max_batch, failures) in due_apps(c, now_us)? {
        if failures > 0 {
            drop_overflow(c, &app, now_us, limits)?;
        }
        let webhook = c
            .prepare_cached(&format!(
                "UPDATE webhooks SET lease_holder = ?, lease_until_us = ?
                 WHERE app = ? RETURNING {WEBHOOK_COLUMNS}"
            ))?
            .query_row(
                params![holder, now_us.saturating_add(limits.lease_us), app],
                webhook_from_row,
            )?;
        let events = c
            .prepare_cached(
                "SELECT id, app, kind, message_id, foreign_id, recipient, at_us
                 FROM webhook_outbox WHERE app = ? ORDER BY seq LIMIT ?",
            )?
            .query_map(params![app, max_batch], event_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if events.is_empty() {
            c.prepare_cached(
                "UPDATE webhooks SET lease_holder = NULL, lease_until_us = 0 WHERE app = ?",
            )?
            .execute([&app])?;
            continue;
        }
        return Ok(Some(Batch {
            webhook,
            events,
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
        }));
    }
    Ok(None)
}

fn settle(
    c: &Connection,
    app: &str,
    holder: &str,
    ids: &[String],
    outcome: &BatchOutcome,
    now_us: i64,
) -> rusqlite::Result<bool> {
    let held = c
        .prepare_cached("SELECT 1 FROM webhooks WHERE app = ? AND lease_holder = ?")?
        .query_row(params![app, holder], |_| Ok(()))
        .optional()?
        .is_some();
    match outcome {
        BatchOutcome::Sent => {
            let mut delete =
                c.prepare_cached("DELETE FROM webhook_outbox WHERE app = ? AND id = ?")?;
            for id in ids {
                delete.execute(params![app, id])?;
            }
            c.prepare_cached(
                "UPDATE webhooks SET failures = 0, last_attempt_us = ?1, last_success_us = ?1,
                   next_attempt_us = 0
                 WHERE app = ?2",
            )?
            .execute(params![now_us, app])?;
        }
        BatchOutcome::Failed { error, retry_at_us } if held => {
            c.prepare_cached(
                "UPDATE webhooks SET failures = failures + 1, last_error = ?, last_attempt_us = ?,
                   next_attempt_us = ?
                 WHERE app = ?",
            )?
            .execute(params![error, now_us, retry_at_us, app])?;
        }
        BatchOutcome::Failed { .. } => {}
    }
    if held {
        c.prepare_cached(
            "UPDATE webhooks SET lease_holder = NULL, lease_until_us = 0
             WHERE app = ? AND lease_holder = ?",
        )?
        .execute(params![app, holder])?;
    }
    Ok(held)
}

#[async_trait]
impl Webhooks for SqliteStore {
    async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        let w = webhook.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO webhooks
                   (app, url, secret, events, max_batch, max_delay_ms, updated_us, format)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (app) DO UPDATE SET url = ?2, secret = ?3, events = ?4,
                   max_batch = ?5, max_delay_ms = ?6, updated_us = ?7, format = ?8,
                   next_attempt_us = 0",
            )?
            .execute(params![
                w.app.as_str(),
                w.url,
                w.secret,
                events_column(&w.events),
                i64::from(w.max_batch),
                w.max_delay_ms as i64,
                w.updated_us,
                w.format.to_stored(),
            ])
            .map(|_| ())
        })
        .await
    }

    async fn webhook(&self, app: &AppId) -> StoreResult<Option<(Webhook, WebhookState)>> {
        let app = app.clone();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS}, failures, last_error, last_attempt_us,
                   last_success_us, next_attempt_us, dropped,
                   (SELECT COUNT(*) FROM webhook_outbox o WHERE o.app = w.app)
                 FROM webhooks w WHERE app = ?"
            ))?
            .query_row([app.as_str()], |r| {
                Ok((
                    webhook_from_row(r)?,
                    WebhookState {
                        failures: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(u32::MAX),
                        last_error: r.get(9)?,
                        last_attempt_us: r.get(10)?,
                        last_success_us: r.get(11)?,
                        next_attempt_us: r.get(12)?,
                        dropped: to_u64(r.get(13)?),
                        pending: to_u64(r.get(14)?),
                    },
                ))
            })
            .optional()
        })
        .await
    }

    async fn delete_webhook(&self, app: &AppId) -> StoreResult<bool> {
        let app = app.clone();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM webhook_outbox WHERE app = ?")?
                .execute([app.as_str()])?;
            Ok(c.prepare_cached("DELETE FROM webhooks WHERE app = ?")?
                .execute([app.as_str()])?
                == 1)
        })
        .await
    }

    async fn record_events(&self, events: &[WebhookEvent]) -> StoreResult<usize> {
        // Most sockets open and close with no webhook listening: find that out on a reader
        // instead of queueing a write.
        let apps: Vec<(AppId, EventKind)> =
            events.iter().map(|e| (e.app.clone(), e.kind)).collect();
        let wanted = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT 1 FROM webhooks WHERE app = ? AND instr(events, ?) > 0",
                )?;
                for (app, kind) in &apps {
                    let kind = format!(",{},", kind.as_str());
                    if stmt.exists(params![app.as_str(), kind])? {
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .await?;
        if !wanted {
            return Ok(0);
        }
        let events = events.to_vec();
        self.write(move |c| {
            let now = crate::clock::now_us();
            let mut kept = 0;
            for e in &events {
                kept += usize::from(insert_event(c, e, now)?);
            }
            Ok(kept)
        })
        .await
    }

    async fn outbox_depth(&self) -> StoreResult<u64> {
        self.read(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM webhook_outbox")?
                .query_row([], |r| r.get::<_, i64>(0))
                .map(to_u64)
        })
        .await
    }

    async fn claim_batch(
        &self,
        holder: &str,
        now_us: i64,
        limits: OutboxLimits,
    ) -> StoreResult<Option<Batch>> {
        // Polled often by every API process: look on a reader first, write only when some
        // app's batch is due.
        if self.read(move |c| due_apps(c, now_us)).await?.is_empty() {
            return Ok(None);
        }
        let holder = holder.to_owned();
        self.write(move |c| claim(c, &holder, now_us, limits)).await
    }

    async fn settle_batch(
        &self,
        app: &AppId,
        holder: &str,
        ids: &[String],
        outcome: BatchOutcome,
        now_us: i64,
    ) -> StoreResult<bool> {
        let (app, holder, ids) = (app.clone(), holder.to_owned(), ids.to_vec());
        self.write(move |c| settle(c, app.as_str(), &holder, &ids, &outcome, now_us))
            .await
    }
}
