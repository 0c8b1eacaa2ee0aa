//! Conformance of `Broadcasts`, and of `Messages::create_missing_messages` that reaches
//! their recipients: bodies kept as given, filters, a newest-first cursor walk, and a
//! recipient's message created once however many edges create it.

use crate::ids::{AppId, UserId};
use crate::message::JsonText;
use crate::store::{
    AddressedMessage, BroadcastFilter, GlobalMessage, ListCursor, MessageBody, MessageStatus,
    Stores,
};

fn global(app: &AppId, id: &str, created_us: i64, topic: Option<&str>) -> GlobalMessage {
    GlobalMessage {
        id: id.into(),
        app: app.clone(),
        body: MessageBody::Text(format!("text of {id}")),
        topic: topic.map(str::to_owned),
        created_us,
        expires_us: None,
    }
}

/// Runs every check (on an empty store).
pub async fn run(s: &Stores) {
    let store = &s.broadcasts;
    let app = AppId::parse("bc").unwrap();
    let other = AppId::parse("bc-other").unwrap();
    let mut g1 = global(&app, "g1", 1_000, Some("news"));
    g1.body = MessageBody::Data(JsonText::parse("{\"a\":  1}").unwrap());
    g1.expires_us = Some(9_000);
    let g2 = global(&app, "g2", 2_000, None);
    let g3 = global(&app, "g3", 2_000, Some("news"));
    for g in [&g1, &g2, &g3, &global(&other, "g9", 1_500, None)] {
        store.create_broadcast(g).await.unwrap();
    }
    let all = store
        .list_broadcasts(&app, &BroadcastFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        all,
        vec![g3.clone(), g2.clone(), g1.clone()],
        "newest first, then id"
    );
    let news = BroadcastFilter {
        topic: Some("news".into()),
        ..BroadcastFilter::default()
    };
    let listed = store.list_broadcasts(&app, &news, None, 10).await.unwrap();
    assert_eq!(listed, vec![g3.clone(), g1.clone()]);
    let page = store
        .list_broadcasts(
            &app,
            &BroadcastFilter::default(),
            Some(&ListCursor {
                created_us: 2_000,
                id: "g3".into(),
            }),
            1,
        )
        .await
        .unwrap();
    assert_eq!(page, vec![g2.clone()]);
    let ranged = BroadcastFilter {
        created: (Some(1_000), Some(1_999)),
        expires: (Some(8_000), None),
        ..BroadcastFilter::default()
    };
    assert_eq!(
        store
            .list_broadcasts(&app, &ranged, None, 10)
            .await
            .unwrap(),
        vec![g1.clone()]
    );

    // A recipient's message of a broadcast is created once.
    let m = AddressedMessage {
        id: "bm1".into(),
        app: app.clone(),
        recipient: UserId::parse("u1").unwrap(),
        foreign_id: None,
        body: g2.body.clone(),
        topic: None,
        status: MessageStatus::Pending,
        created_us: 3_000,
        expires_us: None,
        delivered_us: None,
        delivered_via: None,
        cancelled_us: None,
        expired_us: None,
        global_message_id: Some("g2".into()),
        bucket: None,
    };
    let first = s
        .messages
        .create_missing_messages(std::slice::from_ref(&m))
        .await
        .unwrap();
    assert!(first[0].is_some());
    let again = s
        .messages
        .create_missing_messages(std::slice::from_ref(&m))
        .await
        .unwrap();
    assert_eq!(again, vec![None]);
    assert_eq!(
        s.messages.addressed_message(&app, "bm1").await.unwrap(),
        Some(m)
    );
}
