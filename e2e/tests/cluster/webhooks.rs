//! SPEC §4 webhooks over real binaries and a real local HTTP receiver
//! (`e2e::receiver`): the configuration endpoints and their 400s; every event kind
//! (`connected`, `sent`, `delivered`, `clicked`, `close`, `cancelled`, `expired`,
//! `disconnected`) arriving in PushPushGo's batch shape with `foreignId`, signed with
//! `X-Herald-Signature`, in batches of at most `maxBatch`; a failing receiver (500, closed
//! port) getting the same event ids again after backoff; a dispatcher SIGKILLed mid-batch
//! losing nothing; two API processes never sending one app's batches at once; and
//! `https://` receivers verified against `webhooks.ca_file` (a test CA and a TLS front).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::receiver::{Receiver, verify};
use e2e::tls::{TestCa, TlsFront};
use e2e::{Cluster, DEADLINE, Options, Ports, Proc, Socket, V1, cluster_env, eventually};
use serde_json::{Value, json};

const SECRET: &str = "dev-secret-change-me";
const HOOK_SECRET: &str = "whsec-test-0123456789";

/// Fast retries and short leases, so failure paths run in seconds.
const FAST: &[(&str, &str)] = &[
    ("WEBHOOKS__POLL_MS", "20"),
    ("WEBHOOKS__BACKOFF_MIN_MS", "200"),
    ("WEBHOOKS__BACKOFF_MAX_MS", "400"),
    ("WEBHOOKS__TIMEOUT_MS", "1000"),
    ("WEBHOOKS__LEASE_MS", "2000"),
];

/// A key of the dev app without the webhooks scopes.
const NO_WEBHOOK_SCOPE: &str = r#"
[[apps.keys]]
name = "sender"
secret = "sender-secret-0123456789"
scopes = ["messages:*", "tokens:create"]
"#;

fn options() -> Options {
    Options {
        env: FAST,
        config: NO_WEBHOOK_SCOPE,
        ..Options::default()
    }
}

fn v1(cluster: &Cluster) -> V1 {
    V1::with_secret(&cluster.api_url(), SECRET)
}

