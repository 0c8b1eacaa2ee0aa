//! In-process tests of `herald-api` on 127.0.0.1 port 0 with a real SQLite file: a test
//! ZeroMQ PULL socket stands in for the router, so the envelopes the API sends can be read
//! exactly — including across a "router" that dies and comes back on the same port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use common::config::Config;
use common::message::Event;
use common::stream::StreamKey;
use common::testing::{loopback_config, metric_value};
use common::token::mozilla_token_id;
use common::wire::{Envelope, Kind};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use zeromq::{PullSocket, Socket, SocketRecv};

const DEADLINE: Duration = Duration::from_secs(20);

struct Running {
    base: String,
    /// The API's one router endpoint (`cluster.router_pull`), which nobody binds until the
    /// test does.
    router: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(configure: impl FnOnce(&mut Config)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(dir.path());
    configure(&mut config);
    let router = config.cluster.router_pull[0].clone();
    let api = api::bind(&config).await.unwrap();
    let base = format!("http://{}", api.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(api.run(shutdown.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Running {
        base,
        router,
        http,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Running {
    /// A new token, and a message posted to its own queue: (queue URL, message key).
    async fn post_message(&self) -> (String, String) {
        let (queue, key, _) = self.post_message_to_new_token().await;
        (queue, key)
    }

    /// A new token, and `n` messages posted to its own queue: (queue URL, keys, token).
    async fn post_to_new_token(&self, n: usize) -> (String, Vec<String>, String) {
        let (queue, first, token) = self.post_message_to_new_token().await;
        let mut keys = vec![first];
        for _ in 1..n {
            keys.push(self.post_to(&queue).await);
        }
        (queue, keys, token)
    }

    async fn post_to(&self, queue: &str) -> String {
        let posted: Value = self
            .http
            .post(queue)
            .form(&[("title", "hi")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        posted["key"].as_str().unwrap().to_owned()
    }

    async fn post_message_to_new_token(&self) -> (String, String, String) {
        let token: Value = self
            .http
            .post(format!("{}/token/", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // The queue URL names api.public_url; this test server listens elsewhere.
        let path = token["queue"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://127.0.0.1:5001");
        let queue = format!("{}{path}", self.base);
        let key = self.post_to(&queue).await;
        (queue, key, token["token"].as_str().unwrap().to_owned())
    }

    async fn health(&self) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/health", self.base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("run returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Receives envelopes until one whose kind satisfies `wanted` arrives.
async fn next_matching(pull: &mut PullSocket, wanted: impl Fn(Kind) -> bool) -> Envelope {
    loop {
        let message = tokio::time::timeout(DEADLINE, pull.recv())
            .await
            .expect("an envelope in time")
            .unwrap();
        let envelope = Envelope::from_message(message).unwrap();
        if wanted(envelope.header.kind) {
            return envelope;
        }
    }
}

/// Receives envelopes until one of `kind` arrives.
async fn next_of(pull: &mut PullSocket, kind: Kind) -> Envelope {
    next_matching(pull, |k| k == kind).await
}

async fn wait_health(api: &Running, status: u16) -> Value {
    let start = Instant::now();
    loop {
        let (got, body) = api.health().await;
        if got == status {
            return body;
        }
        assert!(start.elapsed() < DEADLINE, "health stayed {got}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn stores_then_pushes_to_the_router() {
    let api = start(|_| {}).await;
    let mut pull = PullSocket::new();
    pull.bind(&api.router).await.unwrap();
    wait_health(&api, 200).await;
    let (queue, keys, token) = api.post_to_new_token(2).await;
    let stream = StreamKey::mozilla_token(&mozilla_token_id(&token).unwrap());
    for (offset, key) in keys.iter().enumerate() {
        let delivery = next_of(&mut pull, Kind::Deliver).await.delivery().unwrap();
        let Event::QueueMessage { message } = &delivery.event else {
            panic!("a queue message: {delivery:?}")
        };
        assert_eq!(&message.key, key);
        assert!(queue.contains(&message.queue));
        assert_eq!(delivery.stream, stream, "on the token's stream");
        assert_eq!(delivery.offset(), offset as u64 + 1, "at its position");
    }
    let envelope = next_of(&mut pull, Kind::Heartbeat).await;
    assert_eq!(
        (envelope.header.epoch, envelope.header.seq),
        (0, 0),
        "the router stamps, not the API"
    );
    assert!(envelope.header.origin_us > 0);
    api.stop().await;
}

/// (A router restart needs a real process to die: an in-process drop leaves zmq.rs peer
/// connections open. `e2e/tests/cluster/faults.rs` covers it with kill -9.)
#[tokio::test]
async fn health_is_503_until_a_router_answers() {
    let api = start(|c| {
        c.api.router_heartbeat_ms = 100;
    })
    .await;
    let body = wait_health(&api, 503).await;
    assert_eq!(body["routers"]["connected"], 0, "{body}");
    assert_eq!(body["store"], "ok", "{body}");

    let mut pull = PullSocket::new();
    pull.bind(&api.router).await.unwrap();
    wait_health(&api, 200).await;
    next_of(&mut pull, Kind::Heartbeat).await;

    api.stop().await;
}

#[tokio::test]
async fn deliveries_dropped_while_no_router_is_up_are_announced_for_recovery() {
    let api = start(|c| {
        c.api.publish_queue = 1;
        c.api.publish_timeout_ms = 50;
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let (_, _, token) = api.post_message_to_new_token().await;
        streams.push(StreamKey::mozilla_token(&mozilla_token_id(&token).unwrap()));
    }
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped = metric_value(&metrics, "herald_api_publish_dropped_total")
        .expect("the dropped counter is exported");
    assert!(dropped >= 1.0, "some deliveries were dropped:\n{metrics}");

    let mut pull = PullSocket::new();
    pull.bind(&api.router).await.unwrap();
    let recover = next_of(&mut pull, Kind::Recover)
        .await
        .recover_request()
        .unwrap();
    assert!(!recover.streams.is_empty(), "names the streams that lost");
    for stream in &recover.streams {
        assert!(streams.contains(stream), "{stream} was not posted to");
    }
    api.stop().await;
}

/// However late a router takes it, a delivery is pushed: edges place it by its stream
/// position (and drop it if recovery already delivered it).
#[tokio::test]
async fn a_delivery_that_waited_for_a_router_is_still_pushed() {
    let api = start(|_| {}).await;
    let (_, key) = api.post_message().await;
    let mut pull = PullSocket::new();
    pull.bind(&api.router).await.unwrap();
    let delivery = next_of(&mut pull, Kind::Deliver).await.delivery().unwrap();
    let Event::QueueMessage { message } = delivery.event else {
        panic!("a queue message")
    };
    assert_eq!(message.key, key);
    api.stop().await;
}

/// With two routers, each stream's envelopes all travel one of them, in order (how
/// streams spread is the rendezvous unit test's business).
#[tokio::test]
async fn each_stream_travels_one_router() {
    let second = common::testing::free_endpoint();
    let api = start(|c| c.cluster.router_pull.push(second.clone())).await;
    let mut pulls = [PullSocket::new(), PullSocket::new()];
    pulls[0].bind(&api.router).await.unwrap();
    pulls[1].bind(&second).await.unwrap();
    eventually_health_shows_routers(&api, 2).await;
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(api.post_to_new_token(3).await.2);
    }
    let mut routers_of: std::collections::HashMap<StreamKey, Vec<usize>> = Default::default();
    let expected = 6 * 3;
    let mut seen = 0;
    let start = Instant::now();
    while seen < expected {
        assert!(
            start.elapsed() < DEADLINE,
            "only {seen} of {expected} arrived"
        );
        for (i, pull) in pulls.iter_mut().enumerate() {
            let Ok(Ok(message)) =
                tokio::time::timeout(Duration::from_millis(50), pull.recv()).await
            else {
                continue;
            };
            let envelope = Envelope::from_message(message).unwrap();
            if envelope.header.kind == Kind::Deliver {
                let delivery = envelope.delivery().unwrap();
                let offset = delivery.offset();
                let routers = routers_of.entry(delivery.stream).or_default();
                assert_eq!(offset, routers.len() as u64 + 1, "in stream order");
                routers.push(i);
                seen += 1;
            }
        }
    }
    assert_eq!(routers_of.len(), 6);
    for (stream, routers) in &routers_of {
        assert!(
            routers.iter().all(|r| *r == routers[0]),
            "{stream} went over two routers: {routers:?}"
        );
    }
    api.stop().await;
}

async fn eventually_health_shows_routers(api: &Running, connected: u64) {
    let start = Instant::now();
    loop {
        let (_, body) = api.health().await;
        if body["routers"]["connected"] == connected {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `request` and reads one whole response (head and `Content-Length` body), as
/// lowercase text.
async fn exchange(stream: &mut tokio::net::TcpStream, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.unwrap();
    let read = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a whole response: {answer:?}");
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if answer.len() >= end + 4 + length {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, read).await.unwrap()
}

#[tokio::test]
async fn oversized_and_chunked_bodies_are_bounded() {
    use tokio::io::AsyncReadExt;
    let api = start(|c| c.api.max_body_bytes = 2048).await;
    let (queue, _) = api.post_message().await;
    let path = queue.trim_start_matches(&api.base).to_owned();
    let address = api.base.trim_start_matches("http://").to_owned();
    let form = "Content-Type: application/x-www-form-urlencoded";
    let small =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\n{form}\r\nContent-Length: 7\r\n\r\ntitle=t");

    // An oversized body is read and discarded, so the connection stays usable: the next
    // request on it is answered (clients reuse kept-alive connections).
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let big = format!("title={}", "x".repeat(70 * 1024));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{form}\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    let answer = exchange(&mut stream, request.as_bytes()).await;
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(!answer.contains("connection: close"), "{answer}");
    let answer = exchange(&mut stream, small.as_bytes()).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");

    // Without Content-Length (a chunked body) the limit still holds, the same way.
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{form}\r\n\r\n");
    for _ in 0..8 {
        request.push_str(&format!("200\r\n{}\r\n", "a".repeat(512)));
    }
    request.push_str("0\r\n\r\n");
    let answer = exchange(&mut stream, request.as_bytes()).await;
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    let answer = exchange(&mut stream, small.as_bytes()).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");

    // Far past the limit the body is not read at all: the answer says the connection
    // closes, and it does.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{form}\r\nContent-Length: {}\r\n\r\n",
        64 * 1024 * 1024
    );
    let answer = exchange(&mut stream, head.as_bytes()).await;
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    api.stop().await;
}
