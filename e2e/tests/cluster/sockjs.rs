//! SPEC §5 Thunderpush, the browser side, over real binaries: SockJS at `/connect` on the
//! edge (`/connect/info`, the greeting, the WebSocket transport with its `o` / `h` /
//! `a[...]` / `c[code,"reason"]` frames, the raw `/connect/websocket`), the commands
//! `CONNECT` / `SUBSCRIBE` / `UNSUBSCRIBE` with the original's close codes (9000, 9001,
//! 9002), sockets that are ordinary users of the app (presence, channel users, channel and
//! user sends reach them and count them), the published body handed over verbatim as
//! `payload`, and the trust rule: a bare user id only where the app opts in
//! (`trust_user_ids`, on for the dev app), a Herald token (`CONNECT <jwt>:<key>`) elsewhere.
//! Presence is written by the edges every 250 ms, so presence-dependent answers are polled
//! with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::thunderpush::{STRICT_APP, STRICT_KEY, STRICT_SECRET, SockJs, ThunderApi};
use e2e::{Cluster, DEADLINE, Ending, Options, Socket};
use serde_json::{Value, json};

/// The dev app (trusts bare user ids) and its secret.
const APP_KEY: &str = "dev-public";
const SECRET: &str = "dev-secret-change-me";
const LOGGED_OUT: &str = r#"c[9002,"Server closed the connection (intentionally)."]"#;

/// A SockJS socket on the cluster's first edge.
async fn sockjs(cluster: &Cluster) -> SockJs {
    SockJs::open(&format!("{}/connect", cluster.edge_url(0))).await
}

