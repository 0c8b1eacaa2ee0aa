//! Herald's Web Push cryptography against a real push service (`web-push-testing` on
//! loopback, which decrypts and verifies independently of our code): a body encrypted by
//! `api::webpush` (RFC 8291) to a subscription's keys decrypts there to the exact payload,
//! a VAPID signature (RFC 8292) of the subscribed key is accepted and one of another key
//! refused, and an expired subscription answers 410.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use api::webpush::{SubscriptionKeys, VapidKey, encrypt};
use e2e::push_service::{PushService, Subscription};

/// Pushes `payload` to `subscription` as Herald's sender does; the push service's status.
async fn push(subscription: &Subscription, vapid: &VapidKey, payload: &str) -> u16 {
    let keys = SubscriptionKeys::from_base64(&subscription.p256dh, &subscription.auth).unwrap();
    let body = encrypt(payload.as_bytes(), &keys).unwrap();
    let endpoint = reqwest::Url::parse(&subscription.endpoint).unwrap();
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 12 * 3600;
    let authorization = vapid.authorization(&endpoint, "mailto:ops@example.com", expires);
    reqwest::Client::new()
        .post(endpoint)
        .header("TTL", "60")
        .header("Content-Encoding", "aes128gcm")
        .header("Content-Type", "application/octet-stream")
        .header("Authorization", authorization)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
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
        assert_eq!(push(&subscription, &vapid, payload).await, 201);
    }
    assert_eq!(service.notifications(&subscription).await, payloads);

    // Signed with a key the subscription was not made for: refused, nothing delivered.
    let stranger = VapidKey::generate();
    assert_eq!(push(&subscription, &stranger, "not mine").await, 400);
    assert_eq!(service.notifications(&subscription).await.len(), 2);

    // Unsubscribed: the push service answers 410 Gone (RFC 8030 §7.3).
    service.expire(&subscription).await;
    assert_eq!(push(&subscription, &vapid, "too late").await, 410);
}
