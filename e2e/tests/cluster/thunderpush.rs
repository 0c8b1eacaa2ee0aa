//! SPEC §5 Thunderpush over real binaries: a Thunderpush user's server-side flows against
//! `/api/1.0.0/{appKey}/`, checked against the original 1.0.1 as recorded in the
//! reference findings — `{"count": n}` for channel and user sends (sockets reached),
//! `{"users": [...]}`, `{"count": n}` distinct users online, `{"online": b}`, a forced
//! logout that answers 204 and closes the user's sockets with 4003, the original's error
//! bodies (`{"message": "...", "status": N}`, 401 before 400), its static CORS headers and
//! key-less `OPTIONS` preflight, and every route with and without its trailing slash.
//! Browser clients connect with Herald's native protocol here (SockJS `/connect` is in
//! `sockjs.rs`), with tokens from `POST /api/v1/tokens`. Presence is written by the edges
//! every 250 ms, so presence-dependent answers are polled with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{Cluster, DEADLINE, Ending, Options, Socket, eventually};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// The dev app's public key (the Thunderpush "API key" in URLs) and its secret.
const APP_KEY: &str = "dev-public";
const SECRET: &str = "dev-secret-change-me";
/// How long a socket is watched for a frame that must not come.
const QUIET: Duration = Duration::from_millis(500);

const NOT_JSON: &str = "{\"message\": \"Request body is not valid JSON.\", \"status\": 400}\n";
const WRONG_KEY: &str = "{\"message\": \"Wrong API key/secret.\", \"status\": 401}\n";

/// One HTTP answer: status, headers and the body text.
struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts the original's three static CORS headers.
    fn assert_cors(&self) {
        let header = |name: &str| {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("no {name} on a {} answer", self.status))
        };
        assert_eq!(header("access-control-allow-origin"), "*");
        assert_eq!(
            header("access-control-allow-headers"),
            "X-Thunder-Secret-Key"
        );
        assert_eq!(header("access-control-allow-methods"), "GET, POST, DELETE");
    }
}

/// A client of the Thunderpush API (and of `/api/v1/tokens` for its sockets).
struct Thunder {
    api: String,
    http: reqwest::Client,
}

impl Thunder {
    fn new(cluster: &Cluster) -> Thunder {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Thunder {
            api: cluster.api_url(),
            http,
        }
    }

    /// `/api/1.0.0/{key}/{path}` with or without the trailing slash.
    fn url(&self, key: &str, path: &str, slash: bool) -> String {
        let slash = if slash { "/" } else { "" };
        format!("{}/api/1.0.0/{key}/{path}{slash}", self.api)
    }

    /// Sends `method` to `path` under app `key`, with `secret` (if any) in
    /// `X-Thunder-Secret-Key` and `body` (if any).
    async fn send(
        &self,
        method: Method,
        key: &str,
        path: &str,
        slash: bool,
        secret: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(key, path, slash));
        if let Some(secret) = secret {
            request = request.header("X-Thunder-Secret-Key", secret);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Answer {
            status,
            headers,
            text,
        }
    }

    async fn get(&self, path: &str, slash: bool) -> Answer {
        self.send(Method::GET, APP_KEY, path, slash, Some(SECRET), None)
            .await
    }

    async fn post(&self, path: &str, slash: bool, body: &str) -> Answer {
        self.send(Method::POST, APP_KEY, path, slash, Some(SECRET), Some(body))
            .await
    }

    async fn delete(&self, path: &str, slash: bool) -> Answer {
        self.send(Method::DELETE, APP_KEY, path, slash, Some(SECRET), None)
            .await
    }

