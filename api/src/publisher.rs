//! Hands deliveries from request handlers to the routers.
//!
//! Handlers enqueue envelopes on a bounded queue (waiting at most `publish_timeout` for
//! room). One dispatcher task owns one ZeroMQ PUSH socket per configured router and sends
//! each envelope to the next connected router, round robin. zmq.rs PUSH sockets do not
//! reconnect after their peer restarts (every later send fails), so a send error, a send
//! that blocks too long, or a `Disconnected` monitor event retires that socket and a
//! background task connects a fresh one with backoff. Idle links carry a heartbeat so a
//! dead router is noticed before the next request needs it.
//!
//! A successful send is not a delivery (ZeroMQ drops silently, e.g. the last sends before a
//! router dies): the message is already in the store, and edges recover what they miss
//! from the router's sequence numbers. The one loss an edge cannot see is an envelope this
//! process dropped itself (queue full for `publish_timeout`); for those the dispatcher
//! sends a `Recover` envelope from the oldest dropped message's time as soon as a router
//! takes envelopes again.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use common::clock::now_us;
use common::message::Delivery;
use common::metrics::Metrics;
use common::wire::Envelope;
use futures_util::StreamExt;
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeromq::{PushSocket, Socket, SocketEvent, SocketOptions, SocketSend};

/// No drop pending.
const NO_DROP: i64 = i64::MAX;
/// A send that takes longer than this means the router is stuck or gone. Part of how late
/// an envelope can reach a router, which `websockets.recovery_margin_ms` must cover.
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
    /// Creation time of the oldest delivery dropped since the last `Recover`.
    dropped_since: AtomicI64,
    connected: AtomicUsize,
    configured: usize,
    metrics: PublisherMetrics,
}

#[derive(Clone)]
struct PublisherMetrics {
    sent: IntCounterVec,
    dropped: IntCounter,
    stale: IntCounter,
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
            stale: metrics.counter(
                "publish_stale_total",
                "Deliveries older than api.publish_max_age_ms when a router could take them: announced for recovery instead.",
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
    /// Older deliveries are announced for recovery instead of pushed.
    pub max_age: Duration,
}

/// A delivery waiting for a router, with the creation time recovery would start from.
struct Queued {
    envelope: Envelope,
    created_us: i64,
}

/// Starts the dispatcher. It runs until `stop`, then flushes what is queued.
pub fn start(
    config: PublisherConfig,
    metrics: &Metrics,
    stop: CancellationToken,
) -> (Publisher, tokio::task::JoinHandle<()>) {
    let (queue, envelopes) = mpsc::channel(config.queue);
    let shared = Arc::new(Shared {
        dropped_since: AtomicI64::new(NO_DROP),
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
        max_age_us: i64::try_from(config.max_age.as_micros()).unwrap_or(i64::MAX),
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
    pub async fn publish(&self, delivery: &Delivery, created_us: i64) {
        let envelope = Envelope::deliver(delivery, now_us());
        let item = Queued {
            envelope,
            created_us,
        };
        let queued = tokio::time::timeout(self.timeout, self.queue.send(item)).await;
        if !matches!(queued, Ok(Ok(()))) {
            self.shared.metrics.dropped.inc();
            self.shared.note_drop(created_us);
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
    /// Remembers that a delivery created at `created_us` was not pushed.
    fn note_drop(&self, created_us: i64) {
        self.dropped_since.fetch_min(created_us, Ordering::Relaxed);
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
    max_age_us: i64,
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
    /// takes it. A `Recover` for earlier drops goes first. A delivery older than `max_age`
    /// is not pushed but announced for recovery: edges re-read the store only a bounded
    /// time back from the last envelope they saw, and a late envelope lost with its router
    /// could fall outside that window.
    async fn dispatch(&mut self, queued: Queued) {
        if !self.announce_drops().await {
            self.pending = Some(queued);
            return;
        }
        if now_us() - queued.envelope.header.origin_us > self.max_age_us {
            self.shared.metrics.stale.inc();
            self.shared.note_drop(queued.created_us);
            self.announce_drops().await;
            return;
        }
        if !self.send_anywhere(&queued.envelope).await {
            self.pending = Some(queued);
        }
    }

    /// Sends a `Recover` for deliveries dropped so far, if any; false if none could be sent
    /// (the drop stays noted).
    async fn announce_drops(&mut self) -> bool {
        let dropped = self.shared.dropped_since.swap(NO_DROP, Ordering::Relaxed);
        if dropped == NO_DROP {
            return true;
        }
        let recover = Envelope::recover(dropped, now_us());
        if self.send_anywhere(&recover).await {
            return true;
        }
        self.shared.note_drop(dropped);
        false
    }

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

async fn next_envelope(
    pending: &mut Option<Queued>,
    envelopes: &mut mpsc::Receiver<Queued>,
) -> Option<Queued> {
    match pending.take() {
        Some(envelope) => Some(envelope),
        None => envelopes.recv().await,
    }
}
