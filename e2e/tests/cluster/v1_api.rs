//! `/api/v1` through real binaries (SPEC §4): connection tokens and the handshake checks
//! that guard them (forged, expired, `alg: none`, unknown `kid`, revoked, a token minted
//! outside Herald with a JWT library, Origin and source-address binding), scopes and
//! rate limits, channels with history and idempotent publishes, presence, force logout
//! across two edges, and every error naming its field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{Cluster, DEADLINE, DEV_SECRET, Ending, Options, Socket, V1, eventually, refused};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A second key of the dev app that may only read channels.
const READER: &str = r#"
[[apps.keys]]
name = "reader"
secret = "reader-secret-0123456789"
scopes = ["channels:read"]
"#;

fn error_of(answer: &(u16, Value)) -> (u16, &str, Option<&str>) {
    let (status, body) = answer;
    (
        *status,
        body["error"]["code"].as_str().unwrap_or(""),
        body["error"]["details"]["field"].as_str(),
    )
}

fn now_secs() -> f64 {
    common::clock::now_us() as f64 / 1e6
}

/// A token signed outside Herald, with the jsonwebtoken crate, as an application would.
fn external_token(claims: &Value, kid: &str, secret: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[tokio::test]
async fn tokens_are_minted_checked_and_refused_before_the_upgrade() {
    let cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    let (status, minted) = v1
        .call(
            "POST",
            "tokens",
            Some(json!({"user": "alice", "channels": ["news"]})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let uri = minted["connectionUri"].as_str().unwrap();
    assert!(
        uri.starts_with(&format!("{}/ws?token=", cluster.edge_url(0))),
        "{uri}"
    );
    assert!(minted["expiresAt"].as_str().unwrap().ends_with('Z'));
    let mut socket = Socket::connect(uri).await;
    let welcome = socket.next_json(DEADLINE).await;
    assert_eq!(
        (welcome["type"].as_str(), welcome["user"].as_str()),
        (Some("welcome"), Some("alice"))
    );
    assert_eq!(welcome["channels"], json!(["news"]));
    assert_eq!(welcome["heartbeat"], 25);

    let edge = cluster.edge_url(0);
    let token = minted["token"].as_str().unwrap();
    let mut forged = token.to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        refused(&format!("{edge}/ws?token={forged}")).await,
        401,
        "forged"
    );
    assert_eq!(refused(&format!("{edge}/ws")).await, 401, "no token");
    assert_eq!(refused(&format!("{edge}/ws?token=garbage")).await, 401);

    let claims = |exp: f64| json!({"sub": "bob", "app": "dev", "exp": exp, "iat": now_secs()});
    let external = external_token(&claims(now_secs() + 60.0), "admin", DEV_SECRET);
    let (mut outside, welcome) = Socket::native(&edge, &external).await;
    assert_eq!(welcome["user"], "bob", "a token minted with a JWT library");
    outside.send_json(&json!({"type": "ping"})).await;
    assert_eq!(outside.next_json(DEADLINE).await["type"], "pong");

    let expired = external_token(&claims(now_secs() - 3600.0), "admin", DEV_SECRET);
    assert_eq!(
        refused(&format!("{edge}/ws?token={expired}")).await,
        401,
        "expired"
    );
    let unknown_kid = external_token(&claims(now_secs() + 60.0), "nobody", DEV_SECRET);
    assert_eq!(
        refused(&format!("{edge}/ws?token={unknown_kid}")).await,
        401,
        "kid"
    );
    let wrong_key = external_token(&claims(now_secs() + 60.0), "admin", "not-the-secret-at-all");
    assert_eq!(refused(&format!("{edge}/ws?token={wrong_key}")).await, 401);
    let payload = external.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT","kid":"admin"}
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiYWRtaW4ifQ.{payload}.");
    assert_eq!(
        refused(&format!("{edge}/ws?token={unsigned}")).await,
        401,
        "alg none"
    );
    let no_exp = external_token(&json!({"sub": "bob", "app": "dev"}), "admin", DEV_SECRET);
    assert_eq!(
        refused(&format!("{edge}/ws?token={no_exp}")).await,
        401,
        "exp required"
    );
    // The Socrate endpoint speaks the native protocol too.
    let (_, welcome) = {
        let mut socket = Socket::connect(&format!("{edge}/?token={external}")).await;
        let welcome = socket.next_json(DEADLINE).await;
        (socket, welcome)
    };
    assert_eq!(welcome["type"], "welcome");
}

#[tokio::test]
async fn token_requests_and_keys_are_checked() {
    let cluster = Cluster::start(Options {
        config: READER,
        ..Options::default()
    })
    .await;
    let v1 = V1::new(&cluster.api_url());
    for (body, field) in [
        (json!({}), "user"),
        (json!({"user": ""}), "user"),
        (json!({"user": 5}), "user"),
        (
            json!({"user": "a", "channels": ["ok", "not ok"]}),
            "channels[1]",
        ),
        (json!({"user": "a", "ttl": 0}), "ttl"),
        (json!({"user": "a", "ttl": 99_999_999}), "ttl"),
        (json!({"user": "a", "sourceIp": "nowhere"}), "sourceIp"),
        (json!({"user": "a", "publish": "yes"}), "publish"),
    ] {
        let answer = v1.call("POST", "tokens", Some(body.clone())).await;
        assert_eq!(
            error_of(&answer),
            (400, "bad_request", Some(field)),
            "{body}"
        );
    }
    let not_json = v1
        .http
        .post(format!("{}/api/v1/tokens", v1.base))
        .bearer_auth(DEV_SECRET)
        .body("{")
        .send()
        .await
        .unwrap();
    let answer = e2e::Moz::answer(not_json).await;
    assert_eq!(error_of(&answer), (400, "bad_request", Some("body")));

    let nobody = V1::with_secret(&cluster.api_url(), "not-a-key-of-anyone");
    let answer = nobody
        .call("POST", "tokens", Some(json!({"user": "a"})))
        .await;
    assert_eq!(error_of(&answer), (401, "unauthorized", None));
    let reader = V1::with_secret(&cluster.api_url(), "reader-secret-0123456789");
    let answer = reader
        .call("POST", "tokens", Some(json!({"user": "a"})))
        .await;
    assert_eq!(error_of(&answer), (403, "forbidden", None));
    let answer = reader
        .call("POST", "channels/news/messages", Some(json!({"data": 1})))
        .await;
    assert_eq!(error_of(&answer), (403, "forbidden", None));
    assert_eq!(reader.call("GET", "channels/news", None).await.0, 200);
    // Socrate's and VPush's header forms.
    for (name, value) in [("x-api-key", DEV_SECRET), ("authorization", DEV_SECRET)] {
        let status = v1
            .http
            .get(format!("{}/api/v1/users", v1.base))
            .header(name, value)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{name}");
    }
    let answer = v1.call("GET", "nope", None).await;
    assert_eq!(error_of(&answer), (404, "not_found", None));
    let answer = v1.call("PATCH", "channels/news", None).await;
    assert_eq!(answer.0, 405);
}

#[tokio::test]
async fn origin_and_source_address_bind_a_token() {
    let cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    let edge = cluster.edge_url(0);
    let bound = v1
        .token(json!({"user": "alice", "origin": "https://app.example"}))
        .await;
    let with_origin = |origin: Option<&'static str>| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("{edge}/ws?token={bound}")
            .into_client_request()
            .unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        request
    };
    let (_ok, _) = tokio_tungstenite::connect_async(with_origin(Some("https://app.example")))
        .await
        .expect("the bound Origin is let in");
    assert_eq!(
        e2e::refused_request(with_origin(Some("https://evil.example"))).await,
        403
    );
    assert_eq!(e2e::refused_request(with_origin(None)).await, 403);

    let here = v1
        .token(json!({"user": "a", "sourceIp": "127.0.0.1"}))
        .await;
    Socket::native(&edge, &here).await;
    let elsewhere = v1.token(json!({"user": "a", "sourceIp": "10.9.8.7"})).await;
    assert_eq!(refused(&format!("{edge}/ws?token={elsewhere}")).await, 403);
}

#[tokio::test]
async fn channels_keep_history_and_publish_idempotently() {
    let cluster = Cluster::start(Options::default()).await;
    let v1 = V1::new(&cluster.api_url());
    let (status, channel) = v1.call("GET", "channels/news", None).await;
    assert_eq!(
        (status, &channel),
        (
            200,
            &json!({"name": "news", "history": null, "subscribers": 0})
        )
    );
    let (status, channel) = v1
        .call(
            "PUT",
            "channels/news",
            Some(json!({"history": {"size": 3}})),
        )
        .await;
    assert_eq!(status, 200, "{channel}");
    assert_eq!(channel["history"], json!({"size": 3}));
    for (path, body, field) in [
        ("channels/news", json!({}), "history"),
        (
            "channels/news",
            json!({"history": {"size": 0}}),
            "history.size",
        ),
        (
            "channels/news",
            json!({"history": {"ttl": -5}}),
            "history.ttl",
        ),
        ("channels/news", json!({"history": 3}), "history"),
        ("channels/bad%20name", json!({"history": null}), "channel"),
    ] {
        let answer = v1.call("PUT", path, Some(body.clone())).await;
        assert_eq!(
            error_of(&answer),
            (400, "bad_request", Some(field)),
            "{path} {body}"
        );
    }

    let token = v1
        .token(json!({"user": "alice", "channels": ["news"]}))
        .await;
    let (mut socket, _) = Socket::native(&cluster.edge_url(0), &token).await;
    let mut seqs = Vec::new();
    for i in 0..5 {
        let (status, published) = v1
            .call(
                "POST",
                "channels/news/messages",
                Some(json!({"data": {"n": i}})),
            )
            .await;
        assert_eq!(status, 201, "{published}");
        assert_eq!(published["channel"], "news");
        seqs.push(published["seq"].as_u64().unwrap());
        let frame = socket.next_event(DEADLINE).await;
        assert_eq!(frame["type"], "message");
        assert_eq!(
            (frame["data"]["n"].as_u64(), frame["seq"].as_u64()),
            (Some(i), seqs.last().copied())
        );
        assert_eq!(frame["id"], published["id"]);
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let (status, page) = v1.call("GET", "channels/news/messages?since=0", None).await;
    assert_eq!(status, 200);
    let kept: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, [3, 4, 5], "the last 3");
    assert_eq!(page["nextSince"], 5);
    let (_, page) = v1
        .call("GET", "channels/news/messages?since=4&limit=1", None)
        .await;
    assert_eq!(page["items"][0]["data"], json!({"n": 4}));
    for (query, field) in [
        ("since=-1", "since"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
    ] {
        let answer = v1
            .call("GET", &format!("channels/news/messages?{query}"), None)
            .await;
        assert_eq!(
            error_of(&answer),
            (400, "bad_request", Some(field)),
            "{query}"
        );
    }
    let answer = v1
        .call(
            "POST",
            "channels/news/messages",
            Some(json!({"replaceId": "x"})),
        )
        .await;
    assert_eq!(error_of(&answer), (400, "bad_request", Some("data")));
    let answer = v1
        .call(
            "POST",
            "channels/news/messages",
            Some(json!({"data": 1, "ttl": 0})),
        )
        .await;
    assert_eq!(error_of(&answer), (400, "bad_request", Some("ttl")));

    // The same idempotency key twice: the first result, delivered once.
    let body = json!({"data": "once", "idempotencyKey": "order-42"});
    let first = v1
        .call("POST", "channels/news/messages", Some(body.clone()))
        .await;
    let response = v1
        .http
        .post(format!("{}/api/v1/channels/news/messages", v1.base))
        .bearer_auth(DEV_SECRET)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let again = e2e::Moz::answer(response).await;
    assert_eq!((first.0, again.0), (201, 201));
    assert_eq!(first.1, again.1, "the first result");
    assert_eq!(socket.next_event(DEADLINE).await["data"], "once");
    v1.call(
        "POST",
        "channels/news/messages",
        Some(json!({"data": "after"})),
    )
    .await;
    assert_eq!(
        socket.next_event(DEADLINE).await["data"],
        "after",
        "not `once` again"
    );

    let huge = json!({"data": "x".repeat(70 * 1024)});
    let answer = v1.call("POST", "channels/news/messages", Some(huge)).await;
    assert_eq!(error_of(&answer), (413, "payload_too_large", None));
}

#[tokio::test]
async fn a_channel_fans_out_to_subscribers_on_two_edges_once_each() {
    let cluster = Cluster::start(Options {
        edges: 2,
        ..Options::default()
    })
    .await;
    let v1 = V1::new(&cluster.api_url());
    let mut sockets = Vec::new();
    for (i, user) in ["a", "b", "c", "d"].iter().enumerate() {
        let token = v1
            .token(json!({"user": user, "channels": ["room:*"]}))
            .await;
        let (mut socket, _) = Socket::native(&cluster.edge_url(i % 2), &token).await;
        socket
            .send_json(&json!({"type": "subscribe", "channel": "room:1"}))
            .await;
        let subscribed = socket.next_json(DEADLINE).await;
        assert_eq!(
            subscribed,
            json!({"type": "subscribed", "channel": "room:1"})
        );
        sockets.push(socket);
    }
    let (_, published) = v1
        .call(
            "POST",
            "channels/room:1/messages",
            Some(json!({"data": "hi all"})),
        )
        .await;
    for socket in &mut sockets {
        let frame = socket.next_event(DEADLINE).await;
        assert_eq!(
            (frame["id"].clone(), frame["data"].clone()),
            (published["id"].clone(), json!("hi all"))
        );
        assert!(
            frame.get("seq").is_none(),
            "an ephemeral channel has no seq"
        );
        assert!(
            socket
                .try_next_json(Duration::from_millis(300))
                .await
                .is_none(),
            "exactly once"
        );
    }
    let (_, users) = eventually("channel users on both edges", DEADLINE, || {
        let v1 = v1.clone();
        async move {
            let answer = v1.call("GET", "channels/room:1/users", None).await;
            (answer.1["users"].as_array()?.len() == 4).then_some(answer)
        }
    })
    .await;
    assert_eq!(users["users"], json!(["a", "b", "c", "d"]));
}

#[tokio::test]
async fn presence_follows_sockets_cluster_wide() {
    let cluster = Cluster::start(Options {
        edges: 2,
        ..Options::default()
    })
    .await;
    let v1 = V1::new(&cluster.api_url());
    let count = |expected: u64| {
        let v1 = v1.clone();
        async move {
            let (_, body) = v1.call("GET", "users", None).await;
            (body["count"] == expected).then_some(())
        }
    };
    eventually("nobody online", DEADLINE, || count(0)).await;
    let token = v1
        .token(json!({"user": "alice", "channels": ["lobby"]}))
        .await;
    let (first, _) = Socket::native(&cluster.edge_url(0), &token).await;
    let (second, _) = Socket::native(&cluster.edge_url(1), &token).await;
    eventually("alice online", DEADLINE, || count(1)).await;
    let alice = |connections: u64| {
        let v1 = v1.clone();
        async move {
            let (_, body) = v1.call("GET", "users/alice", None).await;
            (body == json!({"id": "alice", "online": connections > 0, "connections": connections}))
                .then_some(())
        }
    };
    eventually("two sockets of alice", DEADLINE, || alice(2)).await;
    let (_, channel) = v1.call("GET", "channels/lobby", None).await;
    assert_eq!(channel["subscribers"], 2);
    drop(first);
    eventually("one socket left", DEADLINE, || alice(1)).await;
    drop(second);
    eventually("alice offline", DEADLINE, || alice(0)).await;
    eventually("nobody online again", DEADLINE, || count(0)).await;
    let answer = v1
        .call("GET", &format!("users/{}", "x".repeat(300)), None)
        .await;
    assert_eq!(error_of(&answer), (400, "bad_request", Some("user")));
}

#[tokio::test]
async fn force_logout_closes_every_socket_and_refuses_older_tokens() {
    let cluster = Cluster::start(Options {
        edges: 2,
        ..Options::default()
    })
    .await;
    let v1 = V1::new(&cluster.api_url());
    let old = v1.token(json!({"user": "mallory"})).await;
    let (mut on_first, _) = Socket::native(&cluster.edge_url(0), &old).await;
    let (mut on_second, _) = Socket::native(&cluster.edge_url(1), &old).await;
    let bystander = v1.token(json!({"user": "bob"})).await;
    let (mut bob, _) = Socket::native(&cluster.edge_url(0), &bystander).await;

    let (status, body) = v1.call("DELETE", "users/mallory/connections", None).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(on_first.ending(DEADLINE).await, Ending::Closed(Some(4003)));
    assert_eq!(on_second.ending(DEADLINE).await, Ending::Closed(Some(4003)));
    let edge = cluster.edge_url(0);
    assert_eq!(
        refused(&format!("{edge}/ws?token={old}")).await,
        401,
        "older token"
    );
    let fresh = v1.token(json!({"user": "mallory"})).await;
    Socket::native(&edge, &fresh).await;
    bob.send_json(&json!({"type": "ping"})).await;
    assert_eq!(bob.next_json(DEADLINE).await["type"], "pong", "others stay");
    let (status, _) = v1
        .call("DELETE", "users/nobody-at-all/connections", None)
        .await;
    assert_eq!(status, 204, "always 204");
}

#[tokio::test]
async fn requests_over_a_keys_rate_get_429_with_retry_after() {
    let cluster = Cluster::start(Options {
        env: &[
            ("API__RATE_LIMIT_PER_SECOND", "1"),
            ("API__RATE_LIMIT_BURST", "3"),
        ],
        ..Options::default()
    })
    .await;
    let v1 = V1::new(&cluster.api_url());
    let mut limited = None;
    for _ in 0..10 {
        let response = v1
            .http
            .get(format!("{}/api/v1/users", v1.base))
            .bearer_auth(DEV_SECRET)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the burst of 3 is exhausted within 10 quick requests");
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let answer = e2e::Moz::answer(response).await;
    assert_eq!(error_of(&answer), (429, "rate_limited", None));
}
