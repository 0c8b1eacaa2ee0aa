//! Hands deliveries from request handlers to the routers.
//!
//! Handlers enqueue envelopes on a bounded queue (waiting at most `publish_timeout` for
//! room). One dispatcher task owns one ZeroMQ PUSH socket per configured router and sends
//! each delivery to the router its stream hashes to among the connected ones (rendezvous
//! hashing, SPEC §7): one stream travels one router, so its envelopes stay in order, and a
//! stream moves only when its router is gone. zmq.rs PUSH sockets do not
//! reconnect after their peer restarts (every later send fails), so a send error, a send
//! that blocks too long, or a `Disconnected` monitor event retires that socket and a
//! background task connects a fresh one with backoff. Idle links carry a heartbeat so a
//! dead router is noticed before the next request needs it.
//!
//! A successful send is not a delivery (ZeroMQ drops silently, e.g. the last sends before a
//! router dies): the message is already in the store at a stream position, and edges
//! recover what they miss from the router's sequence numbers and the positions. The one
//! loss an edge cannot see is an envelope this process dropped itself (queue full for
//! `publish_timeout`); for those the dispatcher sends a `Recover` envelope naming the
//! streams concerned as soon as a router takes envelopes again.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clock::now_us;
use common::message::Delivery;
use common::metrics::Metrics;
use common::stream::StreamKey;
use common::wire::{Envelope, MAX_RECOVER_STREAMS};
use futures_util::StreamExt;
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeromq::{PushSocket, Socket, SocketEvent, SocketOptions, SocketSend};

/// A send that takes longer than this means the router is stuck or gone.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a fresh socket's `connect` may take before retrying.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long pending envelopes get to leave on shutdown.
const FLUSH_BUDGET: Duration = Duration::from_secs(2);

/// The handle request handlers publish through. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<Queued>,
    timeout: Duration,
    shared: Arc<Shared>,
}

/// State shared between handlers and the dispatcher.
struct Shared {
    /// Streams that lost a delivery since the last `Recover`.
    dropped: Mutex<Dropped>,
    connected: AtomicUsize,
    configured: usize,
    metrics: PublisherMetrics,
}

#[derive(Clone)]
struct PublisherMetrics {
    sent: IntCounterVec,
    dropped: IntCounter,
    send_failures: IntCounter,
    connected: IntGauge,
}

impl PublisherMetrics {
    fn new(metrics: &Metrics) -> Self {
        PublisherMetrics {
            sent: metrics.counter_vec("router_sends_total", "Envelopes handed to a router.", &["kind"]),
            dropped: metrics.counter(
                "publish_dropped_total",
                "Live deliveries dropped because no router took them in time (stored; recovered by edges).",
            ),
            send_failures: metrics
                .counter("router_send_failures_total", "Sends that failed and retired a router socket."),
            connected: metrics.gauge("routers_connected", "Routers with a live PUSH socket."),
        }
    }
}

/// Configuration of the dispatcher.
pub struct PublisherConfig {
    pub endpoints: Vec<String>,
    pub queue: usize,
    pub timeout: Duration,
    pub heartbeat: Duration,
}

/// The streams whose deliveries this process dropped, to name in the next `Recover`.
#[derive(Debug, Default)]
struct Dropped {
    streams: BTreeSet<StreamKey>,
    /// More streams than a `Recover` names: recover every stream.
    all: bool,
}

impl Dropped {
    fn note(&mut self, stream: StreamKey) {
        if self.all {
            return;
        }
        self.streams.insert(stream);
        if self.streams.len() > MAX_RECOVER_STREAMS {
            self.streams.clear();
            self.all = true;
        }
    }

    fn merge(&mut self, other: Dropped) {
        if other.all {
            self.streams.clear();
            self.all = true;
        } else {
            other.streams.into_iter().for_each(|s| self.note(s));
        }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.streams.is_empty()
    }
}

/// A delivery waiting for a router, with the stream to recover if it never leaves.
struct Queued {
    envelope: Envelope,
    stream: StreamKey,
}

