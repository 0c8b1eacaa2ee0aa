//! The recovery worker: when a router stream may have lost envelopes, re-read from the store
//! what was created (or read) since the stream was last known whole, and offer it to this
//! edge's sockets. The hub de-duplicates against what each socket already received, so a
//! recovery that finds nothing missing sends nothing.
//!
//! Requests coalesce: while a pass runs, further requests only lower the start time of the
//! next pass. A pass that fails (store unavailable) is retried until it succeeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::message::{Delivery, QueueMessage};
use common::store::{After, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::EdgeState;

const NONE: i64 = i64::MAX;
/// Messages read from the store per query.
const PAGE: usize = 500;
const RETRY: Duration = Duration::from_secs(1);

/// Handle to ask for a recovery pass.
pub struct Recovery {
    /// Start of the next pass, or `NONE`.
    pending_from: AtomicI64,
    wake: Notify,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            pending_from: AtomicI64::new(NONE),
            wake: Notify::new(),
        }
    }
}

impl Recovery {
    /// Asks for a pass covering deliveries created at or after `from_us`.
    pub fn request(&self, from_us: i64, reason: &'static str) {
        tracing::debug!(from_us, reason, "recovery requested");
        self.pending_from.fetch_min(from_us, Ordering::AcqRel);
        self.wake.notify_one();
    }

    fn take(&self) -> Option<i64> {
        let from = self.pending_from.swap(NONE, Ordering::AcqRel);
        (from != NONE).then_some(from)
    }
}

/// Runs passes as they are requested, until `shutdown`.
pub async fn run(edge: Arc<EdgeState>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = edge.recovery.wake.notified() => {}
        }
        let Some(from) = edge.recovery.take() else {
            continue;
        };
        let from = from.saturating_sub(edge.margin_us());
        match pass(&edge, from).await {
            Ok(replayed) => {
                edge.metrics.recoveries.with_label_values(&["ok"]).inc();
                if replayed > 0 {
                    tracing::info!(replayed, "recovery replayed deliveries");
                }
            }
            Err(e) => {
                edge.metrics.recoveries.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, "recovery failed; retrying");
                edge.recovery.request(from, "retry");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// One pass from `from_us`; how many socket deliveries it made.
async fn pass(edge: &EdgeState, from_us: i64) -> Result<usize, StoreError> {
    if edge.hub.is_empty() {
        return Ok(0);
    }
    let max = edge.config.recovery_max_messages;
    let mut replayed = 0;
    let mut scanned = 0;
    let mut after = After::Time(from_us.saturating_sub(1));
    loop {
        let page = edge.store.queue_messages_since(&after, PAGE).await?;
        scanned += page.len();
        for message in &page {
            replayed += replay_message(edge, message);
        }
        match page.last() {
            Some(last) if page.len() == PAGE && scanned < max => {
                after = After::Message {
                    created_us: last.created_us,
                    key: last.key.clone(),
                };
            }
            _ => break,
        }
    }
    if scanned >= max {
        edge.metrics.recovery_truncated.inc();
        tracing::warn!(max, "recovery stopped at websockets.recovery_max_messages");
    }
    for mark in edge.store.queue_reads_since(from_us, max).await? {
        let delivery = Delivery::QueueRead {
            token: mark.token,
            key: mark.key,
        };
        replayed += edge.offer(&delivery, Some(mark.read_us));
    }
    edge.metrics.recovered.inc_by(replayed as u64);
    Ok(replayed)
}

fn replay_message(edge: &EdgeState, message: &QueueMessage) -> usize {
    if !edge.hub.has_token(&message.token) {
        return 0;
    }
    let delivery = Delivery::QueueMessage {
        message: message.clone(),
    };
    edge.offer(&delivery, Some(message.created_us))
}
