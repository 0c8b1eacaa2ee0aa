//! Conformance of `Queues` and of `Streams` over Mozilla token streams: tokens and queues,
//! listing and paging, replaceId collapse, read marks, dense per-token offsets, replay
//! after a position, deletion leaving holes, and concurrent appends.

use crate::message::{Delivery, Event, QueueBody, QueueMessage};
use crate::store::{After, QueueScope, Stores};
use crate::stream::StreamKey;

/// Runs every check (on an empty store).
pub async fn run(s: &Stores) {
    tokens_and_queues(s).await;
    read_timestamps_only_move_forward(s).await;
    messages_list_in_order_and_page(s).await;
    token_streams_number_messages_densely(s).await;
    replace_id_keeps_only_the_latest(s).await;
    every_field_and_read_marks_round_trip(s).await;
    deleting_a_queue_deletes_its_messages(s).await;
    concurrent_appends_get_unique_dense_offsets(s).await;
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
            other => panic!("not a queue message: {other:?}"),
        })
        .collect()
}

async fn tokens_and_queues(s: &Stores) {
    assert!(!s.queues.token_exists("t-a").await.unwrap());
    s.queues.create_token("t-a", "own-a", 10).await.unwrap();
    assert!(s.queues.token_exists("t-a").await.unwrap());
    assert!(
        s.queues.create_token("t-a", "own-a2", 11).await.is_err(),
        "duplicate token"
    );

    let own = s
        .queues
        .queue("own-a")
        .await
        .unwrap()
        .expect("own queue exists");
    assert_eq!((own.token.as_str(), own.domain.as_deref()), ("t-a", None));

    assert_eq!(
        s.queues
            .create_queue("nobody", "x.com", "q-x", 1)
            .await
            .unwrap(),
        None
    );
    let q = s
        .queues
        .create_queue("t-a", "x.com", "q-1", 12)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((q.id.as_str(), q.domain.as_deref()), ("q-1", Some("x.com")));
    let again = s
        .queues
        .create_queue("t-a", "x.com", "q-2", 13)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.id, "q-1",
        "same token + domain returns the same queue"
    );
    s.queues
        .create_queue("t-a", "a.org", "q-3", 14)
        .await
        .unwrap();

    let listed = s.queues.domain_queues("t-a").await.unwrap();
    let domains: Vec<_> = listed
        .iter()
        .map(|q| q.domain.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(domains, ["a.org", "x.com"], "own queue is not listed");

    s.queues.create_token("t-b", "own-b", 10).await.unwrap();
    assert!(
        !s.queues.delete_queue("t-b", "q-3").await.unwrap(),
        "not the owner"
    );
    assert!(
        !s.queues.delete_queue("t-a", "own-a").await.unwrap(),
        "own queue stays"
    );
    assert!(s.queues.delete_queue("t-a", "q-3").await.unwrap());
    assert!(s.queues.queue("q-3").await.unwrap().is_none());
    assert!(
        !s.queues.delete_queue("t-a", "q-3").await.unwrap(),
        "already gone"
    );
}

async fn read_timestamps_only_move_forward(s: &Stores) {
    assert_eq!(
        s.queues.advance_read_timestamp("q-1", 500).await.unwrap(),
        Some(500)
    );
    assert_eq!(
        s.queues.advance_read_timestamp("q-1", 300).await.unwrap(),
        Some(500)
    );
    assert_eq!(
        s.queues.advance_read_timestamp("q-1", 900).await.unwrap(),
        Some(900)
    );
    assert_eq!(s.queues.queue("q-1").await.unwrap().unwrap().read_us, 900);
    assert_eq!(
        s.queues.advance_read_timestamp("missing", 1).await.unwrap(),
        None
    );
}

async fn messages_list_in_order_and_page(s: &Stores) {
    s.queues.create_token("t-m", "own-m", 1).await.unwrap();
    s.queues
        .create_queue("t-m", "one.com", "m-q1", 1)
        .await
        .unwrap();
    s.queues
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
        let appended = s.queues.add_queue_message(&m).await.unwrap().unwrap();
        assert_eq!(appended.created_us, assigned);
        assert_eq!(appended.position.offset, offset as u64 + 1, "dense offsets");
    }
    let gone = message("t-m", "no-such-queue", "k9", 1, None);
    assert_eq!(
        s.queues.add_queue_message(&gone).await.unwrap(),
        None,
        "queue must exist"
    );

    let q1 = QueueScope::Queue("m-q1");
    let all = s
        .queues
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
    let all = s
        .queues
        .list_queue_messages(token, &After::Start, 10)
        .await
        .unwrap();
    assert_eq!(
        keys(&all),
        ["k1", "k2a", "k2b", "k3", "k4"],
        "own scope spans queues"
    );
    let page = s
        .queues
        .list_queue_messages(token, &After::Start, 2)
        .await
        .unwrap();
    assert_eq!(keys(&page), ["k1", "k2a"]);
    let after = After::Message {
        created_us: 200,
        key: "k2a".into(),
    };
    let next = s
        .queues
        .list_queue_messages(token, &after, 2)
        .await
        .unwrap();
    assert_eq!(
        keys(&next),
        ["k2b", "k3"],
        "paging by key continues strictly after"
    );
    let later = s
        .queues
        .list_queue_messages(token, &After::Time(300), 10)
        .await
        .unwrap();
    assert_eq!(keys(&later), ["k4"], "since a time is strictly later");

    let found = s.queues.queue_message(token, "k3").await.unwrap().unwrap();
    assert_eq!(found.created_us, 300);
    let elsewhere = s
        .queues
        .queue_message(QueueScope::Queue("m-q2"), "k3")
        .await
        .unwrap();
    assert!(elsewhere.is_none());
}