/// Starts the dispatcher. It runs until `stop`, then flushes what is queued.
pub fn start(
    config: PublisherConfig,
    metrics: &Metrics,
    stop: CancellationToken,
) -> (Publisher, tokio::task::JoinHandle<()>) {
    let (queue, envelopes) = mpsc::channel(config.queue);
    let shared = Arc::new(Shared {
        dropped: Mutex::new(Dropped::default()),
        connected: AtomicUsize::new(0),
        configured: config.endpoints.len(),
        metrics: PublisherMetrics::new(metrics),
    });
    let (sockets_tx, sockets) = mpsc::channel(config.endpoints.len().max(1));
    let (events_tx, events) = mpsc::channel(64);
    let links = config
        .endpoints
        .iter()
        .map(|endpoint| Link {
            endpoint: endpoint.clone(),
            socket: None,
            generation: 0,
        })
        .collect();
    let dispatcher = Dispatcher {
        links,
        next: 0,
        pending: None,
        shared: shared.clone(),
        sockets_tx,
        events_tx,
        stop,
    };
    let task = tokio::spawn(dispatcher.run(envelopes, sockets, events, config.heartbeat));
    (
        Publisher {
            queue,
            timeout: config.timeout,
            shared,
        },
        task,
    )
}

impl Publisher {
    /// Queues `delivery` for the routers. Never fails the request: if no room frees up in
    /// time the live push is dropped (and later recovered), the message being stored.
    pub async fn publish(&self, delivery: &Delivery) {
        let item = Queued {
            envelope: Envelope::deliver(delivery, now_us()),
            stream: delivery.stream.clone(),
        };
        let queued = tokio::time::timeout(self.timeout, self.queue.send(item)).await;
        if !matches!(queued, Ok(Ok(()))) {
            self.shared.metrics.dropped.inc();
            self.shared.note_drop(delivery.stream.clone());
            tracing::warn!("no router took a delivery in time; edges will recover it");
        }
    }

    /// Routers with a live socket.
    pub fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Routers configured.
    pub fn configured(&self) -> usize {
        self.shared.configured
    }
}

impl Shared {
    /// Remembers that a delivery on `stream` was not pushed.
    fn note_drop(&self, stream: StreamKey) {
        if let Ok(mut dropped) = self.dropped.lock() {
            dropped.note(stream);
        }
    }

    fn take_drops(&self) -> Dropped {
        self.dropped
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    /// Puts back drops a `Recover` could not announce.
    fn restore_drops(&self, drops: Dropped) {
        if let Ok(mut dropped) = self.dropped.lock() {
            dropped.merge(drops);
        }
    }
}

struct Link {
    endpoint: String,
    socket: Option<PushSocket>,
    /// Bumped whenever the socket is replaced, so stale monitor events are ignored.
    generation: u64,
}

/// A socket's monitor events (connects, disconnects).
type MonitorStream = futures_util::stream::BoxStream<'static, SocketEvent>;

/// A freshly connected socket for link `index` at `generation`, with its monitor stream.
type Connected = (usize, u64, PushSocket, MonitorStream);

struct Dispatcher {
    links: Vec<Link>,
    next: usize,
    /// A delivery no router took yet; retried before anything newer.
    pending: Option<Queued>,
    shared: Arc<Shared>,
    sockets_tx: mpsc::Sender<Connected>,
    events_tx: mpsc::Sender<(usize, u64, SocketEvent)>,
    stop: CancellationToken,
}

impl Dispatcher {
    async fn run(
        mut self,
        mut envelopes: mpsc::Receiver<Queued>,
        mut sockets: mpsc::Receiver<Connected>,
        mut events: mpsc::Receiver<(usize, u64, SocketEvent)>,
        heartbeat: Duration,
    ) {
        for index in 0..self.links.len() {
            self.reconnect(index);
        }
        let mut beat = tokio::time::interval(heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let can_send = self.shared.connected.load(Ordering::Relaxed) > 0;
            tokio::select! {
                _ = self.stop.cancelled() => break,
                Some((index, generation, socket, monitor)) = sockets.recv() => {
                    self.install(index, generation, socket, monitor);
                }
                Some((index, generation, event)) = events.recv() => {
                    if matches!(event, SocketEvent::Disconnected(_)) && self.links[index].generation == generation {
                        tracing::warn!(router = %self.links[index].endpoint, "router disconnected");
                        self.retire(index);
                    }
                }
                envelope = next_envelope(&mut self.pending, &mut envelopes), if can_send => {
                    match envelope {
                        Some(envelope) => self.dispatch(envelope).await,
                        None => break,
                    }
                }
                _ = beat.tick() => {
                    self.heartbeat().await;
                    self.announce_drops().await;
                }
            }
        }
        self.flush(&mut envelopes).await;
    }

