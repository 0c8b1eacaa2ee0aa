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

use common::message::Delivery;
use common::store::StoreError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::EdgeState;
use crate::hub::RECENT;

const NONE: i64 = i64::MAX;
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
        let Some(requested) = edge.recovery.take() else {
            continue;
        };
        match pass(&edge, requested.saturating_sub(edge.margin_us())).await {
            Ok(replayed) => {
                edge.metrics.recoveries.with_label_values(&["ok"]).inc();
                if replayed > 0 {
                    tracing::info!(replayed, "recovery replayed deliveries");
                }
            }
            Err(e) => {
                edge.metrics.recoveries.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, "recovery failed; retrying");
                // The request as it came: the margin is applied once, on the next pass.
                edge.recovery.request(requested, "retry");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// One pass from `from_us` over the tokens with sockets here; how many socket deliveries
/// it made. Each token replays at most `hub::RECENT` messages and read marks, oldest first:
/// what each socket remembers for de-duplication.
async fn pass(edge: &EdgeState, from_us: i64) -> Result<usize, StoreError> {
    let mut replayed = 0;
    for token in edge.hub.tokens() {
        let messages = edge
            .store
            .token_messages_since(&token, from_us, RECENT)
            .await?;
        if messages.len() == RECENT {
            edge.metrics.recovery_truncated.inc();
            tracing::warn!(limit = RECENT, "recovery of one token stopped at its limit");
        }
        for message in messages {
            let created_us = message.created_us;
            replayed += edge.offer(&Delivery::QueueMessage { message }, Some(created_us));
        }
        for mark in edge
            .store
            .token_reads_since(&token, from_us, RECENT)
            .await?
        {
            let delivery = Delivery::QueueRead {
                token: mark.token,
                key: mark.key,
            };
            replayed += edge.offer(&delivery, Some(mark.read_us));
        }
    }
    edge.metrics.recovered.inc_by(replayed as u64);
    Ok(replayed)
}
