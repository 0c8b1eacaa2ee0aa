//! The store conformance suite: the behaviour every `Store` backend must share, written
//! once against the trait and run by each backend's tests on a real instance.

use std::sync::Arc;

use super::{After, NodeHeartbeat, NodeStatus, QueueScope, Store};
use crate::message::{Delivery, Event, QueueBody, QueueMessage};
use crate::stream::StreamKey;

/// Runs every check against `store` (which must be empty).
pub async fn run_all(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    tokens_and_queues(&*store).await;
    read_timestamps_only_move_forward(&*store).await;
    messages_list_in_order_and_page(&*store).await;
    token_streams_number_messages_densely(&*store).await;
    replace_id_keeps_only_the_latest(&*store).await;
    every_field_and_read_marks_round_trip(&*store).await;
    deleting_a_queue_deletes_its_messages(&*store).await;
    concurrent_appends_get_unique_dense_offsets(store.clone()).await;
    edge_registry(&*store).await;
}

fn message(
    token: &str,
    queue: &str,
    key: &str,
    created_us: i64,
    replace: Option<&str>,
) -> QueueMessage {
    QueueMessage {
        key: key.into(),
        queue: queue.into(),
        token: token.into(),
        created_us,
        body: QueueBody {
            title: Some(format!("title {key}")),
            body: None,
            action_url: Some("http://example.com/a".into()),
            replace_id: replace.map(Into::into),
            ..QueueBody::default()
        },
    }
}

fn keys(messages: &[QueueMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.key.as_str()).collect()
}

/// (offset, message key) of each replayed delivery.
fn replayed(deliveries: &[Delivery]) -> Vec<(u64, &str)> {
    deliveries
        .iter()
        .map(|d| match &d.event {
            Event::QueueMessage { message } => (d.offset(), message.key.as_str()),
        })
        .collect()
}

async fn tokens_and_queues(store: &dyn Store) {
    assert!(!store.token_exists("t-a").await.unwrap());
    store.create_token("t-a", "own-a", 10).await.unwrap();
    assert!(store.token_exists("t-a").await.unwrap());
    assert!(
        store.create_token("t-a", "own-a2", 11).await.is_err(),
        "duplicate token"
    );

    let own = store
        .queue("own-a")
        .await
        .unwrap()
        .expect("own queue exists");
    assert_eq!((own.token.as_str(), own.domain.as_deref()), ("t-a", None));

    assert_eq!(
        store
            .create_queue("nobody", "x.com", "q-x", 1)
            .await
            .unwrap(),
        None
    );
    let q = store
        .create_queue("t-a", "x.com", "q-1", 12)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((q.id.as_str(), q.domain.as_deref()), ("q-1", Some("x.com")));
    let again = store
        .create_queue("t-a", "x.com", "q-2", 13)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.id, "q-1",
        "same token + domain returns the same queue"
    );
    store.create_queue("t-a", "a.org", "q-3", 14).await.unwrap();

    let listed = store.domain_queues("t-a").await.unwrap();
    let domains: Vec<_> = listed
        .iter()
        .map(|q| q.domain.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(domains, ["a.org", "x.com"], "own queue is not listed");

    store.create_token("t-b", "own-b", 10).await.unwrap();
    assert!(
        !store.delete_queue("t-b", "q-3").await.unwrap(),
        "not the owner"
    );
    assert!(
        !store.delete_queue("t-a", "own-a").await.unwrap(),
        "own queue stays"
    );
    assert!(store.delete_queue("t-a", "q-3").await.unwrap());
    assert!(store.queue("q-3").await.unwrap().is_none());
    assert!(
        !store.delete_queue("t-a", "q-3").await.unwrap(),
        "already gone"
    );
}

async fn read_timestamps_only_move_forward(store: &dyn Store) {
    assert_eq!(
        store.advance_read_timestamp("q-1", 500).await.unwrap(),
        Some(500)
    );
    assert_eq!(
        store.advance_read_timestamp("q-1", 300).await.unwrap(),
        Some(500)
    );
    assert_eq!(
        store.advance_read_timestamp("q-1", 900).await.unwrap(),
        Some(900)
    );
    assert_eq!(store.queue("q-1").await.unwrap().unwrap().read_us, 900);
    assert_eq!(
        store.advance_read_timestamp("missing", 1).await.unwrap(),
        None
    );
}

