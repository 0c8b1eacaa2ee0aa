//! Conformance of `WebPush`: one VAPID pair per app whoever asks first, subscriptions
//! unique per endpoint and bounded per user, and the push queue's lease (a claimed job is
//! invisible until its lease ends or it is retried; racing claimers never share a job).

use std::collections::HashSet;

use crate::ids::{AppId, UserId};
use crate::store::Stores;
use crate::store::webpush::{Added, MAX_SUBSCRIPTIONS, PushJob, PushSubscription};

/// Runs every check.
pub async fn run(s: &Stores) {
    keys(s).await;
    subscriptions(s).await;
    queue(s).await;
}

async fn keys(s: &Stores) {
    let app = AppId::parse("wp").unwrap();
    let pair = |n: u8| (format!("private{n}"), format!("public{n}"));
    let first = s.webpush.vapid_key(&app, pair(1)).await.unwrap();
    assert_eq!(first, pair(1));
    assert_eq!(s.webpush.vapid_key(&app, pair(2)).await.unwrap(), pair(1));
    let other = AppId::parse("wp-other").unwrap();
    assert_eq!(s.webpush.vapid_key(&other, pair(3)).await.unwrap(), pair(3));
    // Racing first users agree on one pair.
    let racing = AppId::parse("wp-race").unwrap();
    let mut racers = tokio::task::JoinSet::new();
    for n in 0..8 {
        let (w, racing) = (s.webpush.clone(), racing.clone());
        racers.spawn(async move { w.vapid_key(&racing, pair(10 + n)).await.unwrap() });
    }
    let distinct: HashSet<_> = racers.join_all().await.into_iter().collect();
    assert_eq!(distinct.len(), 1, "{distinct:?}");
}

fn subscription(app: &AppId, user: &UserId, id: &str, endpoint: &str, at: i64) -> PushSubscription {
    PushSubscription {
        id: id.into(),
        app: app.clone(),
        user: user.clone(),
        endpoint: endpoint.into(),
        p256dh: format!("key-of-{id}"),
        auth: format!("auth-of-{id}"),
        // Real clock values: a backend must keep all 16 digits.
        created_us: 1_764_000_000_000_000 + at,
    }
}

async fn subscriptions(s: &Stores) {
    let w = &s.webpush;
    let app = AppId::parse("wp").unwrap();
    let alice = UserId::parse("alice").unwrap();
    let bob = UserId::parse("bob with spaces").unwrap();
    assert!(w.subscriptions(&app, &alice).await.unwrap().is_empty());
    let one = subscription(&app, &alice, "s1", "https://push.example/a", 20);
    let two = subscription(&app, &alice, "s2", "https://push.example/b", 10);
    assert_eq!(
        w.add_subscription(&one).await.unwrap(),
        Added::New(one.clone())
    );
    assert_eq!(
        w.add_subscription(&two).await.unwrap(),
        Added::New(two.clone())
    );
    // The same endpoint again: that subscription, with the new keys.
    let mut renewed = subscription(&app, &alice, "s3", "https://push.example/a", 30);
    renewed.p256dh = "new-key".into();
    let Added::Existing(kept) = w.add_subscription(&renewed).await.unwrap() else {
        panic!("the endpoint is registered already");
    };
    assert_eq!((kept.id.as_str(), kept.p256dh.as_str()), ("s1", "new-key"));
    assert_eq!(kept.created_us, 1_764_000_000_000_020);
    let listed = w.subscriptions(&app, &alice).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["s2", "s1"],
        "oldest first"
    );
    assert_eq!(listed[1], kept);
    assert_eq!(
        w.subscribed(&app, &[bob.clone(), alice.clone()])
            .await
            .unwrap(),
        [false, true]
    );
    let other = AppId::parse("wp-other").unwrap();
    assert!(
        w.subscriptions(&other, &alice).await.unwrap().is_empty(),
        "per app"
    );

    // Bounded per user.
    for n in 0..MAX_SUBSCRIPTIONS {
        let s = subscription(&app, &bob, &format!("b{n}"), &format!("https://p/{n}"), 40);
        assert!(matches!(
            w.add_subscription(&s).await.unwrap(),
            Added::New(_)
        ));
    }
    let extra = subscription(&app, &bob, "bx", "https://p/extra", 50);
    assert_eq!(w.add_subscription(&extra).await.unwrap(), Added::Full);
    assert_eq!(
        w.subscriptions(&app, &bob).await.unwrap().len(),
        MAX_SUBSCRIPTIONS
    );

    // Removal: once, by the user's own id only.
    assert!(!w.remove_subscription(&app, &bob, "s1").await.unwrap());
    assert!(w.remove_subscription(&app, &alice, "s1").await.unwrap());
    assert!(!w.remove_subscription(&app, &alice, "s1").await.unwrap());
    assert!(w.remove_subscription(&app, &alice, "s2").await.unwrap());
    assert_eq!(w.subscribed(&app, &[alice]).await.unwrap(), [false]);
}

