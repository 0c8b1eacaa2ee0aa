//! Conformance of `Channels` and of `Streams` over channel streams: configuration,
//! positions, trimming to the history size, expiry, replaceId, idempotency keys, history
//! turned off and on again, and concurrent publishers.

use std::sync::Arc;

use crate::ids::{AppId, ChannelName};
use crate::message::{ChannelMessage, Event};
use crate::store::{Channels, History, Idempotency, Publication, Stores};
use crate::stream::StreamKey;

fn message(app: &AppId, channel: &ChannelName, id: &str, created_us: i64) -> ChannelMessage {
    ChannelMessage {
        id: id.into(),
        app: app.clone(),
        channel: channel.clone(),
        data: serde_json::json!({"id": id}).into(),
        created_us,
        expires_us: None,
        replace_id: None,
    }
}

fn fresh_offset(p: &Publication) -> Option<u64> {
    match p {
        Publication::Fresh { position, .. } => position.as_ref().map(|p| p.offset),
        Publication::Repeat { .. } => panic!("not a repeat: {p:?}"),
    }
}

fn ids(history: &[(u64, ChannelMessage)]) -> Vec<(u64, &str)> {
    history.iter().map(|(o, m)| (*o, m.id.as_str())).collect()
}

/// Runs every check (on an empty store).
pub async fn run(s: &Stores) {
    history_keeps_the_last_messages_at_their_positions(s).await;
    expiry_and_replace_id(s).await;
    idempotency_keys_give_the_first_result(s).await;
    history_off_and_on_keeps_the_stream(s).await;
    concurrent_publishers_get_unique_dense_offsets(s.channels.clone()).await;
}