async fn token_streams_number_messages_densely(s: &Stores) {
    let stream = StreamKey::mozilla_token("t-m");
    let nobody = StreamKey::mozilla_token("t-nobody");
    let heads = s
        .streams
        .stream_heads(&[stream.clone(), nobody.clone()])
        .await
        .unwrap();
    assert_eq!(heads.len(), 1, "unknown streams are left out: {heads:?}");
    let (key, head) = &heads[0];
    assert_eq!((key, head.offset), (&stream, 5));
    assert!(!head.epoch.is_empty());

    let all = s.streams.read_stream(&stream, 0, 10, 0).await.unwrap();
    assert_eq!(
        replayed(&all),
        [(1, "k1"), (2, "k2a"), (3, "k2b"), (4, "k3"), (5, "k4")]
    );
    assert!(
        all.iter()
            .all(|d| d.stream == stream
                && d.position.as_ref().is_some_and(|p| p.epoch == head.epoch))
    );
    let page = s.streams.read_stream(&stream, 2, 2, 0).await.unwrap();
    assert_eq!(
        replayed(&page),
        [(3, "k2b"), (4, "k3")],
        "strictly after, limited"
    );
    assert!(
        s.streams
            .read_stream(&stream, 5, 10, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.streams
            .read_stream(&nobody, 0, 10, 0)
            .await
            .unwrap()
            .is_empty()
    );
    let foreign = StreamKey::from("zz/unknown-kind".to_owned());
    assert!(
        s.streams
            .read_stream(&foreign, 0, 10, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.streams.stream_heads(&[]).await.unwrap().is_empty());
}

async fn replace_id_keeps_only_the_latest(s: &Stores) {
    s.queues.create_token("t-r", "own-r", 1).await.unwrap();
    s.queues
        .create_queue("t-r", "r.com", "r-q1", 1)
        .await
        .unwrap();
    s.queues
        .create_queue("t-r", "s.com", "r-q2", 1)
        .await
        .unwrap();
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
        let appended = s.queues.add_queue_message(&m).await.unwrap().unwrap();
        assert_eq!(
            appended.position.offset,
            offset as u64 + 1,
            "each token's stream counts from 1"
        );
    }
    let listed = s
        .queues
        .list_queue_messages(QueueScope::Token("t-r"), &After::Start, 10)
        .await
        .unwrap();
    // r1 is replaced by r3 in the same queue; r4 shares the id in another queue only.
    assert_eq!(keys(&listed), ["r2", "r3", "r4", "r5"]);
    let limited = s
        .queues
        .list_queue_messages(QueueScope::Queue("r-q1"), &After::Start, 1)
        .await
        .unwrap();
    assert_eq!(
        keys(&limited),
        ["r2"],
        "a replaced message never fills the page"
    );
}

async fn every_field_and_read_marks_round_trip(s: &Stores) {
    s.queues.create_token("t-f", "own-f", 1).await.unwrap();
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
        s.queues.add_queue_message(m).await.unwrap().unwrap();
    }
    let scope = QueueScope::Token("t-f");
    let listed = s
        .queues
        .list_queue_messages(scope, &After::Start, 10)
        .await
        .unwrap();
    assert_eq!(listed, [full, mark.clone()]);
    let replay = s
        .streams
        .read_stream(&StreamKey::mozilla_token("t-f"), 1, 10, 0)
        .await
        .unwrap();
    assert_eq!(
        replay.into_iter().map(|d| d.event).collect::<Vec<_>>(),
        [Event::QueueMessage { message: mark }]
    );
}

async fn deleting_a_queue_deletes_its_messages(s: &Stores) {
    assert!(s.queues.delete_queue("t-m", "m-q1").await.unwrap());
    let left = s
        .queues
        .list_queue_messages(QueueScope::Token("t-m"), &After::Start, 10)
        .await
        .unwrap();
    assert_eq!(keys(&left), ["k1"]);
    let stream = StreamKey::mozilla_token("t-m");
    let replay = s.streams.read_stream(&stream, 0, 10, 0).await.unwrap();
    assert_eq!(
        replayed(&replay),
        [(1, "k1")],
        "deleted entries leave holes"
    );
    let heads = s.streams.stream_heads(std::slice::from_ref(&stream)).await;
    assert_eq!(heads.unwrap()[0].1.offset, 5, "the head does not move back");
    let next = message("t-m", "m-q2", "k5", 1, None);
    let appended = s.queues.add_queue_message(&next).await.unwrap().unwrap();
    assert_eq!(appended.position.offset, 6, "offsets are never reused");
    assert!(appended.created_us > 301, "nor are creation times");

    s.queues.delete_token("t-m").await.unwrap();
    assert!(!s.queues.token_exists("t-m").await.unwrap());
    assert!(s.queues.queue("own-m").await.unwrap().is_none());
    assert!(
        s.streams
            .read_stream(&stream, 0, 10, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.streams.stream_heads(&[stream]).await.unwrap().is_empty());
}

/// Many writers appending to one stream at once (as several API processes do) get every
/// offset exactly once, with no gap.
async fn concurrent_appends_get_unique_dense_offsets(s: &Stores) {
    s.queues.create_token("t-c", "own-c", 1).await.unwrap();
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let queues = s.queues.clone();
            tokio::spawn(async move {
                let m = message("t-c", "own-c", &format!("c{i}"), 5, None);
                queues.add_queue_message(&m).await.unwrap().unwrap()
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