async fn queue(s: &Stores) {
    let w = &s.webpush;
    let app = AppId::parse("wp").unwrap();
    let user = UserId::parse("carol").unwrap();
    let job = |id: &str| PushJob {
        id: id.into(),
        app: app.clone(),
        user: Some(user.clone()),
        message_id: format!("m-{id}"),
        attempts: 0,
    };
    assert!(w.claim_pushes(1_000, 100, 10).await.unwrap().is_empty());
    // Ids spread over the backend's shards, if it has any.
    let ids = ["0a", "1b", "fc", "7d"];
    w.enqueue_pushes(&ids.map(job), 1_000).await.unwrap();
    w.enqueue_pushes(&[job("9e")], 5_000).await.unwrap();
    assert!(
        w.claim_pushes(999, 100, 10).await.unwrap().is_empty(),
        "not due"
    );

    let first = w.claim_pushes(1_000, 100, 3).await.unwrap();
    assert_eq!(first.len(), 3, "at most the limit");
    let second = w.claim_pushes(1_050, 100, 10).await.unwrap();
    assert_eq!(second.len(), 1, "the rest; the claimed ones are leased");
    let claimed: HashSet<String> = first.iter().chain(&second).map(|j| j.id.clone()).collect();
    assert_eq!(claimed, ids.map(String::from).into_iter().collect());
    assert_eq!(first[0].message_id, format!("m-{}", first[0].id));
    assert_eq!(
        (first[0].attempts, &first[0].user),
        (0, &Some(user.clone()))
    );
    // A bucket message's job has no user.
    let bucket_job = PushJob {
        user: None,
        ..job("ab-bucket")
    };
    w.enqueue_pushes(std::slice::from_ref(&bucket_job), 1_000)
        .await
        .unwrap();
    let claimed = w.claim_pushes(1_000, 100, 10).await.unwrap();
    assert_eq!(claimed, std::slice::from_ref(&bucket_job));
    w.finish_push(&bucket_job.id).await.unwrap();

    // Finished jobs are gone; a retried one comes back later with the attempt counted;
    // an expired lease hands the job out again.
    w.finish_push(&first[0].id).await.unwrap();
    w.finish_push(&first[0].id).await.unwrap();
    w.retry_push(&first[1].id, 2_000).await.unwrap();
    w.retry_push("gone", 2_000).await.unwrap();
    let again = w.claim_pushes(1_101, 100, 10).await.unwrap();
    let again: HashSet<String> = again.into_iter().map(|j| j.id).collect();
    assert_eq!(
        again,
        [first[2].id.clone()].into_iter().collect(),
        "its lease ran out at 1 100; the one claimed at 1 050 is held until 1 150"
    );
    // At 2 000 the retried job is due, and every lease taken so far has run out.
    let mut later = w.claim_pushes(2_000, 100, 10).await.unwrap();
    later.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected: Vec<(String, u32)> = [&first[1], &first[2], &second[0]]
        .iter()
        .map(|j| (j.id.clone(), u32::from(j.id == first[1].id)))
        .collect();
    expected.sort();
    assert_eq!(
        later
            .iter()
            .map(|j| (j.id.clone(), j.attempts))
            .collect::<Vec<_>>(),
        expected,
        "the retried job counts its attempt"
    );
    for id in ids.iter().chain(&["9e"]) {
        w.finish_push(id).await.unwrap();
    }
    assert!(
        w.claim_pushes(i64::MAX / 2, 100, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Racing claimers never share a job.
    let many: Vec<PushJob> = (0..40).map(|n| job(&format!("{n:02x}race"))).collect();
    w.enqueue_pushes(&many, 10_000).await.unwrap();
    let mut claimers = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let w = w.clone();
        claimers.spawn(async move { w.claim_pushes(10_000, 1_000, 10).await.unwrap() });
    }
    let mut seen = HashSet::new();
    for claim in claimers.join_all().await {
        for j in claim {
            assert!(seen.insert(j.id.clone()), "{} claimed twice", j.id);
        }
    }
    assert_eq!(seen.len(), 40);
    for j in &many {
        w.finish_push(&j.id).await.unwrap();
    }
}