async fn messages_list_in_order_and_page(store: &dyn Store) {
    store.create_token("t-m", "own-m", 1).await.unwrap();
    store
        .create_queue("t-m", "one.com", "m-q1", 1)
        .await
        .unwrap();
    store
        .create_queue("t-m", "two.com", "m-q2", 1)
        .await
        .unwrap();
    // Creation times are made commit-ordered and unique: a message that asks for a time
    // not after the latest stored one gets one microsecond after it.
    for (offset, (m, assigned)) in [
        (message("t-m", "m-q2", "k1", 100, None), 100),
        (message("t-m", "m-q1", "k2a", 200, None), 200),
        (message("t-m", "m-q1", "k2b", 200, None), 201),
        (message("t-m", "m-q1", "k3", 300, None), 300),
        (message("t-m", "m-q1", "k4", 150, None), 301),
    ]
    .into_iter()
    .enumerate()
    {
        let appended = store.add_queue_message(&m).await.unwrap().unwrap();
        assert_eq!(appended.created_us, assigned);
        assert_eq!(appended.position.offset, offset as u64 + 1, "dense offsets");
    }
    let gone = message("t-m", "no-such-queue", "k9", 1, None);
    assert_eq!(
        store.add_queue_message(&gone).await.unwrap(),
        None,
        "queue must exist"
    );

    let q1 = QueueScope::Queue("m-q1");
    let all = store
        .list_queue_messages(q1, &After::Start, 10)
        .await
        .unwrap();
    assert_eq!(keys(&all), ["k2a", "k2b", "k3", "k4"]);
    assert_eq!(
        all[0],
        message("t-m", "m-q1", "k2a", 200, None),
        "fields round-trip"
    );

    let token = QueueScope::Token("t-m");
    let all = store
        .list_queue_messages(token, &After::Start, 10)
        .await
        .unwrap();
    assert_eq!(
        keys(&all),
        ["k1", "k2a", "k2b", "k3", "k4"],
        "own scope spans queues"
    );
    let page = store
        .list_queue_messages(token, &After::Start, 2)
        .await
        .unwrap();
    assert_eq!(keys(&page), ["k1", "k2a"]);
    let after = After::Message {
        created_us: 200,
        key: "k2a".into(),
    };
    let next = store.list_queue_messages(token, &after, 2).await.unwrap();
    assert_eq!(
        keys(&next),
        ["k2b", "k3"],
        "paging by key continues strictly after"
    );
    let later = store
        .list_queue_messages(token, &After::Time(300), 10)
        .await
        .unwrap();
    assert_eq!(keys(&later), ["k4"], "since a time is strictly later");

    let found = store.queue_message(token, "k3").await.unwrap().unwrap();
    assert_eq!(found.created_us, 300);
    let elsewhere = store
        .queue_message(QueueScope::Queue("m-q2"), "k3")
        .await
        .unwrap();
    assert!(elsewhere.is_none());
}

async fn token_streams_number_messages_densely(store: &dyn Store) {
    let stream = StreamKey::mozilla_token("t-m");
    let nobody = StreamKey::mozilla_token("t-nobody");
    let heads = store
        .stream_heads(&[stream.clone(), nobody.clone()])
        .await
        .unwrap();
    assert_eq!(heads.len(), 1, "unknown streams are left out: {heads:?}");
    let (key, head) = &heads[0];
    assert_eq!((key, head.offset), (&stream, 5));
    assert!(!head.epoch.is_empty());

    let all = store.read_stream(&stream, 0, 10).await.unwrap();
    assert_eq!(
        replayed(&all),
        [(1, "k1"), (2, "k2a"), (3, "k2b"), (4, "k3"), (5, "k4")]
    );
    assert!(
        all.iter()
            .all(|d| d.stream == stream
                && d.position.as_ref().is_some_and(|p| p.epoch == head.epoch))
    );
    let page = store.read_stream(&stream, 2, 2).await.unwrap();
    assert_eq!(
        replayed(&page),
        [(3, "k2b"), (4, "k3")],
        "strictly after, limited"
    );
    assert!(store.read_stream(&stream, 5, 10).await.unwrap().is_empty());
    assert!(store.read_stream(&nobody, 0, 10).await.unwrap().is_empty());
    let foreign = StreamKey::from("zz/unknown-kind".to_owned());
    assert!(store.read_stream(&foreign, 0, 10).await.unwrap().is_empty());
    assert!(store.stream_heads(&[]).await.unwrap().is_empty());
}

