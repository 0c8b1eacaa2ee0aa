//! Addressed messages at the edge (SPEC §4 Messages, §6 delivery modes): every entry of a
//! user's inbox stream is *settled* before a socket gets it — moved `PENDING → DELIVERED`
//! in the store through the service layer (`Services::deliver_messages`), in one batch
//! per app — and handed over only if this edge made that
//! transition or the message was already `DELIVERED` (another edge, another of the user's
//! sockets); a message found `CANCELLED` or `EXPIRED` is withheld, its position still
//! passed so the stream goes on. So a cancelled or expired message is never delivered
//! afterwards, and the status says `DELIVERED` once it was handed to a live socket.
//!
//! Live entries go through one worker in arrival order (a bounded queue; when it is full
//! the stream is left to recovery, which reads the store after the cursor and settles what
//! it reads the same way). A socket that connects gets its user's `PENDING` messages up to
//! the inbox head it joined at, oldest first, settled likewise (`pending`).
//!
//! A socket in at-least-once mode (token claim `ack`) is handed messages without marking
//! them: its client's `ack` frame does (`Services::acknowledge_message`), and what it did not acknowledge is
//! still `PENDING`, so its next connection gets it again. Where default-mode and ack-mode
//! sockets of one user share an edge, handing over marks it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use api::service::ServiceResult;
use common::clock::now_us;
use common::ids::AppId;
use common::message::{Delivery, Event};
use common::stream::Position;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::EdgeState;
use crate::frames::Rendered;
use crate::session::Session;

/// Live inbox entries waiting for the worker.
const QUEUE: usize = 10_000;
/// Entries settled in one store transaction at most.
const BATCH: usize = 256;
/// Pending messages a connecting socket gets at most (the rest stay `PENDING`, for the
/// next connection or for listing).
pub const MAX_PENDING: usize = 1_000;

/// The live entries' queue.
pub struct Inbox {
    tx: mpsc::Sender<(Delivery, i64)>,
    rx: Mutex<Option<mpsc::Receiver<(Delivery, i64)>>>,
}

impl Default for Inbox {
    fn default() -> Inbox {
        let (tx, rx) = mpsc::channel(QUEUE);
        Inbox {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Inbox {
    /// Queues a live entry (with its origin time); false when the queue is full.
    pub fn offer(&self, delivery: Delivery, origin_us: i64) -> bool {
        self.tx.try_send((delivery, origin_us)).is_ok()
    }
}

/// Whether settling marks messages `DELIVERED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marking {
    /// When some socket here follows the inbox in the default mode (live and recovered
    /// entries, for every socket of the stream at once).
    ByFollowers,
    /// Yes (one default-mode socket's pending messages).
    Deliver,
    /// No: only check the message may still be delivered (an `ack`-mode socket; its
    /// client's `ack` marks it).
    Check,
}

impl EdgeState {
    /// Renders `deliveries` for this edge's sockets, settling the addressed messages among
    /// them first (see the module doc). Order is kept.
    pub async fn settle(
        &self,
        deliveries: Vec<Delivery>,
        marking: Marking,
    ) -> ServiceResult<Vec<Arc<Rendered>>> {
        let mut to_mark: BTreeMap<AppId, Vec<String>> = BTreeMap::new();
        let mut to_check: Vec<(AppId, String)> = Vec::new();
        for delivery in &deliveries {
            if let Event::AddressedMessage { message } = &delivery.event {
                let mark = match marking {
                    Marking::ByFollowers => self.hub.any_default_mode(&delivery.stream),
                    Marking::Deliver => true,
                    Marking::Check => false,
                };
                if mark {
                    to_mark
                        .entry(message.app.clone())
                        .or_default()
                        .push(message.id.clone());
                } else {
                    to_check.push((message.app.clone(), message.id.clone()));
                }
            }
        }
        let mut deliverable: BTreeMap<(AppId, String), bool> = BTreeMap::new();
        for (app, ids) in to_mark {
            let settled = self.services.deliver_messages(&app, &ids).await?;
            for (id, ok) in ids.into_iter().zip(settled) {
                deliverable.insert((app.clone(), id), ok);
            }
        }
        for (app, id) in to_check {
            let ok = self.services.deliverable(&app, &id).await?;
            deliverable.insert((app, id), ok);
        }
        Ok(deliveries
            .into_iter()
            .map(|delivery| {
                let withhold = match &delivery.event {
                    Event::AddressedMessage { message } => !deliverable
                        .get(&(message.app.clone(), message.id.clone()))
                        .copied()
                        .unwrap_or(false),
                    _ => false,
                };
                if withhold {
                    self.metrics.withheld.inc();
                    Arc::new(Rendered::withheld(delivery, &self.api_base))
                } else {
                    self.render(delivery)
                }
            })
            .collect())
    }
}

/// Settles live inbox entries in arrival order, in batches, and offers them to the hub.
pub async fn run(edge: Arc<EdgeState>, shutdown: CancellationToken) {
    let Some(mut rx) = edge.inbox.rx.lock().ok().and_then(|mut rx| rx.take()) else {
        return;
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            received = rx.recv_many(&mut batch, BATCH) => if received == 0 { return },
        }
        let (deliveries, origins): (Vec<Delivery>, Vec<i64>) = batch.drain(..).unzip();
        let keys: Vec<_> = deliveries.iter().map(|d| d.stream.clone()).collect();
        match edge.settle(deliveries, Marking::ByFollowers).await {
            Ok(rendered) => {
                let now = now_us();
                for (rendered, origin_us) in rendered.into_iter().zip(origins) {
                    edge.offer_live(rendered, origin_us, now);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot settle inbox entries; recovery will");
                for key in keys {
                    edge.recovery.check_now(&key);
                }
            }
        }
    }
}

/// A connecting socket's `PENDING` messages up to `head` (the inbox position it joined
/// at), oldest first, settled: what to write to it before anything live.
pub async fn pending(
    edge: &EdgeState,
    session: &Session,
    head: &Position,
) -> ServiceResult<Vec<Arc<Rendered>>> {
    let Some(grant) = session.grant() else {
        return Ok(Vec::new());
    };
    let messages = edge
        .services
        .stores
        .messages
        .pending_messages(&grant.app, &grant.user, 0, MAX_PENDING, now_us())
        .await?;
    let deliveries = messages
        .into_iter()
        .filter(|(offset, _)| *offset <= head.offset)
        .map(|(offset, message)| {
            let position = Position {
                epoch: head.epoch.clone(),
                offset,
            };
            Delivery::addressed(message, position)
        })
        .collect();
    let marking = if session.conn.ack_mode() {
        Marking::Check
    } else {
        Marking::Deliver
    };
    edge.settle(deliveries, marking).await
}
