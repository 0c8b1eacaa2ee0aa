//! In-process tests of `herald-websockets` on 127.0.0.1 port 0 with a real SQLite file and
//! real WebSocket clients. The test plays the router with its own ZeroMQ PUB socket, so it
//! can stamp any epoch and sequence number and send any stream entry in any order: that is
//! how router gaps, restarts and silences, lost and reordered entries are produced on
//! purpose and the edge's recovery from the store by position (and its re-subscription
//! after a long silence) is checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clock::now_us;
use common::config::Config;
use common::message::{Delivery, QueueBody, QueueMessage};
use common::store::Stores;
use common::stream::StreamKey;
use common::testing::{free_endpoint, loopback_config, metric_value};
use common::token::{mozilla_token_id, new_message_key, new_mozilla_token, new_queue_id};
use common::wire::{Envelope, Header, Kind};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use websockets::subscriber::StreamState;
use zeromq::{PubSocket, Socket, SocketSend};

const DEADLINE: Duration = Duration::from_secs(20);

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An edge under test, the fake router feeding it, and the store they share.
struct Rig {
    edge: Arc<websockets::EdgeState>,
    url: String,
    router: PubSocket,
    epoch: u64,
    seq: u64,
    store: Stores,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(configure: impl FnOnce(&mut Config)) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut config = loopback_config(dir.path());
        let endpoint = free_endpoint();
        let mut router = PubSocket::new();
        router.bind(&endpoint).await.unwrap();
        config.cluster.router_pub = vec![endpoint];
        config.websockets.router_silence_ms = 60_000;
        configure(&mut config);
        let edge = websockets::bind(&config).await.unwrap();
        let url = format!("ws://{}", edge.local_addr().unwrap());
        let state = edge.state();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(edge.run(shutdown.clone()));
        let store = common::store::open(&config.store).await.unwrap();
        let mut rig = Rig {
            edge: state,
            url,
            router,
            epoch: 7,
            seq: 0,
            store,
            shutdown,
            task,
            _dir: dir,
        };
        rig.until_subscribed().await;
        rig
    }

    /// Heartbeats until the edge's view of the router stream passes `ready` (no fixed
    /// slow-joiner sleep).
    async fn heartbeat_until(&mut self, what: &str, ready: impl Fn(&StreamState) -> bool) {
        let start = Instant::now();
        loop {
            self.heartbeat().await;
            if ready(&self.edge.routers[0].state.lock().unwrap()) {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn until_subscribed(&mut self) {
        self.heartbeat_until("the edge to subscribe", |s| s.epoch.is_some())
            .await;
    }

    async fn send(&mut self, kind: Kind, seq: u64, payload: Envelope) {
        let mut envelope = payload;
        envelope.header = Header {
            kind,
            epoch: self.epoch,
            seq,
            origin_us: now_us(),
        };
        self.router.send(envelope.to_message()).await.unwrap();
    }

    async fn heartbeat(&mut self) {
        self.send(Kind::Heartbeat, self.seq, Envelope::heartbeat(0))
            .await;
    }

    /// Publishes a delivery with the next sequence number.
    async fn deliver(&mut self, delivery: &Delivery) {
        self.seq += 1;
        self.send(Kind::Deliver, self.seq, Envelope::deliver(delivery, 0))
            .await;
    }

    /// A fresh token with its own queue; (token, token id, queue id).
    async fn token(&self) -> (String, String, String) {
        let token = new_mozilla_token();
        let id = mozilla_token_id(&token).unwrap();
        let queue = new_queue_id();
        self.store
            .queues
            .create_token(&id, &queue, now_us())
            .await
            .unwrap();
        (token, id, queue)
    }

    /// A message stored for (token id, queue) but not published: its delivery.
    async fn stored(&self, id: &str, queue: &str, title: &str) -> Delivery {
        self.stored_body(
            id,
            queue,
            QueueBody {
                title: Some(title.into()),
                ..QueueBody::default()
            },
        )
        .await
    }

    async fn stored_body(&self, id: &str, queue: &str, body: QueueBody) -> Delivery {
        let message = QueueMessage {
            key: new_message_key(),
            queue: queue.into(),
            token: id.into(),
            created_us: now_us(),
            body,
        };
        let appended = self.store.queues.add_queue_message(&message).await.unwrap();
        let appended = appended.expect("the queue exists");
        let message = QueueMessage {
            created_us: appended.created_us,
            ..message
        };
        Delivery::queue_message(message, appended.position)
    }

    async fn connect(&self, token: &str) -> Client {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("{}/socket?token={token}", self.url))
                .await
                .unwrap();
        ws
    }

    fn metric(&self, name: &str) -> f64 {
        metric_value(&self.edge.metrics.render(), name).unwrap_or(0.0)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("run returns")
            .unwrap()
            .unwrap();
    }
}

async fn next_json(ws: &mut Client) -> Value {
    loop {
        let frame = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a frame in time");
        match frame {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

async fn close_code(ws: &mut Client) -> Option<u16> {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("the socket to end in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

async fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let start = Instant::now();
    while !probe() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The message key a delivery carries.
fn key_of(delivery: &Delivery) -> String {
    let common::message::Event::QueueMessage { message } = &delivery.event else {
        panic!("a queue message")
    };
    message.key.clone()
}

/// The next `n` frames' message keys, in arrival order.
async fn next_keys(ws: &mut Client, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for _ in 0..n {
        keys.push(next_json(ws).await["key"].as_str().unwrap().to_owned());
    }
    keys
}

fn keys_of(deliveries: &[&Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| key_of(d)).collect()
}

#[tokio::test]
async fn delivers_live_envelopes_to_the_tokens_sockets_only() {
    let mut rig = Rig::start(|_| {}).await;
    let (token, id, queue) = rig.token().await;
    let (other, other_id, other_queue) = rig.token().await;
    let mut mine = rig.connect(&token).await;
    let mut theirs = rig.connect(&other).await;
    let message = rig.stored(&id, &queue, "live").await;
    rig.deliver(&message).await;
    let frame = next_json(&mut mine).await;
    assert_eq!(frame["key"], key_of(&message));
    assert_eq!(frame["body"]["title"], "live");
    assert_eq!(
        frame["queue"],
        format!("http://127.0.0.1:5001/queue/{queue}/")
    );
    let mark = rig
        .stored_body(&id, &queue, QueueBody::read_mark(&key_of(&message)))
        .await;
    rig.deliver(&mark).await;
    let frame = next_json(&mut mine).await;
    assert_eq!(frame["key"], key_of(&mark));
    assert_eq!(frame["body"], serde_json::json!({"read": key_of(&message)}));
    // The other token's socket got none of that: the first thing it sees is its own message.
    let own = rig.stored(&other_id, &other_queue, "theirs").await;
    rig.deliver(&own).await;
    assert_eq!(next_json(&mut theirs).await["key"], key_of(&own));
    rig.stop().await;
}

#[tokio::test]
async fn a_router_gap_replays_what_was_missed_in_order_once() {
    let mut rig = Rig::start(|_| {}).await;
    let (token, id, queue) = rig.token().await;
    let mut socket = rig.connect(&token).await;
    let first = rig.stored(&id, &queue, "first").await;
    rig.deliver(&first).await;
    assert_eq!(next_json(&mut socket).await["key"], key_of(&first));

    // Two envelopes "lost" on the way: stored, never published; the next one skips ahead.
    let lost_a = rig.stored(&id, &queue, "lost a").await;
    let lost_b = rig.stored(&id, &queue, "lost b").await;
    let after = rig.stored(&id, &queue, "after").await;
    rig.seq += 2;
    rig.deliver(&after).await;
    assert_eq!(
        next_keys(&mut socket, 3).await,
        keys_of(&[&lost_a, &lost_b, &after]),
        "the missed messages, then the live one, in stream order; `first` not again"
    );
    // The lost envelopes turn up late after all: already delivered, dropped.
    rig.deliver(&lost_a).await;
    let next = rig.stored(&id, &queue, "next").await;
    rig.deliver(&next).await;
    assert_eq!(next_json(&mut socket).await["key"], key_of(&next));
    assert!(rig.metric("herald_websockets_router_anomalies_total{reason=\"gap\"}") >= 1.0);
    assert!(rig.metric("herald_websockets_live_entries_total{outcome=\"duplicate\"}") >= 1.0);
    assert!(rig.metric("herald_websockets_recovery_streams_total{outcome=\"caught_up\"}") >= 1.0);
    rig.stop().await;
}

/// Entries of one stream that arrive out of order (two API processes racing) are held
/// until the gap fills and handed over in order, without asking the store.
#[tokio::test]
async fn reordered_entries_are_delivered_in_stream_order() {
    let mut rig = Rig::start(|c| c.websockets.reorder_window_ms = 5_000).await;
    let (token, id, queue) = rig.token().await;
    let mut socket = rig.connect(&token).await;
    let one = rig.stored(&id, &queue, "one").await;
    let two = rig.stored(&id, &queue, "two").await;
    let three = rig.stored(&id, &queue, "three").await;
    rig.deliver(&three).await;
    rig.deliver(&two).await;
    rig.deliver(&one).await;
    assert_eq!(
        next_keys(&mut socket, 3).await,
        keys_of(&[&one, &two, &three])
    );
    assert_eq!(
        rig.metric("herald_websockets_recovered_deliveries_total"),
        0.0,
        "nothing was read from the store"
    );
    rig.stop().await;
}

/// An entry lost on its own — no router gap shows it, only the stream's next offset does —
/// is read from the store once the reorder window has passed.
#[tokio::test]
async fn a_stream_gap_alone_is_read_from_the_store_after_the_reorder_window() {
    let mut rig = Rig::start(|c| c.websockets.reorder_window_ms = 50).await;
    let (token, id, queue) = rig.token().await;
    let mut socket = rig.connect(&token).await;
    let lost = rig.stored(&id, &queue, "lost").await;
    let next = rig.stored(&id, &queue, "next").await;
    rig.deliver(&next).await;
    assert_eq!(next_keys(&mut socket, 2).await, keys_of(&[&lost, &next]));
    assert!(rig.metric("herald_websockets_live_entries_total{outcome=\"parked\"}") >= 1.0);
    rig.stop().await;
}

#[tokio::test]
async fn a_new_router_epoch_or_a_recover_request_replays_too() {
    let mut rig = Rig::start(|_| {}).await;
    let (token, id, queue) = rig.token().await;
    let mut socket = rig.connect(&token).await;

    let during_restart = rig.stored(&id, &queue, "during restart").await;
    rig.epoch = 8;
    rig.seq = 0;
    rig.heartbeat().await;
    assert_eq!(next_json(&mut socket).await["key"], key_of(&during_restart));

    let dropped_by_api = rig.stored(&id, &queue, "dropped by an API").await;
    rig.seq += 1;
    let recover = Envelope::recover(vec![StreamKey::mozilla_token(&id)], 0);
    let seq = rig.seq;
    rig.send(Kind::Recover, seq, recover).await;
    assert_eq!(next_json(&mut socket).await["key"], key_of(&dropped_by_api));
    rig.stop().await;
}

/// More missed than `recovery_limit`: no replay; the socket is told to re-read history.
#[tokio::test]
async fn a_stream_too_far_behind_is_told_to_resync() {
    let mut rig = Rig::start(|c| c.websockets.recovery_limit = 5).await;
    let (token, id, queue) = rig.token().await;
    let mut socket = rig.connect(&token).await;
    let mut last = None;
    for i in 0..8 {
        last = Some(rig.stored(&id, &queue, &format!("m{i}")).await);
    }
    rig.seq += 7;
    rig.deliver(&last.unwrap()).await;
    assert_eq!(close_code(&mut socket).await, Some(4010));
    assert!(
        rig.metric("herald_websockets_recovery_streams_total{outcome=\"too_far_behind\"}") >= 1.0
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_silent_router_triggers_recovery_and_unhealthy_status() {
    let mut rig = Rig::start(|c| {
        c.router.heartbeat_ms = 100;
        c.websockets.router_silence_ms = 300;
    })
    .await;
    let (token, id, queue) = rig.token().await;
    let mut socket = rig.connect(&token).await;
    // The check of a newly followed stream is done (it would find the message below too).
    eventually("the new stream's check", || {
        rig.metric("herald_websockets_recovery_streams_total{outcome=\"up_to_date\"}") >= 1.0
    })
    .await;
    rig.heartbeat().await;
    // The router "dies" after having sent something nobody received.
    let lost = rig.stored(&id, &queue, "in flight at death").await;
    assert_eq!(next_json(&mut socket).await["key"], key_of(&lost));
    assert!(rig.metric("herald_websockets_router_anomalies_total{reason=\"silence\"}") >= 1.0);
    let health = reqwest::get(format!("{}/health", rig.url.replace("ws://", "http://")))
        .await
        .unwrap();
    assert_eq!(health.status(), 503, "no live router stream");
    // While the router stays silent, the edge keeps reading the store every period.
    let meanwhile = rig.stored(&id, &queue, "published while silent").await;
    assert_eq!(next_json(&mut socket).await["key"], key_of(&meanwhile));

    // Three silent periods in a row: the edge replaces its SUB socket (zmq.rs alone backs
    // its reconnects off up to 30 s), and the stream comes back on the fresh one.
    eventually("the edge to re-subscribe", || {
        rig.edge.metrics.resubscribes.get() > 0
    })
    .await;
    let silence_us = i64::try_from(Duration::from_secs(5).as_micros()).unwrap();
    rig.heartbeat_until("the router stream to come back", |s| {
        s.is_live(now_us(), silence_us)
    })
    .await;
    let live = rig.stored(&id, &queue, "after the silence").await;
    rig.deliver(&live).await;
    assert_eq!(next_json(&mut socket).await["key"], key_of(&live));
    rig.stop().await;
}

#[tokio::test]
async fn limits_close_sockets_with_the_specified_codes() {
    let rig = Rig::start(|c| {
        c.websockets.max_message_bytes = 4096;
        c.websockets.handshake_timeout_ms = 300;
    })
    .await;
    let (token, _, _) = rig.token().await;

    let mut too_big = rig.connect(&token).await;
    too_big
        .send(Message::Text("x".repeat(5000).into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut too_big).await, Some(1009));

    let (mut silent, _) = tokio_tungstenite::connect_async(format!("{}/socket", rig.url))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut silent).await,
        Some(1008),
        "no token frame within the handshake timeout"
    );

    let mut chatty = rig.connect(&token).await;
    for _ in 0..12 {
        chatty.send(Message::Text("hello?".into())).await.unwrap();
    }
    assert_eq!(
        close_code(&mut chatty).await,
        Some(1008),
        "repeated bad frames"
    );
    rig.stop().await;
}

#[tokio::test]
async fn pings_keep_readers_alive_and_drop_the_unresponsive() {
    let rig = Rig::start(|c| {
        c.websockets.ping_interval_ms = 100;
        c.websockets.pong_timeout_ms = 200;
    })
    .await;
    let (token, _, _) = rig.token().await;
    let mut reader = rig.connect(&token).await;
    let mut pings = 0;
    while pings < 3 {
        match tokio::time::timeout(DEADLINE, reader.next()).await.unwrap() {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(_)) => {}
            other => panic!("a reading client must stay connected: {other:?}"),
        }
    }
    // A raw TCP client completes the handshake and then never reads nor answers pings.
    use tokio::io::AsyncWriteExt;
    let mut raw = tokio::net::TcpStream::connect(rig.url.trim_start_matches("ws://"))
        .await
        .unwrap();
    let request = format!(
        "GET /socket?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    eventually("two sockets registered", || rig.edge.hub.len() == 2).await;
    eventually("the unresponsive socket dropped", || {
        rig.edge.hub.len() == 1
    })
    .await;
    drop(reader);
    rig.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    let mut rig = Rig::start(|c| {
        c.websockets.outbound_queue_frames = 8;
        c.websockets.outbound_queue_bytes = 256 * 1024;
    })
    .await;
    let (token, id, queue) = rig.token().await;
    let _stalled = rig.connect(&token).await;
    let big = "y".repeat(60 * 1024);
    let start = Instant::now();
    while rig.metric("herald_websockets_slow_consumer_closes_total") < 1.0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the stalled socket was never closed"
        );
        let body = QueueBody {
            body: Some(big.clone()),
            ..QueueBody::default()
        };
        let delivery = rig.stored_body(&id, &queue, body).await;
        rig.deliver(&delivery).await;
    }
    eventually("the socket unregistered", || rig.edge.hub.is_empty()).await;
    rig.stop().await;
}

#[tokio::test]
async fn draining_closes_sockets_with_1001_and_deregisters() {
    // A handshake timeout longer than DEADLINE: the pending legacy socket must be closed by
    // the drain itself, not by its own timeout.
    let rig = Rig::start(|c| c.websockets.handshake_timeout_ms = 60_000).await;
    let (token, _, _) = rig.token().await;
    let mut socket = rig.connect(&token).await;
    let (mut pending, _) = tokio_tungstenite::connect_async(format!("{}/socket", rig.url))
        .await
        .unwrap();
    rig.shutdown.cancel();
    assert_eq!(close_code(&mut socket).await, Some(1001));
    assert_eq!(
        close_code(&mut pending).await,
        Some(1001),
        "a socket still awaiting its token frame"
    );
    tokio::time::timeout(DEADLINE, rig.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        rig.store.nodes.nodes().await.unwrap().is_empty(),
        "deregistered"
    );
}

#[tokio::test]
async fn registers_itself_and_serves_health_and_metrics() {
    let rig = Rig::start(|c| c.websockets.heartbeat_ms = 50).await;
    let (token, _, _) = rig.token().await;
    let _socket = rig.connect(&token).await;
    let start = Instant::now();
    loop {
        let nodes = rig.store.nodes.nodes().await.unwrap();
        if nodes.first().is_some_and(|n| n.connections == 1) {
            assert_eq!(nodes[0].url, "ws://127.0.0.1:8888", "websockets.public_url");
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{nodes:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let http = rig.url.replace("ws://", "http://");
    let health: Value = reqwest::get(format!("{http}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (health["status"].as_str(), health["connections"].as_u64()),
        (Some("ok"), Some(1)),
        "{health}"
    );
    let metrics = reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_websockets_connections 1"),
        "{metrics}"
    );
    let plain = reqwest::get(format!("{http}/socket?token={token}"))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400, "a plain GET is not an upgrade");
    assert_eq!(
        reqwest::get(format!("{http}/nope")).await.unwrap().status(),
        404
    );
    rig.stop().await;
}
