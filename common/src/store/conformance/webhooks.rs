//! Conformance of `Webhooks`: configuration round trip, events kept only for the kinds a
//! webhook wants (message transitions record theirs in the same transaction), batches due
//! when full or old enough, one holder per app at a time, sent events gone, failed ones
//! offered again with the same ids after the backoff, an expired lease taken over, and the
//! outbox bounded.

use crate::ids::{AppId, UserId};
use crate::store::{
    AddressedMessage, BatchFormat, BatchOutcome, EventKind, MessageBody, MessageStatus,
    OutboxLimits, Stores, Webhook, WebhookEvent,
};

const LIMITS: OutboxLimits = OutboxLimits {
    lease_us: 30_000_000,
    max_age_us: 3_600_000_000,
    max_pending: 1_000,
};

fn webhook(app: &AppId, events: &[EventKind], max_batch: u32, max_delay_ms: u64) -> Webhook {
    Webhook {
        app: app.clone(),
        url: "http://127.0.0.1:9/hook".into(),
        secret: "s3cret".into(),
        events: events.to_vec(),
        max_batch,
        max_delay_ms,
        updated_us: 1,
        format: BatchFormat::Herald,
    }
}

fn event(app: &AppId, id: &str, kind: EventKind, at_us: i64) -> WebhookEvent {
    WebhookEvent {
        id: id.into(),
        app: app.clone(),
        kind,
        message_id: None,
        foreign_id: None,
        recipient: Some(UserId::parse("u1").unwrap()),
        at_us,
    }
}

fn message(app: &AppId, id: &str, expires_us: Option<i64>) -> AddressedMessage {
    AddressedMessage {
        id: id.into(),
        app: app.clone(),
        recipient: UserId::parse("u1").unwrap(),
        foreign_id: Some(format!("f-{id}")),
        body: MessageBody::Text("hi".into()),
        topic: None,
        status: MessageStatus::Pending,
        created_us: crate::clock::now_us(),
        expires_us,
        delivered_us: None,
        delivered_via: None,
        cancelled_us: None,
        expired_us: None,
        global_message_id: None,
        bucket: None,
    }
}