    /// Sends what is still queued, for at most `FLUSH_BUDGET`, then lets the socket I/O
    /// finish (zmq.rs has no linger).
    async fn flush(&mut self, envelopes: &mut mpsc::Receiver<Queued>) {
        envelopes.close();
        let deadline = tokio::time::Instant::now() + FLUSH_BUDGET;
        while tokio::time::Instant::now() < deadline {
            let Some(envelope) = self.pending.take().or_else(|| envelopes.try_recv().ok()) else {
                break;
            };
            if self.shared.connected.load(Ordering::Relaxed) == 0 {
                break;
            }
            self.dispatch(envelope).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Sends a delivery to the next live router, trying each once; keeps it pending if none
    /// takes it. A `Recover` for earlier drops goes first. However late, a delivery is
    /// still pushed: edges place it by its stream position and drop it if they already
    /// have it.
    async fn dispatch(&mut self, queued: Queued) {
        if !self.announce_drops().await {
            self.pending = Some(queued);
            return;
        }
        if !self.send_for(&queued.stream, &queued.envelope).await {
            self.pending = Some(queued);
        }
    }

    /// Sends a `Recover` for deliveries dropped so far, if any; false if none could be sent
    /// (the drops stay noted).
    async fn announce_drops(&mut self) -> bool {
        let dropped = self.shared.take_drops();
        if dropped.is_empty() {
            return true;
        }
        let streams = dropped.streams.iter().cloned().collect();
        let recover = Envelope::recover(if dropped.all { Vec::new() } else { streams }, now_us());
        if self.send_anywhere(&recover).await {
            return true;
        }
        self.shared.restore_drops(dropped);
        false
    }

    /// Sends to the connected routers in `stream`'s rendezvous order until one takes it.
    async fn send_for(&mut self, stream: &StreamKey, envelope: &Envelope) -> bool {
        let mut order: Vec<(u64, usize)> = (0..self.links.len())
            .filter(|&i| self.links[i].socket.is_some())
            .map(|i| (rendezvous_score(&self.links[i].endpoint, stream), i))
            .collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        for (_, index) in order {
            if self.send_to(index, envelope).await {
                return true;
            }
        }
        false
    }

    /// Sends to whichever connected router takes it (control envelopes, not in a stream).
    async fn send_anywhere(&mut self, envelope: &Envelope) -> bool {
        for _ in 0..self.links.len() {
            let index = self.next % self.links.len();
            self.next = self.next.wrapping_add(1);
            if self.links[index].socket.is_some() && self.send_to(index, envelope).await {
                return true;
            }
        }
        false
    }

    async fn send_to(&mut self, index: usize, envelope: &Envelope) -> bool {
        let Some(socket) = self.links[index].socket.as_mut() else {
            return false;
        };
        match tokio::time::timeout(SEND_TIMEOUT, socket.send(envelope.to_message())).await {
            Ok(Ok(())) => {
                let kind = envelope.header.kind.label();
                self.shared.metrics.sent.with_label_values(&[kind]).inc();
                true
            }
            outcome => {
                let reason = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "send timed out".into(),
                };
                tracing::warn!(router = %self.links[index].endpoint, %reason, "router send failed");
                self.shared.metrics.send_failures.inc();
                self.retire(index);
                false
            }
        }
    }

    async fn heartbeat(&mut self) {
        let beat = Envelope::heartbeat(now_us());
        for index in 0..self.links.len() {
            if self.links[index].socket.is_some() {
                self.send_to(index, &beat).await;
            }
        }
    }

    fn install(
        &mut self,
        index: usize,
        generation: u64,
        socket: PushSocket,
        mut monitor: MonitorStream,
    ) {
        let link = &mut self.links[index];
        if link.generation != generation || link.socket.is_some() {
            return;
        }
        tracing::info!(router = %link.endpoint, "router connected");
        link.socket = Some(socket);
        self.set_connected(1);
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = monitor.next().await {
                if events.send((index, generation, event)).await.is_err() {
                    break;
                }
            }
        });
    }