async fn replace_id_keeps_only_the_latest(store: &dyn Store) {
    store.create_token("t-r", "own-r", 1).await.unwrap();
    store.create_queue("t-r", "r.com", "r-q1", 1).await.unwrap();
    store.create_queue("t-r", "s.com", "r-q2", 1).await.unwrap();
    for (offset, m) in [
        message("t-r", "r-q1", "r1", 10, Some("score")),
        message("t-r", "r-q1", "r2", 20, None),
        message("t-r", "r-q1", "r3", 30, Some("score")),
        message("t-r", "r-q2", "r4", 40, Some("score")),
        message("t-r", "r-q1", "r5", 50, Some("other")),
    ]
    .into_iter()
    .enumerate()
    {
        let appended = store.add_queue_message(&m).await.unwrap().unwrap();
        assert_eq!(
            appended.position.offset,
            offset as u64 + 1,
            "each token's stream counts from 1"
        );
    }
    let listed = store
        .list_queue_messages(QueueScope::Token("t-r"), &After::Start, 10)
        .await
        .unwrap();
    // r1 is replaced by r3 in the same queue; r4 shares the id in another queue only.
    assert_eq!(keys(&listed), ["r2", "r3", "r4", "r5"]);
    let limited = store
        .list_queue_messages(QueueScope::Queue("r-q1"), &After::Start, 1)
        .await
        .unwrap();
    assert_eq!(
        keys(&limited),
        ["r2"],
        "a replaced message never fills the page"
    );
}

async fn every_field_and_read_marks_round_trip(store: &dyn Store) {
    store.create_token("t-f", "own-f", 1).await.unwrap();
    let full = QueueMessage {
        key: "f1".into(),
        queue: "own-f".into(),
        token: "t-f".into(),
        created_us: 10,
        body: QueueBody {
            title: Some("t".into()),
            body: Some("b".into()),
            action_url: Some("https://a.example/".into()),
            icon_url: Some("https://a.example/i.png".into()),
            replace_id: Some("r".into()),
            read: None,
        },
    };
    let mark = QueueMessage {
        key: "f2".into(),
        created_us: 20,
        body: QueueBody::read_mark("f1"),
        ..full.clone()
    };
    for m in [&full, &mark] {
        store.add_queue_message(m).await.unwrap().unwrap();
    }
    let scope = QueueScope::Token("t-f");
    let listed = store
        .list_queue_messages(scope, &After::Start, 10)
        .await
        .unwrap();
    assert_eq!(listed, [full, mark.clone()]);
    let replay = store
        .read_stream(&StreamKey::mozilla_token("t-f"), 1, 10)
        .await
        .unwrap();
    assert_eq!(
        replay.into_iter().map(|d| d.event).collect::<Vec<_>>(),
        [Event::QueueMessage { message: mark }]
    );
}