async fn history_keeps_the_last_messages_at_their_positions(s: &Stores) {
    let app = AppId::parse("chan").unwrap();
    let ch = ChannelName::parse("news").unwrap();
    let c = &s.channels;
    assert_eq!(
        c.channel(&app, &ch).await.unwrap(),
        None,
        "never configured"
    );
    let info = c
        .configure_channel(
            &app,
            &ch,
            History {
                size: Some(3),
                ttl: None,
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(info.history.size, Some(3));
    let epoch = info.head.clone().expect("history on: a head").epoch;
    assert_eq!(info.head.unwrap().offset, 0);
    let mut created = Vec::new();
    for i in 1..=5 {
        let published = c
            .publish_channel_message(&message(&app, &ch, &format!("n{i}"), 10), None)
            .await
            .unwrap();
        assert_eq!(fresh_offset(&published), Some(i));
        let Publication::Fresh { created_us, .. } = published else {
            unreachable!()
        };
        created.push(created_us);
    }
    assert!(
        created.windows(2).all(|w| w[0] < w[1]),
        "creation times follow offsets"
    );
    let history = c.channel_history(&app, &ch, 0, 10, 100).await.unwrap();
    assert_eq!(
        ids(&history),
        [(3, "n3"), (4, "n4"), (5, "n5")],
        "the last 3"
    );
    assert_eq!(
        ids(&c.channel_history(&app, &ch, 4, 10, 100).await.unwrap()),
        [(5, "n5")]
    );
    assert_eq!(
        ids(&c.channel_history(&app, &ch, 0, 1, 100).await.unwrap()),
        [(3, "n3")]
    );
    let stream = StreamKey::channel(&app, &ch);
    let heads = s
        .streams
        .stream_heads(std::slice::from_ref(&stream))
        .await
        .unwrap();
    assert_eq!(heads[0].1.offset, 5);
    assert_eq!(heads[0].1.epoch, epoch);
    let replay = s.streams.read_stream(&stream, 3, 10, 100).await.unwrap();
    let replayed: Vec<_> = replay
        .iter()
        .map(|d| match &d.event {
            Event::ChannelMessage { message } => (d.offset(), message.id.as_str()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(replayed, [(4, "n4"), (5, "n5")]);
    assert_eq!(replay[0].stream, stream);

    let elsewhere = AppId::parse("chan-other").unwrap();
    assert_eq!(c.channel(&elsewhere, &ch).await.unwrap(), None, "per app");
    let ephemeral = c
        .publish_channel_message(&message(&elsewhere, &ch, "e1", 10), None)
        .await
        .unwrap();
    assert_eq!(fresh_offset(&ephemeral), None, "no history: no position");
    assert!(
        c.channel_history(&elsewhere, &ch, 0, 10, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn expiry_and_replace_id(s: &Stores) {
    let app = AppId::parse("chan").unwrap();
    let ch = ChannelName::parse("scores").unwrap();
    let c = &s.channels;
    c.configure_channel(
        &app,
        &ch,
        History {
            size: Some(100),
            ttl: Some(60),
        },
        1,
    )
    .await
    .unwrap();
    let mut short = message(&app, &ch, "short", 1_000_000);
    short.expires_us = Some(2_000_000);
    let mut first = message(&app, &ch, "first", 1_000_000);
    first.replace_id = Some("match-1".into());
    let mut second = message(&app, &ch, "second", 1_000_000);
    second.replace_id = Some("match-1".into());
    let plain = message(&app, &ch, "plain", 1_000_000);
    for m in [&short, &first, &second, &plain] {
        c.publish_channel_message(m, None).await.unwrap();
    }
    let at = |now| c.channel_history(&app, &ch, 0, 10, now);
    let early = at(1_500_000).await.unwrap();
    assert_eq!(
        early.iter().map(|(_, m)| m.id.as_str()).collect::<Vec<_>>(),
        ["short", "second", "plain"],
        "the latest of a replaceId"
    );
    assert_eq!(
        early[1].1,
        {
            let mut m = second.clone();
            m.created_us = early[1].1.created_us;
            m
        },
        "fields round-trip"
    );
    let later = at(3_000_000).await.unwrap();
    assert_eq!(
        later.iter().map(|(_, m)| m.id.as_str()).collect::<Vec<_>>(),
        ["second", "plain"],
        "expired"
    );
    let stream = StreamKey::channel(&app, &ch);
    let replay = s
        .streams
        .read_stream(&stream, 0, 10, 3_000_000)
        .await
        .unwrap();
    assert_eq!(
        replay.len(),
        3,
        "replay skips expired entries, not replaced ones"
    );
    assert!(
        at(62_000_000).await.unwrap().is_empty(),
        "past the history ttl"
    );
    assert!(c.prune_channels(62_000_000).await.unwrap() >= 4);
    assert!(
        s.streams
            .read_stream(&stream, 0, 10, 0)
            .await
            .unwrap()
            .is_empty(),
        "pruned"
    );
}

async fn idempotency_keys_give_the_first_result(s: &Stores) {
    let app = AppId::parse("chan").unwrap();
    let ch = ChannelName::parse("orders").unwrap();
    let c = &s.channels;
    c.configure_channel(
        &app,
        &ch,
        History {
            size: Some(10),
            ttl: None,
        },
        1,
    )
    .await
    .unwrap();
    let key = Idempotency {
        key: "k1".into(),
        expires_us: 5_000,
    };
    let mut first = message(&app, &ch, "o1", 1_000);
    first.expires_us = Some(90_000);
    let first = c.publish_channel_message(&first, Some(&key)).await.unwrap();
    let Publication::Fresh {
        created_us,
        position,
    } = first
    else {
        panic!("{first:?}")
    };
    let again = c
        .publish_channel_message(&message(&app, &ch, "o2", 2_000), Some(&key))
        .await
        .unwrap();
    assert_eq!(
        again,
        Publication::Repeat {
            id: "o1".into(),
            created_us,
            expires_us: Some(90_000),
            position: position.clone()
        }
    );
    assert_eq!(
        c.channel_history(&app, &ch, 0, 10, 0).await.unwrap().len(),
        1,
        "stored once"
    );
    let other = ChannelName::parse("idem-other").unwrap();
    let elsewhere = c
        .publish_channel_message(&message(&app, &other, "o4", 2_500), Some(&key))
        .await
        .unwrap();
    assert!(
        matches!(elsewhere, Publication::Fresh { .. }),
        "keys are scoped to the channel: {elsewhere:?}"
    );
    let after_expiry = c
        .publish_channel_message(&message(&app, &ch, "o3", 6_000), Some(&key))
        .await
        .unwrap();
    assert_eq!(
        fresh_offset(&after_expiry),
        Some(2),
        "the key expired: a new publish"
    );

    let ephemeral = ChannelName::parse("no-history").unwrap();
    let key = Idempotency {
        key: "k2".into(),
        expires_us: 5_000,
    };
    let first = c
        .publish_channel_message(&message(&app, &ephemeral, "x1", 1_000), Some(&key))
        .await
        .unwrap();
    assert_eq!(fresh_offset(&first), None);
    let again = c
        .publish_channel_message(&message(&app, &ephemeral, "x2", 1_001), Some(&key))
        .await
        .unwrap();
    assert!(matches!(again, Publication::Repeat { ref id, position: None, .. } if id == "x1"));
    // Expired keys go (SQLite deletes them here, Redis expires them itself); either way
    // the key gives a fresh publish again, as checked above.
    c.prune_channels(10_000).await.unwrap();
}

async fn history_off_and_on_keeps_the_stream(s: &Stores) {
    let app = AppId::parse("chan").unwrap();
    let ch = ChannelName::parse("toggle").unwrap();
    let c = &s.channels;
    let on = History {
        size: Some(10),
        ttl: None,
    };
    let epoch = c
        .configure_channel(&app, &ch, on, 1)
        .await
        .unwrap()
        .head
        .unwrap()
        .epoch;
    c.publish_channel_message(&message(&app, &ch, "t1", 1), None)
        .await
        .unwrap();
    let off = c
        .configure_channel(&app, &ch, History::default(), 2)
        .await
        .unwrap();
    assert_eq!(off.head, None);
    let stream = StreamKey::channel(&app, &ch);
    assert!(
        s.streams
            .stream_heads(std::slice::from_ref(&stream))
            .await
            .unwrap()
            .is_empty()
    );
    let published = c
        .publish_channel_message(&message(&app, &ch, "t2", 3), None)
        .await
        .unwrap();
    assert_eq!(fresh_offset(&published), None, "ephemeral while off");
    assert!(
        c.channel_history(&app, &ch, 0, 10, 0)
            .await
            .unwrap()
            .is_empty()
    );
    let again = c
        .configure_channel(&app, &ch, on, 4)
        .await
        .unwrap()
        .head
        .unwrap();
    assert_eq!(
        (again.epoch, again.offset),
        (epoch, 1),
        "same epoch, offsets go on"
    );
    let published = c
        .publish_channel_message(&message(&app, &ch, "t3", 5), None)
        .await
        .unwrap();
    assert_eq!(fresh_offset(&published), Some(2));
}

/// Two publishers (as two API processes) on one channel: every offset once, no gap; and
/// racing repeats of one idempotency key: exactly one fresh publish.
async fn concurrent_publishers_get_unique_dense_offsets(c: Arc<dyn Channels>) {
    let app = AppId::parse("chan").unwrap();
    let ch = ChannelName::parse("race").unwrap();
    c.configure_channel(
        &app,
        &ch,
        History {
            size: Some(1_000),
            ttl: None,
        },
        1,
    )
    .await
    .unwrap();
    let publishers: Vec<_> = (0..40)
        .map(|i| {
            let (c, app, ch) = (c.clone(), app.clone(), ch.clone());
            let key = (i % 2 == 0).then(|| Idempotency {
                key: "same".into(),
                expires_us: i64::MAX,
            });
            tokio::spawn(async move {
                let m = message(&app, &ch, &format!("r{i}"), 5);
                c.publish_channel_message(&m, key.as_ref()).await.unwrap()
            })
        })
        .collect();
    let mut offsets = Vec::new();
    let mut fresh_keyed = 0;
    for (i, publisher) in publishers.into_iter().enumerate() {
        match publisher.await.unwrap() {
            Publication::Fresh { position, .. } => {
                offsets.push(position.unwrap().offset);
                fresh_keyed += usize::from(i % 2 == 0);
            }
            Publication::Repeat { .. } => assert_eq!(i % 2, 0, "only keyed ones repeat"),
        }
    }
    assert_eq!(fresh_keyed, 1, "one idempotency key, one fresh publish");
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=21).collect::<Vec<u64>>());
}