#[tokio::test]
async fn the_sockjs_endpoints_answer_as_sockjs_does() {
    let cluster = Cluster::start(Options::default()).await;
    let http = reqwest::Client::new();
    let base = cluster.edge_url(0).replacen("ws://", "http://", 1);

    let info = http
        .get(format!("{base}/connect/info"))
        .header("Origin", "http://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(&info, "access-control-allow-origin").as_deref(),
        Some("http://app.example")
    );
    assert_eq!(
        header(&info, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(header(&info, "cache-control").unwrap().contains("no-store"));
    let body: Value = info.json().await.unwrap();
    assert_eq!(body["websocket"], true, "{body}");
    assert_eq!(body["cookie_needed"], false, "{body}");
    assert_eq!(body["origins"], json!(["*:*"]), "{body}");
    assert!(body["entropy"].is_u64(), "{body}");

    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{base}/connect/info"))
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        header(&preflight, "access-control-allow-methods").as_deref(),
        Some("OPTIONS, GET")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some("http://app.example")
    );

    for path in ["/connect", "/connect/"] {
        let greeting = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(greeting.status(), 200);
        assert_eq!(greeting.text().await.unwrap(), "Welcome to SockJS!\n");
    }
    // Transports that are not served, and malformed session paths: 404.
    for path in [
        "/connect/123/a1b2c3d4/xhr",
        "/connect/123/a1b2c3d4/xhr_streaming",
        "/connect/123/a.b/websocket",
    ] {
        let answer = http.post(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(answer.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn a_sockjs_client_connects_subscribes_receives_and_is_logged_out() {
    let cluster = Cluster::start(Options::default()).await;
    let api = ThunderApi::new(&cluster.api_url(), APP_KEY, SECRET);
    let mut ua = sockjs(&cluster).await;
    // CONNECT and SUBSCRIBE in one frame, as a client may batch them.
    ua.send(&["CONNECT ua:dev-public", "SUBSCRIBE ch1:ch2"])
        .await;
    let mut ub = sockjs(&cluster).await;
    ub.send(&["CONNECT ub:dev-public"]).await;
    ub.send(&["SUBSCRIBE ch1"]).await;

    // Ordinary users of the app: presence, channel users, counts.
    api.until("users/ua/", json!({"online": true})).await;
    api.until("users/", json!({"count": 2})).await;
    api.until("channels/ch1/", json!({"users": ["ua", "ub"]}))
        .await;
    api.until("channels/ch2/", json!({"users": ["ua"]})).await;
    api.until("users/nobody/", json!({"online": false})).await;

    // The posted body reaches every subscriber verbatim as `payload`.
    let body = "{\"a\": 1,  \"s\":\"x\u{e9}\"}";
    assert_eq!(api.post("channels/ch1/", body).await, json!({"count": 2}));
    for socket in [&mut ua, &mut ub] {
        assert_eq!(
            socket.message().await,
            json!({"payload": body, "channel": "ch1"})
        );
    }
    assert_eq!(
        api.post("channels/ch2/", "[1, 2]").await,
        json!({"count": 1})
    );
    assert_eq!(
        ua.message().await,
        json!({"payload": "[1, 2]", "channel": "ch2"})
    );
    ub.quiet().await;

    // A user message has no channel.
    assert_eq!(
        api.post("users/ua/", "{\"b\":2}").await,
        json!({"count": 1})
    );
    assert_eq!(ua.message().await, json!({"payload": "{\"b\":2}"}));
    ub.quiet().await;

    // UNSUBSCRIBE stops the channel for that socket only.
    ua.send(&["UNSUBSCRIBE ch2"]).await;
    api.until("channels/ch2/", json!({"users": []})).await;
    assert_eq!(api.post("channels/ch2/", "3").await, json!({"count": 0}));
    ua.quiet().await;
    // Names the server cannot take and unknown commands are ignored; the socket stays.
    ua.send(&[
        "SUBSCRIBE bad name!",
        "PING",
        "subscribe ch3",
        "CONNECT ux:dev-public",
    ])
    .await;
    assert_eq!(api.post("channels/ch1/", "4").await, json!({"count": 2}));
    assert_eq!(
        ua.message().await,
        json!({"payload": "4", "channel": "ch1"})
    );
    assert_eq!(
        ub.message().await,
        json!({"payload": "4", "channel": "ch1"})
    );

    // A forced logout closes the user's socket with 9002, and only that user's.
    let (status, text) = api.call(reqwest::Method::DELETE, "users/ub/", None).await;
    assert_eq!((status, text.as_str()), (204, ""));
    assert_eq!(ub.closed().await, LOGGED_OUT);
    api.until("users/ub/", json!({"online": false})).await;
    api.until("channels/ch1/", json!({"users": ["ua"]})).await;
    assert_eq!(api.post("channels/ch1/", "5").await, json!({"count": 1}));
    assert_eq!(
        ua.message().await,
        json!({"payload": "5", "channel": "ch1"})
    );
}

#[tokio::test]
async fn commands_out_of_turn_close_with_the_originals_codes() {
    let cluster = Cluster::start(Options::default()).await;
    let mut early = sockjs(&cluster).await;
    early.send(&["SUBSCRIBE ch1"]).await;
    assert_eq!(
        early.closed().await,
        r#"c[9001,"Subscribing before connecting."]"#
    );
    let mut early = sockjs(&cluster).await;
    early.send(&["UNSUBSCRIBE ch1"]).await;
    assert_eq!(
        early.closed().await,
        r#"c[9001,"Subscribing before connecting."]"#
    );

    let mut wrong = sockjs(&cluster).await;
    wrong.send(&["CONNECT ux:no-such-key"]).await;
    assert_eq!(wrong.closed().await, r#"c[9000,"Invalid API key."]"#);

    // A malformed CONNECT is ignored and the socket stays usable.
    let api = ThunderApi::new(&cluster.api_url(), APP_KEY, SECRET);
    let mut patient = sockjs(&cluster).await;
    patient
        .send(&["CONNECT u1", "CONNECT a:b:c", "hello"])
        .await;
    patient.quiet().await;
    patient
        .send(&["CONNECT u1:dev-public", "SUBSCRIBE news"])
        .await;
    api.until("channels/news/", json!({"users": ["u1"]})).await;
    assert_eq!(api.post("channels/news/", "{}").await, json!({"count": 1}));
    assert_eq!(
        patient.message().await,
        json!({"payload": "{}", "channel": "news"})
    );
}

#[tokio::test]
async fn the_raw_websocket_endpoint_takes_bare_commands() {
    let cluster = Cluster::start(Options::default()).await;
    let api = ThunderApi::new(&cluster.api_url(), APP_KEY, SECRET);
    let mut raw = Socket::connect(&format!("{}/connect/websocket", cluster.edge_url(0))).await;
    raw.send_text("CONNECT ur:dev-public").await;
    raw.send_text("SUBSCRIBE live").await;
    api.until("channels/live/", json!({"users": ["ur"]})).await;
    assert_eq!(
        api.post("channels/live/", "{\"x\": 1}").await,
        json!({"count": 1})
    );
    assert_eq!(
        raw.next_json(DEADLINE).await,
        json!({"payload": "{\"x\": 1}", "channel": "live"})
    );
    api.post("users/ur/", "\"hi\"").await;
    assert_eq!(raw.next_json(DEADLINE).await, json!({"payload": "\"hi\""}));
    // No SockJS close frame here: a close code in RFC 6455's range instead.
    api.call(reqwest::Method::DELETE, "users/ur/", None).await;
    assert_eq!(raw.ending(DEADLINE).await, Ending::Closed(Some(4003)));

    let mut early = Socket::connect(&format!("{}/connect/websocket", cluster.edge_url(0))).await;
    early.send_text("SUBSCRIBE live").await;
    assert_eq!(early.ending(DEADLINE).await, Ending::Closed(Some(1008)));
}

#[tokio::test]
async fn without_trust_connect_needs_a_herald_token_for_the_user() {
    let cluster = Cluster::start(Options {
        config: STRICT_APP,
        ..Options::default()
    })
    .await;
    let api = ThunderApi::new(&cluster.api_url(), STRICT_KEY, STRICT_SECRET);

    // A bare user id is refused where the app does not trust them.
    let mut bare = sockjs(&cluster).await;
    bare.send(&["CONNECT mallory:strict-public"]).await;
    assert!(
        bare.closed().await.starts_with("c[1008,"),
        "a bare user id must be refused"
    );
    // A forged token too.
    let mut forged = sockjs(&cluster).await;
    forged
        .send(&["CONNECT eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln:strict-public"])
        .await;
    assert!(forged.closed().await.starts_with("c[1008,"));
    // A token of another app, presented with this app's key.
    let dev = ThunderApi::new(&cluster.api_url(), APP_KEY, SECRET);
    let foreign = dev.token("alice", &["*"]).await;
    let mut other = sockjs(&cluster).await;
    other
        .send(&[&format!("CONNECT {foreign}:strict-public")])
        .await;
    assert_eq!(other.closed().await, r#"c[9000,"Invalid API key."]"#);

    // A token of this app: the user is its `sub`; channels within its grant only.
    let token = api.token("alice", &["news", "sport*"]).await;
    let mut alice = sockjs(&cluster).await;
    alice
        .send(&[
            &format!("CONNECT {token}:strict-public"),
            "SUBSCRIBE news:sport.1:secret",
        ])
        .await;
    api.until("users/alice/", json!({"online": true})).await;
    api.until("channels/sport.1/", json!({"users": ["alice"]}))
        .await;
    api.until("channels/news/", json!({"users": ["alice"]}))
        .await;
    api.until("channels/secret/", json!({"users": []})).await;
    assert_eq!(api.post("channels/secret/", "1").await, json!({"count": 0}));
    assert_eq!(
        api.post("channels/sport.1/", "2").await,
        json!({"count": 1})
    );
    assert_eq!(
        alice.message().await,
        json!({"payload": "2", "channel": "sport.1"})
    );
    alice.quiet().await;

    // Logged out: closed with 9002, and the token no longer connects.
    api.call(reqwest::Method::DELETE, "users/alice/", None)
        .await;
    assert_eq!(alice.closed().await, LOGGED_OUT);
    let mut again = sockjs(&cluster).await;
    again
        .send(&[&format!("CONNECT {token}:strict-public")])
        .await;
    assert!(again.closed().await.starts_with("c[1008,"));
}
