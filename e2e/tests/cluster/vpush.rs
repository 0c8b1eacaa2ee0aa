//! SPEC §5 VPush over real binaries: a VPush user's flows as the seed's quickstart shows
//! them — create a context with the bare secret in `Authorization`, list it, sign it into
//! a websocket token (`contexts/sign` and the prose's `context/sign`), connect
//! `/push/socket?websocketToken=T`, and talk in `{"message": "..."}` frames that go to
//! every OTHER subscriber of the context, across edges. With channel history turned on
//! (`PUT /api/v1/channels/{contextId}`), `contexts/{id}/messages` is the archive. Errors
//! answer `{"success": false, ...}`; a bad frame gets an error frame, not a close; every
//! route works with and without its trailing slash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{Cluster, DEADLINE, Options, Socket, eventually};
use reqwest::Method;
use serde_json::{Value, json};

/// The dev app's admin secret, sent bare as VPush does.
const SECRET: &str = "dev-secret-change-me";
/// How long a socket is watched for a frame that must not come.
const QUIET: Duration = Duration::from_millis(500);

/// A client of `/push/api/v1/`.
struct VPush {
    api: String,
    http: reqwest::Client,
}

impl VPush {
    fn new(cluster: &Cluster) -> VPush {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        VPush {
            api: cluster.api_url(),
            http,
        }
    }

