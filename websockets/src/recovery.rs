//! The recovery worker: brings this edge's streams up to what the store holds, by position.
//!
//! Checks are asked for per stream — after the reorder window when an entry arrived after a
//! gap (`check_after_gap`), a moment after a stream's first socket subscribed
//! (`check_new`), at once when a stream's epoch changed or its parking space filled
//! (`check_now`) — or for every stream at once when a router stream may have lost
//! envelopes (`check_all`: a sequence gap, a new router epoch, a silent router, an API's
//! `Recover`). Requests coalesce per stream; a pass reads the heads of the streams due, in
//! batches, and for each stream behind the store reads "after the cursor" in pages until
//! it has caught up, handing the entries to the hub, which delivers each once and in order
//! (`crate::hub`). No time window, no "oldest N", no memory of message ids.
//!
//! Bounded: a stream more than `websockets.recovery_limit` entries behind is not replayed;
//! its sockets are told to re-read history instead (native: `resync`; Mozilla and VPush:
//! close 4010) and the cursor moves to the head. Ephemeral streams cannot be replayed:
//! after a router-link anomaly their native sockets get `resync`. A user's stream is
//! checked against its revocation, so a force logout whose push was lost still closes the
//! user's sockets. A pass that fails (store unavailable) retries its streams.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clock::now_us;
use common::ids::{AppId, UserId};
use common::message::Delivery;
use common::store::{MAX_HEADS, StoreError};
use common::stream::{Position, StreamKey, StreamKind};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::EdgeState;
use crate::frames::resync_frame;
use crate::hub::close_code;

/// Entries read from the store per page.
const PAGE: usize = 500;
/// How soon a failed check is retried.
const RETRY: Duration = Duration::from_secs(1);
/// Streams waiting for a check at most; past this, every stream is checked instead.
const MAX_PENDING: usize = 65_536;

/// What the worker is asked to check.
#[derive(Debug, Default)]
struct Pending {
    /// When each stream is due, and whether the check can be skipped if the stream has no
    /// gap by then.
    streams: HashMap<StreamKey, Due>,
    /// Every stream is due at this time, and whether ephemeral streams must be told to
    /// resync.
    all: Option<(Instant, bool)>,
}

#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    only_if_gap: bool,
}

/// Handle to ask for checks.
pub struct Recovery {
    pending: Mutex<Pending>,
    wake: Notify,
    /// How long an entry waits after a gap before the store is asked.
    reorder_window: Duration,
}

/// How a stream's check ended (the `outcome` label of `recovery_streams_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing missing.
    UpToDate,
    /// Missing entries were read and handed over.
    CaughtUp,
    /// Too far behind: sockets told to re-read history, cursor moved to the head.
    TooFarBehind,
    /// The stream no longer exists in the store, or no socket here follows it any more.
    Gone,
    /// An ephemeral stream: nothing to replay.
    Ephemeral,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::UpToDate => "up_to_date",
            Outcome::CaughtUp => "caught_up",
            Outcome::TooFarBehind => "too_far_behind",
            Outcome::Gone => "gone",
            Outcome::Ephemeral => "ephemeral",
        }
    }
}

impl Recovery {
    pub fn new(reorder_window: Duration) -> Recovery {
        Recovery {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            reorder_window,
        }
    }

    /// An entry of `key` arrived after a gap: check once the reorder window has passed,
    /// unless the gap has filled by then.
    pub fn check_after_gap(&self, key: &StreamKey) {
        self.schedule(key, self.reorder_window, true);
    }

    /// A stream's first socket here subscribed: after the reorder window, confirm that no
    /// entry went by between reading its head and following it.
    pub fn check_new(&self, key: &StreamKey) {
        self.schedule(key, self.reorder_window, false);
    }

    /// Check `key` as soon as possible.
    pub fn check_now(&self, key: &StreamKey) {
        self.schedule(key, Duration::ZERO, false);
    }

    /// Check every stream followed here, as soon as possible; with `resync`, ephemeral
    /// streams' sockets are told they may have missed messages.
    pub fn check_all(&self, reason: &'static str, resync: bool) {
        tracing::debug!(reason, "recovery of every stream requested");
        self.all_due(Instant::now(), resync);
    }