    /// Drops the socket of link `index` and starts connecting a new one.
    fn retire(&mut self, index: usize) {
        if self.links[index].socket.take().is_some() {
            self.set_connected(-1);
        }
        self.reconnect(index);
    }

    fn set_connected(&self, delta: isize) {
        let now = if delta > 0 {
            self.shared.connected.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.shared.connected.fetch_sub(1, Ordering::Relaxed) - 1
        };
        self.shared.metrics.connected.set(now as i64);
    }

    fn reconnect(&mut self, index: usize) {
        let link = &mut self.links[index];
        link.generation += 1;
        let (endpoint, generation) = (link.endpoint.clone(), link.generation);
        let sockets = self.sockets_tx.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                let mut options = SocketOptions::default();
                options.connect_timeout(CONNECT_TIMEOUT);
                let mut socket = PushSocket::with_options(options);
                let monitor = socket.monitor().boxed();
                let attempt = tokio::select! {
                    _ = stop.cancelled() => return,
                    attempt = socket.connect(&endpoint) => attempt,
                };
                match attempt {
                    Ok(()) => {
                        let _ = sockets.send((index, generation, socket, monitor)).await;
                        return;
                    }
                    Err(e) => tracing::debug!(router = %endpoint, error = %e, "connect failed"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
    }
}

/// The weight of router `endpoint` for `stream`: the highest-weighted connected router
/// carries the stream (rendezvous hashing). SHA-256, so every API process and every build
/// agrees on it.
fn rendezvous_score(endpoint: &str, stream: &StreamKey) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(endpoint.as_bytes());
    hasher.update([0]);
    hasher.update(stream.as_str().as_bytes());
    let digest = hasher.finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(word)
}

async fn next_envelope(
    pending: &mut Option<Queued>,
    envelopes: &mut mpsc::Receiver<Queued>,
) -> Option<Queued> {
    match pending.take() {
        Some(envelope) => Some(envelope),
        None => envelopes.recv().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_streams_and_moves_only_the_dead_routers() {
        let routers = [
            "tcp://10.0.0.1:9988",
            "tcp://10.0.0.2:9988",
            "tcp://10.0.0.3:9988",
        ];
        fn owner(live: &[&'static str], stream: &StreamKey) -> &'static str {
            live.iter()
                .max_by_key(|r| rendezvous_score(r, stream))
                .copied()
                .unwrap()
        }
        let streams: Vec<StreamKey> = (0..300)
            .map(|i| StreamKey::mozilla_token(&format!("token-{i}")))
            .collect();
        let mut load = [0usize; 3];
        for stream in &streams {
            let at = routers.iter().position(|r| *r == owner(&routers, stream));
            load[at.unwrap()] += 1;
        }
        assert!(load.iter().all(|&n| n > 60), "spread: {load:?}");
        let survivors = [routers[0], routers[2]];
        for stream in &streams {
            let before = owner(&routers, stream);
            let after = owner(&survivors, stream);
            if before != routers[1] {
                assert_eq!(before, after, "a stream on a live router stays");
            }
        }
    }
}
