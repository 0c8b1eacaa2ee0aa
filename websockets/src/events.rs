//! Users' sockets opening and closing (`connected` / `disconnected`, SPEC §4 Webhooks),
//! queued in memory and recorded for the apps' webhooks in one store call by presence's
//! flusher every `websockets.presence_flush_ms`, rather than a store round trip per
//! socket. At most `MAX_QUEUED` wait; beyond that new ones are dropped and counted
//! (`herald_websockets_socket_events_dropped_total`). The drain records what is left
//! after the last socket closed.

use std::sync::Mutex;

use api::service::webhooks::SocketEvent;
use prometheus::IntCounter;

use crate::EdgeState;

/// Most events waiting for a flush.
pub const MAX_QUEUED: usize = 65_536;

/// The events not recorded yet, oldest first.
pub struct Queue {
    waiting: Mutex<Vec<SocketEvent>>,
    dropped: IntCounter,
}

impl Queue {
    pub fn new(dropped: IntCounter) -> Queue {
        Queue {
            waiting: Mutex::new(Vec::new()),
            dropped,
        }
    }

    /// Queues `event`, or counts it dropped when `MAX_QUEUED` are waiting.
    pub fn push(&self, event: SocketEvent) {
        match self.waiting.lock() {
            Ok(mut waiting) if waiting.len() < MAX_QUEUED => waiting.push(event),
            _ => self.dropped.inc(),
        }
    }

    fn take(&self) -> Vec<SocketEvent> {
        self.waiting
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }

    /// Puts back a batch the store did not take, before what came since (within
    /// `MAX_QUEUED`, the newest dropped beyond).
    fn restore(&self, mut batch: Vec<SocketEvent>) {
        if let Ok(mut waiting) = self.waiting.lock() {
            batch.append(&mut waiting);
            let over = batch.len().saturating_sub(MAX_QUEUED);
            batch.truncate(MAX_QUEUED);
            self.dropped.inc_by(over as u64);
            *waiting = batch;
        }
    }
}

/// Records what is waiting; on a store failure keeps it for the next flush.
pub async fn flush(edge: &EdgeState) {
    let batch = edge.socket_events.take();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = edge.services.socket_events(&batch).await {
        tracing::warn!(error = %e, events = batch.len(), "cannot record socket events; retrying");
        edge.socket_events.restore(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::ids::{AppId, UserId};
    use common::store::EventKind;

    fn event(n: i64) -> SocketEvent {
        SocketEvent {
            app: AppId::parse("dev").unwrap(),
            user: UserId::parse("u").unwrap(),
            kind: EventKind::Connected,
            at_us: n,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_a_restored_batch_goes_first() {
        let dropped = IntCounter::new("d", "d").unwrap();
        let queue = Queue::new(dropped.clone());
        for n in 0..MAX_QUEUED as i64 + 2 {
            queue.push(event(n));
        }
        assert_eq!(dropped.get(), 2);
        let batch = queue.take();
        assert_eq!(batch.len(), MAX_QUEUED);
        queue.push(event(-1));
        queue.restore(batch);
        let again = queue.take();
        assert_eq!(
            again.len(),
            MAX_QUEUED,
            "the newest beyond the bound dropped"
        );
        assert_eq!(again[0].at_us, 0, "the failed batch first, in order");
        assert_eq!(dropped.get(), 3);
    }
}
