//! `herald-websockets`: the edge that holds client sockets. It checks sockets before the
//! upgrade (`handshake`), gives each a session in its dialect (`session`, `frames`,
//! `connection`), keeps a local index of them by stream (`hub`), subscribes to every
//! router (`subscriber`) and hands each delivery to the sockets of its stream in stream
//! order, reads from the store by position whatever a stream here missed (`recovery`),
//! counts its sockets into cluster-wide presence (`presence`), serves Thunderpush's SockJS
//! clients (`thunder`), registers itself in the
//! store with a heartbeat so `/nodes/` can offer it, and on SIGTERM closes its sockets
//! with 1001 before leaving. What clients publish goes through the API's service layer
//! (`api::service`), so "persist, then publish" exists once.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use api::service::Services;
use common::clock::now_us;
use common::config::{Config, EdgeConfig, ms};
use common::http::ServeOptions;
use common::message::{Delivery, Event};
use common::store::{NodeHeartbeat, NodeStatus, StoreError};
use common::stream::{Position, StreamKey};
use common::token::mozilla_token_id;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod broadcast;
pub mod connection;
pub mod events;
pub mod frames;
mod handshake;
pub mod hub;
pub mod inbox;
pub mod metrics;
pub mod presence;
pub mod recovery;
pub mod session;
pub mod subscriber;
pub mod thunder;

use frames::Rendered;
use hub::{Hub, Live, QueueLimits};
use metrics::EdgeMetrics;
use recovery::Recovery;
use subscriber::{Anomaly, RouterView, StreamState};

/// Out-of-order entries each stream holds while a gap before them fills.
const PARKED_PER_STREAM: usize = 1_024;

/// Why a Mozilla token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Malformed or not in the store: 401 / close 1008.
    Unknown,
    /// The store did not answer: 503 / close 1011.
    Store,
}

/// Everything the edge's tasks share.
pub struct EdgeState {
    pub node_id: String,
    pub config: EdgeConfig,
    /// `api.public_url` without the trailing slash (queue URLs in frames).
    pub api_base: String,
    /// The stores, the apps, and the way to the routers for what clients publish.
    pub services: Services,
    pub hub: Hub,
    pub routers: Vec<Arc<RouterView>>,
    pub recovery: Recovery,
    pub presence: presence::Tracker,
    pub metrics: EdgeMetrics,
    /// Socket tasks, awaited (bounded) on drain.
    pub sockets: TaskTracker,
    pub ws_config: WebSocketConfig,
    pub started_us: i64,
    /// Cancelled when the drain begins: legacy handshakes still waiting for their token
    /// frame give up with 1001.
    pub draining: CancellationToken,
    /// Upgraded sockets still waiting for their legacy `token:` frame; they count against
    /// `max_connections` with the registered ones.
    pending_handshakes: AtomicUsize,
    /// Live addressed messages on their way to being settled (`inbox`).
    pub inbox: inbox::Inbox,
    /// The users connected here per app, and the broadcasts waiting to reach them.
    pub members: broadcast::Members,
    /// Sockets opened and closed, waiting to be recorded for the webhooks (`events`).
    pub socket_events: events::Queue,
}

/// A legacy handshake in progress; releases its slot when dropped.
pub struct PendingHandshake(Arc<EdgeState>);

