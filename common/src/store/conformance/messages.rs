//! Conformance of `Messages`: inbox positions dense per recipient, bodies kept as given,
//! the lifecycle leaving `PENDING` once (racing writers included, never `DELIVERED` after
//! `CANCELLED` or past expiry), pending reads after a position, the expiry sweep, and
//! newest-first listing with filters whose cursor walk sees every item once while new
//! messages arrive.

use crate::ids::{AppId, UserId};
use crate::message::JsonText;
use crate::store::{
    AddressedMessage, ListCursor, MessageBody, MessageFilter, MessageStatus, Stores, Transition,
    Via,
};

fn message(app: &AppId, id: &str, recipient: &str, created_us: i64) -> AddressedMessage {
    AddressedMessage {
        id: id.into(),
        app: app.clone(),
        recipient: UserId::parse(recipient).unwrap(),
        foreign_id: None,
        body: MessageBody::Text(format!("text of {id}")),
        topic: None,
        status: MessageStatus::Pending,
        created_us,
        expires_us: None,
        delivered_us: None,
        delivered_via: None,
        cancelled_us: None,
        expired_us: None,
        global_message_id: None,
        bucket: None,
    }
}

fn done(t: Option<Transition>) -> AddressedMessage {
    match t {
        Some(Transition::Done(m)) => m,
        other => panic!("expected the transition to happen, got {other:?}"),
    }
}

fn refused(t: Option<Transition>) -> AddressedMessage {
    match t {
        Some(Transition::Refused(m)) => m,
        other => panic!("expected the transition to be refused, got {other:?}"),
    }
}

fn ids(items: &[AddressedMessage]) -> Vec<&str> {
    items.iter().map(|m| m.id.as_str()).collect()
}

