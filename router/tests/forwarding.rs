//! In-process tests of `herald-router`: a real router on 127.0.0.1 port 0, real ZeroMQ
//! PUSH and SUB peers, checking stamping, heartbeats, dropping of malformed input and the
//! HTTP endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use common::config::Config;
use common::message::{Delivery, QueueBody, QueueMessage};
use common::stream::Position;
use common::wire::{Envelope, Kind};
use tokio_util::sync::CancellationToken;
use zeromq::{PushSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

fn test_config() -> Config {
    // The router never opens the store; the directory only satisfies the helper.
    let mut config = common::testing::loopback_config(std::path::Path::new("/nonexistent"));
    config.router.heartbeat_ms = 100;
    config
}

async fn recv_envelope(sub: &mut SubSocket) -> Envelope {
    let message = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("an envelope within 10 s")
        .unwrap();
    Envelope::from_message(message).unwrap()
}

/// Receives until a non-heartbeat envelope arrives.
async fn recv_delivery(sub: &mut SubSocket) -> Envelope {
    loop {
        let envelope = recv_envelope(sub).await;
        if envelope.header.kind != Kind::Heartbeat {
            return envelope;
        }
    }
}

fn read_delivery(token: &str) -> Delivery {
    let message = QueueMessage {
        key: "k2".into(),
        queue: "q".into(),
        token: token.into(),
        created_us: 1,
        body: QueueBody::read_mark("k"),
    };
    Delivery::queue_message(message, Position::start("e"))
}

#[tokio::test]
async fn stamps_forwards_and_heartbeats() {
    let router = router::bind(&test_config()).await.unwrap();
    let (pull, publish) = (
        router.pull_endpoint().to_owned(),
        router.pub_endpoint().to_owned(),
    );
    let http = router.http_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(router.run(shutdown.clone()));

    let mut sub = SubSocket::new();
    sub.connect(&publish).await.unwrap();
    sub.subscribe("").await.unwrap();
    // A heartbeat proves the subscription is live (no fixed sleep for the slow joiner).
    let beat = recv_envelope(&mut sub).await;
    assert_eq!(beat.header.kind, Kind::Heartbeat);
    let epoch = beat.header.epoch;
    assert_ne!(epoch, 0);

    let mut push = PushSocket::new();
    push.connect(&pull).await.unwrap();
    push.send(Envelope::heartbeat(1).to_message())
        .await
        .unwrap();
    let mut garbage = ZmqMessage::from(Bytes::from_static(b"junk"));
    garbage.push_back(Bytes::from_static(b"not a header"));
    push.send(garbage).await.unwrap();
    for token in ["a", "b"] {
        push.send(Envelope::deliver(&read_delivery(token), 1).to_message())
            .await
            .unwrap();
    }

    let first = recv_delivery(&mut sub).await;
    let second = recv_delivery(&mut sub).await;
    assert_eq!((first.header.epoch, second.header.epoch), (epoch, epoch));
    assert_eq!(second.header.seq, first.header.seq + 1);
    assert_eq!(first.delivery().unwrap(), read_delivery("a"));
    assert_eq!(first.routing_key, "t/a|");
    let next_beat = loop {
        let envelope = recv_envelope(&mut sub).await;
        if envelope.header.kind == Kind::Heartbeat {
            break envelope;
        }
    };
    assert_eq!(
        next_beat.header.seq, second.header.seq,
        "a heartbeat repeats the last seq"
    );

    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_router_invalid_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_router_upstream_heartbeats_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_router_forwarded_total{kind=\"deliver\"} 2"),
        "{metrics}"
    );
    let health: serde_json::Value = reqwest::get(format!("http://{http}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let missing = reqwest::get(format!("http://{http}/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_busy_port_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config();
    config.router.listen = taken.local_addr().unwrap().to_string().parse().unwrap();
    let err = router::bind(&config).await.err().expect("must fail");
    assert!(err.to_string().contains("router.listen"), "{err}");
}
