//! Herald's Web Push sender against a real push service (`web-push-testing` on loopback,
//! which decrypts and verifies independently of our code): a body encrypted by
//! `api::webpush` (RFC 8291) to a subscription's keys decrypts there to the exact payload,
//! a VAPID signature (RFC 8292) of the subscribed key is accepted (`Sent`) and one of
//! another key refused (`Failed`), and an expired subscription is `Gone` (410). A push
//! service that does not answer is `Retry`.
//!
//! Then the offline fallback over real binaries (SPEC §5): a user's subscriptions through
//! `/api/v1/users/{id}/webpush`; an addressed message to an offline user arrives at the
//! push service and decrypts to its native frame, its status `DELIVERED` via `webpush`;
//! an online user gets it on the socket only; a gone subscription (410) is removed and
//! its message waits for the socket; 503 with `Retry-After` is retried after that wait.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use api::webpush::{Outcome, Push, SubscriptionKeys, VapidKey, send};
use e2e::push_service::{PushService, Subscription};
use e2e::receiver::Receiver;
use e2e::{Cluster, DEADLINE, Options, Socket, V1, eventually};
use serde_json::{Value, json};

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

/// Quick Web Push retries and a short wait before the fallback.
const FAST: &[(&str, &str)] = &[
    ("WEBPUSH__DELAY_MS", "200"),
    ("WEBPUSH__POLL_MS", "20"),
    ("WEBPUSH__BACKOFF_MIN_MS", "200"),
    ("WEBPUSH__BACKOFF_MAX_MS", "400"),
    ("WEBPUSH__TIMEOUT_MS", "2000"),
    ("WEBPUSH__LEASE_MS", "5000"),
];
/// How long a socket or a push service is watched for something that must not come.
const QUIET: Duration = Duration::from_millis(800);

async fn cluster() -> (Cluster, V1) {
    let cluster = Cluster::start(Options {
        env: FAST,
        ..Options::default()
    })
    .await;
    let api = V1::new(&cluster.api_url());
    (cluster, api)
}