/// Runs every check (on an empty store).
pub async fn run(s: &Stores) {
    let store = &s.messages;
    let app = AppId::parse("msg").unwrap();
    let other = AppId::parse("msg-other").unwrap();
    let u1 = UserId::parse("u1").unwrap();

    // Positions are dense per recipient; bodies and fields come back as given.
    let mut m1 = message(&app, "m1", "u1", 1_000);
    m1.foreign_id = Some("f-1".into());
    m1.topic = Some("news".into());
    m1.global_message_id = Some("g1".into());
    let mut m2 = message(&app, "m2", "u2", 1_001);
    m2.body = MessageBody::Data(JsonText::parse("{\"k\":  [1, 2]}").unwrap());
    let m3 = message(&app, "m3", "u1", 1_002);
    let positions = store
        .create_messages(&[m1.clone(), m2.clone(), m3.clone()])
        .await
        .unwrap();
    let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![1, 1, 2], "per recipient: u1 1, u2 1, u1 2");
    assert_eq!(
        positions[0].epoch, positions[2].epoch,
        "one inbox, one epoch"
    );
    assert_eq!(
        store.addressed_message(&app, "m1").await.unwrap(),
        Some(m1.clone())
    );
    assert_eq!(
        store.addressed_message(&app, "m2").await.unwrap(),
        Some(m2.clone()),
        "data kept verbatim"
    );
    assert_eq!(store.addressed_message(&other, "m1").await.unwrap(), None);
    assert_eq!(
        store
            .transition_message(&app, "nope", MessageStatus::Cancelled, 1)
            .await
            .unwrap(),
        None
    );

    // Pending after a position, oldest first.
    let pending = store
        .pending_messages(&app, &u1, 0, 10, 5_000)
        .await
        .unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|(o, m)| (*o, m.id.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "m1"), (2, "m3")]
    );
    let after = store
        .pending_messages(&app, &u1, 1, 10, 5_000)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);

    // DELIVERED once; nothing leaves DELIVERED.
    let delivered = done(
        store
            .transition_message(&app, "m1", MessageStatus::Delivered, 2_000)
            .await
            .unwrap(),
    );
    assert_eq!(delivered.status, MessageStatus::Delivered);
    assert_eq!(delivered.delivered_us, Some(2_000));
    assert_eq!(
        delivered.delivered_via,
        Some(Via::Websocket),
        "an acknowledgement"
    );
    for to in [
        MessageStatus::Delivered,
        MessageStatus::Cancelled,
        MessageStatus::Expired,
    ] {
        let kept = refused(
            store
                .transition_message(&app, "m1", to, 3_000)
                .await
                .unwrap(),
        );
        assert_eq!(kept.status, MessageStatus::Delivered);
        assert_eq!(kept.delivered_us, Some(2_000));
    }

    // CANCELLED is final: never delivered afterwards.
    let cancelled = done(
        store
            .transition_message(&app, "m3", MessageStatus::Cancelled, 2_500)
            .await
            .unwrap(),
    );
    assert_eq!(cancelled.cancelled_us, Some(2_500));
    let kept = refused(
        store
            .transition_message(&app, "m3", MessageStatus::Delivered, 2_600)
            .await
            .unwrap(),
    );
    assert_eq!(kept.status, MessageStatus::Cancelled);
    assert!(
        store
            .pending_messages(&app, &u1, 0, 10, 5_000)
            .await
            .unwrap()
            .is_empty()
    );

    // Past its expiry a message is not delivered; the sweep expires it, once.
    let mut m4 = message(&app, "m4", "u1", 1_003);
    m4.expires_us = Some(4_000);
    let mut m5 = message(&app, "m5", "u1", 1_004);
    m5.expires_us = Some(9_000);
    store.create_messages(&[m4, m5]).await.unwrap();
    let kept = refused(
        store
            .transition_message(&app, "m4", MessageStatus::Delivered, 4_000)
            .await
            .unwrap(),
    );
    assert_eq!(kept.status, MessageStatus::Pending, "due, not yet swept");
    let pending = store
        .pending_messages(&app, &u1, 0, 10, 4_000)
        .await
        .unwrap();
    assert_eq!(
        ids(&pending.into_iter().map(|(_, m)| m).collect::<Vec<_>>()),
        ["m5"]
    );
    let expired = store.expire_messages(4_000, 100).await.unwrap();
    assert_eq!(ids(&expired), ["m4"]);
    assert_eq!(expired[0].status, MessageStatus::Expired);
    assert_eq!(expired[0].expired_us, Some(4_000));
    assert!(store.expire_messages(4_500, 100).await.unwrap().is_empty());
    refused(
        store
            .transition_message(&app, "m4", MessageStatus::Cancelled, 4_600)
            .await
            .unwrap(),
    );

    // Two writers racing on one PENDING message: exactly one transition happens.
    store
        .create_messages(&[message(&app, "race", "u3", 1_005)])
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        store.transition_message(&app, "race", MessageStatus::Delivered, 6_000),
        store.transition_message(&app, "race", MessageStatus::Cancelled, 6_000),
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    let made = outcomes
        .iter()
        .filter(|t| matches!(t, Some(Transition::Done(_))))
        .count();
    assert_eq!(made, 1, "{outcomes:?}");

    // A batch delivery settles each message on its own.
    store
        .create_messages(&[
            message(&app, "b1", "u4", 1_010),
            message(&app, "b2", "u4", 1_011),
        ])
        .await
        .unwrap();
    done(
        store
            .transition_message(&app, "b2", MessageStatus::Cancelled, 6_500)
            .await
            .unwrap(),
    );
    let batch = store
        .deliver_messages(
            &app,
            &["b1".into(), "b2".into(), "nope".into()],
            Via::Webpush,
            7_000,
        )
        .await
        .unwrap();
    assert!(matches!(&batch[0], Some(Transition::Done(m))
        if m.delivered_us == Some(7_000) && m.delivered_via == Some(Via::Webpush)));
    // The channel is kept with the status, and a later delivery by the other one is refused.
    let again = store
        .deliver_messages(&app, &["b1".into()], Via::Websocket, 7_500)
        .await
        .unwrap();
    assert!(matches!(&again[0], Some(Transition::Refused(m))
        if m.delivered_via == Some(Via::Webpush) && m.delivered_us == Some(7_000)));
    let read = store.addressed_message(&app, "b1").await.unwrap().unwrap();
    assert_eq!(read.delivered_via, Some(Via::Webpush));
    assert!(
        matches!(&batch[1], Some(Transition::Refused(m)) if m.status == MessageStatus::Cancelled)
    );
    assert_eq!(batch[2], None);

    // Listing: newest first, filters combined, the app's own only.
    store
        .create_messages(&[message(&other, "x1", "u1", 1_006)])
        .await
        .unwrap();
    let all = store
        .list_messages(&app, &MessageFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(
        ids(&all),
        ["b2", "b1", "race", "m5", "m4", "m3", "m2", "m1"]
    );
    let listed = |f: MessageFilter| {
        let app = app.clone();
        async move {
            let items = store.list_messages(&app, &f, None, 100).await.unwrap();
            items.into_iter().map(|m| m.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(MessageFilter {
            recipient: Some(u1.clone()),
            ..MessageFilter::default()
        })
        .await,
        ["m5", "m4", "m3", "m1"]
    );
    assert_eq!(
        listed(MessageFilter {
            recipient: Some(u1.clone()),
            status: Some(MessageStatus::Pending),
            ..MessageFilter::default()
        })
        .await,
        ["m5"]
    );
    assert_eq!(
        listed(MessageFilter {
            topic: Some("news".into()),
            global_message_id: Some("g1".into()),
            ..MessageFilter::default()
        })
        .await,
        ["m1"]
    );
    assert_eq!(
        listed(MessageFilter {
            created: (Some(1_001), Some(1_003)),
            ..MessageFilter::default()
        })
        .await,
        ["m4", "m3", "m2"]
    );
    assert_eq!(
        listed(MessageFilter {
            expires: (Some(5_000), None),
            ..MessageFilter::default()
        })
        .await,
        ["m5"]
    );

    // A walk page by page sees every item exactly once while new messages arrive (they
    // are newer than the cursor).
    let mut seen = Vec::new();
    let mut cursor: Option<ListCursor> = None;
    for round in 0..10 {
        let page = store
            .list_messages(&app, &MessageFilter::default(), cursor.as_ref(), 2)
            .await
            .unwrap();
        store
            .create_messages(&[message(&app, &format!("new{round}"), "u9", 10_000 + round)])
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(ListCursor {
            created_us: last.created_us,
            id: last.id.clone(),
        });
        seen.extend(page.into_iter().map(|m| m.id));
    }
    assert_eq!(seen, ["b2", "b1", "race", "m5", "m4", "m3", "m2", "m1"]);
}