impl Drop for PendingHandshake {
    fn drop(&mut self) {
        self.0.pending_handshakes.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EdgeState {
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Reserves a slot for a socket that will authenticate with its first frame; `None`
    /// when registered plus pending sockets reach `max_connections`.
    pub fn reserve_handshake(self: &Arc<Self>) -> Option<PendingHandshake> {
        let pending = self.pending_handshakes.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = PendingHandshake(self.clone());
        (self.hub.len() + pending <= self.config.max_connections).then_some(slot)
    }

    /// The stream of a presented Mozilla token and its current position, if the token is
    /// one of ours (a token's stream exists exactly as long as the token does).
    pub async fn authenticate(&self, token: &str) -> Result<(StreamKey, Position), AuthError> {
        let id = mozilla_token_id(token).ok_or(AuthError::Unknown)?;
        let key = StreamKey::mozilla_token(&id);
        match self
            .services
            .stores
            .streams
            .stream_heads(std::slice::from_ref(&key))
            .await
        {
            Ok(mut heads) => heads.pop().ok_or(AuthError::Unknown),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a token");
                Err(AuthError::Store)
            }
        }
    }

    /// A router stream may have lost deliveries: check every stream here. Ephemeral
    /// streams are told to resync only on evidence of a loss (a sequence gap, a new router
    /// epoch), not on a silence alone: a router heard again without a gap lost nothing.
    pub fn report(&self, anomaly: Anomaly) {
        self.metrics
            .anomalies
            .with_label_values(&[anomaly.label()])
            .inc();
        let resync = matches!(anomaly, Anomaly::Gap | Anomaly::NewEpoch);
        self.recovery.check_all(anomaly.label(), resync);
    }

    /// A delivery rendered for this node's sockets (the publishing socket skipped).
    pub fn render(&self, delivery: Delivery) -> Arc<Rendered> {
        let skip = delivery
            .origin
            .as_ref()
            .filter(|o| o.node == self.node_id)
            .map(|o| o.connection);
        Arc::new(Rendered::new(delivery, skip, &self.api_base))
    }

    /// A delivery that just arrived from a router: handed to its stream's sockets when it
    /// is the next entry (or ephemeral), else parked or dropped (`hub::Live`), with a
    /// recovery check asked for where the stream may have missed something. A logout
    /// closes the user's sockets instead.
    pub fn deliver_live(&self, delivery: Delivery, origin_us: i64, now_us: i64) {
        let key = delivery.stream.clone();
        if !self.hub.follows(&key) {
            return;
        }
        if let Event::Logout { before_us, .. } = &delivery.event {
            let closed = self.hub.logout(&key, *before_us);
            tracing::debug!(closed, "force logout");
            return;
        }
        if let Event::Broadcast { message } = delivery.event {
            if !self.members.offer(message) {
                self.metrics
                    .broadcasts
                    .with_label_values(&["dropped"])
                    .inc();
            }
            return;
        }
        if let Event::AddressedMessage { .. } = &delivery.event {
            // Settled (PENDING → DELIVERED) before any socket gets it; if the queue is
            // full, recovery reads it from the store.
            if !self.inbox.offer(delivery, origin_us) {
                self.recovery.check_now(&key);
            }
            return;
        }
        self.offer_live(self.render(delivery), origin_us, now_us);
    }

    /// Hands a rendered live entry to its stream's sockets (see `deliver_live`).
    pub fn offer_live(&self, rendered: Arc<Rendered>, origin_us: i64, now_us: i64) {
        let key = rendered.delivery.stream.clone();
        let outcome = self.hub.offer_live(rendered);
        self.metrics
            .live
            .with_label_values(&[outcome.label()])
            .inc();
        match outcome {
            Live::NotHere | Live::Duplicate => {}
            Live::Delivered(fanout) => {
                self.metrics
                    .deliveries
                    .with_label_values(&["live"])
                    .inc_by(fanout.queued as u64);
                if let Some(seconds) = common::clock::seconds_since(origin_us, now_us) {
                    self.metrics.delivery_latency.observe(seconds);
                }
            }
            Live::Parked { first } => {
                if first {
                    self.recovery.check_after_gap(&key);
                }
            }
            Live::ParkFull | Live::OtherEpoch => self.recovery.check_now(&key),
        }
    }

    /// Whether `grant`'s user was logged out after the token was issued.
    pub async fn is_revoked(&self, grant: &common::jwt::Grant) -> Result<bool, StoreError> {
        let not_before = self
            .services
            .stores
            .revocations
            .not_before(&grant.app, &grant.user)
            .await?;
        Ok(not_before.is_some_and(|nb| grant.issued_us < nb))
    }

    /// Removes a socket from the hub.
    pub fn unregister(&self, conn: &hub::Conn) {
        self.hub.unregister(conn);
        self.metrics.connections.set(self.hub.len() as i64);
    }

    fn heartbeat(&self, status: NodeStatus) -> NodeHeartbeat {
        NodeHeartbeat {
            id: self.node_id.clone(),
            url: self.config.base_url().to_owned(),
            connections: self.hub.len() as u64,
            status,
            started_us: self.started_us,
            now_us: now_us(),
        }
    }
}

/// An edge with its listener bound and store open, ready to `run`.
pub struct Edge {
    listener: TcpListener,
    state: Arc<EdgeState>,
    dispatcher: tokio::task::JoinHandle<()>,
    stop_dispatcher: CancellationToken,
}

/// Opens the store, connects to the routers and binds the listener.
pub async fn bind(config: &Config) -> anyhow::Result<Edge> {
    let listener = config
        .websockets
        .listen
        .bind_setting("websockets.listen")
        .await?;
    let e = &config.websockets;
    let metrics = EdgeMetrics::new();
    let stop_dispatcher = CancellationToken::new();
    let (services, dispatcher) =
        api::services(config, &metrics.registry, stop_dispatcher.clone()).await?;
    let started_us = now_us();
    let routers = config
        .cluster
        .router_pub
        .iter()
        .map(|endpoint| {
            Arc::new(RouterView {
                endpoint: endpoint.clone(),
                state: std::sync::Mutex::new(StreamState::new(started_us)),
            })
        })
        .collect();
    let state = EdgeState {
        node_id: if e.node_id.is_empty() {
            default_node_id()
        } else {
            e.node_id.clone()
        },
        api_base: config.api.base_url().to_owned(),
        services,
        hub: Hub::new(
            QueueLimits {
                frames: e.outbound_queue_frames,
                bytes: e.outbound_queue_bytes,
                parked: PARKED_PER_STREAM,
            },
            e.max_connections,
        ),
        routers,
        recovery: Recovery::new(ms(e.reorder_window_ms)),
        presence: presence::Tracker::default(),
        socket_events: events::Queue::new(metrics.socket_events_dropped.clone()),
        metrics,
        sockets: TaskTracker::new(),
        ws_config: websocket_config(e),
        started_us,
        draining: CancellationToken::new(),
        pending_handshakes: AtomicUsize::new(0),
        inbox: inbox::Inbox::default(),
        members: broadcast::Members::default(),
        config: e.clone(),
    };
    Ok(Edge {
        listener,
        state: Arc::new(state),
        dispatcher,
        stop_dispatcher,
    })
}

/// Binds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(&config).await?.run(shutdown).await
}