    fn all_due(&self, at: Instant, resync: bool) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.all = Some(match pending.all {
                Some((t, r)) => (t.min(at), r || resync),
                None => (at, resync),
            });
        }
        self.wake.notify_one();
    }

    fn schedule(&self, key: &StreamKey, delay: Duration, only_if_gap: bool) {
        let due = Due {
            at: Instant::now() + delay,
            only_if_gap,
        };
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        match pending.streams.entry(key.clone()) {
            Entry::Occupied(mut slot) => {
                let old = *slot.get();
                slot.insert(Due {
                    at: old.at.min(due.at),
                    only_if_gap: old.only_if_gap && due.only_if_gap,
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(due);
            }
        }
        if pending.streams.len() > MAX_PENDING {
            pending.streams.clear();
            let resync = pending.all.is_some_and(|(_, r)| r);
            pending.all = Some((due.at, resync));
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// Takes the streams due by `now` (all of `followed()` if every stream is due, with
    /// whether to resync ephemeral ones); else when the next one is due.
    fn take_due(
        &self,
        now: Instant,
        followed: impl FnOnce() -> Vec<StreamKey>,
    ) -> Result<Due2, Option<Instant>> {
        let Ok(mut pending) = self.pending.lock() else {
            return Err(None);
        };
        if let Some((at, resync)) = pending.all
            && at <= now
        {
            pending.all = None;
            pending.streams.clear();
            let keys = followed().into_iter().map(|k| (k, false)).collect();
            return Ok(Due2 { keys, resync });
        }
        let due: Vec<(StreamKey, bool)> = pending
            .streams
            .iter()
            .filter(|(_, d)| d.at <= now)
            .map(|(k, d)| (k.clone(), d.only_if_gap))
            .collect();
        if !due.is_empty() {
            for (key, _) in &due {
                pending.streams.remove(key);
            }
            return Ok(Due2 {
                keys: due,
                resync: false,
            });
        }
        let next = pending.streams.values().map(|d| d.at).min();
        Err(match (next, pending.all.map(|(t, _)| t)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}

/// Streams due for a check (and whether the check may be skipped if no gap remains), and
/// whether ephemeral streams are to be told to resync.
#[derive(Debug, PartialEq, Eq)]
struct Due2 {
    keys: Vec<(StreamKey, bool)>,
    resync: bool,
}

/// Runs checks as they fall due, until `shutdown`.
pub async fn run(edge: Arc<EdgeState>, shutdown: CancellationToken) {
    loop {
        match edge
            .recovery
            .take_due(Instant::now(), || edge.hub.stream_keys())
        {
            Ok(due) => {
                let keys: Vec<StreamKey> = due
                    .keys
                    .into_iter()
                    .filter(|(key, only_if_gap)| {
                        !*only_if_gap || edge.hub.cursor(key).is_some_and(|c| c.gap)
                    })
                    .map(|(key, _)| key)
                    .collect();
                pass(&edge, &keys, due.resync).await;
            }
            Err(next) => {
                let sleep = tokio::time::sleep_until(
                    next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = edge.recovery.wake.notified() => {}
                    _ = sleep => {}
                }
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// Checks `keys` against the store, in batches; reschedules what could not be checked.
async fn pass(edge: &EdgeState, keys: &[StreamKey], resync: bool) {
    tracing::debug!(streams = keys.len(), resync, "recovery pass");
    if keys.is_empty() {
        return;
    }
    for (done, batch) in keys.chunks(MAX_HEADS).enumerate() {
        let outcome = check_batch(edge, batch, resync).await;
        if let Err(e) = outcome {
            edge.metrics.recoveries.with_label_values(&["error"]).inc();
            tracing::warn!(error = %e, "recovery failed; retrying");
            for key in keys.iter().skip(done * MAX_HEADS) {
                edge.recovery.schedule(key, RETRY, false);
            }
            return;
        }
    }
    edge.metrics.recoveries.with_label_values(&["ok"]).inc();
}

async fn check_batch(
    edge: &EdgeState,
    batch: &[StreamKey],
    resync: bool,
) -> Result<(), StoreError> {
    let heads: HashMap<StreamKey, Position> = edge
        .services
        .stores
        .streams
        .stream_heads(batch)
        .await?
        .into_iter()
        .collect();
    for key in batch {
        let outcome = match (heads.get(key), key.kind()) {
            (Some(head), _) => catch_up(edge, key, head).await?,
            (None, Some(StreamKind::User { app, user })) => {
                check_revocation(edge, key, app, user).await?;
                Outcome::Ephemeral
            }
            (None, Some(StreamKind::Channel { channel, .. })) => {
                if resync {
                    let told = edge.hub.resync_ephemeral(key, &resync_frame(channel));
                    tracing::debug!(stream = %key, told, "ephemeral stream told to resync");
                }
                Outcome::Ephemeral
            }
            (None, Some(StreamKind::Broadcast { .. })) => Outcome::Ephemeral,
            (None, _) => Outcome::Gone,
        };
        edge.metrics
            .recovery_streams
            .with_label_values(&[outcome.label()])
            .inc();
    }
    Ok(())
}

/// Brings one stream up to `head`: replays what lies between the cursor and the head, or
/// gives up on it when that is more than the recovery limit.
async fn catch_up(
    edge: &EdgeState,
    key: &StreamKey,
    head: &Position,
) -> Result<Outcome, StoreError> {
    let Some(mut cursor) = edge.hub.cursor(key) else {
        return Ok(Outcome::Gone);
    };
    if cursor.epoch.is_none() {
        // Followed as ephemeral; its history is on now. Its sockets did not ask for the
        // past: follow from the head.
        edge.hub.join_head(key, head);
        return Ok(Outcome::UpToDate);
    }
    if cursor.epoch.as_deref() != Some(head.epoch.as_str()) {
        tracing::info!(stream = %key, "stream has a new epoch; following it from its start");
        edge.hub.reset_epoch(key, &head.epoch);
        cursor.offset = 0;
    }
    let behind = head.offset.saturating_sub(cursor.offset);
    if behind == 0 {
        if cursor.gap {
            // Parked entries beyond the head this pass read: look again shortly.
            edge.recovery.check_after_gap(key);
        }
        return Ok(Outcome::UpToDate);
    }
    if behind > edge.config.recovery_limit {
        let resync = resync_frame(key.channel_name());
        let sockets = edge.hub.skip_to(key, head, close_code::RESYNC, &resync);
        tracing::warn!(stream = %key, behind, sockets, "too far behind to replay; sockets told to resync");
        return Ok(Outcome::TooFarBehind);
    }
    let mut after = cursor.offset;
    loop {
        let page = edge
            .services
            .stores
            .streams
            .read_stream(key, after, PAGE, now_us())
            .await?;
        let Some(last) = page.last().map(Delivery::offset) else {
            break;
        };
        if page
            .iter()
            .any(|d| d.position.as_ref().is_none_or(|p| p.epoch != head.epoch))
        {
            // Reset while we read: the next check follows the new epoch.
            edge.recovery.check_now(key);
            break;
        }
        let full = page.len() == PAGE;
        let offsets: Vec<u64> = page.iter().map(Delivery::offset).collect();
        // Addressed messages are settled (PENDING → DELIVERED) first, as live ones are.
        let frames: Vec<_> = offsets
            .into_iter()
            .zip(
                edge.settle(page, crate::inbox::Marking::ByFollowers)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            )
            .collect();
        let fanout = edge.hub.replay(key, &head.epoch, frames);
        edge.metrics.recovered.inc_by(fanout.queued as u64);
        edge.metrics
            .deliveries
            .with_label_values(&["recovered"])
            .inc_by(fanout.queued as u64);
        after = last;
        if !full || after >= head.offset {
            break;
        }
    }
    if edge.hub.cursor(key).is_some_and(|c| c.gap) {
        edge.recovery.check_after_gap(key);
    }
    Ok(Outcome::CaughtUp)
}

/// Closes the sockets of a user whose tokens a force logout revoked (its push may have been
/// lost with a router).
async fn check_revocation(
    edge: &EdgeState,
    key: &StreamKey,
    app: &str,
    user: &str,
) -> Result<(), StoreError> {
    let (Ok(app), Ok(user)) = (AppId::parse(app), UserId::parse(user)) else {
        return Ok(());
    };
    if let Some(before_us) = edge
        .services
        .stores
        .revocations
        .not_before(&app, &user)
        .await?
    {
        edge.hub.logout(key, before_us);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> StreamKey {
        StreamKey::mozilla_token(name)
    }

    #[test]
    fn requests_coalesce_and_fall_due_in_time() {
        let recovery = Recovery::new(Duration::from_millis(100));
        let none = Vec::new;
        let before = Instant::now();
        recovery.check_after_gap(&key("a"));
        recovery.check_new(&key("a"));
        let now = Instant::now();
        let next = recovery.take_due(now, none).unwrap_err().unwrap();
        assert!(next >= before + Duration::from_millis(100) && next > now);
        recovery.check_now(&key("b"));
        assert_eq!(
            recovery.take_due(Instant::now(), none).unwrap().keys,
            [(key("b"), false)]
        );
        let later = next;
        assert_eq!(
            recovery.take_due(later, none).unwrap().keys,
            [(key("a"), false)],
            "one check; it may not be skipped, as one request could not"
        );
        assert_eq!(recovery.take_due(later, none).unwrap_err(), None);
    }

    #[test]
    fn check_all_takes_every_followed_stream() {
        let recovery = Recovery::new(Duration::from_millis(100));
        recovery.check_after_gap(&key("a"));
        recovery.check_all("test", false);
        recovery.check_all("test", true);
        let due = recovery
            .take_due(Instant::now(), || vec![key("a"), key("b")])
            .unwrap();
        assert_eq!(due.keys, [(key("a"), false), (key("b"), false)]);
        assert!(due.resync, "one request asked to resync");
        assert_eq!(
            recovery.take_due(Instant::now(), Vec::new).unwrap_err(),
            None,
            "the per-stream request was folded in"
        );
    }

    #[test]
    fn too_many_pending_streams_become_one_check_of_all() {
        let recovery = Recovery::new(Duration::ZERO);
        for i in 0..=MAX_PENDING {
            recovery.check_now(&key(&i.to_string()));
        }
        let due = recovery
            .take_due(Instant::now(), || vec![key("only")])
            .unwrap();
        assert_eq!(due.keys, [(key("only"), false)]);
    }
}
