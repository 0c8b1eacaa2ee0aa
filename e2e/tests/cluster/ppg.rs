//! PushPushGo CORE's `/v1` surface over real binaries, called as its JS SDK calls it
//! (`authorization: token=<key>`, JSON bodies with the SDK's extra fields): buckets with
//! `vapid` credentials answered in the order given, contexts of each kind, CORE's error
//! shape `{"message", "errors"}` naming the field, unsupported providers refused by name,
//! `x-token` as the OpenAPI document names it, the CORS preflight a service worker needs,
//! and trailing slashes. Then the SDK's whole flow against a real push service
//! (`web-push-testing`) and a real callback receiver: a data context sent to 1000
//! receivers, each push decrypting to the payload CORE's service worker reads, the
//! worker's `delivered` / `clicked` / `closed` events, and every event arriving at the
//! callback in the seed's batch shape with the bucket's headers and each `foreignId`.
//! Last, Herald's own receivers: Herald users reached on their sockets, their events at
//! the bucket's callback too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use api::webpush::VapidKey;
use e2e::push_service::PushService;
use e2e::receiver::Receiver;
use e2e::{Cluster, DEADLINE, DEV_SECRET, Options, Socket, V1, eventually};
use serde_json::{Value, json};

struct Core {
    base: String,
    http: reqwest::Client,
}

impl Core {
    fn new(cluster: &Cluster) -> Core {
        Core {
            base: format!("{}/v1", cluster.api_url()),
            http: reqwest::Client::new(),
        }
    }

    /// POSTs `body` to `/v1/<path>` with `auth` as the `authorization` header; the status,
    /// the CORS header and the JSON answer.
    async fn post_with(
        &self,
        path: &str,
        auth: Option<(&str, String)>,
        body: &Value,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some((name, value)) = auth {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            response
                .headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some("*"),
            "every answer allows any origin"
        );
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// As the SDK: `authorization: token=<key>`.
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(
            path,
            Some(("authorization", format!("token={DEV_SECRET}"))),
            body,
        )
        .await
    }
}

fn vapid() -> Value {
    let key = VapidKey::generate();
    json!({"type": "vapid", "payload": {"publicKey": key.public_key(), "privateKey": key.private_key()}})
}

fn is_uuid(v: &Value) -> bool {
    let text = v.as_str().unwrap_or("");
    text.len() == 36
        && text.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_digit() || ('a'..='f').contains(&c)
            }
        })
}

/// A refusal in CORE's shape: `{"message", "errors"}` with one error starting with `field`.
fn refused(answer: &Value, field: &str) {
    assert!(answer["message"].is_string(), "{answer}");
    let errors = answer["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap_or("").starts_with(&format!("{field}:"))),
        "an error naming {field}: {answer}"
    );
}