/// Registers `subscription` for `user`, expecting `status`; the answer.
async fn register(api: &V1, user: &str, subscription: &Subscription, status: u16) -> Value {
    let body = json!({"endpoint": subscription.endpoint,
                      "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}});
    let (code, answer) = api
        .call("POST", &format!("users/{user}/webpush"), Some(body))
        .await;
    assert_eq!(code, status, "{answer}");
    answer
}

/// Sends `message` to `user`; the message id.
async fn send_to(api: &V1, user: &str, message: &str) -> String {
    let (status, answer) = api
        .call(
            "POST",
            &format!("users/{user}/messages"),
            Some(json!({"message": message})),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    answer["items"][0]["id"].as_str().unwrap().to_owned()
}

/// Polls message `id` until `done` holds for it; the message.
async fn message_until(api: &V1, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(what, DEADLINE, || async {
        let (code, m) = api.call("GET", &format!("messages/{id}"), None).await;
        (code == 200 && done(&m)).then_some(m)
    })
    .await
}

async fn connect(cluster: &Cluster, api: &V1, user: &str) -> Socket {
    let token = api.token(json!({"user": user})).await;
    Socket::native(&cluster.edge_url(0), &token).await.0
}

#[tokio::test]
async fn an_offline_user_gets_messages_by_web_push_and_an_online_one_on_the_socket_never_both() {
    let service = PushService::start().await;
    let (cluster, api) = cluster().await;
    let (status, key) = api.call("GET", "webpush/key", None).await;
    assert_eq!(status, 200, "{key}");
    let public = key["publicKey"].as_str().unwrap().to_owned();
    let (_, again) = api.call("GET", "webpush/key", None).await;
    assert_eq!(again["publicKey"], public.as_str(), "one key per app");

    // Browsers subscribe with the app's key and hand their subscriptions to Herald.
    let carol_sub = service.subscribe(&public).await;
    let dave_sub = service.subscribe(&public).await;
    let created = register(&api, "carol", &carol_sub, 201).await;
    let same = register(&api, "carol", &carol_sub, 200).await;
    assert_eq!(
        created["id"], same["id"],
        "the same endpoint again is the same one"
    );
    assert_eq!(created["endpoint"], carol_sub.endpoint.as_str());
    register(&api, "dave", &dave_sub, 201).await;
    let (_, listed) = api.call("GET", "users/carol/webpush", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["items"][0]["id"], created["id"]);
    assert!(
        listed["items"][0].get("keys").is_none(),
        "keys are not read back"
    );

    // Dave is online, Carol is not.
    let mut dave = connect(&cluster, &api, "dave").await;
    let to_dave = send_to(&api, "dave", "for the socket").await;
    let to_carol = send_to(&api, "carol", "for the push service").await;

    let frame = dave.next_event(DEADLINE).await;
    assert_eq!(frame["id"], to_dave.as_str(), "{frame}");
    let delivered = message_until(&api, &to_dave, "dave's message delivered", |m| {
        m["status"] == "DELIVERED"
    })
    .await;
    assert_eq!(delivered["deliveredVia"], "websocket", "{delivered}");

    let pushed = eventually("carol's push to arrive", DEADLINE, || async {
        let got = service.notifications(&carol_sub).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    let payload: Value = serde_json::from_str(&pushed[0]).unwrap();
    assert_eq!(payload["type"], "message", "{payload}");
    assert_eq!(payload["id"], to_carol.as_str());
    assert_eq!(payload["data"], "for the push service");
    let by_push = message_until(&api, &to_carol, "carol's message delivered", |m| {
        m["status"] == "DELIVERED"
    })
    .await;
    assert_eq!(by_push["deliveredVia"], "webpush", "{by_push}");

    // Never both: Carol's socket does not get it again, Dave's push service gets nothing.
    let mut carol = connect(&cluster, &api, "carol").await;
    assert_eq!(carol.try_next_json(QUIET).await, None);
    assert!(service.notifications(&dave_sub).await.is_empty());
    // Online now, Carol gets the next one on her socket and not by push.
    let next = send_to(&api, "carol", "live").await;
    assert_eq!(carol.next_event(DEADLINE).await["id"], next.as_str());
    let live = message_until(&api, &next, "the live one delivered", |m| {
        m["status"] == "DELIVERED"
    })
    .await;
    assert_eq!(live["deliveredVia"], "websocket");
    tokio::time::sleep(QUIET).await;
    assert_eq!(service.notifications(&carol_sub).await.len(), 1);
}

#[tokio::test]
async fn gone_subscriptions_are_dropped_and_busy_push_services_retried_after_their_wait() {
    let service = PushService::start().await;
    let (cluster, api) = cluster().await;
    let (_, key) = api.call("GET", "webpush/key", None).await;
    let public = key["publicKey"].as_str().unwrap().to_owned();

    // 410: removed, never tried again; the message waits for the user's socket.
    let erin_sub = service.subscribe(&public).await;
    register(&api, "erin", &erin_sub, 201).await;
    service.expire(&erin_sub).await;
    let to_erin = send_to(&api, "erin", "after the unsubscribe").await;
    eventually(
        "erin's gone subscription to be removed",
        DEADLINE,
        || async {
            let (_, listed) = api.call("GET", "users/erin/webpush", None).await;
            listed["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
                .then_some(())
        },
    )
    .await;
    let (_, waiting) = api.call("GET", &format!("messages/{to_erin}"), None).await;
    assert_eq!(waiting["status"], "PENDING", "{waiting}");
    let mut erin = connect(&cluster, &api, "erin").await;
    assert_eq!(erin.next_event(DEADLINE).await["id"], to_erin.as_str());
    let delivered = message_until(&api, &to_erin, "erin's message delivered", |m| {
        m["status"] == "DELIVERED"
    })
    .await;
    assert_eq!(delivered["deliveredVia"], "websocket");

    // 503 with Retry-After: 1, twice, then 201: three requests, a second apart at least.
    let busy = Receiver::start().await;
    busy.fail_next_with(2, 503, Some("1"));
    let keys_of = service.subscribe(&public).await;
    let stub = Subscription {
        endpoint: busy.url.clone(),
        ..keys_of
    };
    register(&api, "frank", &stub, 201).await;
    let to_frank = send_to(&api, "frank", "third time lucky").await;
    let done = message_until(&api, &to_frank, "frank's message delivered", |m| {
        m["status"] == "DELIVERED"
    })
    .await;
    assert_eq!(done["deliveredVia"], "webpush", "{done}");
    let requests = busy.requests();
    let answers: Vec<Option<u16>> = requests.iter().map(|r| r.answered).collect();
    assert_eq!(answers, [Some(503), Some(503), Some(200)]);
    for pair in requests.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(950),
            "Retry-After: 1 not honoured: {gap:?}"
        );
    }
    assert!(
        requests[0].content_type.as_deref() == Some("application/octet-stream"),
        "{:?}",
        requests[0].content_type
    );
}

#[tokio::test]
async fn bad_subscriptions_are_refused_naming_the_field() {
    let service = PushService::start().await;
    let (_cluster, api) = cluster().await;
    let (_, key) = api.call("GET", "webpush/key", None).await;
    let good = service.subscribe(key["publicKey"].as_str().unwrap()).await;
    let keys = json!({"p256dh": good.p256dh, "auth": good.auth});
    let cases = [
        (json!({"keys": keys}), "endpoint"),
        (
            json!({"endpoint": "ftp://push.example/x", "keys": keys}),
            "endpoint",
        ),
        (json!({"endpoint": good.endpoint}), "keys"),
        (json!({"endpoint": good.endpoint, "keys": "x"}), "keys"),
        (
            json!({"endpoint": good.endpoint, "keys": {"p256dh": "AAAA", "auth": good.auth}}),
            "keys.p256dh",
        ),
        (
            json!({"endpoint": good.endpoint, "keys": {"p256dh": good.p256dh, "auth": "!!"}}),
            "keys.auth",
        ),
        (
            json!({"endpoint": good.endpoint, "keys": {"p256dh": good.p256dh}}),
            "keys.auth",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = api
            .call("POST", "users/u1/webpush", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{body} → {answer}"
        );
    }
    let (status, answer) = api.call("DELETE", "users/u1/webpush/nope", None).await;
    assert_eq!(status, 404, "{answer}");
    // Bounded per user: the eleventh endpoint is a 409.
    for n in 0..10 {
        let endpoint = format!("{}/{n}", good.endpoint);
        let sub = Subscription {
            endpoint,
            ..good.clone()
        };
        register(&api, "u2", &sub, 201).await;
    }
    let extra = Subscription {
        endpoint: format!("{}/extra", good.endpoint),
        ..good.clone()
    };
    let refused = register(&api, "u2", &extra, 409).await;
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    let (_, listed) = api.call("GET", "users/u2/webpush", None).await;
    let first = listed["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = api
        .call("DELETE", &format!("users/u2/webpush/{first}"), None)
        .await;
    assert_eq!(status, 204);
    register(&api, "u2", &extra, 201).await;
}
