//! Delivery through real binaries: API → router → edge → a real WebSocket client, in the
//! Mozilla dialect (query token and legacy first frame), across two edges, with read sync,
//! `/nodes/` ordering, and a client that behaves like the 2012 one (`/nodes/` →
//! `ws://host:port/` → `token: T`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::{Cluster, DEADLINE, Ending, Moz, Options, Socket, eventually};
use serde_json::Value;

/// The first message a socket that authenticated with its `token:` frame receives, after
/// checking it is one of those posted. The edge registers the socket once it has read that
/// frame, which the client cannot observe: post to `queue` until one arrives.
async fn first_delivery(moz: &Moz, socket: &mut Socket, queue: &str) -> Value {
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut posted = Vec::new();
    loop {
        posted.push(Value::String(moz.post(queue, "legacy").await));
        if let Some(frame) = socket
            .try_next_json(std::time::Duration::from_millis(300))
            .await
        {
            assert!(posted.contains(&frame["key"]), "{frame} was not posted");
            return frame;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the legacy socket never received"
        );
    }
}

#[tokio::test]
async fn a_posted_message_reaches_the_tokens_socket() {
    let cluster = Cluster::start(Options::default()).await;
    let moz = cluster.moz();
    let (token, own_queue) = moz.token().await;
    let queue = moz.queue(&token, "example.com").await;
    let mut socket = Socket::mozilla(&cluster.edge_url(0), &token).await;

    let (status, posted) = moz
        .form_post(
            &queue,
            &[
                ("title", "Hello"),
                ("body", "World"),
                ("actionUrl", "http://example.com/x"),
                ("iconUrl", "https://example.com/i.png"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{posted}");
    let frame = socket.next_json(DEADLINE).await;
    assert_eq!(frame["key"], posted["key"]);
    assert_eq!(frame["timestamp"], posted["timestamp"]);
    assert_eq!(frame["queue"], Value::String(queue.clone()));
    assert_eq!(
        frame["body"],
        serde_json::json!({"title": "Hello", "body": "World", "actionUrl": "http://example.com/x",
                           "iconUrl": "https://example.com/i.png"})
    );

    // The token's own queue delivers to the same sockets.
    let key = moz.post(&own_queue, "to myself").await;
    assert_eq!(socket.next_json(DEADLINE).await["key"], Value::String(key));
}

#[tokio::test]
async fn the_legacy_first_frame_authenticates_and_bad_tokens_are_refused() {
    let cluster = Cluster::start(Options::default()).await;
    let moz = cluster.moz();
    let (token, own_queue) = moz.token().await;
    let mut socket = Socket::connect(&format!("{}/socket", cluster.edge_url(0))).await;
    socket.send_text(&format!("token: {token}")).await;
    let frame = first_delivery(&moz, &mut socket, &own_queue).await;
    assert_eq!(frame["queue"], Value::String(own_queue.clone()), "{frame}");

    let mut wrong = Socket::connect(&format!("{}/socket", cluster.edge_url(0))).await;
    wrong.send_text("token: 0000").await;
    assert_eq!(wrong.ending(DEADLINE).await, Ending::Closed(Some(1008)));

    let refused =
        tokio_tungstenite::connect_async(format!("{}/socket?token=forged", cluster.edge_url(0)))
            .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("a forged token must get 401, got {other:?}"),
    }
    let unknown = format!("{}/socket?token={}", cluster.edge_url(0), "a".repeat(64));
    match tokio_tungstenite::connect_async(unknown).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("an unknown token must get 401, got {other:?}"),
    }
}

#[tokio::test]
async fn two_edges_each_deliver_to_their_socket_and_read_sync_reaches_both() {
    let cluster = Cluster::start(Options {
        edges: 2,
        ..Options::default()
    })
    .await;
    let moz = cluster.moz();
    let (token, own_queue) = moz.token().await;
    let queue = moz.queue(&token, "news.example").await;
    let mut phone = Socket::mozilla(&cluster.edge_url(0), &token).await;
    let mut laptop = Socket::mozilla(&cluster.edge_url(1), &token).await;

    let key = moz.post(&queue, "breaking").await;
    for socket in [&mut phone, &mut laptop] {
        assert_eq!(
            socket.next_json(DEADLINE).await["key"],
            Value::String(key.clone())
        );
    }
    // A read mark is a message of the token's own queue, pushed like any other...
    let (status, mark) = moz
        .form_post(
            &format!("{own_queue}?action=read&key={key}"),
            &[("ignored", "")],
        )
        .await;
    assert_eq!(status, 200, "{mark}");
    for socket in [&mut phone, &mut laptop] {
        let frame = socket.next_json(DEADLINE).await;
        assert_eq!(frame["key"], mark["key"]);
        assert_eq!(frame["queue"], Value::String(own_queue.clone()));
        assert_eq!(frame["body"], serde_json::json!({"read": key}));
    }
    // ...so a device that was offline finds it in history.
    let (status, history) = moz.messages(&own_queue, &token, &[]).await;
    assert_eq!(status, 200, "{history}");
    let last = history["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["body"], serde_json::json!({"read": key}));
}

#[tokio::test]
async fn nodes_lists_healthy_edges_least_loaded_first() {
    let cluster = Cluster::start(Options {
        edges: 2,
        ..Options::default()
    })
    .await;
    let moz = cluster.moz();
    let (token, _) = moz.token().await;
    let edge0 = cluster.edge_url(0);
    let mut busy = Vec::new();
    for _ in 0..3 {
        busy.push(Socket::mozilla(&edge0, &token).await);
    }
    let expected = vec![cluster.edge_node(1), cluster.edge_node(0)];
    eventually("/nodes/ to put the idle edge first", DEADLINE, || {
        let moz = moz.clone();
        let expected = expected.clone();
        async move {
            let response = moz
                .http
                .get(format!("{}/nodes/", moz.base))
                .send()
                .await
                .ok()?;
            let body: Value = response.json().await.ok()?;
            let nodes: Vec<String> = serde_json::from_value(body["nodes"].clone()).ok()?;
            (nodes == expected).then_some(())
        }
    })
    .await;
}

/// The 2012 client: asks `/nodes/` for `host:port` addresses, opens `ws://host:port/`,
/// sends `token: T` first; it receives messages of its queues, the read marks another
/// device posts (live, and in `GET` history for a device that was offline), and nothing of
/// other tokens.
#[tokio::test]
async fn a_2012_client_finds_a_node_and_authenticates_with_its_first_frame() {
    let cluster = Cluster::start(Options::default()).await;
    let moz = cluster.moz();
    let (token, own_queue) = moz.token().await;
    let (_, other_queue) = moz.token().await;
    let queue = moz.queue(&token, "news.example").await;

    let (status, nodes) = Moz::answer(
        moz.http
            .get(format!("{}/nodes/", moz.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{nodes}");
    assert_eq!(nodes["nodes"], serde_json::json!([cluster.edge_node(0)]));
    let node = nodes["nodes"][0].as_str().unwrap();
    let mut socket = Socket::connect(&format!("ws://{node}/")).await;
    socket.send_text(&format!("token: {token}")).await;
    let first = first_delivery(&moz, &mut socket, &queue).await;
    assert_eq!(first["queue"], Value::String(queue.clone()));
    assert_eq!(first["body"], serde_json::json!({"title": "legacy"}));

    // Another token's message does not arrive; this token's next one does, in order.
    moz.post(&other_queue, "not yours").await;
    let key = moz.post(&queue, "second").await;
    let frame = loop {
        // Skip the later of the probes `first_delivery` posted, if more than one arrived.
        let frame = socket.next_json(DEADLINE).await;
        if frame["body"]["title"] != "legacy" {
            break frame;
        }
    };
    assert_eq!(frame["key"], Value::String(key.clone()), "{frame}");

    // Read sync: another device marks `key` read on the token's own queue.
    let (status, mark) = moz
        .form_post(&own_queue, &[("action", "read"), ("key", &key)])
        .await;
    assert_eq!(status, 200, "{mark}");
    let frame = socket.next_json(DEADLINE).await;
    assert_eq!(frame["key"], mark["key"]);
    assert_eq!(frame["timestamp"], mark["timestamp"]);
    assert_eq!(frame["queue"], Value::String(own_queue.clone()));
    assert_eq!(frame["body"], serde_json::json!({"read": key}));
    // ...and a device that was offline finds the mark in history, with `last_seen`.
    let (status, history) = moz.messages(&own_queue, &token, &[]).await;
    assert_eq!(status, 200, "{history}");
    assert!(history["last_seen"].is_number(), "{history}");
    let bodies: Vec<&Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["body"])
        .collect();
    assert_eq!(
        bodies.last(),
        Some(&&serde_json::json!({"read": key})),
        "{history}"
    );
    // A read mark on a site queue, or of another token's message, is refused.
    let (status, refused) = moz
        .form_post(&queue, &[("action", "read"), ("key", &key)])
        .await;
    assert_eq!(status, 400, "{refused}");
    let (status, _) = moz
        .form_post(&other_queue, &[("action", "read"), ("key", &key)])
        .await;
    assert_ne!(status, 200);
}