    /// A connection token for `user`, subscribed to `channels` on connect.
    async fn token(&self, user: &str, channels: &[&str]) -> String {
        let response = self
            .http
            .post(format!("{}/api/v1/tokens", self.api))
            .bearer_auth(SECRET)
            .json(&json!({"user": user, "channels": channels}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().expect("a token").to_owned()
    }

    /// A native socket of `user` on edge `edge`, subscribed to `channels`; its welcome
    /// frame is read and checked.
    async fn socket(
        &self,
        cluster: &Cluster,
        edge: usize,
        user: &str,
        channels: &[&str],
    ) -> Socket {
        let token = self.token(user, channels).await;
        let mut socket = Socket::connect(&ws_url(cluster, edge, &token)).await;
        let welcome = socket.next_json(DEADLINE).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["user"], user, "{welcome}");
        assert_eq!(welcome["channels"], json!(channels), "{welcome}");
        socket
    }

    /// Polls `GET path` until it answers 200 with `expected`.
    async fn until(&self, path: &str, expected: Value) {
        eventually(&format!("GET {path} to be {expected}"), DEADLINE, || {
            let answer = self.get(path, true);
            let expected = &expected;
            async move {
                let answer = answer.await;
                (answer.status == 200 && answer.json() == *expected).then_some(())
            }
        })
        .await;
    }
}

fn ws_url(cluster: &Cluster, edge: usize, token: &str) -> String {
    format!("{}/ws?token={token}", cluster.edge_url(edge))
}

/// Asserts `frame` is a native channel message on `channel` carrying `data`.
fn assert_channel_message(frame: &Value, channel: &str, data: &Value) {
    assert_eq!(frame["type"], "message", "{frame}");
    assert_eq!(frame["channel"], channel, "{frame}");
    assert_eq!(frame["data"], *data, "{frame}");
    assert!(
        frame["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{frame}"
    );
    assert!(frame["createdAt"].is_string(), "{frame}");
}

/// Asserts `frame` is a native user message (no channel) carrying `data`.
fn assert_user_message(frame: &Value, data: &Value) {
    assert_eq!(frame["type"], "message", "{frame}");
    assert_eq!(frame["data"], *data, "{frame}");
    assert!(frame.get("channel").is_none(), "{frame}");
    assert!(
        frame["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{frame}"
    );
    assert!(frame["createdAt"].is_string(), "{frame}");
}

#[tokio::test]
async fn posting_to_a_channel_counts_its_sockets_and_delivers_the_body() {
    let cluster = Cluster::start(Options::default()).await;
    let thunder = Thunder::new(&cluster);

    // On another channel than the socket below joins: a publish acknowledged with count 0
    // may still be on its way to the edge when that socket subscribes.
    for slash in [true, false] {
        let answer = thunder.post("channels/ch0", slash, r#"{"a": 1}"#).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.text, "{\"count\": 0}\n", "nobody listens yet");
        answer.assert_cors();
    }

    let mut socket = thunder.socket(&cluster, 0, "u1", &["ch1"]).await;
    thunder
        .until("channels/ch1", json!({"users": ["u1"]}))
        .await;
    let body = r#"{"a": 1,  "s": "xé", "nested": {"list": [1, 2.5, null, true]}}"#;
    let answer = thunder.post("channels/ch1", true, body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json(), json!({"count": 1}));
    let frame = socket.next_json(DEADLINE).await;
    assert_channel_message(&frame, "ch1", &serde_json::from_str(body).unwrap());

    // Any JSON value is a message, the docs' own example a bare string; without the
    // trailing slash too.
    for (slash, body) in [
        (true, r#""Hello World!""#),
        (false, "42"),
        (true, "[1, 2]"),
        (false, "null"),
    ] {
        let answer = thunder.post("channels/ch1", slash, body).await;
        assert_eq!(answer.status, 200, "{body}: {}", answer.text);
        assert_eq!(answer.json(), json!({"count": 1}), "{body}");
        let frame = socket.next_json(DEADLINE).await;
        assert_channel_message(&frame, "ch1", &serde_json::from_str(body).unwrap());
    }

    // Another channel's message does not reach ch1's socket; a second subscriber counts.
    let answer = thunder
        .post("channels/ch2", true, r#"{"other": true}"#)
        .await;
    assert_eq!(answer.json(), json!({"count": 0}));
    let mut second = thunder.socket(&cluster, 0, "u2", &["ch1", "ch2"]).await;
    thunder
        .until("channels/ch1", json!({"users": ["u1", "u2"]}))
        .await;
    thunder
        .until("channels/ch2", json!({"users": ["u2"]}))
        .await;
    let answer = thunder.post("channels/ch1", false, r#"{"n": 2}"#).await;
    assert_eq!(answer.json(), json!({"count": 2}));
    for s in [&mut socket, &mut second] {
        assert_channel_message(&s.next_json(DEADLINE).await, "ch1", &json!({"n": 2}));
    }
    assert_eq!(
        socket.try_next_json(QUIET).await,
        None,
        "ch2 was never its channel"
    );
}

#[tokio::test]
async fn bodies_that_are_not_json_get_the_originals_400() {
    let cluster = Cluster::start(Options::default()).await;
    let thunder = Thunder::new(&cluster);
    for path in ["channels/ch1", "users/u1"] {
        for slash in [true, false] {
            for body in [Some("{not json"), Some(""), Some("plain text"), None] {
                let answer = thunder
                    .send(Method::POST, APP_KEY, path, slash, Some(SECRET), body)
                    .await;
                assert_eq!(answer.status, 400, "POST {path} {body:?}: {}", answer.text);
                assert_eq!(answer.text, NOT_JSON, "POST {path} {body:?}");
                assert_eq!(
                    answer.json(),
                    json!({"message": "Request body is not valid JSON.", "status": 400})
                );
                answer.assert_cors();
            }
        }
    }
}

#[tokio::test]
async fn wrong_credentials_get_401_before_the_body_is_checked() {
    let cluster = Cluster::start(Options::default()).await;
    let thunder = Thunder::new(&cluster);
    let routes = [
        (Method::POST, "channels/ch1", Some("{\"a\": 1}")),
        (Method::GET, "channels/ch1", None),
        (Method::GET, "users", None),
        (Method::GET, "users/u1", None),
        (Method::POST, "users/u1", Some("{\"a\": 1}")),
        (Method::DELETE, "users/u1", None),
    ];
    let wrong = [
        (APP_KEY, Some("wrong-secret")),
        (APP_KEY, None),
        (APP_KEY, Some("")),
        ("no-such-app", Some(SECRET)),
    ];
    for (method, path, body) in &routes {
        for (key, secret) in wrong {
            for slash in [true, false] {
                let answer = thunder
                    .send(method.clone(), key, path, slash, secret, *body)
                    .await;
                let what = format!("{method} {key}/{path} secret {secret:?}");
                assert_eq!(answer.status, 401, "{what}: {}", answer.text);
                assert_eq!(answer.text, WRONG_KEY, "{what}");
                answer.assert_cors();
            }
        }
    }
    // 401 wins over the JSON check.
    for path in ["channels/ch1", "users/u1"] {
        let answer = thunder
            .send(
                Method::POST,
                APP_KEY,
                path,
                true,
                Some("wrong"),
                Some("{not json"),
            )
            .await;
        assert_eq!(answer.status, 401, "{path}: {}", answer.text);
        assert_eq!(answer.text, WRONG_KEY);
    }
    // The secret goes in X-Thunder-Secret-Key: Herald's own Authorization header is not it.
    let answer = thunder
        .http
        .get(thunder.url(APP_KEY, "users", true))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    // The header name is case-insensitive.
    let answer = thunder
        .http
        .get(thunder.url(APP_KEY, "users", true))
        .header("x-thunder-secret-key", SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn presence_counts_distinct_users_and_user_messages_reach_every_socket() {
    let cluster = Cluster::start(Options {
        edges: 2,
        ..Options::default()
    })
    .await;
    let thunder = Thunder::new(&cluster);
    for slash in [true, false] {
        let answer = thunder.get("users", slash).await;
        assert_eq!((answer.status, answer.json()), (200, json!({"count": 0})));
        answer.assert_cors();
        let answer = thunder.get("users/u1", slash).await;
        assert_eq!(
            (answer.status, answer.json()),
            (200, json!({"online": false}))
        );
        assert_eq!(answer.text, "{\"online\": false}\n");
        answer.assert_cors();
        let answer = thunder.get("channels/ch1", slash).await;
        assert_eq!((answer.status, answer.json()), (200, json!({"users": []})));
        answer.assert_cors();
        let answer = thunder.post("users/u1", slash, r#"{"b": 2}"#).await;
        assert_eq!(
            (answer.status, answer.json()),
            (200, json!({"count": 0})),
            "an offline user"
        );
        answer.assert_cors();
    }

    // u1 on both edges, u2 on one: two users, three sockets.
    let mut phone = thunder.socket(&cluster, 0, "u1", &["ch1"]).await;
    let mut laptop = thunder.socket(&cluster, 1, "u1", &[]).await;
    let mut other = thunder.socket(&cluster, 1, "u2", &["ch1"]).await;
    thunder.until("users", json!({"count": 2})).await;
    thunder.until("users/u1", json!({"online": true})).await;
    thunder.until("users/u2", json!({"online": true})).await;
    thunder
        .until("channels/ch1", json!({"users": ["u1", "u2"]}))
        .await;
    for slash in [true, false] {
        assert_eq!(
            thunder.get("users", slash).await.json(),
            json!({"count": 2})
        );
        assert_eq!(
            thunder.get("users/u1", slash).await.json(),
            json!({"online": true})
        );
        assert_eq!(
            thunder.get("channels/ch1", slash).await.json(),
            json!({"users": ["u1", "u2"]})
        );
    }

    // A user message: counted per socket, to every socket of that user, not the others.
    let answer = thunder.post("users/u1", true, r#"{"b": 2}"#).await;
    assert_eq!(
        (answer.status, answer.json()),
        (200, json!({"count": 2})),
        "{}",
        answer.text
    );
    for socket in [&mut phone, &mut laptop] {
        assert_user_message(&socket.next_json(DEADLINE).await, &json!({"b": 2}));
    }
    let answer = thunder.post("users/u2", false, r#""just you""#).await;
    assert_eq!(answer.json(), json!({"count": 1}));
    assert_user_message(&other.next_json(DEADLINE).await, &json!("just you"));
    for socket in [&mut phone, &mut laptop] {
        assert_eq!(socket.try_next_json(QUIET).await, None, "u2's message");
    }

    // Leaving: u2 goes offline, u1 stays while one socket is left.
    drop(other);
    thunder.until("users", json!({"count": 1})).await;
    thunder.until("users/u2", json!({"online": false})).await;
    thunder
        .until("channels/ch1", json!({"users": ["u1"]}))
        .await;
    drop(phone);
    thunder.until("channels/ch1", json!({"users": []})).await;
    assert_eq!(
        thunder.get("users/u1", true).await.json(),
        json!({"online": true}),
        "the laptop is still connected"
    );
    eventually("u1 to count one socket", DEADLINE, || {
        let answer = thunder.post("users/u1", true, "1");
        async move { (answer.await.json() == json!({"count": 1})).then_some(()) }
    })
    .await;
    assert_user_message(&laptop.next_json(DEADLINE).await, &json!(1));
}

#[tokio::test]
async fn deleting_a_user_closes_its_sockets_and_refuses_its_old_tokens() {
    let cluster = Cluster::start(Options {
        edges: 2,
        ..Options::default()
    })
    .await;
    let thunder = Thunder::new(&cluster);

    // Unknown or offline users: 204 all the same.
    for slash in [true, false] {
        let answer = thunder.delete("users/nobody", slash).await;
        assert_eq!(answer.status, 204, "{}", answer.text);
        assert_eq!(answer.text, "");
        answer.assert_cors();
    }

    let mut sockets = Vec::new();
    for edge in [0, 1, 0] {
        sockets.push(thunder.socket(&cluster, edge, "u1", &["ch1"]).await);
    }
    let mut bystander = thunder.socket(&cluster, 1, "u2", &["ch1"]).await;
    let unused = thunder.token("u1", &["ch1"]).await;
    thunder.until("users", json!({"count": 2})).await;

    let answer = thunder.delete("users/u1", false).await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    assert_eq!(answer.text, "");
    answer.assert_cors();
    // Every socket of the user, on every edge (the original skips every other one).
    for socket in &mut sockets {
        assert_eq!(socket.ending(DEADLINE).await, Ending::Closed(Some(4003)));
    }
    thunder.until("users/u1", json!({"online": false})).await;
    thunder.until("users", json!({"count": 1})).await;
    thunder
        .until("channels/ch1", json!({"users": ["u2"]}))
        .await;

    // A token issued before the logout is refused at the handshake, on every edge.
    for edge in [0, 1] {
        match tokio_tungstenite::connect_async(ws_url(&cluster, edge, &unused)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("a token issued before the logout must get 401, got {other:?}"),
        }
    }
    // The bystander is untouched and a new token works.
    let answer = thunder
        .post("channels/ch1", true, r#"{"after": true}"#)
        .await;
    assert_eq!(answer.json(), json!({"count": 1}));
    assert_channel_message(
        &bystander.next_json(DEADLINE).await,
        "ch1",
        &json!({"after": true}),
    );
    let mut back = thunder.socket(&cluster, 0, "u1", &["ch1"]).await;
    thunder.until("users/u1", json!({"online": true})).await;
    let answer = thunder
        .post("users/u1", true, r#"{"welcome": "back"}"#)
        .await;
    assert_eq!(answer.json(), json!({"count": 1}));
    assert_user_message(&back.next_json(DEADLINE).await, &json!({"welcome": "back"}));
}

#[tokio::test]
async fn cors_preflight_needs_no_key_and_unknown_routes_are_404() {
    let cluster = Cluster::start(Options::default()).await;
    let thunder = Thunder::new(&cluster);
    for path in ["channels/ch1", "users", "users/u1"] {
        for key in [APP_KEY, "no-such-app"] {
            for slash in [true, false] {
                let response = thunder
                    .http
                    .request(Method::OPTIONS, thunder.url(key, path, slash))
                    .header("Origin", "http://example.com")
                    .header("Access-Control-Request-Method", "POST")
                    .header(
                        "Access-Control-Request-Headers",
                        "X-Thunder-Secret-Key, Content-Type",
                    )
                    .send()
                    .await
                    .unwrap();
                let answer = Answer {
                    status: response.status().as_u16(),
                    headers: response.headers().clone(),
                    text: response.text().await.unwrap(),
                };
                assert_eq!(answer.status, 200, "OPTIONS {key}/{path}");
                assert_eq!(answer.text, "", "OPTIONS {key}/{path}");
                answer.assert_cors();
            }
        }
    }
    // Paths that are no route of the original.
    for path in ["channels", "nothing/here"] {
        for slash in [true, false] {
            let answer = thunder.get(path, slash).await;
            assert_eq!(
                answer.status, 404,
                "GET {path} slash={slash}: {}",
                answer.text
            );
        }
    }
    let answer = thunder.get("", false).await;
    assert_eq!(answer.status, 404, "GET the app root: {}", answer.text);
}
