//! SPEC §3 over real binaries: every route of the Mozilla-compatible API, its happy paths
//! and every error case, in the original error shape
//! `{"status": "error", "errors": [{location, name, description}]}`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::{Answer, Cluster, Moz, Options};
use serde_json::{Value, json};

/// Asserts a Mozilla-shaped error with `status` whose entries name exactly `names`.
fn assert_error(answer: &Answer, status: u16, location: &str, names: &[&str]) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    let errors = body["errors"].as_array().expect("errors array");
    let got_names: Vec<&str> = errors.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(got_names, names, "{body}");
    for e in errors {
        assert_eq!(e["location"], location, "{body}");
        assert!(
            e["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
}

async fn cluster() -> (Cluster, Moz) {
    let cluster = Cluster::start(Options::default()).await;
    let moz = cluster.moz();
    (cluster, moz)
}

#[tokio::test]
async fn tokens_and_queues() {
    let (cluster, moz) = cluster().await;
    let (token, own) = moz.token().await;
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{token}"
    );
    assert!(
        own.starts_with(&format!("{}/queue/", cluster.api_url())) && own.ends_with('/'),
        "{own}"
    );
    assert_ne!(moz.token().await.0, token, "tokens are random");

    let a = moz.queue(&token, "a.example").await;
    assert_eq!(
        moz.queue(&token, "a.example").await,
        a,
        "same token + domain, same queue"
    );
    let (status, b) = moz
        .json_post(
            &format!("{}/queue/", moz.base),
            &json!({"token": token, "domain": "b.example"}),
        )
        .await;
    assert_eq!(status, 200, "JSON bodies are accepted");
    let b = b["queue"].as_str().unwrap().to_owned();
    assert_ne!(a, b);

    let listed = moz
        .http
        .get(format!("{}/queue/", moz.base))
        .query(&[("token", &token)])
        .send()
        .await
        .unwrap();
    let listed = Moz::answer(listed).await;
    assert_eq!(
        listed,
        (200, json!({"a.example": a, "b.example": b})),
        "own queue is not listed"
    );
}

#[tokio::test]
async fn queue_creation_and_listing_errors() {
    let (_cluster, moz) = cluster().await;
    let (token, _) = moz.token().await;
    let url = format!("{}/queue/", moz.base);
    assert_error(
        &moz.form_post(&url, &[]).await,
        400,
        "body",
        &["token", "domain"],
    );
    assert_error(
        &moz.form_post(&url, &[("token", &token)]).await,
        400,
        "body",
        &["domain"],
    );
    assert_error(
        &moz.form_post(&url, &[("token", ""), ("domain", "x")]).await,
        400,
        "body",
        &["token"],
    );
    assert_error(
        &moz.form_post(&url, &[("token", &"f".repeat(64)), ("domain", "x")])
            .await,
        400,
        "body",
        &["token"],
    );
    assert_error(
        &moz.form_post(&url, &[("token", "short"), ("domain", "x")])
            .await,
        400,
        "body",
        &["token"],
    );
    let long = "d".repeat(300);
    assert_error(
        &moz.form_post(&url, &[("token", &token), ("domain", &long)])
            .await,
        400,
        "body",
        &["domain"],
    );
    let bad_json = moz
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_error(&Moz::answer(bad_json).await, 400, "body", &["body"]);
    assert_error(
        &moz.json_post(&url, &json!({"token": 5, "domain": "x"}))
            .await,
        400,
        "body",
        &["token"],
    );

    let list = |query: Vec<(&'static str, String)>| {
        let request = moz.http.get(&url).query(&query);
        async move { Moz::answer(request.send().await.unwrap()).await }
    };
    assert_error(&list(vec![]).await, 400, "querystring", &["token"]);
    assert_error(
        &list(vec![("token", "a".repeat(64))]).await,
        400,
        "querystring",
        &["token"],
    );
}

#[tokio::test]
async fn posting_messages_and_its_errors() {
    let (_cluster, moz) = cluster().await;
    let (token, own_queue) = moz.token().await;
    let queue = moz.queue(&token, "post.example").await;

    let (status, body) = moz.form_post(&queue, &[("body", "only a body")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["key"].as_str().is_some_and(|k| k.len() == 32),
        "{body}"
    );
    assert!(
        body["timestamp"].as_f64().is_some_and(|t| t > 1.6e9),
        "{body}"
    );
    let (status, _) = moz
        .json_post(&queue, &json!({"title": "json", "replaceId": "r"}))
        .await;
    assert_eq!(status, 200);

    assert_error(
        &moz.form_post(&queue, &[]).await,
        400,
        "body",
        &["title", "body"],
    );
    assert_error(
        &moz.form_post(&queue, &[("actionUrl", "http://x")]).await,
        400,
        "body",
        &["title", "body"],
    );
    assert_error(
        &moz.form_post(&queue, &[("title", "")]).await,
        400,
        "body",
        &["title", "body"],
    );
    assert_error(
        &moz.json_post(&queue, &json!({"title": ["x"]})).await,
        400,
        "body",
        &["title"],
    );
    assert_error(
        &moz.json_post(&queue, &json!([1, 2])).await,
        400,
        "body",
        &["body"],
    );
    let long = "r".repeat(300);
    assert_error(
        &moz.form_post(&queue, &[("title", "t"), ("replaceId", &long)])
            .await,
        400,
        "body",
        &["replaceId"],
    );
    let huge = "x".repeat(70 * 1024);
    assert_error(
        &moz.form_post(&queue, &[("title", &huge)]).await,
        413,
        "body",
        &["body"],
    );

    assert_error(
        &moz.form_post(&queue, &[("action", "read")]).await,
        400,
        "body",
        &["key"],
    );
    assert_error(
        &moz.form_post(&own_queue, &[("action", "read"), ("key", &"0".repeat(32))])
            .await,
        404,
        "body",
        &["key"],
    );
    let key = body["key"].as_str().unwrap();
    assert_error(
        &moz.form_post(&queue, &[("action", "read"), ("key", key)])
            .await,
        400,
        "body",
        &["action"],
    );
    assert_error(
        &moz.form_post(&queue, &[("action", "delete"), ("key", "k")])
            .await,
        400,
        "body",
        &["action"],
    );

    let unknown = format!("{}/queue/{}/", moz.base, "0".repeat(32));
    assert_error(
        &moz.form_post(&unknown, &[("title", "t")]).await,
        404,
        "path",
        &["queue"],
    );
    let malformed = format!("{}/queue/not-a-queue/", moz.base);
    assert_error(
        &moz.form_post(&malformed, &[("title", "t")]).await,
        404,
        "path",
        &["queue"],
    );
}

#[tokio::test]
async fn read_timestamps_only_move_forward() {
    let (_cluster, moz) = cluster().await;
    let (token, _) = moz.token().await;
    let (other, _) = moz.token().await;
    let queue = moz.queue(&token, "put.example").await;
    let put = |auth: Option<&str>, form: Vec<(&'static str, &'static str)>| {
        let mut request = moz.http.put(&queue).form(&form);
        if let Some(auth) = auth {
            request = request.header("X-Auth-Token", auth);
        }
        async move { Moz::answer(request.send().await.unwrap()).await }
    };
    assert_eq!(
        put(Some(&token), vec![("timestamp", "100.5")]).await,
        (200, json!({"timestamp": 100.5}))
    );
    assert_eq!(
        put(Some(&token), vec![("timestamp", "50")]).await,
        (200, json!({"timestamp": 100.5}))
    );
    assert_eq!(
        put(Some(&token), vec![("timestamp", "200.25")]).await,
        (200, json!({"timestamp": 200.25}))
    );
    let listed = moz.messages(&queue, &token, &[]).await;
    assert_eq!(listed.1["timestamp"], json!(200.25));
    assert_eq!(
        listed.1["last_seen"],
        json!(200.25),
        "the original's name for it"
    );

    assert_error(
        &put(None, vec![("timestamp", "1")]).await,
        400,
        "header",
        &["X-Auth-Token"],
    );
    assert_error(
        &put(Some(&other), vec![("timestamp", "1")]).await,
        404,
        "path",
        &["queue"],
    );
    assert_error(
        &put(Some("garbage"), vec![("timestamp", "1")]).await,
        404,
        "path",
        &["queue"],
    );
    assert_error(
        &put(Some(&token), vec![]).await,
        400,
        "body",
        &["timestamp"],
    );
    assert_error(
        &put(Some(&token), vec![("timestamp", "soon")]).await,
        400,
        "body",
        &["timestamp"],
    );
    assert_error(
        &put(Some(&token), vec![("timestamp", "-5")]).await,
        400,
        "body",
        &["timestamp"],
    );
    let json_put = moz
        .http
        .put(&queue)
        .header("X-Auth-Token", &token)
        .json(&json!({"timestamp": 300}));
    assert_eq!(
        Moz::answer(json_put.send().await.unwrap()).await,
        (200, json!({"timestamp": 300.0}))
    );
}

#[tokio::test]
async fn listing_pages_collapses_replace_ids_and_checks_ownership() {
    let (_cluster, moz) = cluster().await;
    let (token, own) = moz.token().await;
    let (stranger, _) = moz.token().await;
    let a = moz.queue(&token, "a.example").await;
    let b = moz.queue(&token, "b.example").await;
    let mut keys = Vec::new();
    for i in 0..25 {
        keys.push(moz.post(&a, &format!("m{i}")).await);
    }
    let listed = moz.messages(&a, &token, &[]).await;
    assert_eq!(listed.0, 200);
    let got: Vec<&str> = listed.1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        keys[..20].iter().map(String::as_str).collect::<Vec<_>>(),
        "default limit 20, oldest first"
    );
    let message = &listed.1["messages"][0];
    assert_eq!(message["queue"], Value::String(a.clone()));
    assert_eq!(message["body"], json!({"title": "m0"}));

    // Paging by key and by time both continue strictly after.
    let page = moz
        .messages(&a, &token, &[("since", &keys[19]), ("limit", "3")])
        .await
        .1;
    let got: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(got, [&keys[20], &keys[21], &keys[22]]);
    let since = listed.1["messages"][19]["timestamp"].to_string();
    let page = moz
        .messages(&a, &token, &[("since", &since), ("limit", "100")])
        .await
        .1;
    assert_eq!(page["messages"].as_array().unwrap().len(), 5);
    let huge_limit = moz.messages(&a, &token, &[("limit", "5000")]).await;
    assert_eq!(
        huge_limit.1["messages"].as_array().unwrap().len(),
        25,
        "clamped to 100, 25 exist"
    );

    // replaceId: only the latest of a queue's messages sharing one is listed.
    let first = moz
        .form_post(&b, &[("title", "score 1-0"), ("replaceId", "match")])
        .await
        .1;
    moz.form_post(&b, &[("title", "unrelated")]).await;
    let last = moz
        .form_post(&b, &[("title", "score 2-0"), ("replaceId", "match")])
        .await
        .1;
    let listed = moz.messages(&b, &token, &[]).await.1;
    let titles: Vec<&str> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["unrelated", "score 2-0"]);
    assert_ne!(first["key"], last["key"]);

    // The own queue lists every queue of the token.
    let everything = moz.messages(&own, &token, &[("limit", "100")]).await.1;
    assert_eq!(everything["messages"].as_array().unwrap().len(), 27);

    assert_error(
        &moz.messages(&a, &token, &[("limit", "0")]).await,
        400,
        "querystring",
        &["limit"],
    );
    assert_error(
        &moz.messages(&a, &token, &[("limit", "ten")]).await,
        400,
        "querystring",
        &["limit"],
    );
    assert_error(
        &moz.messages(&a, &token, &[("since", "yesterday")]).await,
        400,
        "querystring",
        &["since"],
    );
    let b_key = last["key"].as_str().unwrap();
    assert_error(
        &moz.messages(&a, &token, &[("since", b_key)]).await,
        400,
        "querystring",
        &["since"],
    );
    let no_header = Moz::answer(moz.http.get(&a).send().await.unwrap()).await;
    assert_error(&no_header, 400, "header", &["X-Auth-Token"]);
    assert_error(
        &moz.messages(&a, &stranger, &[]).await,
        404,
        "path",
        &["queue"],
    );
}