/// Explicit tungstenite limits: a small eagerly allocated read buffer keeps an idle socket
/// cheap (the default is 128 KiB), frames and messages are capped.
pub fn websocket_config(e: &EdgeConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(e.read_buffer_bytes)
        .write_buffer_size(e.read_buffer_bytes)
        .max_write_buffer_size(e.outbound_queue_bytes.max(e.max_message_bytes) * 2)
        .max_message_size(Some(e.max_message_bytes))
        .max_frame_size(Some(e.max_message_bytes))
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "edge".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &common::token::random_hex(2)
    )
}

impl Edge {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (tests inspect the hub and metrics through it).
    pub fn state(&self) -> Arc<EdgeState> {
        self.state.clone()
    }

    /// Serves until `shutdown`, then drains: deregisters, closes sockets with 1001.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let edge = self.state;
        tracing::info!(listen = %self.listener.local_addr()?, node = %edge.node_id, url = %edge.config.public_url, "edge ready");
        if let Err(e) = edge
            .services
            .stores
            .presence
            .clear_presence(&edge.node_id)
            .await
        {
            tracing::warn!(error = %e, "cannot clear this node's old presence");
        }
        let background = TaskTracker::new();
        for view in &edge.routers {
            background.spawn(subscriber::run(
                edge.clone(),
                view.clone(),
                shutdown.clone(),
            ));
        }
        background.spawn(recovery::run(edge.clone(), shutdown.clone()));
        background.spawn(inbox::run(edge.clone(), shutdown.clone()));
        background.spawn(broadcast::run(edge.clone(), shutdown.clone()));
        background.spawn(register(edge.clone(), shutdown.clone()));
        background.spawn(presence::run(
            edge.clone(),
            ms(edge.config.presence_flush_ms),
            shutdown.clone(),
        ));
        let http_edge = edge.clone();
        let make_service = move |peer| {
            let edge = http_edge.clone();
            hyper::service::service_fn(move |req| {
                let edge = edge.clone();
                async move { Ok::<_, Infallible>(handshake::route(edge, peer, req).await) }
            })
        };
        let options = ServeOptions {
            header_read_timeout: ms(edge.config.handshake_timeout_ms),
            drain: Duration::from_secs(2),
            max_connections: edge.config.max_connections,
        };
        let http = tokio::spawn(common::http::serve(
            self.listener,
            make_service,
            shutdown.clone(),
            options,
        ));

        shutdown.cancelled().await;
        drain(&edge).await;
        // The drain's own `disconnected` events, and any the last tick left.
        events::flush(&edge).await;
        let _ = http.await;
        background.close();
        background.wait().await;
        if let Err(e) = edge.services.stores.nodes.remove_node(&edge.node_id).await {
            tracing::warn!(error = %e, "cannot deregister this node");
        }
        self.stop_dispatcher.cancel();
        let _ = self.dispatcher.await;
        Ok(())
    }
}

/// Stops taking sockets, tells the store, closes every socket with 1001 and waits for
/// them (bounded by `drain_ms`).
async fn drain(edge: &EdgeState) {
    edge.draining.cancel();
    let _ = edge
        .services
        .stores
        .nodes
        .upsert_node(&edge.heartbeat(NodeStatus::Draining))
        .await;
    tracing::info!(
        sockets = edge.hub.len(),
        "draining: closing sockets with 1001"
    );
    edge.hub.close_all(hub::close_code::GOING_AWAY);
    edge.sockets.close();
    if tokio::time::timeout(ms(edge.config.drain_ms), edge.sockets.wait())
        .await
        .is_err()
    {
        tracing::warn!(left = edge.hub.len(), "socket drain timed out");
    }
}

/// Writes this node's heartbeat every `heartbeat_ms` until `shutdown`.
async fn register(edge: Arc<EdgeState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ms(edge.config.heartbeat_ms));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = edge
            .services
            .stores
            .nodes
            .upsert_node(&edge.heartbeat(NodeStatus::Up))
            .await
        {
            tracing::warn!(error = %e, "cannot write the node heartbeat");
        }
    }
}
