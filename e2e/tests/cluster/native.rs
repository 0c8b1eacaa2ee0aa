//! The native WebSocket protocol through real binaries (SPEC §6): resuming a channel with
//! `since` after a disconnect while messages keep being published (no gap, no duplicate),
//! `resync` when a `since` cannot be honoured or an ephemeral channel may have lost
//! messages to a router restart, client publishes within what the token allows,
//! unsubscribe, error frames and the 1008 close for a client that keeps sending bad
//! frames, and close 4001 when the token expires.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use e2e::{Cluster, DEADLINE, Ending, Options, Socket, V1};
use serde_json::{Value, json};

async fn history_channel(v1: &V1, name: &str, size: u64) {
    let (status, body) = v1
        .call(
            "PUT",
            &format!("channels/{name}"),
            Some(json!({"history": {"size": size}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Subscribes and returns the `subscribed` frame, after any replayed or resync frames,
/// which are returned too.
async fn subscribe(socket: &mut Socket, frame: Value) -> (Vec<Value>, Value) {
    socket.send_json(&frame).await;
    let mut before = Vec::new();
    loop {
        let next = socket.next_json(DEADLINE).await;
        if next["type"] == "subscribed" {
            return (before, next);
        }
        before.push(next);
    }
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

#[tokio::test]
async fn resuming_with_since_replays_then_goes_live_without_gap_or_duplicate() {
    let cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    history_channel(&v1, "feed", 1_000).await;
    let token = v1
        .token(json!({"user": "reader", "channels": ["feed"]}))
        .await;
    let edge = cluster.edge_url(0);

    let mut received: Vec<u64> = Vec::new();
    let (mut socket, welcome) = Socket::native(&edge, &token).await;
    assert_eq!(welcome["channels"], json!(["feed"]));
    // A publisher that keeps going while the reader disconnects and resumes.
    let publisher = {
        let v1 = v1.clone();
        tokio::spawn(async move {
            for n in 1..=150u64 {
                let (status, body) = v1
                    .call("POST", "channels/feed/messages", Some(json!({"data": n})))
                    .await;
                assert_eq!(status, 201, "{body}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for round in 0..3 {
        // Read a while, then drop the socket mid-stream and resume after the last seq.
        let until = received.len() + 30;
        while received.len() < until && received.last() != Some(&150) {
            let frame = socket.next_event(DEADLINE).await;
            assert_eq!(frame["type"], "message", "{frame}");
            received.push(frame["seq"].as_u64().unwrap());
        }
        drop(socket);
        let (next, _) = Socket::native(
            &edge,
            &v1.token(json!({"user": "reader", "channels": ["feed*"]}))
                .await,
        )
        .await;
        socket = next;
        let since = received.last().copied().unwrap_or(0);
        let (replayed, subscribed) = subscribe(
            &mut socket,
            json!({"type": "subscribe", "channel": "feed", "since": since}),
        )
        .await;
        assert!(
            replayed.iter().all(|f| f["type"] == "message"),
            "round {round}: {replayed:?}"
        );
        received.extend(seqs(&replayed));
        assert_eq!(
            subscribed["seq"].as_u64(),
            received.last().copied(),
            "{subscribed}"
        );
        assert!(subscribed["epoch"].is_string());
    }
    while received.last() != Some(&150) {
        let frame = socket.next_event(DEADLINE).await;
        received.push(frame["seq"].as_u64().unwrap());
    }
    publisher.await.unwrap();
    assert_eq!(
        received,
        (1..=150).collect::<Vec<u64>>(),
        "every seq once, in order"
    );
    assert!(
        socket
            .try_next_json(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_since_that_cannot_be_honoured_gets_resync() {
    let cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    history_channel(&v1, "short", 3).await;
    for n in 1..=10 {
        v1.call("POST", "channels/short/messages", Some(json!({"data": n})))
            .await;
    }
    let token = v1
        .token(json!({"user": "late", "channels": ["short*", "ephemeral*"]}))
        .await;
    let (mut socket, _) = Socket::native(&cluster.edge_url(0), &token).await;
    let (before, subscribed) = subscribe(
        &mut socket,
        json!({"type": "subscribe", "channel": "short", "since": 2}),
    )
    .await;
    assert_eq!(
        before[0],
        json!({"type": "resync", "channel": "short"}),
        "{before:?}"
    );
    assert_eq!(seqs(&before[1..]), [8, 9, 10], "what history still has");
    assert_eq!(subscribed["seq"], 10);
    let (mut again, _) = Socket::native(&cluster.edge_url(0), &token).await;
    let (before, subscribed) = subscribe(
        &mut again,
        json!({"type": "subscribe", "channel": "short", "since": 9, "epoch": "not-it"}),
    )
    .await;
    assert_eq!(
        before,
        [json!({"type": "resync", "channel": "short"})],
        "another epoch"
    );
    assert_eq!(subscribed["seq"], 10, "live from the head");
    let (before, subscribed) = subscribe(
        &mut again,
        json!({"type": "subscribe", "channel": "ephemeral", "since": 1}),
    )
    .await;
    assert_eq!(
        before,
        [json!({"type": "resync", "channel": "ephemeral"})],
        "no history"
    );
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "channel": "ephemeral"})
    );
}

#[tokio::test]
async fn a_since_past_the_head_gets_resync_and_stops_no_one() {
    let cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    history_channel(&v1, "ahead", 10).await;
    v1.call("POST", "channels/ahead/messages", Some(json!({"data": 1})))
        .await;
    let token = v1.token(json!({"user": "u", "channels": ["ahead*"]})).await;
    let edge = cluster.edge_url(0);
    let (mut a, _) = Socket::native(&edge, &token).await;
    subscribe(&mut a, json!({"type": "subscribe", "channel": "ahead"})).await;
    let (mut b, _) = Socket::native(&edge, &token).await;
    let (before, subscribed) = subscribe(
        &mut b,
        json!({"type": "subscribe", "channel": "ahead", "since": 999_999_999u64}),
    )
    .await;
    assert_eq!(before, [json!({"type": "resync", "channel": "ahead"})]);
    assert_eq!(subscribed["seq"], 1, "live from the real head");
    let (mut c, _) = Socket::native(&edge, &token).await;
    subscribe(&mut c, json!({"type": "subscribe", "channel": "ahead"})).await;
    v1.call("POST", "channels/ahead/messages", Some(json!({"data": 2})))
        .await;
    for socket in [&mut a, &mut b, &mut c] {
        let frame = socket.next_event(DEADLINE).await;
        assert_eq!(
            (frame["seq"].as_u64(), &frame["data"]),
            (Some(2), &json!(2))
        );
    }
}

#[tokio::test]
async fn a_channel_listed_twice_is_delivered_once_and_left_once() {
    let cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    let token = v1
        .token(json!({"user": "twice", "channels": ["dup", "dup"]}))
        .await;
    let (mut socket, welcome) = Socket::native(&cluster.edge_url(0), &token).await;
    assert_eq!(welcome["channels"], json!(["dup"]));
    let users = || async {
        let (status, body) = v1.call("GET", "channels/dup/users", None).await;
        assert_eq!(status, 200, "{body}");
        body["users"].clone()
    };
    e2e::eventually("the user to be present", DEADLINE, || async {
        (users().await == json!(["twice"])).then_some(())
    })
    .await;
    v1.call(
        "POST",
        "channels/dup/messages",
        Some(json!({"data": "once"})),
    )
    .await;
    assert_eq!(socket.next_event(DEADLINE).await["data"], "once");
    assert!(
        socket
            .try_next_json(Duration::from_millis(300))
            .await
            .is_none(),
        "delivered once"
    );
    drop(socket);
    e2e::eventually("the user to be gone", DEADLINE, || async {
        (users().await == json!([])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sockets_subscribing_during_traffic_get_everything_after_their_seq() {
    const PUBLISHERS: u64 = 3;
    const EACH: u64 = 200;
    const TOTAL: u64 = PUBLISHERS * EACH;
    const MAX_LATE: usize = 40;
    let cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    history_channel(&v1, "busy", 1_000).await;
    let edge = cluster.edge_url(0);
    // One socket keeps the edge following the stream, so later ones join a moving cursor.
    let listed = v1
        .token(json!({"user": "first", "channels": ["busy"]}))
        .await;
    let (_first, _) = Socket::native(&edge, &listed).await;
    let published = Arc::new(AtomicU64::new(0));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let (v1, published) = (v1.clone(), published.clone());
            tokio::spawn(async move {
                for n in 1..=EACH {
                    let (status, body) = v1
                        .call("POST", "channels/busy/messages", Some(json!({"data": n})))
                        .await;
                    assert_eq!(status, 201, "{body}");
                    published.fetch_max(body["seq"].as_u64().unwrap(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    let token = v1
        .token(json!({"user": "late", "channels": ["busy*"]}))
        .await;
    let mut late = Vec::new();
    while late.len() < MAX_LATE && !publishers.iter().all(|p| p.is_finished()) {
        let (mut socket, _) = Socket::native(&edge, &token).await;
        // Alternate plain subscribes and resumes from a little behind the head.
        let head = published.load(Ordering::Relaxed);
        let request = if late.len() % 2 == 0 {
            json!({"type": "subscribe", "channel": "busy"})
        } else {
            json!({"type": "subscribe", "channel": "busy", "since": head.saturating_sub(5)})
        };
        let (replayed, subscribed) = subscribe(&mut socket, request.clone()).await;
        let from = request["since"]
            .as_u64()
            .unwrap_or_else(|| subscribed["seq"].as_u64().unwrap());
        let got = seqs(&replayed);
        assert!(
            got.last()
                .is_none_or(|last| Some(*last) == subscribed["seq"].as_u64())
        );
        late.push((socket, from, got));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    for (socket, from, got) in &mut late {
        while got.last() != Some(&TOTAL) {
            let frame = socket.next_event(DEADLINE).await;
            assert_eq!(frame["type"], "message", "{frame}");
            got.push(frame["seq"].as_u64().unwrap());
        }
        assert_eq!(
            *got,
            (*from + 1..=TOTAL).collect::<Vec<u64>>(),
            "every seq after {from}, once, in order"
        );
    }
}

#[tokio::test]
async fn an_ephemeral_channel_is_told_to_resync_after_a_router_restart() {
    let mut cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    let token = v1.token(json!({"user": "u", "channels": ["live"]})).await;
    let (mut socket, _) = Socket::native(&cluster.edge_url(0), &token).await;
    cluster.router.kill();
    cluster.router.restart();
    let frame = socket.next_json(DEADLINE).await;
    assert_eq!(frame, json!({"type": "resync", "channel": "live"}));
    // Live again afterwards (at most once: publish until one gets through).
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (status, _) = v1
            .call(
                "POST",
                "channels/live/messages",
                Some(json!({"data": "back"})),
            )
            .await;
        assert_eq!(status, 201);
        if let Some(frame) = socket.try_next_json(Duration::from_millis(300)).await
            && frame["type"] == "message"
        {
            assert_eq!(frame["data"], "back");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never live again");
    }
}

#[tokio::test]
async fn client_frames_are_checked() {
    let cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    let edge = cluster.edge_url(0);
    let writer = v1
        .token(json!({"user": "w", "channels": ["chat:*"], "publish": true}))
        .await;
    let reader = v1.token(json!({"user": "r", "channels": ["chat:1"]})).await;
    let (mut w, _) = Socket::native(&edge, &writer).await;
    let (mut r, welcome) = Socket::native(&edge, &reader).await;
    assert_eq!(
        welcome["channels"],
        json!(["chat:1"]),
        "exact names are subscribed"
    );
    let (_, subscribed) =
        subscribe(&mut w, json!({"type": "subscribe", "channel": "chat:1"})).await;
    assert_eq!(subscribed["channel"], "chat:1");

    w.send_json(&json!({"type": "publish", "channel": "chat:1", "data": {"text": "hi"}}))
        .await;
    for socket in [&mut w, &mut r] {
        let frame = socket.next_event(DEADLINE).await;
        assert_eq!(
            (frame["type"].clone(), frame["data"].clone()),
            (json!("message"), json!({"text": "hi"}))
        );
    }
    let refused = error(
        &mut r,
        json!({"type": "publish", "channel": "chat:1", "data": 1}),
    )
    .await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    let refused = error(&mut r, json!({"type": "subscribe", "channel": "other"})).await;
    assert_eq!(refused["code"], "forbidden");
    let refused = error(&mut r, json!({"type": "subscribe", "channel": "chat:1"})).await;
    assert_eq!(refused["code"], "conflict", "already subscribed");
    let refused = error(&mut r, json!({"type": "subscribe", "channel": "bad name"})).await;
    assert_eq!(refused["code"], "bad_request");
    let refused = error(&mut r, json!({"type": "ack", "id": "x"})).await;
    assert_eq!(refused["code"], "not_found", "no such message");
    let refused = error(
        &mut r,
        json!({"type": "event", "id": "x", "kind": "clicked"}),
    )
    .await;
    assert_eq!(refused["code"], "not_found", "no such message");
    r.send_json(&json!({"type": "unsubscribe", "channel": "chat:1"}))
        .await;
    let refused = error(&mut r, json!({"type": "unsubscribe", "channel": "chat:1"})).await;
    assert_eq!(
        refused["code"], "not_found",
        "the first unsubscribe took effect"
    );
    w.send_json(&json!({"type": "publish", "channel": "chat:1", "data": "again"}))
        .await;
    assert_eq!(w.next_event(DEADLINE).await["data"], "again");
    assert!(
        r.try_next_json(Duration::from_millis(300)).await.is_none(),
        "unsubscribed"
    );
    r.send_json(&json!({"type": "ping"})).await;
    assert_eq!(r.next_json(DEADLINE).await, json!({"type": "pong"}));

    for i in 0..11 {
        r.send_text(&format!("not json {i}")).await;
    }
    let mut errors = 0;
    let ending = loop {
        match r.try_next_json(DEADLINE).await {
            Some(frame) => {
                assert_eq!(frame["type"], "error");
                errors += 1;
            }
            None => panic!("no close after repeated bad frames"),
        }
        if errors == 10 {
            break r.ending(DEADLINE).await;
        }
    };
    assert_eq!(ending, Ending::Closed(Some(1008)));
}

/// Sends `frame` and returns the next frame (the answer to it).
async fn error(socket: &mut Socket, frame: Value) -> Value {
    socket.send_json(&frame).await;
    socket.next_event(DEADLINE).await
}

#[tokio::test]
async fn a_socket_closes_with_4001_when_its_token_expires() {
    let cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    let token = v1.token(json!({"user": "brief", "ttl": 2})).await;
    let (mut socket, _) = Socket::native(&cluster.edge_url(0), &token).await;
    assert_eq!(socket.ending(DEADLINE).await, Ending::Closed(Some(4001)));
}
