//! Conformance of `Buckets`: buckets and contexts read back whole, credentials in their
//! order, a bucket visible to its own app only, a context found by id alone, ids never
//! reused.

use crate::clock::now_us;
use crate::ids::AppId;
use crate::message::JsonText;
use crate::store::Stores;
use crate::store::buckets::{
    BUCKET_LIFETIME_US, Bucket, BucketContext, BucketMessage, Callback, ContextKind, Credential,
};

/// Runs every check.
pub async fn run(s: &Stores) {
    let b = &s.buckets;
    let app = AppId::parse("ppg").unwrap();
    let other = AppId::parse("ppg-other").unwrap();
    let now = now_us();
    let credential = |n: u8| Credential {
        id: format!("0000000{n}-0000-4000-8000-000000000000"),
        provider: "vapid".into(),
        public_key: format!("public{n}"),
        private_key: format!("private{n}"),
    };
    let bucket = Bucket {
        id: "5f0c0000-0000-4000-8000-000000000001".into(),
        app: app.clone(),
        credentials: vec![credential(2), credential(1)],
        callback: Some(Callback {
            url: "http://127.0.0.1:9/hook".into(),
            headers: vec![("x-secret".into(), "cat".into()), ("a".into(), "b".into())],
        }),
        created_us: now,
        expires_us: now + BUCKET_LIFETIME_US,
    };
    assert_eq!(b.bucket(&app, &bucket.id).await.unwrap(), None);
    b.create_bucket(&bucket).await.unwrap();
    assert_eq!(
        b.bucket(&app, &bucket.id).await.unwrap(),
        Some(bucket.clone())
    );
    assert_eq!(b.bucket(&other, &bucket.id).await.unwrap(), None, "per app");
    assert!(
        b.create_bucket(&bucket).await.is_err(),
        "ids are never reused"
    );
    let silent = Bucket {
        id: "5f0c0000-0000-4000-8000-000000000002".into(),
        callback: None,
        credentials: vec![],
        ..bucket.clone()
    };
    b.create_bucket(&silent).await.unwrap();
    assert_eq!(b.bucket(&app, &silent.id).await.unwrap(), Some(silent));

    let context = BucketContext {
        id: "c9d80000-0000-4000-8000-000000000001".into(),
        app: app.clone(),
        bucket: bucket.id.clone(),
        kind: ContextKind::Data,
        content: JsonText::parse(r#"{"title":"Hi","actions":[{"action":"a1"}]}"#).unwrap(),
        created_us: now,
    };
    assert_eq!(b.bucket_context(&context.id).await.unwrap(), None);
    b.create_bucket_context(&context).await.unwrap();
    assert_eq!(
        b.bucket_context(&context.id).await.unwrap(),
        Some(context.clone())
    );
    assert!(b.create_bucket_context(&context).await.is_err());

    let message = |n: u8| BucketMessage {
        id: format!("8e300000-0000-4000-8000-00000000000{n}"),
        app: app.clone(),
        bucket: bucket.id.clone(),
        context: context.id.clone(),
        credential: bucket.credentials[0].id.clone(),
        endpoint: format!("https://push.example/{n}"),
        p256dh: "key".into(),
        auth: "auth".into(),
        foreign_id: (n == 1).then(|| "my_id".into()),
        created_us: now,
        expires_us: now + 3_600_000_000,
    };
    assert_eq!(b.bucket_message(&message(1).id).await.unwrap(), None);
    b.create_bucket_messages(&[message(1), message(2)])
        .await
        .unwrap();
    b.create_bucket_messages(&[]).await.unwrap();
    for n in [1, 2] {
        assert_eq!(
            b.bucket_message(&message(n).id).await.unwrap(),
            Some(message(n))
        );
    }

    // Pruning takes buckets past their lifetime, up to the limit.
    let end = bucket.expires_us;
    assert!(
        b.prune_buckets(end, 10).await.unwrap().is_empty(),
        "not before its end"
    );
    let mut pruned = b.prune_buckets(end + 1, 1).await.unwrap();
    pruned.extend(b.prune_buckets(end + 1, 10).await.unwrap());
    pruned.sort();
    assert_eq!(
        pruned,
        [
            "5f0c0000-0000-4000-8000-000000000001",
            "5f0c0000-0000-4000-8000-000000000002"
        ]
    );
    assert_eq!(b.bucket(&app, &bucket.id).await.unwrap(), None);
    assert!(b.prune_buckets(end + 1, 10).await.unwrap().is_empty());
}
