//! Herald's Web Push sender against a real push service (`web-push-testing` on loopback,
//! which decrypts and verifies independently of our code): a body encrypted by
//! `api::webpush` (RFC 8291) to a subscription's keys decrypts there to the exact payload,
//! a VAPID signature (RFC 8292) of the subscribed key is accepted (`Sent`) and one of
//! another key refused (`Failed`), and an expired subscription is `Gone` (410). A push
//! service that does not answer is `Retry`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use api::webpush::{Outcome, Push, SubscriptionKeys, VapidKey, send};
use e2e::push_service::{PushService, Subscription};

/// Pushes `payload` to `subscription` with Herald's sender.
async fn push(subscription: &Subscription, vapid: &VapidKey, payload: &str) -> Outcome {
    let keys = SubscriptionKeys::from_base64(&subscription.p256dh, &subscription.auth).unwrap();
    let push = Push {
        endpoint: &subscription.endpoint,
        keys: &keys,
        payload: payload.as_bytes(),
        ttl_seconds: 60,
    };
    send(
        &reqwest::Client::new(),
        vapid,
        "mailto:ops@example.com",
        push,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_real_push_service_decrypts_herald_pushes_and_checks_their_vapid_signature() {
    let service = PushService::start().await;
    let vapid = VapidKey::generate();
    let subscription = service.subscribe(vapid.public_key()).await;

    let payloads = [
        r#"{"title":"Hello","body":"zażółć gęślą jaźń 🚀"}"#.to_owned(),
        "x".repeat(api::webpush::MAX_PLAINTEXT),
    ];
    for payload in &payloads {
        assert_eq!(push(&subscription, &vapid, payload).await, Outcome::Sent);
    }
    assert_eq!(service.notifications(&subscription).await, payloads);

    // Signed with a key the subscription was not made for: refused, nothing delivered.
    let stranger = VapidKey::generate();
    let refused = push(&subscription, &stranger, "not mine").await;
    assert!(
        matches!(&refused, Outcome::Failed { reason } if reason.starts_with("400")),
        "{refused:?}"
    );
    assert_eq!(service.notifications(&subscription).await.len(), 2);

    // Unsubscribed: the push service answers 410 Gone (RFC 8030 §7.3).
    service.expire(&subscription).await;
    assert_eq!(push(&subscription, &vapid, "too late").await, Outcome::Gone);

    // Nobody listening at the endpoint: worth a retry, not a failure.
    let closed = Subscription {
        endpoint: format!("http://127.0.0.1:{}/notify/x", e2e::free_port()),
        ..subscription.clone()
    };
    let unanswered = push(&closed, &vapid, "anyone?").await;
    assert!(
        matches!(&unanswered, Outcome::Retry { after: None, .. }),
        "{unanswered:?}"
    );
}