async fn deleting_a_queue_deletes_its_messages(store: &dyn Store) {
    assert!(store.delete_queue("t-m", "m-q1").await.unwrap());
    let left = store
        .list_queue_messages(QueueScope::Token("t-m"), &After::Start, 10)
        .await
        .unwrap();
    assert_eq!(keys(&left), ["k1"]);
    let stream = StreamKey::mozilla_token("t-m");
    let replay = store.read_stream(&stream, 0, 10).await.unwrap();
    assert_eq!(
        replayed(&replay),
        [(1, "k1")],
        "deleted entries leave holes"
    );
    let heads = store.stream_heads(std::slice::from_ref(&stream)).await;
    assert_eq!(heads.unwrap()[0].1.offset, 5, "the head does not move back");
    let next = message("t-m", "m-q2", "k5", 1, None);
    let appended = store.add_queue_message(&next).await.unwrap().unwrap();
    assert_eq!(appended.position.offset, 6, "offsets are never reused");
    assert!(appended.created_us > 301, "nor are creation times");

    store.delete_token("t-m").await.unwrap();
    assert!(!store.token_exists("t-m").await.unwrap());
    assert!(store.queue("own-m").await.unwrap().is_none());
    assert!(store.read_stream(&stream, 0, 10).await.unwrap().is_empty());
    assert!(store.stream_heads(&[stream]).await.unwrap().is_empty());
}

/// Many writers appending to one stream at once (as several API processes do) get every
/// offset exactly once, with no gap.
async fn concurrent_appends_get_unique_dense_offsets(store: Arc<dyn Store>) {
    store.create_token("t-c", "own-c", 1).await.unwrap();
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let m = message("t-c", "own-c", &format!("c{i}"), 5, None);
                store.add_queue_message(&m).await.unwrap().unwrap()
            })
        })
        .collect();
    let mut appended = Vec::new();
    for writer in writers {
        appended.push(writer.await.unwrap());
    }
    let mut offsets: Vec<u64> = appended.iter().map(|a| a.position.offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=40).collect::<Vec<u64>>());
    let mut by_offset = appended.clone();
    by_offset.sort_by_key(|a| a.position.offset);
    assert!(
        by_offset
            .windows(2)
            .all(|w| w[0].created_us < w[1].created_us),
        "creation times follow offsets"
    );
}

async fn edge_registry(store: &dyn Store) {
    let beat = |id: &str, url: &str, connections, now_us| NodeHeartbeat {
        id: id.into(),
        url: url.into(),
        connections,
        status: NodeStatus::Up,
        started_us: 1,
        now_us,
    };
    store
        .upsert_node(&beat("n1", "ws://a:1", 5, 100))
        .await
        .unwrap();
    store
        .upsert_node(&beat("n2", "ws://b:1", 1, 100))
        .await
        .unwrap();
    store
        .upsert_node(&beat("n1", "ws://a:1", 7, 200))
        .await
        .unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!((nodes[0].connections, nodes[0].heartbeat_us), (7, 200));
    assert!(nodes[0].is_healthy(250, 100));
    assert!(!nodes[0].is_healthy(400, 100), "stale heartbeat");

    store
        .record_node_check("ws://a:1", false, 300, 2)
        .await
        .unwrap();
    assert!(
        !store.nodes().await.unwrap()[0].monitor_down,
        "one failure is not enough"
    );
    store
        .record_node_check("ws://a:1", false, 310, 2)
        .await
        .unwrap();
    let n1 = store.nodes().await.unwrap().remove(0);
    assert!(n1.monitor_down && n1.check_failures == 2 && n1.checked_us == Some(310));
    store
        .upsert_node(&beat("n1", "ws://a:1", 7, 320))
        .await
        .unwrap();
    assert!(
        store.nodes().await.unwrap()[0].monitor_down,
        "a heartbeat does not clear it"
    );
    store
        .record_node_check("ws://a:1", true, 330, 2)
        .await
        .unwrap();
    let n1 = store.nodes().await.unwrap().remove(0);
    assert!(!n1.monitor_down && n1.check_failures == 0);

    let mut draining = beat("n2", "ws://b:1", 1, 400);
    draining.status = NodeStatus::Draining;
    store.upsert_node(&draining).await.unwrap();
    assert!(!store.nodes().await.unwrap()[1].is_healthy(400, 100));

    assert_eq!(
        store.prune_nodes(350).await.unwrap(),
        1,
        "n1 last beat at 320"
    );
    store.remove_node("n2").await.unwrap();
    assert!(store.nodes().await.unwrap().is_empty());
}
