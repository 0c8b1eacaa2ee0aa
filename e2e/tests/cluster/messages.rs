//! SPEC §4 addressed messages over real binaries: `POST /api/v1/messages` and
//! `/users/{id}/messages`, the status lifecycle for online and offline recipients
//! (`PENDING` → `DELIVERED` when handed to a live socket; offline recipients get theirs on
//! connect, oldest first), cancel (409 unless `PENDING`) and expiry (the monitor's sweep)
//! never followed by a delivery, cancel racing delivery, 1000 and 1001 recipients, bad
//! input naming its field, and a listing walk that sees every item once while messages
//! keep arriving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{Cluster, DEADLINE, Options, Socket, V1, eventually};
use serde_json::{Value, json};

const SECRET: &str = "dev-secret-change-me";
/// How long a socket is watched for a frame that must not come.
const QUIET: Duration = Duration::from_millis(700);

fn v1(cluster: &Cluster) -> V1 {
    V1::with_secret(&cluster.api_url(), SECRET)
}

/// A native socket of `user`, its welcome read.
async fn connect(cluster: &Cluster, api: &V1, user: &str) -> Socket {
    let token = api.token(json!({"user": user})).await;
    Socket::native(&cluster.edge_url(0), &token).await.0
}

/// Sends `body` to `/api/v1/messages`, expecting 201; the answer.
async fn send(api: &V1, body: Value) -> Value {
    let (status, answer) = api.call("POST", "messages", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

/// Polls `GET /messages/{id}` until its status is `status`; the message.
async fn until_status(api: &V1, id: &str, status: &str) -> Value {
    eventually(
        &format!("message {id} to be {status}"),
        DEADLINE,
        || async {
            let (code, message) = api.call("GET", &format!("messages/{id}"), None).await;
            (code == 200 && message["status"] == status).then_some(message)
        },
    )
    .await
}

#[tokio::test]
async fn online_and_offline_recipients_and_their_statuses() {
    let cluster = Cluster::start(Options::default()).await;
    let api = v1(&cluster);
    let mut alice = connect(&cluster, &api, "alice").await;

    let sent = send(
        &api,
        json!({"recipients": ["alice", {"id": "bob", "foreignId": "f-bob"}],
               "message": "hello", "topic": "news"}),
    )
    .await;
    assert_eq!(sent["errors"], json!([]));
    let items = sent["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["recipient"], "alice");
    assert_eq!(items[0]["status"], "PENDING");
    assert_eq!(items[1]["foreignId"], "f-bob");
    let (to_alice, to_bob) = (
        items[0]["id"].as_str().unwrap().to_owned(),
        items[1]["id"].as_str().unwrap().to_owned(),
    );

    // Online: delivered at once, and the status says so.
    let frame = alice.next_event(DEADLINE).await;
    assert_eq!(frame["type"], "message", "{frame}");
    assert_eq!(frame["id"], to_alice.as_str());
    assert_eq!(frame["data"], "hello");
    assert_eq!(frame["topic"], "news");
    let delivered = until_status(&api, &to_alice, "DELIVERED").await;
    assert!(delivered["deliveredAt"].is_string(), "{delivered}");

    // Offline: waits, then arrives when bob connects, oldest first.
    let (_, second) = api
        .call(
            "POST",
            "users/bob/messages",
            Some(json!({"data": {"n": 2}})),
        )
        .await;
    let second_id = second["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, waiting) = api.call("GET", &format!("messages/{to_bob}"), None).await;
    assert_eq!(waiting["status"], "PENDING", "{waiting}");
    let mut bob = connect(&cluster, &api, "bob").await;
    let first = bob.next_event(DEADLINE).await;
    assert_eq!(first["id"], to_bob.as_str(), "{first}");
    let next = bob.next_event(DEADLINE).await;
    assert_eq!(next["id"], second_id.as_str(), "{next}");
    assert_eq!(next["data"], json!({"n": 2}));
    until_status(&api, &to_bob, "DELIVERED").await;
    until_status(&api, &second_id, "DELIVERED").await;
    assert_eq!(
        bob.try_next_json(QUIET).await,
        None,
        "nothing twice after connecting"
    );
    // Delivered messages are not sent again on the next connection.
    drop(bob);
    let mut again = connect(&cluster, &api, "bob").await;
    assert_eq!(again.try_next_json(QUIET).await, None);
}

#[tokio::test]
async fn cancelled_and_expired_messages_are_never_delivered() {
    let cluster = Cluster::start(Options {
        monitor: true,
        ..Options::default()
    })
    .await;
    let api = v1(&cluster);
    let sent = send(&api, json!({"recipients": ["carol"], "message": "nope"})).await;
    let id = sent["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, cancelled) = api
        .call("POST", &format!("messages/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(cancelled["cancelledAt"].is_string());
    let (status, again) = api
        .call("POST", &format!("messages/{id}/cancel"), None)
        .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "conflict");

    let sent = send(&api, json!({"recipients": ["carol"], "data": 1, "ttl": 1})).await;
    let short = sent["items"][0]["id"].as_str().unwrap().to_owned();
    assert!(sent["items"][0]["expiresAt"].is_string());
    let expired = until_status(&api, &short, "EXPIRED").await;
    assert_eq!(expired["data"], 1);
    let (status, _) = api
        .call("POST", &format!("messages/{short}/cancel"), None)
        .await;
    assert_eq!(status, 409);

    let mut carol = connect(&cluster, &api, "carol").await;
    assert_eq!(carol.try_next_json(QUIET).await, None);
    let (status, missing) = api.call("GET", "messages/0123", None).await;
    assert_eq!(status, 404, "{missing}");
}

#[tokio::test]
async fn cancel_racing_delivery_never_both() {
    let cluster = Cluster::start(Options::default()).await;
    let api = v1(&cluster);
    let mut dave = connect(&cluster, &api, "dave").await;
    let mut outcomes = BTreeMap::new();
    for round in 0..20 {
        let sent = send(
            &api,
            json!({"recipients": ["dave"], "message": format!("r{round}")}),
        )
        .await;
        let id = sent["items"][0]["id"].as_str().unwrap().to_owned();
        let (status, _) = api
            .call("POST", &format!("messages/{id}/cancel"), None)
            .await;
        let received = dave.try_next_json(QUIET).await;
        let (_, now) = api.call("GET", &format!("messages/{id}"), None).await;
        match status {
            200 => {
                assert_eq!(received, None, "round {round}: cancelled yet delivered");
                assert_eq!(now["status"], "CANCELLED");
            }
            409 => {
                let frame = received.expect("a message that was not cancelled arrives");
                assert_eq!(frame["id"], id.as_str());
                assert_eq!(now["status"], "DELIVERED");
            }
            other => panic!("cancel answered {other}"),
        }
        *outcomes.entry(status).or_insert(0) += 1;
    }
    eprintln!("cancel outcomes over 20 rounds: {outcomes:?}");
}

#[tokio::test]
async fn recipients_are_bounded_and_bad_input_names_its_field() {
    let cluster = Cluster::start(Options::default()).await;
    let api = v1(&cluster);
    let many: Vec<String> = (0..1001).map(|i| format!("user-{i}")).collect();
    let (status, refused) = api
        .call(
            "POST",
            "messages",
            Some(json!({"recipients": many, "message": "x"})),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["details"]["field"], "recipients");
    let sent = send(&api, json!({"recipients": &many[..1000], "message": "x"})).await;
    assert_eq!(sent["items"].as_array().unwrap().len(), 1000);

    let cases = [
        (json!({"recipients": [], "message": "x"}), "recipients"),
        (
            json!({"recipients": ["a", "a"], "message": "x"}),
            "recipients[1]",
        ),
        (json!({"recipients": [5], "message": "x"}), "recipients[0]"),
        (json!({"recipients": ["a"]}), "message"),
        (
            json!({"recipients": ["a"], "message": "x", "data": 1}),
            "data",
        ),
        (json!({"recipients": ["a"], "template": "t1"}), "template"),
        (
            json!({"recipients": ["a"], "message": "x", "expiresAt": "2020-01-01T00:00:00Z"}),
            "expiresAt",
        ),
        (
            json!({"recipients": ["a"], "message": "x", "expiresAt": "2023-13-45"}),
            "expiresAt",
        ),
        (
            json!({"recipients": ["a"], "message": "x", "ttl": 0}),
            "ttl",
        ),
        (json!({"message": "x"}), "recipients"),
    ];
    for (body, field) in cases {
        let (status, answer) = api.call("POST", "messages", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{body}: {answer}"
        );
    }
    for (query, field) in [
        ("status=DONE", "status"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=abc", "limit"),
        ("createdFrom=yesterday", "createdFrom"),
        ("nextToken=forged", "nextToken"),
    ] {
        let (status, answer) = api.call("GET", &format!("messages?{query}"), None).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{query}: {answer}"
        );
    }
}

#[tokio::test]
async fn a_listing_walk_sees_every_item_once_while_messages_arrive() {
    let cluster = Cluster::start(Options::default()).await;
    let api = v1(&cluster);
    let mut expected = Vec::new();
    for i in 0..25 {
        let sent = send(
            &api,
            json!({"recipients": [format!("w{i}")], "message": "m"}),
        )
        .await;
        expected.push(sent["items"][0]["id"].as_str().unwrap().to_owned());
    }
    expected.reverse();
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let query = match &token {
            Some(t) => format!("messages?limit=10&nextToken={t}"),
            None => "messages?limit=10".to_owned(),
        };
        let (status, page) = api.call("GET", &query, None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned()),
        );
        send(&api, json!({"recipients": ["late"], "message": "new"})).await;
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, expected);

    let (_, filtered) = api
        .call("GET", "messages?recipient=w3&status=PENDING", None)
        .await;
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1, "{filtered}");
    assert_eq!(filtered["nextToken"], Value::Null);
}

/// A user's inbox is a stream with positions: messages sent while the router is killed and
/// restarted reach the connected socket exactly once, in order, and end `DELIVERED`.
#[tokio::test]
async fn an_inbox_recovers_after_the_router_is_killed() {
    let mut cluster = Cluster::start(Options::default()).await;
    let api = v1(&cluster);
    let mut erin = connect(&cluster, &api, "erin").await;
    let mut sent = Vec::new();
    for i in 0..120 {
        if i == 40 {
            cluster.router.kill();
        }
        if i == 80 {
            cluster.router.restart();
        }
        let answer = send(&api, json!({"recipients": ["erin"], "data": i})).await;
        sent.push(answer["items"][0]["id"].as_str().unwrap().to_owned());
    }
    let mut received = Vec::new();
    while received.len() < sent.len() {
        let frame = erin
            .try_next_json(Duration::from_secs(40))
            .await
            .unwrap_or_else(|| panic!("{} of {} arrived", received.len(), sent.len()));
        received.push(frame["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(received, sent, "every message once, in order");
    assert_eq!(erin.try_next_json(Duration::from_secs(3)).await, None);
    for id in [&sent[0], &sent[60], &sent[119]] {
        until_status(&api, id, "DELIVERED").await;
    }
}

/// At-least-once mode (token claim `ack`): a message handed to the socket stays `PENDING`
/// until the client's `ack`; what was not acknowledged comes again on the next connection;
/// an `ack` of another user's message is refused.
#[tokio::test]
async fn ack_mode_marks_delivered_on_ack_and_resends_the_rest() {
    let cluster = Cluster::start(Options::default()).await;
    let api = v1(&cluster);
    let token = api.token(json!({"user": "fay", "ack": true})).await;
    let (mut fay, _) = Socket::native(&cluster.edge_url(0), &token).await;

    let first = send(&api, json!({"recipients": ["fay"], "message": "one"})).await;
    let first = first["items"][0]["id"].as_str().unwrap().to_owned();
    let frame = fay.next_event(DEADLINE).await;
    assert_eq!(frame["id"], first.as_str());
    let (_, now) = api.call("GET", &format!("messages/{first}"), None).await;
    assert_eq!(
        now["status"], "PENDING",
        "handed over, not acknowledged: {now}"
    );
    fay.send_json(&json!({"type": "ack", "id": first})).await;
    until_status(&api, &first, "DELIVERED").await;

    let second = send(&api, json!({"recipients": ["fay"], "message": "two"})).await;
    let second = second["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(fay.next_event(DEADLINE).await["id"], second.as_str());
    let other = send(&api, json!({"recipients": ["gus"], "message": "not yours"})).await;
    let other = other["items"][0]["id"].as_str().unwrap().to_owned();
    fay.send_json(&json!({"type": "ack", "id": other})).await;
    let refused = fay.next_event(DEADLINE).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "not_found", "{refused}");
    drop(fay);

    // Not acknowledged: sent again on the next connection, and only that one.
    let (mut again, _) = Socket::native(&cluster.edge_url(0), &token).await;
    let frame = again.next_event(DEADLINE).await;
    assert_eq!(frame["id"], second.as_str(), "{frame}");
    assert_eq!(frame["data"], "two");
    assert_eq!(again.try_next_json(QUIET).await, None);
    again.send_json(&json!({"type": "ack", "id": second})).await;
    until_status(&api, &second, "DELIVERED").await;
    let (_, gus) = api.call("GET", &format!("messages/{other}"), None).await;
    assert_eq!(
        gus["status"], "PENDING",
        "another user's ack did nothing: {gus}"
    );
}

#[tokio::test]
async fn templates_are_stored_used_in_sends_and_refused_naming_the_field() {
    let cluster = Cluster::start(Options::default()).await;
    let api = v1(&cluster);
    let (status, template) = api
        .call(
            "POST",
            "templates",
            Some(json!({"title": "Sale", "body": "50% off", "data": {"sku": [1, 2]},
                        "actionUrl": "https://shop.example/sale", "icon": "https://shop.example/i.png",
                        "ttl": 3600})),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    let id = template["id"].as_str().unwrap().to_owned();
    assert_eq!(template["ttl"], 3600);
    let (status, read) = api.call("GET", &format!("templates/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(read, template);

    // A send with the template: each message carries its content as data, and its ttl.
    let mut gina = connect(&cluster, &api, "gina").await;
    let sent = send(
        &api,
        json!({"recipients": ["gina", {"id": "hal", "foreignId": "f-hal"}], "template": id}),
    )
    .await;
    let content = json!({"title": "Sale", "body": "50% off", "data": {"sku": [1, 2]},
                         "actionUrl": "https://shop.example/sale", "icon": "https://shop.example/i.png"});
    let items = sent["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["data"], content, "{item}");
        assert!(item["expiresAt"].is_string(), "the template's ttl: {item}");
    }
    let frame = gina.next_event(DEADLINE).await;
    assert_eq!(frame["type"], "message", "{frame}");
    assert_eq!(frame["data"], content);

    // Deleting the template leaves sent messages as they are.
    let (status, _) = api.call("DELETE", &format!("templates/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = api.call("GET", &format!("templates/{id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = api.call("DELETE", &format!("templates/{id}"), None).await;
    assert_eq!(status, 404);
    let hal = items[1]["id"].as_str().unwrap();
    let (_, message) = api.call("GET", &format!("messages/{hal}"), None).await;
    assert_eq!(message["data"], content);

    // Refusals name their field, and store nothing.
    let (_, before) = api.call("GET", "messages?limit=100", None).await;
    for (body, field) in [
        (json!({"recipients": ["x"], "template": id}), "template"),
        (json!({"recipients": ["x"], "template": "nope"}), "template"),
        (json!({"recipients": ["x"], "template": 5}), "template"),
        (
            json!({"recipients": ["x"], "template": "t", "message": "m"}),
            "template",
        ),
        (
            json!({"recipients": ["x"], "message": "m", "data": 1}),
            "data",
        ),
    ] {
        let (status, answer) = api.call("POST", "messages", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{body} → {answer}"
        );
    }
    let (_, after) = api.call("GET", "messages?limit=100", None).await;
    assert_eq!(before["items"], after["items"], "nothing stored");
    for (body, field) in [
        (json!({}), "title"),
        (json!({"icon": "https://x/i.png"}), "title"),
        (json!({"title": 5}), "title"),
        (json!({"title": "x".repeat(4097)}), "title"),
        (
            json!({"body": "b", "actionUrl": "javascript:alert(1)"}),
            "actionUrl",
        ),
        (json!({"body": "b", "icon": "/relative.png"}), "icon"),
        (json!({"body": "b", "ttl": 0}), "ttl"),
        (json!({"body": "b", "ttl": -5}), "ttl"),
    ] {
        let (status, answer) = api.call("POST", "templates", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{body} → {answer}"
        );
    }
}

#[tokio::test]
async fn broadcasts_reach_connected_recipients_by_topic_once_each() {
    let cluster = Cluster::start(Options {
        edges: 2,
        ..Options::default()
    })
    .await;
    let api = v1(&cluster);
    // ann: topic news, on both edges; ben: no topics; cat: topic sport.
    let ann_token = api.token(json!({"user": "ann", "topics": ["news"]})).await;
    let (mut ann0, _) = Socket::native(&cluster.edge_url(0), &ann_token).await;
    let (mut ann1, _) = Socket::native(&cluster.edge_url(1), &ann_token).await;
    let mut ben = connect(&cluster, &api, "ben").await;
    let cat_token = api.token(json!({"user": "cat", "topics": ["sport"]})).await;
    let (mut cat, _) = Socket::native(&cluster.edge_url(1), &cat_token).await;

    let (status, news) = api
        .call(
            "POST",
            "broadcasts",
            Some(json!({"data": {"headline": "x"}, "topic": "news", "ttl": 600})),
        )
        .await;
    assert_eq!(status, 201, "{news}");
    let news_id = news["id"].as_str().unwrap().to_owned();
    assert_eq!(news["topic"], "news");
    assert!(news["expiresAt"].is_string());
    for socket in [&mut ann0, &mut ann1] {
        let frame = socket.next_event(DEADLINE).await;
        assert_eq!(frame["type"], "message", "{frame}");
        assert_eq!(frame["data"], json!({"headline": "x"}));
        assert_eq!(frame["topic"], "news");
    }
    // One message for ann (two edges, one recipient), none for the others.
    let listed = eventually("ann's message of the broadcast", DEADLINE, || async {
        let (_, page) = api
            .call("GET", &format!("messages?globalMessageId={news_id}"), None)
            .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 1 && items[0]["status"] == "DELIVERED").then_some(items)
    })
    .await;
    assert_eq!(listed[0]["recipient"], "ann");
    assert_eq!(listed[0]["globalMessageId"], news_id.as_str());

    // Without a topic: everyone connected.
    let (status, all) = api
        .call("POST", "broadcasts", Some(json!({"message": "to all"})))
        .await;
    assert_eq!(status, 201, "{all}");
    let all_id = all["id"].as_str().unwrap().to_owned();
    for socket in [&mut ann0, &mut ann1, &mut ben, &mut cat] {
        let frame = socket.next_event(DEADLINE).await;
        assert_eq!(frame["data"], "to all", "{frame}");
    }
    eventually("a message per recipient reached", DEADLINE, || async {
        let (_, page) = api
            .call("GET", &format!("messages?globalMessageId={all_id}"), None)
            .await;
        let mut recipients: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["recipient"].as_str().unwrap().to_owned())
            .collect();
        recipients.sort();
        (recipients == ["ann", "ben", "cat"]).then_some(())
    })
    .await;
    // ben and cat never got the news broadcast.
    for socket in [&mut ben, &mut cat] {
        assert_eq!(socket.try_next_json(QUIET).await, None);
    }

    // Listing, newest first, with filters and paging; bad input names its field.
    let (_, page) = api.call("GET", "broadcasts?limit=1", None).await;
    assert_eq!(page["items"][0]["id"], all_id.as_str());
    let token = page["nextToken"].as_str().unwrap().to_owned();
    let (_, next) = api
        .call(
            "GET",
            &format!("broadcasts?limit=1&nextToken={token}"),
            None,
        )
        .await;
    assert_eq!(next["items"][0]["id"], news_id.as_str());
    let (_, by_topic) = api.call("GET", "broadcasts?topic=news", None).await;
    assert_eq!(by_topic["items"].as_array().unwrap().len(), 1);
    for (query, field) in [
        ("limit=0", "limit"),
        ("createdFrom=2023-13-45", "createdFrom"),
        ("expiresTo=yesterday", "expiresTo"),
        ("nextToken=forged", "nextToken"),
    ] {
        let (status, answer) = api.call("GET", &format!("broadcasts?{query}"), None).await;
        assert_eq!(status, 400, "{query} → {answer}");
        assert_eq!(answer["error"]["details"]["field"], field, "{query}");
    }
    for (body, field) in [
        (json!({}), "message"),
        (json!({"message": "x", "data": 1}), "data"),
        (
            json!({"message": "x", "expiresAt": "2020-01-01T00:00:00Z"}),
            "expiresAt",
        ),
        (json!({"message": "x", "topic": "t".repeat(300)}), "topic"),
        (json!({"template": "nope"}), "template"),
    ] {
        let (status, answer) = api.call("POST", "broadcasts", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["details"]["field"], field, "{body}");
    }
}