#[tokio::test]
async fn buckets_and_contexts_as_the_sdk_creates_them() {
    let cluster = Cluster::start(Options::default()).await;
    let core = Core::new(&cluster);

    // Two credentials come back in the order given, each with an id; the callback is kept.
    let (first, second) = (vapid(), vapid());
    let (status, bucket) = core
        .post(
            "bucket",
            &json!({"providerCredentials": [first, second],
                    "callbackConfig": {"type": "http", "payload": {
                        "url": "http://127.0.0.1:9/hook", "headers": {"x-secret": "keyboard cat"}}}}),
        )
        .await;
    assert_eq!(status, 200, "{bucket}");
    assert!(is_uuid(&bucket["bucketId"]), "{bucket}");
    let credentials = bucket["credentials"].as_array().unwrap();
    assert_eq!(credentials.len(), 2);
    for c in credentials {
        assert_eq!(c["type"], "vapid");
        assert!(is_uuid(&c["id"]), "{c}");
    }
    assert_ne!(credentials[0]["id"], credentials[1]["id"]);
    let id = bucket["bucketId"].as_str().unwrap().to_owned();

    // Contexts of every kind, with the fields the SDK's README uses (ttl as a string too).
    for (kind, body) in [
        (
            "data",
            json!({"title": "My first push", "body": "Hello", "behaviour": "https://pushpushgo.com",
                        "icon": "https://x.example/i.png", "ttl": "3600",
                        "actions": [{"action": "a1", "title": "Open", "behaviour": "https://x.example/"}]}),
        ),
        (
            "silent",
            json!({"externalData": "{\"sample\": true}", "expiresAt": "2030-07-05T08:19:58.715Z"}),
        ),
        (
            "raw",
            json!({"common": {"title": "t", "body": "b", "ttl": 60},
                       "chromium": {"title": "t", "dir": "ltr", "data": {"k": "v"}}}),
        ),
    ] {
        let (status, context) = core
            .post(&format!("bucket/{id}/context/{kind}"), &body)
            .await;
        assert_eq!(status, 200, "{kind}: {context}");
        assert!(is_uuid(&context["contextId"]), "{context}");
    }
    // With a trailing slash, and with `x-token` as the OpenAPI document names it.
    let (status, _) = core
        .post_with(
            &format!("bucket/{id}/context/data/"),
            Some(("x-token", DEV_SECRET.into())),
            &json!({"title": "t"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = core
        .post_with(
            "bucket/",
            Some(("x-token", DEV_SECRET.into())),
            &json!({"callbackConfig": {"type": "none"}}),
        )
        .await;
    assert_eq!(status, 200);

    // Refusals, in CORE's shape.
    let (status, answer) = core
        .post(
            "bucket",
            &json!({"providerCredentials": [vapid(), {"type": "fcm_v1", "payload": {}}],
                                 "callbackConfig": {"type": "none"}}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    refused(&answer, "providerCredentials[1].type");
    assert!(
        answer.to_string().contains("fcm_v1"),
        "names the provider: {answer}"
    );
    for provider in ["fcm_legacy", "apns_cert", "apns_token", "hms"] {
        let (status, answer) = core
            .post(
                "bucket",
                &json!({"providerCredentials": [{"type": provider, "payload": {}}],
                                     "callbackConfig": {"type": "none"}}),
            )
            .await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.to_string().contains(provider), "{answer}");
    }
    let mut mismatched = vapid();
    mismatched["payload"]["publicKey"] = vapid()["payload"]["publicKey"].clone();
    let cases = [
        (json!({"providerCredentials": [vapid()]}), "callbackConfig"),
        (
            json!({"callbackConfig": {"type": "sms"}}),
            "callbackConfig.type",
        ),
        (
            json!({"callbackConfig": {"type": "http", "payload": {"url": "ftp://x"}}}),
            "callbackConfig.payload.url",
        ),
        (
            json!({"callbackConfig": {"type": "http", "payload": {"url": "http://x.example/", "headers": {"a": 1}}}}),
            "callbackConfig.payload.headers.a",
        ),
        (
            json!({"providerCredentials": [mismatched], "callbackConfig": {"type": "none"}}),
            "providerCredentials[0].payload.publicKey",
        ),
        (
            json!({"providerCredentials": [{"type": "vapid", "payload": {"publicKey": "x"}}], "callbackConfig": {"type": "none"}}),
            "providerCredentials[0].payload.privateKey",
        ),
        (
            json!({"providerCredentials": "vapid", "callbackConfig": {"type": "none"}}),
            "providerCredentials",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = core.post("bucket", &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        refused(&answer, field);
    }
    let (status, answer) = core
        .post(&format!("bucket/{id}/context/data"), &json!({"title": 5}))
        .await;
    assert_eq!(status, 400, "{answer}");
    refused(&answer, "title");
    let (status, answer) = core
        .post(
            "bucket/00000000-0000-4000-8000-000000000000/context/data",
            &json!({}),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer["errors"].is_array(), "{answer}");
    let (status, _) = core
        .post(&format!("bucket/{id}/context/loud"), &json!({}))
        .await;
    assert_eq!(status, 404);
    for auth in [None, Some(("authorization", "token=wrong".to_owned()))] {
        let (status, answer) = core
            .post_with("bucket", auth, &json!({"callbackConfig": {"type": "none"}}))
            .await;
        assert_eq!(status, 401, "{answer}");
        assert!(
            answer["message"].is_string() && answer["errors"].is_array(),
            "{answer}"
        );
    }

    // A service worker's preflight needs no key.
    let preflight = core
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/context/x/events/clicked", core.base),
        )
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    let allowed = preflight
        .headers()
        .get("access-control-allow-headers")
        .unwrap();
    assert!(allowed.to_str().unwrap().contains("content-type"));

    // CORE's hello.
    let hello: Value = core
        .http
        .get(format!("{}/", core.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(hello["currentVersion"].is_string(), "{hello}");
}

/// Quick callback batches and retries, so the flow runs in seconds.
const FAST: &[(&str, &str)] = &[
    ("WEBPUSH__BUCKET_CALLBACK_DELAY_MS", "300"),
    ("WEBPUSH__POLL_MS", "20"),
    ("WEBHOOKS__POLL_MS", "20"),
];

#[tokio::test]
async fn the_sdk_flow_sends_to_a_thousand_receivers_and_reports_events_to_the_callback() {
    let service = PushService::start().await;
    let callback = Receiver::start().await;
    let cluster = Cluster::start(Options {
        env: FAST,
        ..Options::default()
    })
    .await;
    let core = Core::new(&cluster);
    let key = VapidKey::generate();
    let (status, bucket) = core
        .post(
            "bucket",
            &json!({"providerCredentials": [{"type": "vapid", "payload": {
                        "publicKey": key.public_key(), "privateKey": key.private_key()}}],
                    "callbackConfig": {"type": "http", "payload": {
                        "url": callback.url, "headers": {"x-secret": "keyboard cat"}}}}),
        )
        .await;
    assert_eq!(status, 200, "{bucket}");
    let bucket_id = bucket["bucketId"].as_str().unwrap().to_owned();
    let credential = bucket["credentials"][0]["id"].as_str().unwrap().to_owned();
    let (status, context) = core
        .post(
            &format!("bucket/{bucket_id}/context/data"),
            &json!({"title": "My first push", "body": "Hello world", "icon": "https://x.example/i.png",
                    "behaviour": "https://shop.example/", "badge": 3, "externalData": "mydata:1",
                    "actions": [{"action": "a1", "title": "Open", "behaviour": "https://shop.example/a1"}]}),
        )
        .await;
    assert_eq!(status, 200, "{context}");
    let context_id = context["contextId"].as_str().unwrap().to_owned();

    // 1000 browsers subscribed with the bucket's key; receivers as the SDK builds them.
    let mut subscriptions = Vec::new();
    for chunk in 0..20 {
        let batch =
            futures_util::future::join_all((0..50).map(|_| service.subscribe(key.public_key())))
                .await;
        assert_eq!(batch.len(), 50, "chunk {chunk}");
        subscriptions.extend(batch);
    }
    let receivers: Vec<Value> = subscriptions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"type": "vapid", "foreignId": format!("u{i}"), "endpoint": s.endpoint,
                   "p256dh": s.p256dh, "auth": s.auth, "publicKey": key.public_key(),
                   "expirationTime": null, "credentialId": credential})
        })
        .collect();
    // One browser has unsubscribed: its push service answers 410.
    service.expire(&subscriptions[998]).await;
    let send_path = format!("bucket/{bucket_id}/context/{context_id}/send");
    let mut too_many = receivers.clone();
    too_many.push(receivers[0].clone());
    let (status, answer) = core.post(&send_path, &json!({"receivers": too_many})).await;
    assert_eq!(status, 400, "{answer}");
    refused(&answer, "receivers");

    let (status, sent) = core
        .post(&send_path, &json!({"receivers": receivers}))
        .await;
    assert_eq!(status, 200, "{sent}");
    let results = sent["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    for r in results {
        assert!(is_uuid(&r["messageId"]) && r["errors"] == json!([]), "{r}");
    }
    let ids: Vec<String> = results
        .iter()
        .map(|r| r["messageId"].as_str().unwrap().to_owned())
        .collect();

    // A receiver the bucket cannot send to gets its own errors; the others go.
    let (status, mixed) = core
        .post(
            &send_path,
            &json!({"receivers": [receivers[1],
                                  {"credentialId": "00000000-0000-4000-8000-000000000000", "endpoint": "https://x.example/1",
                                   "p256dh": subscriptions[1].p256dh, "auth": subscriptions[1].auth},
                                  {"credentialId": credential, "endpoint": "https://x.example/2", "p256dh": "AAAA", "auth": "x"}]}),
        )
        .await;
    assert_eq!(status, 200, "{mixed}");
    assert!(is_uuid(&mixed["results"][0]["messageId"]), "{mixed}");
    assert!(mixed["results"][1]["messageId"].is_null());
    assert!(
        mixed["results"][1]["errors"][0]
            .as_str()
            .unwrap()
            .contains("credentialId"),
        "{mixed}"
    );
    assert!(
        mixed["results"][2]["errors"][0]
            .as_str()
            .unwrap()
            .contains("p256dh"),
        "{mixed}"
    );

    // A context too large for one push, or one already expired, is refused before
    // anything is promised.
    let (_, big) = core
        .post(
            &format!("bucket/{bucket_id}/context/data"),
            &json!({"title": "big", "body": "x".repeat(5_000)}),
        )
        .await;
    let big_send = format!(
        "bucket/{bucket_id}/context/{}/send",
        big["contextId"].as_str().unwrap()
    );
    let (status, answer) = core
        .post(&big_send, &json!({"receivers": [receivers[1]]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let error = answer["results"][0]["errors"][0].as_str().unwrap_or("");
    assert!(error.contains("at most 3993"), "{answer}");
    let (_, past) = core
        .post(
            &format!("bucket/{bucket_id}/context/silent"),
            &json!({"expiresAt": "2020-01-01T00:00:00Z"}),
        )
        .await;
    let past_send = format!(
        "bucket/{bucket_id}/context/{}/send",
        past["contextId"].as_str().unwrap()
    );
    let (status, answer) = core
        .post(&past_send, &json!({"receivers": [receivers[1]]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    refused(&answer, "expiresAt");

    // Each push decrypts to what CORE's service worker reads.
    let first = eventually("receiver 0's push", DEADLINE, || async {
        let got = service.notifications(&subscriptions[0]).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    let shown: Value = serde_json::from_str(&first[0]).unwrap();
    assert_eq!(shown["title"], "My first push", "{shown}");
    assert_eq!(shown["body"], "Hello world");
    assert_eq!(shown["actions"][0]["action"], "a1");
    let data = &shown["data"];
    assert_eq!(data["contextId"], context_id.as_str(), "{shown}");
    assert_eq!(data["messageId"], ids[0].as_str());
    assert_eq!(data["foreignId"], "u0");
    assert_eq!(data["actionsMap"]["default"], "https://shop.example/");
    assert_eq!(data["actionsMap"]["a1"], "https://shop.example/a1");
    assert_eq!(
        (data["badge"].as_u64(), &data["externalData"]),
        (Some(3), &json!("mydata:1"))
    );

    // The service worker reports, with no key.
    let events = format!("{}/context/{context_id}/events", core.base);
    for kind in ["delivered", "clicked", "closed"] {
        let response = core
            .http
            .post(format!("{events}/{kind}"))
            .header("content-type", "application/json")
            .body(json!({"contextId": context_id, "messageId": ids[0], "foreignId": "u0", "action": ""}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "{kind}");
        assert_eq!(response.text().await.unwrap(), "");
    }
    let (status, answer) = core
        .post_with(
            &format!("context/{context_id}/events/delivered"),
            None,
            &json!({}),
        )
        .await;
    assert_eq!(status, 400, "an event names its message: {answer}");
    refused(&answer, "messageId");
    let (status, _) = core
        .post_with(
            "context/00000000-0000-4000-8000-000000000000/events/clicked",
            None,
            &json!({"messageId": ids[0]}),
        )
        .await;
    assert_eq!(status, 404, "an unknown context");

    // Every event reaches the callback: 999 sent (plus the mixed send's one), receiver
    // 998 unregistered, and the worker's three for message 0, in batches of at most 1000,
    // with the bucket's header.
    let events = eventually("every event at the callback", DEADLINE * 4, || {
        let events = callback.accepted_events();
        let sent = events
            .iter()
            .filter(|e| e["result"]["kind"] == "sent")
            .count();
        let ours = events
            .iter()
            .filter(|e| e["messageId"] == ids[0].as_str())
            .count();
        let gone = events.iter().any(|e| e["result"]["kind"] == "unregistered");
        async move { (sent >= 1000 && ours >= 4 && gone).then_some(events) }
    })
    .await;
    let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &events {
        assert!(
            e["ts"].as_i64().is_some_and(|t| t > 1_700_000_000_000),
            "ms: {e}"
        );
        assert_eq!(
            e.as_object()
                .unwrap()
                .keys()
                .filter(|k| !["messageId", "foreignId", "result", "ts"].contains(&k.as_str()))
                .count(),
            0,
            "the seed's shape: {e}"
        );
        kinds
            .entry(e["messageId"].as_str().unwrap().to_owned())
            .or_default()
            .push(e["result"]["kind"].as_str().unwrap().to_owned());
    }
    let mut first_kinds = kinds[&ids[0]].clone();
    first_kinds.sort();
    assert_eq!(first_kinds, ["clicked", "close", "delivered", "sent"]);
    let foreign: Vec<&Value> = events
        .iter()
        .filter(|e| e["messageId"] == ids[999].as_str())
        .map(|e| &e["foreignId"])
        .collect();
    assert_eq!(foreign, [&json!("u999")]);
    let unsubscribed: Vec<(&Value, &Value)> = events
        .iter()
        .filter(|e| e["messageId"] == ids[998].as_str())
        .map(|e| (&e["result"]["kind"], &e["foreignId"]))
        .collect();
    assert_eq!(unsubscribed, [(&json!("unregistered"), &json!("u998"))]);
    for request in callback.requests() {
        assert_eq!(request.headers.get("x-secret").unwrap(), "keyboard cat");
        assert!(
            request.signature.is_none(),
            "no Herald signature on a bucket's callback"
        );
        let batch = request.json()["messages"].as_array().unwrap().len();
        assert!((1..=1000).contains(&batch), "{batch} events in one batch");
    }

    // A one-off send: its own context, the same receivers.
    let (status, one) = core
        .post(
            &format!("bucket/{bucket_id}/send"),
            &json!({"receiver": receivers[2], "metadata": {"title": "Just you"}}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    assert!(is_uuid(&one["messageId"]), "{one}");
    let titles = eventually("the one-off push", DEADLINE, || async {
        let got = service.notifications(&subscriptions[2]).await;
        (got.len() >= 2).then_some(got)
    })
    .await;
    let last: Value = serde_json::from_str(titles.last().unwrap()).unwrap();
    assert_eq!(last["title"], "Just you");
    let (status, answer) = core
        .post(
            &format!("bucket/{bucket_id}/send/silent"),
            &json!({"receiver": {"credentialId": credential}}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    refused(&answer, "receiver.endpoint");
}

/// Herald's extension (SPEC §5): a receiver `{user, foreignId?}` is a Herald user of the
/// bucket's app, who gets an addressed message on their socket (or when they connect),
/// its `data` the payload a browser would get; its `sent`, `delivered` and the client's
/// `clicked` (an `event` frame) or `closed` (the events endpoint) reach the bucket's
/// callback with the `foreignId`.
#[tokio::test]
async fn herald_users_get_bucket_sends_on_their_socket_and_the_callback_hears_of_it() {
    let callback = Receiver::start().await;
    let cluster = Cluster::start(Options {
        env: FAST,
        ..Options::default()
    })
    .await;
    let core = Core::new(&cluster);
    let api = V1::new(&cluster.api_url());
    let (status, bucket) = core
        .post(
            "bucket",
            &json!({"providerCredentials": [vapid()],
                    "callbackConfig": {"type": "http", "payload": {"url": callback.url}}}),
        )
        .await;
    assert_eq!(status, 200, "{bucket}");
    let bucket_id = bucket["bucketId"].as_str().unwrap().to_owned();
    let (_, context) = core
        .post(
            &format!("bucket/{bucket_id}/context/data"),
            &json!({"title": "For Herald users", "behaviour": "https://shop.example/"}),
        )
        .await;
    let context_id = context["contextId"].as_str().unwrap().to_owned();
    let token = api.token(json!({"user": "alice"})).await;
    let (mut alice, _) = Socket::native(&cluster.edge_url(0), &token).await;

    let (status, sent) = core
        .post(
            &format!("bucket/{bucket_id}/context/{context_id}/send"),
            &json!({"receivers": [
                {"user": "alice", "foreignId": "fa"},
                {"user": "bob", "foreignId": "fb"},
                {"user": ""},
                {"user": "alice", "endpoint": "https://x.example/1"},
                {"user": "alice", "foreignId": "f".repeat(300)},
                {"user": true}]}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let results = sent["results"].as_array().unwrap();
    let id = |i: usize| results[i]["messageId"].as_str().unwrap().to_owned();
    let (to_alice, to_bob) = (id(0), id(1));
    for (i, field) in [(2, "user"), (3, "endpoint"), (4, "foreignId"), (5, "user")] {
        let error = results[i]["errors"][0].as_str().unwrap_or("");
        assert!(
            results[i]["messageId"].is_null()
                && error.starts_with(&format!("receivers[{i}].{field}:")),
            "{}",
            results[i]
        );
    }

    // Alice is online: the frame's data is what a service worker would read.
    let frame = alice.next_event(DEADLINE).await;
    assert_eq!(frame["id"], to_alice.as_str(), "{frame}");
    assert_eq!(frame["data"]["title"], "For Herald users");
    let data = &frame["data"]["data"];
    assert_eq!(
        (&data["messageId"], &data["foreignId"], &data["contextId"]),
        (&json!(to_alice), &json!("fa"), &json!(context_id.as_str()))
    );
    assert_eq!(data["actionsMap"]["default"], "https://shop.example/");
    alice
        .send_json(&json!({"type": "event", "id": to_alice, "kind": "clicked"}))
        .await;
    // Bob was offline: his waits, PENDING, and comes when he connects.
    let (_, waiting) = api.call("GET", &format!("messages/{to_bob}"), None).await;
    assert_eq!(waiting["status"], "PENDING", "{waiting}");
    let token = api.token(json!({"user": "bob"})).await;
    let (mut bob, _) = Socket::native(&cluster.edge_url(0), &token).await;
    assert_eq!(bob.next_event(DEADLINE).await["id"], to_bob.as_str());
    let (status, _) = core
        .post_with(
            &format!("context/{context_id}/events/closed"),
            None,
            &json!({"messageId": to_bob}),
        )
        .await;
    assert_eq!(
        status, 201,
        "the events endpoint knows a Herald user's message"
    );

    let events = eventually("the callback hears of both", DEADLINE * 2, || {
        let events = callback.accepted_events();
        async move { (events.len() >= 6).then_some(events) }
    })
    .await;
    let mut seen: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
            let who = if e["messageId"] == to_alice.as_str() {
                "alice"
            } else if e["messageId"] == to_bob.as_str() {
                "bob"
            } else {
                "?"
            };
            (
                who.to_owned(),
                text(&e["result"]["kind"]),
                text(&e["foreignId"]),
            )
        })
        .collect();
    seen.sort();
    let expected: Vec<(String, String, String)> = [
        ("alice", "clicked", "fa"),
        ("alice", "delivered", "fa"),
        ("alice", "sent", "fa"),
        ("bob", "close", "fb"),
        ("bob", "delivered", "fb"),
        ("bob", "sent", "fb"),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(seen, expected);
    let (_, delivered) = api.call("GET", &format!("messages/{to_alice}"), None).await;
    assert_eq!(
        (&delivered["status"], &delivered["foreignId"]),
        (&json!("DELIVERED"), &json!("fa"))
    );
}

#[tokio::test]
async fn a_bucket_past_its_lifetime_answers_404() {
    let cluster = Cluster::start(Options {
        env: &[("WEBPUSH__BUCKET_LIFETIME_MS", "300")],
        ..Options::default()
    })
    .await;
    let core = Core::new(&cluster);
    let (status, bucket) = core
        .post(
            "bucket",
            &json!({"providerCredentials": [vapid()], "callbackConfig": {"type": "none"}}),
        )
        .await;
    assert_eq!(status, 200, "{bucket}");
    let id = bucket["bucketId"].as_str().unwrap().to_owned();
    let answer = eventually("the bucket to expire", DEADLINE, || async {
        let (status, answer) = core
            .post(&format!("bucket/{id}/context/data"), &json!({"title": "t"}))
            .await;
        (status == 404).then_some(answer)
    })
    .await;
    assert!(
        answer["message"].as_str().unwrap().contains("expired"),
        "{answer}"
    );
}