    /// `method` on `/push/api/v1/<path>` (with or without the trailing slash), with
    /// `Authorization: <auth>` when given and a raw `body`; the status and JSON answer.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        slash: bool,
        auth: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let slash = if slash { "/" } else { "" };
        let url = format!("{}/push/api/v1/{path}{slash}", self.api);
        let mut request = self.http.request(method, url);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text:?}"));
        (status, body)
    }

    /// `method` on `path` with the dev secret and an optional JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        slash: bool,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.raw(
            method,
            path,
            slash,
            Some(SECRET),
            body.map(|b| b.to_string()),
        )
        .await
    }

    /// Creates a context named `name`; its id.
    async fn create(&self, name: &str) -> String {
        let (status, body) = self
            .call(Method::POST, "contexts", false, Some(json!({"name": name})))
            .await;
        assert!((200..300).contains(&status), "{status} {body}");
        assert_eq!(body["success"], true, "{body}");
        body["contextId"].as_str().expect("a contextId").to_owned()
    }

    /// A websocket token for `context`.
    async fn sign(&self, context: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "contexts/sign",
                false,
                Some(json!({"contextId": context})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true, "{body}");
        body["websocketToken"]
            .as_str()
            .expect("a websocketToken")
            .to_owned()
    }

    /// A socket on edge `edge` subscribed to `context` with a freshly signed token.
    async fn socket(&self, cluster: &Cluster, edge: usize, context: &str) -> VSocket {
        let token = self.sign(context).await;
        VSocket::connect(&socket_url(cluster, edge, &token, false)).await
    }

    /// Turns history on for the context (channel) `context` with Herald's own API,
    /// keeping `size` messages.
    async fn history_on(&self, context: &str, size: u64) {
        let response = self
            .http
            .put(format!("{}/api/v1/channels/{context}", self.api))
            .bearer_auth(SECRET)
            .json(&json!({"history": {"size": size}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }

    /// Publishes `data` to the context with Herald's own API.
    async fn publish(&self, context: &str, data: Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/channels/{context}/messages", self.api))
            .bearer_auth(SECRET)
            .json(&json!({ "data": data }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }

    /// The archive's message texts, polled until it holds `expected`.
    async fn archive_until(&self, context: &str, expected: &[&str]) -> Vec<Value> {
        let path = format!("contexts/{context}/messages");
        eventually(&format!("the archive to be {expected:?}"), DEADLINE, || {
            let answer = self.call(Method::GET, &path, false, None);
            async move {
                let (status, body) = answer.await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["success"], true, "{body}");
                let messages = body["messages"].as_array().expect("messages").clone();
                let texts: Vec<&str> = messages
                    .iter()
                    .map(|m| m["message"].as_str().expect("a message text"))
                    .collect();
                (texts == expected).then_some(messages)
            }
        })
        .await
    }
}

/// A VPush client socket.
struct VSocket {
    socket: Socket,
}

impl VSocket {
    async fn connect(url: &str) -> VSocket {
        VSocket {
            socket: Socket::connect(url).await,
        }
    }

    async fn send_text(&mut self, text: &str) {
        self.socket.send_text(text).await;
    }

    /// The next frame, or `None` within `deadline`.
    async fn try_next_json(&mut self, deadline: Duration) -> Option<Value> {
        self.socket.try_next_json(deadline).await
    }

    async fn next_json(&mut self, deadline: Duration) -> Value {
        self.try_next_json(deadline).await.expect("a frame in time")
    }
}

fn socket_url(cluster: &Cluster, edge: usize, token: &str, slash: bool) -> String {
    let slash = if slash { "/" } else { "" };
    format!(
        "{}/push/socket{slash}?websocketToken={token}",
        cluster.edge_url(edge)
    )
}

/// Asserts a VPush failure: `status`, `success: false` and an error text.
fn assert_failure(answer: &(u16, Value), status: u16, what: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{what}: {body}");
    assert_eq!(body["success"], false, "{what}: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {body}"
    );
}

/// Asserts `frame` is exactly the VPush frame `{"message": text}`.
fn assert_message(frame: &Value, text: &str) {
    assert_eq!(*frame, json!({ "message": text }));
}

#[tokio::test]
async fn contexts_are_created_listed_and_signed() {
    let cluster = Cluster::start(Options::default()).await;
    let vpush = VPush::new(&cluster);

    let (status, listed) = vpush.call(Method::GET, "contexts", false, None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["success"], true);
    assert_eq!(listed["contexts"], json!([]));

    let lobby = vpush.create("lobby").await;
    let (status, body) = vpush
        .call(
            Method::POST,
            "contexts",
            true,
            Some(json!({"name": "kitchen"})),
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    let kitchen = body["contextId"].as_str().unwrap().to_owned();
    let (status, body) = vpush
        .call(Method::POST, "contexts", false, Some(json!({})))
        .await;
    assert!((200..300).contains(&status), "a name is optional: {body}");
    let unnamed = body["contextId"].as_str().unwrap().to_owned();
    let (status, body) = vpush.call(Method::POST, "contexts", false, None).await;
    assert!((200..300).contains(&status), "no body at all: {body}");
    let bodiless = body["contextId"].as_str().unwrap().to_owned();
    let mut all = vec![&lobby, &kitchen, &unnamed, &bodiless];
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "every context has its own id");

    for slash in [false, true] {
        let (status, listed) = vpush.call(Method::GET, "contexts", slash, None).await;
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed["success"], true, "{listed}");
        let contexts = listed["contexts"].as_array().unwrap();
        let ids: Vec<&str> = contexts
            .iter()
            .map(|c| c["contextId"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 4, "{listed}");
        for id in [&lobby, &kitchen, &unnamed, &bodiless] {
            assert!(ids.contains(&id.as_str()), "{id} in {listed}");
        }
        let named = contexts.iter().find(|c| c["contextId"] == *lobby).unwrap();
        assert_eq!(named["name"], "lobby", "{listed}");
    }

    // Both spellings of sign, with and without the trailing slash, give working tokens.
    for path in ["contexts/sign", "context/sign"] {
        for slash in [false, true] {
            let (status, body) = vpush
                .call(Method::POST, path, slash, Some(json!({"contextId": lobby})))
                .await;
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(body["success"], true, "{path}: {body}");
            let token = body["websocketToken"].as_str().unwrap();
            assert!(token.len() > 20, "{path}: {body}");
            // A token works once signed: the socket gets the context's messages.
            let mut socket = VSocket::connect(&socket_url(&cluster, 0, token, slash)).await;
            let mut sender = vpush.socket(&cluster, 0, &lobby).await;
            sender.send_text(r#"{"message": "ping"}"#).await;
            assert_message(&socket.next_json(DEADLINE).await, "ping");
        }
    }
    // Herald's own Bearer form is accepted too.
    let (status, body) = vpush
        .raw(
            Method::GET,
            "contexts",
            false,
            Some(&format!("Bearer {SECRET}")),
            None,
        )
        .await;
    assert_eq!((status, &body["success"]), (200, &json!(true)), "{body}");
}

#[tokio::test]
async fn errors_answer_success_false() {
    let cluster = Cluster::start(Options::default()).await;
    let vpush = VPush::new(&cluster);
    let lobby = vpush.create("lobby").await;
    let unknown = "0".repeat(32);

    for path in ["contexts/sign", "context/sign"] {
        for slash in [false, true] {
            let answer = vpush
                .call(
                    Method::POST,
                    path,
                    slash,
                    Some(json!({"contextId": unknown})),
                )
                .await;
            assert_failure(&answer, 404, "an unknown contextId");
            let answer = vpush
                .call(
                    Method::POST,
                    path,
                    slash,
                    Some(json!({"contextId": "not a context!"})),
                )
                .await;
            assert_failure(&answer, 404, "a malformed contextId");
            let answer = vpush.call(Method::POST, path, slash, Some(json!({}))).await;
            assert_failure(&answer, 400, "no contextId");
            let answer = vpush
                .raw(
                    Method::POST,
                    path,
                    slash,
                    Some(SECRET),
                    Some("{not json".into()),
                )
                .await;
            assert_failure(&answer, 400, "a body that is not JSON");
        }
    }
    let answer = vpush
        .call(
            Method::GET,
            &format!("contexts/{unknown}/messages"),
            false,
            None,
        )
        .await;
    assert_failure(&answer, 404, "the archive of an unknown context");

    // Bad or missing credentials on every route.
    let routes: [(Method, String, Option<String>); 5] = [
        (
            Method::POST,
            "contexts".into(),
            Some(json!({"name": "x"}).to_string()),
        ),
        (Method::GET, "contexts".into(), None),
        (
            Method::POST,
            "contexts/sign".into(),
            Some(json!({"contextId": lobby}).to_string()),
        ),
        (
            Method::POST,
            "context/sign".into(),
            Some(json!({"contextId": lobby}).to_string()),
        ),
        (Method::GET, format!("contexts/{lobby}/messages"), None),
    ];
    for (method, path, body) in &routes {
        for auth in [
            None,
            Some("wrong-secret"),
            Some("Bearer wrong-secret"),
            Some(""),
        ] {
            for slash in [false, true] {
                let answer = vpush
                    .raw(method.clone(), path, slash, auth, body.clone())
                    .await;
                assert_failure(&answer, 401, &format!("{method} {path} with {auth:?}"));
            }
        }
    }
    let (status, listed) = vpush.call(Method::GET, "contexts", false, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["contexts"].as_array().unwrap().len(),
        1,
        "refused creations created nothing: {listed}"
    );

    let answer = vpush.call(Method::GET, "nothing/here", false, None).await;
    assert_failure(&answer, 404, "an unknown route");

    // A forged websocket token is refused at the handshake.
    let forged = socket_url(&cluster, 0, "forged", false);
    match tokio_tungstenite::connect_async(forged).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("a forged websocketToken must get 401, got {other:?}"),
    }
}

#[tokio::test]
async fn a_frame_reaches_every_other_subscriber_but_not_its_sender() {
    let cluster = Cluster::start(Options {
        edges: 2,
        ..Options::default()
    })
    .await;
    let vpush = VPush::new(&cluster);
    let lobby = vpush.create("lobby").await;
    let elsewhere = vpush.create("elsewhere").await;
    let mut a = vpush.socket(&cluster, 0, &lobby).await;
    let mut b = vpush.socket(&cluster, 1, &lobby).await;
    let mut c = vpush.socket(&cluster, 0, &lobby).await;
    let mut stranger = vpush.socket(&cluster, 0, &elsewhere).await;

    a.send_text(r#"{"message": "hello"}"#).await;
    assert_message(&b.next_json(DEADLINE).await, "hello");
    assert_message(&c.next_json(DEADLINE).await, "hello");

    // B answers; the next frame A sees is that answer: its own "hello" never came back
    // (it would have been delivered before B even read it).
    b.send_text(r#"{"message": "hi A"}"#).await;
    assert_message(&a.next_json(DEADLINE).await, "hi A");
    assert_message(&c.next_json(DEADLINE).await, "hi A");
    assert_eq!(
        b.try_next_json(QUIET).await,
        None,
        "B's own frame came back"
    );
    assert_eq!(
        a.try_next_json(QUIET).await,
        None,
        "A's own frame came back"
    );
    assert_eq!(stranger.try_next_json(QUIET).await, None, "another context");

    // JSON travels as a string, as the seed's client encodes it.
    let text = json!({"foo": "bar", "bat": "baz"}).to_string();
    c.send_text(&json!({ "message": text }).to_string()).await;
    for socket in [&mut a, &mut b] {
        let frame = socket.next_json(DEADLINE).await;
        assert_message(&frame, &text);
        let inner: Value = serde_json::from_str(frame["message"].as_str().unwrap()).unwrap();
        assert_eq!(inner, json!({"foo": "bar", "bat": "baz"}));
    }

    // The server side may publish to a context too: every subscriber gets it, as text.
    vpush.publish(&lobby, json!("from the server")).await;
    vpush.publish(&lobby, json!({"n": 1})).await;
    for socket in [&mut a, &mut b, &mut c] {
        assert_message(&socket.next_json(DEADLINE).await, "from the server");
        assert_message(&socket.next_json(DEADLINE).await, r#"{"n":1}"#);
    }
    assert_eq!(stranger.try_next_json(QUIET).await, None, "another context");
}

#[tokio::test]
async fn the_archive_lists_the_newest_thousand_messages() {
    let cluster = Cluster::start(Options::default()).await;
    let vpush = VPush::new(&cluster);
    let context = vpush.create("long").await;
    vpush.history_on(&context, 2_000).await;
    for i in 1..=1_003 {
        vpush.publish(&context, json!(format!("m{i}"))).await;
    }
    let (status, body) = vpush
        .call(
            Method::GET,
            &format!("contexts/{context}/messages"),
            false,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let texts: Vec<&str> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["message"].as_str().expect("a message text"))
        .collect();
    assert_eq!(texts.len(), 1_000);
    assert_eq!(
        (texts[0], texts[999]),
        ("m4", "m1003"),
        "the newest, oldest first"
    );
}

#[tokio::test]
async fn the_archive_lists_messages_when_history_is_on() {
    let cluster = Cluster::start(Options::default()).await;
    let vpush = VPush::new(&cluster);

    // Ephemeral by default: delivered once, not archived.
    let ephemeral = vpush.create("ephemeral").await;
    let mut a = vpush.socket(&cluster, 0, &ephemeral).await;
    let mut b = vpush.socket(&cluster, 0, &ephemeral).await;
    a.send_text(r#"{"message": "gone"}"#).await;
    assert_message(&b.next_json(DEADLINE).await, "gone");
    let (status, body) = vpush
        .call(
            Method::GET,
            &format!("contexts/{ephemeral}/messages"),
            false,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"success": true, "messages": []}));

    let archived = vpush.create("archived").await;
    vpush.history_on(&archived, 100).await;
    let mut a = vpush.socket(&cluster, 0, &archived).await;
    let mut b = vpush.socket(&cluster, 0, &archived).await;
    a.send_text(r#"{"message": "hello"}"#).await;
    assert_message(&b.next_json(DEADLINE).await, "hello");
    b.send_text(r#"{"message": "hello back"}"#).await;
    assert_message(&a.next_json(DEADLINE).await, "hello back");
    let messages = vpush
        .archive_until(&archived, &["hello", "hello back"])
        .await;
    for m in &messages {
        let sent = m["sentAt"].as_str().expect("sentAt");
        assert!(sent.starts_with("20") && sent.ends_with('Z'), "{m}");
        let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["message", "sentAt"], "{m}");
    }
    assert!(
        messages[0]["sentAt"].as_str() <= messages[1]["sentAt"].as_str(),
        "oldest first: {messages:?}"
    );
    for slash in [false, true] {
        let (status, body) = vpush
            .call(
                Method::GET,
                &format!("contexts/{archived}/messages"),
                slash,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["messages"], json!(messages), "slash={slash}");
    }
}

#[tokio::test]
async fn an_invalid_frame_gets_an_error_frame_not_a_close() {
    let cluster = Cluster::start(Options::default()).await;
    let vpush = VPush::new(&cluster);
    let lobby = vpush.create("lobby").await;
    let mut a = vpush.socket(&cluster, 0, &lobby).await;
    let mut b = vpush.socket(&cluster, 0, &lobby).await;

    for bad in [
        "not json",
        r#"{"message": 1}"#,
        r#"{"text": "hello"}"#,
        r#""hello""#,
        "{}",
    ] {
        a.send_text(bad).await;
        let frame = a.next_json(DEADLINE).await;
        assert!(
            frame["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {frame}"
        );
        assert!(frame.get("message").is_none(), "{bad}: {frame}");
    }
    assert_eq!(
        b.try_next_json(QUIET).await,
        None,
        "errors are the sender's own"
    );

    // Still open and still publishing.
    a.send_text(r#"{"message": "still here"}"#).await;
    assert_message(&b.next_json(DEADLINE).await, "still here");
}

#[tokio::test]
async fn a_vpush_socket_sees_only_vpush_frames() {
    let cluster = Cluster::start(Options::default()).await;
    let vpush = VPush::new(&cluster);
    let lobby = vpush.create("lobby").await;
    let token = vpush.sign(&lobby).await;
    let mut a = Socket::connect(&socket_url(&cluster, 0, &token, false)).await;
    let token = vpush.sign(&lobby).await;
    let mut b = Socket::connect(&socket_url(&cluster, 0, &token, false)).await;
    a.send_text(r#"{"message": "first"}"#).await;
    // The first frame B ever sees is A's message: nothing in another dialect before it.
    assert_message(&b.next_json(DEADLINE).await, "first");
}