#[tokio::test]
async fn deleting_queues() {
    let (_cluster, moz) = cluster().await;
    let (token, own) = moz.token().await;
    let (stranger, _) = moz.token().await;
    let queue = moz.queue(&token, "gone.example").await;
    moz.post(&queue, "soon deleted").await;
    let delete = |url: &str, token: Option<&str>| {
        let mut request = moz.http.delete(url);
        if let Some(token) = token {
            request = request.query(&[("token", token)]);
        }
        async move { Moz::answer(request.send().await.unwrap()).await }
    };
    assert_error(&delete(&queue, None).await, 400, "querystring", &["token"]);
    assert_error(
        &delete(&queue, Some(&stranger)).await,
        404,
        "path",
        &["queue"],
    );
    assert_error(&delete(&own, Some(&token)).await, 400, "path", &["queue"]);
    assert_eq!(delete(&queue, Some(&token)).await, (204, Value::Null));
    assert_error(&delete(&queue, Some(&token)).await, 404, "path", &["queue"]);
    assert_error(
        &moz.form_post(&queue, &[("title", "t")]).await,
        404,
        "path",
        &["queue"],
    );
    assert_error(
        &moz.messages(&queue, &token, &[]).await,
        404,
        "path",
        &["queue"],
    );
    let everything = moz.messages(&own, &token, &[]).await.1;
    assert_eq!(
        everything["messages"],
        json!([]),
        "its messages went with it"
    );
    let recreated = moz.queue(&token, "gone.example").await;
    assert_ne!(recreated, queue, "a new capability after deletion");
}

#[tokio::test]
async fn operational_endpoints_and_unknown_routes() {
    let (_cluster, moz) = cluster().await;
    let get = |path: &str| {
        let request = moz.http.get(format!("{}{path}", moz.base));
        async move { request.send().await.unwrap() }
    };
    let health: Value = get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    let version: Value = get("/version").await.json().await.unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    moz.token().await;
    let metrics = get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("herald_api_requests_total{route=\"token_create\",status=\"200\"} 1"),
        "{metrics}"
    );
    let nodes: Value = get("/nodes/").await.json().await.unwrap();
    assert!(
        nodes["nodes"].as_array().is_some_and(|n| n.len() == 1),
        "{nodes}"
    );

    assert_error(
        &Moz::answer(get("/nope").await).await,
        404,
        "path",
        &["path"],
    );
    let wrong_method = moz
        .http
        .patch(format!("{}/token/", moz.base))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
}