async fn put_webhook(api: &V1, body: Value) -> Value {
    let (status, answer) = api.call("PUT", "webhook", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Sends `body` to `/api/v1/messages`; the ids of the messages created.
async fn send(api: &V1, body: Value) -> Vec<String> {
    let (status, answer) = api.call("POST", "messages", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the receiver accepted events matching `wanted`; all accepted events.
async fn accepted_until(
    receiver: &Receiver,
    what: &str,
    wanted: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    eventually(what, DEADLINE, || {
        let events = receiver.accepted_events();
        let done = wanted(&events);
        async move { done.then_some(events) }
    })
    .await
}

fn kinds_of(events: &[Value], message: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["messageId"] == message)
        .map(|e| e["result"]["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_event_kind_arrives_signed_batched_and_in_pushpushgo_shape() {
    let cluster = Cluster::start(Options {
        monitor: true,
        ..options()
    })
    .await;
    let api = v1(&cluster);
    let receiver = Receiver::start().await;
    let hook = put_webhook(
        &api,
        json!({"url": receiver.url, "secret": HOOK_SECRET, "maxBatch": 3, "maxDelayMs": 100}),
    )
    .await;
    assert_eq!(hook["events"].as_array().unwrap().len(), 8, "{hook}");
    assert_eq!(hook["maxBatch"], 3);
    assert!(hook.get("secret").is_none(), "the secret is write-only");

    // alice online, bob offline.
    let token = api.token(json!({"user": "alice"})).await;
    let (mut alice, _) = Socket::native(&cluster.edge_url(0), &token).await;
    let ids = send(
        &api,
        json!({"recipients": [{"id": "alice", "foreignId": "f-alice"},
                              {"id": "bob", "foreignId": "f-bob"}],
               "message": "hello"}),
    )
    .await;
    let (to_alice, to_bob) = (ids[0].clone(), ids[1].clone());
    let frame = alice.next_event(DEADLINE).await;
    assert_eq!(frame["id"], to_alice.as_str(), "{frame}");
    alice
        .send_text(&json!({"type": "event", "id": to_alice, "kind": "clicked"}).to_string())
        .await;
    alice
        .send_text(&json!({"type": "event", "id": to_alice, "kind": "close"}).to_string())
        .await;
    let (status, _) = api
        .call("POST", &format!("messages/{to_bob}/cancel"), None)
        .await;
    assert_eq!(status, 200);
    let expiring = send(
        &api,
        json!({"recipients": ["carol"], "data": {"n": 1}, "ttl": 1}),
    )
    .await;
    drop(alice);

    let events = accepted_until(&receiver, "every kind of event", |events| {
        let kinds: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| e["result"]["kind"].as_str())
            .collect();
        kinds.len() == 8
    })
    .await;
    assert_eq!(
        kinds_of(&events, &to_alice),
        vec!["sent", "delivered", "clicked", "close"],
        "in the order they happened"
    );
    assert_eq!(kinds_of(&events, &to_bob), vec!["sent", "cancelled"]);
    assert_eq!(kinds_of(&events, &expiring[0]), vec!["sent", "expired"]);
    for e in events
        .iter()
        .filter(|e| e["messageId"] == to_alice.as_str())
    {
        assert_eq!(e["foreignId"], "f-alice", "{e}");
        assert_eq!(e["recipient"], "alice", "{e}");
    }
    let connections: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["messageId"].is_null())
        .map(|e| {
            (
                e["result"]["kind"].as_str().unwrap(),
                e["recipient"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        connections,
        vec![("connected", "alice"), ("disconnected", "alice")]
    );

    // The shape, the signature, the batching, and unique event ids.
    let now = common::clock::now_us() / 1_000_000;
    let mut seen = BTreeSet::new();
    for request in receiver.requests() {
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        let header = request.signature.clone().expect("X-Herald-Signature");
        let t = verify(HOOK_SECRET, &header, &request.body).expect("a valid signature");
        assert!((now - t).abs() < 300, "t={t} is now");
        let body = request.json();
        let messages = body["messages"].as_array().unwrap();
        assert!(
            (1..=3).contains(&messages.len()),
            "at most maxBatch: {body}"
        );
        for e in messages {
            let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["id", "messageId", "foreignId", "recipient", "result", "ts"]),
                "{e}"
            );
            assert!(e["ts"].as_i64().unwrap() > 1_600_000_000_000, "ms: {e}");
            assert!(
                seen.insert(e["id"].as_str().unwrap().to_owned()),
                "once: {e}"
            );
        }
    }
    let (status, hook) = api.call("GET", "webhook", None).await;
    assert_eq!(status, 200);
    assert_eq!(hook["status"]["failures"], 0, "{hook}");
    assert!(hook["status"]["lastSuccessAt"].is_string(), "{hook}");
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_events_again_after_backoff() {
    let cluster = Cluster::start(options()).await;
    let api = v1(&cluster);

    // A closed port: accepted, and the failure is recorded and retried.
    let closed = format!("http://127.0.0.1:{}/hook", Ports::free(0).api);
    put_webhook(
        &api,
        json!({"url": closed, "secret": HOOK_SECRET, "events": ["sent"], "maxDelayMs": 0}),
    )
    .await;
    let first = send(&api, json!({"recipients": ["dan"], "message": "1"})).await;
    let failing = eventually("a recorded failure", DEADLINE, || async {
        let (_, hook) = api.call("GET", "webhook", None).await;
        (hook["status"]["failures"].as_u64() >= Some(2)).then_some(hook)
    })
    .await;
    assert_eq!(failing["status"]["pending"], 1, "{failing}");
    assert!(failing["status"]["lastError"].is_string(), "{failing}");
    assert!(failing["status"]["nextAttemptAt"].is_string(), "{failing}");

    // A receiver that fails twice with 500, then accepts.
    let receiver = Receiver::start().await;
    receiver.fail_next(2);
    put_webhook(
        &api,
        json!({"url": receiver.url, "secret": HOOK_SECRET, "events": ["sent"], "maxDelayMs": 0}),
    )
    .await;
    let events = accepted_until(&receiver, "the event after two failures", |e| !e.is_empty()).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["messageId"], first[0].as_str());
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3, "two failures, one success");
    let bodies: BTreeSet<String> = requests
        .iter()
        .map(|r| r.json()["messages"][0]["id"].to_string())
        .collect();
    assert_eq!(bodies.len(), 1, "every attempt carries the same event id");
    let (_, hook) = api.call("GET", "webhook", None).await;
    assert_eq!(hook["status"]["failures"], 0, "{hook}");
    assert_eq!(hook["status"]["lastError"], "HTTP 500", "{hook}");
    assert_eq!(hook["status"]["pending"], 0, "{hook}");
}

#[tokio::test]
async fn a_dispatcher_killed_mid_batch_loses_nothing() {
    let mut cluster = Cluster::start(options()).await;
    let api = v1(&cluster);
    let receiver = Receiver::start().await;
    receiver.hold_next(1);
    put_webhook(
        &api,
        json!({"url": receiver.url, "secret": HOOK_SECRET, "events": ["sent"], "maxBatch": 5, "maxDelayMs": 0}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.extend(
            send(
                &api,
                json!({"recipients": [format!("u{i}")], "message": "x"}),
            )
            .await,
        );
    }
    // The dispatcher is mid-request; kill it there.
    eventually("the held request", DEADLINE, || {
        let n = receiver.requests().len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let held: Vec<Value> = receiver.requests()[0].json()["messages"]
        .as_array()
        .unwrap()
        .clone();
    cluster.api.kill();
    cluster.api.restart();
    cluster.wait_healthy().await;

    let events = accepted_until(&receiver, "every event after the kill", |e| {
        let got: BTreeSet<&str> = e.iter().filter_map(|e| e["messageId"].as_str()).collect();
        ids.iter().all(|id| got.contains(id.as_str()))
    })
    .await;
    let held_ids: Vec<&Value> = held.iter().map(|e| &e["id"]).collect();
    let resent: Vec<&Value> = events.iter().take(held.len()).map(|e| &e["id"]).collect();
    assert_eq!(resent, held_ids, "the same batch, the same event ids");
}

#[tokio::test]
async fn two_dispatchers_never_send_one_apps_batches_at_once() {
    let cluster = Cluster::start(options()).await;
    let api = v1(&cluster);
    // A second API process on the same store, dispatching too.
    let ports = Ports::free(0);
    let mut env: BTreeMap<String, String> = cluster_env(cluster.dir.path(), &cluster.ports);
    for (k, v) in FAST {
        env.insert(format!("HERALD__{k}"), (*v).to_owned());
    }
    env.insert(
        "HERALD__API__LISTEN".into(),
        format!("127.0.0.1:{}", ports.api),
    );
    let second = Proc::start_configured(
        "api2",
        "api",
        cluster.dir.path().join("herald.toml"),
        env,
        vec![],
        cluster.dir.path().join("api2.log"),
    );
    e2e::wait_health(&format!("http://127.0.0.1:{}/health", ports.api)).await;

    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(50));
    put_webhook(
        &api,
        json!({"url": receiver.url, "secret": HOOK_SECRET, "events": ["sent"], "maxBatch": 4, "maxDelayMs": 0}),
    )
    .await;
    let recipients: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    let ids = send(&api, json!({"recipients": recipients, "message": "x"})).await;
    let events = accepted_until(&receiver, "all 40 events", |e| e.len() >= 40).await;
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    let wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(got, wanted, "each once, in order");
    assert_eq!(receiver.max_in_flight(), 1, "one dispatcher at a time");
    drop(second);
}

#[tokio::test]
async fn bad_configurations_and_client_events_are_refused_naming_the_field() {
    let cluster = Cluster::start(options()).await;
    let api = v1(&cluster);
    let (status, body) = api.call("GET", "webhook", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api.call("DELETE", "webhook", None).await;
    assert_eq!(status, 404);
    let good = json!({"url": "http://127.0.0.1:9/hook", "secret": "s"});
    for (patch, field) in [
        (json!({"url": "ftp://example.com/"}), "url"),
        (json!({"url": "https://user:pw@example.com/"}), "url"),
        (json!({"url": "https://"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": null}), "url"),
        (json!({"secret": ""}), "secret"),
        (json!({"secret": 5}), "secret"),
        (json!({"events": []}), "events"),
        (json!({"events": ["delivered", "opened"]}), "events[1]"),
        (json!({"events": ["sent", "sent"]}), "events[1]"),
        (json!({"events": "sent"}), "events"),
        (json!({"maxBatch": 0}), "maxBatch"),
        (json!({"maxBatch": 1001}), "maxBatch"),
        (json!({"maxBatch": "abc"}), "maxBatch"),
        (json!({"maxDelayMs": 60001}), "maxDelayMs"),
        (json!({"maxDelayMs": -1}), "maxDelayMs"),
    ] {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = api.call("PUT", "webhook", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{body} → {answer}"
        );
    }
    let (status, _) = api.call("GET", "webhook", None).await;
    assert_eq!(status, 404, "nothing was stored");

    let sender = V1::with_secret(&cluster.api_url(), "sender-secret-0123456789");
    let (status, _) = sender.call("PUT", "webhook", Some(good.clone())).await;
    assert_eq!(status, 403);
    let (status, _) = sender.call("GET", "webhook", None).await;
    assert_eq!(status, 403);

    put_webhook(&api, good).await;
    let (status, _) = api.call("DELETE", "webhook", None).await;
    assert_eq!(status, 204);
    let (status, _) = api.call("GET", "webhook", None).await;
    assert_eq!(status, 404);

    // Client events: only clicked/close, only on the user's own messages.
    let ids = send(
        &api,
        json!({"recipients": ["erin", "frank"], "message": "m"}),
    )
    .await;
    let token = api.token(json!({"user": "erin"})).await;
    let (mut erin, _) = Socket::native(&cluster.edge_url(0), &token).await;
    let delivered = erin.next_event(DEADLINE).await;
    assert_eq!(delivered["id"], ids[0].as_str());
    for (frame, code) in [
        (
            json!({"type": "event", "id": ids[0], "kind": "opened"}),
            "bad_request",
        ),
        (
            json!({"type": "event", "id": ids[1], "kind": "clicked"}),
            "not_found",
        ),
        (
            json!({"type": "event", "id": "nope", "kind": "clicked"}),
            "not_found",
        ),
        (json!({"type": "event", "id": ids[0]}), "bad_request"),
    ] {
        erin.send_text(&frame.to_string()).await;
        let error = erin.next_event(DEADLINE).await;
        assert_eq!(error["type"], "error", "{frame} → {error}");
        assert_eq!(error["code"], code, "{frame} → {error}");
    }
    // A valid one is accepted silently.
    erin.send_text(&json!({"type": "event", "id": ids[0], "kind": "clicked"}).to_string())
        .await;
    erin.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(erin.next_event(DEADLINE).await["type"], "pong");
}

/// `'static` for the cluster's environment; a test leaks a few bytes once.
fn leak(value: String) -> &'static str {
    Box::leak(value.into_boxed_str())
}

#[tokio::test]
async fn https_receivers_are_verified_against_the_ca_file_and_get_every_event() {
    let ca = TestCa::new("Herald test CA");
    let stranger = TestCa::new("A CA nobody trusts");
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut env = FAST.to_vec();
    env.push(("WEBHOOKS__CA_FILE", leak(ca_file.display().to_string())));
    let cluster = Cluster::start(Options {
        env: Box::leak(env.into_boxed_slice()),
        ..options()
    })
    .await;
    let api = v1(&cluster);
    let receiver = Receiver::start().await;
    let backend = receiver.authority().to_owned();
    let trusted = TlsFront::start(ca.issue(&["127.0.0.1", "localhost"]), backend.clone()).await;
    let untrusted = TlsFront::start(stranger.issue(&["127.0.0.1"]), backend.clone()).await;
    let misnamed = TlsFront::start(ca.issue(&["hooks.example"]), backend).await;
    let hook = |front: &TlsFront| {
        json!({"url": format!("https://127.0.0.1:{}/hook", front.addr.port()),
               "secret": HOOK_SECRET, "events": ["sent"], "maxDelayMs": 0})
    };

    // A certificate from an unknown CA, then one for another name: failed attempts with
    // the reason recorded, nothing reaches the receiver, the event stays pending.
    put_webhook(&api, hook(&untrusted)).await;
    send(&api, json!({"recipients": ["erin"], "message": "over TLS"})).await;
    for (front, reason) in [
        (&untrusted, "UnknownIssuer"),
        (&misnamed, "not valid for name"),
    ] {
        put_webhook(&api, hook(front)).await;
        let failing = eventually(reason, DEADLINE, || async {
            let (_, hook) = api.call("GET", "webhook", None).await;
            let error = hook["status"]["lastError"].as_str().unwrap_or_default();
            error.contains(reason).then_some(hook)
        })
        .await;
        assert_eq!(failing["status"]["pending"], 1, "{failing}");
    }
    assert!(
        receiver.requests().is_empty(),
        "no request passed a bad certificate"
    );

    // The CA file's certificate for the URL's address: the pending event and a new one
    // arrive, signed as over HTTP.
    put_webhook(&api, hook(&trusted)).await;
    send(&api, json!({"recipients": ["frank"], "message": "again"})).await;
    let events = accepted_until(&receiver, "both events over https", |e| e.len() >= 2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    for request in receiver.requests() {
        let signature = request.signature.as_deref().expect("a signature");
        verify(HOOK_SECRET, signature, &request.body).unwrap_or_else(|e| panic!("{e}"));
    }
    eventually("the webhook settled", DEADLINE, || async {
        let (_, hook) = api.call("GET", "webhook", None).await;
        let status = &hook["status"];
        (status["pending"] == 0 && status["failures"] == 0 && status["lastSuccessAt"].is_string())
            .then_some(())
    })
    .await;
}

/// Socket events wait in the edge for its next flush (`websockets.presence_flush_ms`): an
/// edge stopped with SIGTERM records what its drain's closes produced before it exits, so
/// `disconnected` still reaches the webhook for every socket it closed.
#[tokio::test]
async fn an_edge_drained_by_sigterm_still_reports_its_sockets_disconnected() {
    let mut cluster = Cluster::start(Options {
        env: &[
            ("WEBHOOKS__POLL_MS", "20"),
            // A flush that would not come before the edge exits: only the drain's does.
            ("WEBSOCKETS__PRESENCE_FLUSH_MS", "600000"),
        ],
        ..options()
    })
    .await;
    let api = v1(&cluster);
    let receiver = Receiver::start().await;
    put_webhook(
        &api,
        json!({"url": receiver.url, "secret": HOOK_SECRET,
               "events": ["connected", "disconnected"], "maxDelayMs": 0}),
    )
    .await;
    let users = ["drain-a", "drain-b", "drain-c"];
    let mut sockets = Vec::new();
    for user in users {
        let token = api.token(json!({"user": user})).await;
        sockets.push(Socket::native(&cluster.edge_url(0), &token).await.0);
    }
    cluster.edges[0].signal(libc::SIGTERM);
    let status = cluster.edges[0].wait_exit(DEADLINE).await;
    assert!(status.success(), "the edge drains and exits: {status}");
    let events = accepted_until(&receiver, "both events of every socket", |events| {
        users.iter().all(|user| {
            ["connected", "disconnected"].iter().all(|kind| {
                events
                    .iter()
                    .any(|e| e["recipient"] == *user && e["result"]["kind"] == *kind)
            })
        })
    })
    .await;
    assert_eq!(events.len(), 2 * users.len(), "each once: {events:?}");
}