/// Runs every check (on an empty store).
pub async fn run(s: &Stores) {
    let store = &s.webhooks;
    let app = AppId::parse("hooks").unwrap();
    let quiet = AppId::parse("hooks-none").unwrap();
    let now = crate::clock::now_us();

    assert_eq!(store.outbox_depth().await.unwrap(), 0, "an empty outbox");
    // Configuration round trip; replacing keeps one row.
    assert_eq!(store.webhook(&app).await.unwrap(), None);
    assert!(!store.delete_webhook(&app).await.unwrap());
    store
        .put_webhook(&webhook(&app, &[EventKind::Sent], 10, 0))
        .await
        .unwrap();
    let all = webhook(&app, &EventKind::ALL, 3, 60_000);
    store.put_webhook(&all).await.unwrap();
    let (got, state) = store.webhook(&app).await.unwrap().unwrap();
    assert_eq!(got, all);
    assert_eq!((state.pending, state.failures, state.dropped), (0, 0, 0));
    // A PushPushGo bucket's callback keeps its format and headers.
    let bucket_hook = AppId::parse("ppg.hooks").unwrap();
    let ppg = Webhook {
        format: BatchFormat::PushPushGo {
            headers: vec![("x-secret".into(), "cat".into()), ("b".into(), "1".into())],
        },
        ..webhook(&bucket_hook, &EventKind::ALL, 1000, 60_000)
    };
    store.put_webhook(&ppg).await.unwrap();
    assert_eq!(store.webhook(&bucket_hook).await.unwrap().unwrap().0, ppg);
    assert!(store.delete_webhook(&bucket_hook).await.unwrap());

    // Kept only where a webhook wants the kind.
    let clicks_only = AppId::parse("hooks-clicks").unwrap();
    store
        .put_webhook(&webhook(&clicks_only, &[EventKind::Clicked], 10, 0))
        .await
        .unwrap();
    let kept = store
        .record_events(&[
            event(&quiet, "e0", EventKind::Connected, now),
            event(&clicks_only, "e1", EventKind::Connected, now),
            event(&clicks_only, "e2", EventKind::Clicked, now),
        ])
        .await
        .unwrap();
    assert_eq!(kept, 1, "only the click of the app that wants clicks");
    assert!(store.delete_webhook(&clicks_only).await.unwrap());
    assert_eq!(store.webhook(&clicks_only).await.unwrap(), None);

    // A message a PushPushGo bucket sent to a Herald user: each of its events goes to the
    // app's webhook and to the bucket's callback, each only if it wants the kind.
    let sender = AppId::parse("hooks-sender").unwrap();
    let callback = crate::store::buckets::callback_app("bk1").unwrap();
    store
        .put_webhook(&webhook(&sender, &[EventKind::Sent], 10, 60_000))
        .await
        .unwrap();
    store
        .put_webhook(&webhook(
            &callback,
            &[EventKind::Sent, EventKind::Delivered],
            10,
            60_000,
        ))
        .await
        .unwrap();
    let from_bucket = AddressedMessage {
        bucket: Some("bk1".into()),
        ..message(&sender, "bm1", None)
    };
    s.messages.create_messages(&[from_bucket]).await.unwrap();
    s.messages
        .transition_message(&sender, "bm1", MessageStatus::Delivered, now + 1)
        .await
        .unwrap();
    let pending = |app: AppId| async move { store.webhook(&app).await.unwrap().unwrap().1.pending };
    assert_eq!(pending(sender.clone()).await, 1, "the app wants sent only");
    assert_eq!(pending(callback.clone()).await, 2, "sent and delivered");
    let got = s
        .messages
        .addressed_message(&sender, "bm1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bucket.as_deref(), Some("bk1"), "the link is stored");
    assert!(store.delete_webhook(&sender).await.unwrap());
    assert!(store.delete_webhook(&callback).await.unwrap());

    // Message transitions record their events in the outbox themselves.
    s.messages
        .create_messages(&[message(&app, "wm1", None), message(&app, "wm2", None)])
        .await
        .unwrap();
    s.messages
        .transition_message(&app, "wm1", MessageStatus::Delivered, now + 1)
        .await
        .unwrap();
    s.messages
        .transition_message(&app, "wm2", MessageStatus::Cancelled, now + 2)
        .await
        .unwrap();
    // A refused transition records nothing.
    s.messages
        .transition_message(&app, "wm2", MessageStatus::Cancelled, now + 3)
        .await
        .unwrap();
    let (_, state) = store.webhook(&app).await.unwrap().unwrap();
    assert_eq!(state.pending, 4, "sent ×2, delivered, cancelled");
    let mut pending = 0;
    for hooked in [&app, &sender, &callback] {
        pending += store
            .webhook(hooked)
            .await
            .unwrap()
            .map_or(0, |(_, s)| s.pending);
    }
    assert_eq!(
        store.outbox_depth().await.unwrap(),
        pending,
        "every app's outbox"
    );

    // A full batch is due at once; the next holder waits for the lease.
    let batch = store
        .claim_batch("d1", now + 10, LIMITS)
        .await
        .unwrap()
        .expect("a full batch is due");
    assert_eq!(batch.webhook, all);
    assert_eq!(batch.failures, 0);
    let kinds: Vec<(EventKind, Option<&str>)> = batch
        .events
        .iter()
        .map(|e| (e.kind, e.message_id.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Sent, Some("wm1")),
            (EventKind::Sent, Some("wm2")),
            (EventKind::Delivered, Some("wm1")),
        ],
        "oldest first, at most max_batch"
    );
    assert_eq!(batch.events[0].foreign_id.as_deref(), Some("f-wm1"));
    assert_eq!(batch.events[2].at_us, now + 1);
    assert!(
        store
            .claim_batch("d2", now + 11, LIMITS)
            .await
            .unwrap()
            .is_none(),
        "one holder per app"
    );

    // A failure backs off; the same events come back with the same ids.
    let ids: Vec<String> = batch.events.iter().map(|e| e.id.clone()).collect();
    assert!(
        store
            .settle_batch(
                &app,
                "d1",
                &ids,
                BatchOutcome::Failed {
                    error: "HTTP 500".into(),
                    retry_at_us: now + 1_000,
                },
                now + 20,
            )
            .await
            .unwrap()
    );
    let (_, state) = store.webhook(&app).await.unwrap().unwrap();
    assert_eq!(state.failures, 1);
    assert_eq!(state.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(state.next_attempt_us, now + 1_000);
    assert!(
        store
            .claim_batch("d2", now + 999, LIMITS)
            .await
            .unwrap()
            .is_none(),
        "backing off"
    );
    let retry = store
        .claim_batch("d2", now + 1_000, LIMITS)
        .await
        .unwrap()
        .expect("the retry is due");
    assert_eq!(
        retry
            .events
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(retry.failures, 1);

    // d2 dies holding the lease; after it runs out d3 gets the same events, and d2's late
    // answer no longer counts.
    let later = now + 1_000 + LIMITS.lease_us;
    let taken = store
        .claim_batch("d3", later, LIMITS)
        .await
        .unwrap()
        .expect("an expired lease is taken over");
    assert_eq!(taken.events[0].id, ids[0]);
    assert!(
        !store
            .settle_batch(
                &app,
                "d2",
                &ids,
                BatchOutcome::Failed {
                    error: "late".into(),
                    retry_at_us: later + 5_000_000,
                },
                later + 1,
            )
            .await
            .unwrap(),
        "a lost lease"
    );
    assert!(
        store
            .settle_batch(&app, "d3", &ids, BatchOutcome::Sent, later + 2)
            .await
            .unwrap()
    );
    let (_, state) = store.webhook(&app).await.unwrap().unwrap();
    assert_eq!(state.pending, 1, "the cancelled event remains");
    assert_eq!(
        (state.failures, state.last_success_us),
        (0, Some(later + 2))
    );

    // Not full and younger than max_delay_ms: not due yet; due once old enough.
    assert!(
        store
            .claim_batch("d1", later + 3, LIMITS)
            .await
            .unwrap()
            .is_none(),
        "waiting for a fuller batch"
    );
    let last = store
        .claim_batch("d1", later + 60_000_000 + 3, LIMITS)
        .await
        .unwrap()
        .expect("old enough");
    assert_eq!(last.events.len(), 1);
    assert_eq!(last.events[0].kind, EventKind::Cancelled);
    store
        .settle_batch(
            &app,
            "d1",
            &[last.events[0].id.clone()],
            BatchOutcome::Sent,
            later + 60_000_000 + 4,
        )
        .await
        .unwrap();

    // Bounded: beyond max_pending (and the retry window) events are dropped and counted,
    // oldest first.
    let bounded = AppId::parse("hooks-bounded").unwrap();
    store
        .put_webhook(&webhook(&bounded, &[EventKind::Connected], 2, 0))
        .await
        .unwrap();
    let t = crate::clock::now_us();
    let events: Vec<WebhookEvent> = (0..5)
        .map(|i| event(&bounded, &format!("b{i}"), EventKind::Connected, t))
        .collect();
    assert_eq!(store.record_events(&events).await.unwrap(), 5);
    let first = store
        .claim_batch("d1", t + 1, LIMITS)
        .await
        .unwrap()
        .unwrap();
    store
        .settle_batch(
            &bounded,
            "d1",
            &[],
            BatchOutcome::Failed {
                error: "connection refused".into(),
                retry_at_us: t + 2,
            },
            t + 1,
        )
        .await
        .unwrap();
    assert_eq!(first.events[0].id, "b0");
    let tight = OutboxLimits {
        max_pending: 3,
        ..LIMITS
    };
    let after = store
        .claim_batch("d1", t + 2, tight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after
            .events
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        vec!["b2", "b3"]
    );
    let (_, state) = store.webhook(&bounded).await.unwrap().unwrap();
    assert_eq!((state.dropped, state.pending), (2, 3));

    // Expiry records `expired`; deleting a webhook drops its outbox.
    s.messages
        .create_messages(&[message(&app, "wm3", Some(now + 5))])
        .await
        .unwrap();
    let swept = s.messages.expire_messages(now + 10, 1_000).await.unwrap();
    assert!(swept.iter().any(|m| m.id == "wm3"));
    let (_, state) = store.webhook(&app).await.unwrap().unwrap();
    assert_eq!(state.pending, 2, "sent and expired of wm3");
    assert!(store.delete_webhook(&app).await.unwrap());
    assert!(store.delete_webhook(&bounded).await.unwrap());
    assert!(
        store
            .claim_batch("d1", t + 1_000_000_000, LIMITS)
            .await
            .unwrap()
            .is_none()
    );
}
