//! The OpenAPI document is kept true here: the test fetches `GET /openapi.json` from a real
//! `herald-api`, drives every operation it lists — at least one success and the main
//! errors (bad input, 401, 403 with a key lacking the scope, 404, 413, 429) on every
//! surface — plus an unknown path and a wrong method under each surface prefix of
//! `x-unmatched-requests`, and checks each answer: its path and method are in the
//! document, its status is documented for that operation, its content type is a documented
//! one, documented required headers are present, and a JSON body validates against the
//! documented schema (JSON Schema 2020-12, `$ref`s resolved inside the document). Every
//! mismatch is collected and the test fails once, listing them all; it also fails if an
//! operation of the document was never exercised or never succeeded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use e2e::{Cluster, DEADLINE, DEV_SECRET, Options, Socket, repo_root};
use serde_json::{Value, json};

/// Keys of the dev app with fewer scopes (403s) and one to exhaust (429s).
const KEYS: &str = r#"
[[apps.keys]]
name = "reader"
secret = "reader-secret-0123456789"
scopes = ["channels:read"]

[[apps.keys]]
name = "sender"
secret = "sender-secret-0123456789"
scopes = ["messages:send"]

[[apps.keys]]
name = "limited"
secret = "limited-secret-0123456789"
scopes = ["*:*"]
"#;

const ADMIN: &str = DEV_SECRET;
const READER: &str = "reader-secret-0123456789";
const SENDER: &str = "sender-secret-0123456789";
const LIMITED: &str = "limited-secret-0123456789";
const WRONG: &str = "not-a-key-of-any-app";

/// The Thunderpush prefix of the dev app (its public key is `dev-public`).
const THUNDER: &str = "/api/1.0.0/dev-public";

/// A body larger than the API's 64 KiB limit.
fn oversized() -> Value {
    json!({ "data": "x".repeat(70_000) })
}

/// One HTTP request of the table, and the statuses it may get.
#[derive(Debug, Clone)]
struct Call {
    method: &'static str,
    /// Relative to the API's base URL (or an absolute URL on it), query included.
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Body,
    expect: Vec<u16>,
}

#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
    Raw(&'static str, Vec<u8>),
}

fn call(method: &'static str, path: impl Into<String>) -> Call {
    Call {
        method,
        path: path.into(),
        headers: Vec::new(),
        body: Body::None,
        expect: Vec::new(),
    }
}

fn get(path: impl Into<String>) -> Call {
    call("GET", path)
}
fn post(path: impl Into<String>) -> Call {
    call("POST", path)
}
fn put(path: impl Into<String>) -> Call {
    call("PUT", path)
}
fn delete(path: impl Into<String>) -> Call {
    call("DELETE", path)
}

impl Call {
    fn header(mut self, name: &'static str, value: &str) -> Call {
        self.headers.push((name, value.to_owned()));
        self
    }
    fn bearer(self, secret: &str) -> Call {
        self.header("authorization", &format!("Bearer {secret}"))
    }
    fn thunder(self, secret: &str) -> Call {
        self.header("x-thunder-secret-key", secret)
    }
    fn json(mut self, body: Value) -> Call {
        self.body = Body::Json(body);
        self
    }
    fn form(mut self, pairs: &[(&str, &str)]) -> Call {
        let pairs = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.body = Body::Form(pairs);
        self
    }
    fn raw(mut self, content_type: &'static str, body: &str) -> Call {
        self.body = Body::Raw(content_type, body.as_bytes().to_vec());
        self
    }
    fn expect(mut self, status: u16) -> Call {
        self.expect = vec![status];
        self
    }
    fn expect_any(mut self, statuses: &[u16]) -> Call {
        self.expect = statuses.to_vec();
        self
    }
    fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// One operation of the document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Operation {
    /// Upper case, as on the wire.
    method: String,
    template: String,
}

/// Sends requests, checks every answer against the document, and remembers what failed.
struct Checker {
    base: String,
    http: reqwest::Client,
    doc: Value,
    operations: Vec<Operation>,
    validators: HashMap<String, jsonschema::Validator>,
    /// Statuses seen per operation.
    seen: BTreeMap<Operation, BTreeSet<u16>>,
    /// Each distinct mismatch, in the order found, with how often it happened.
    failures: Vec<(String, usize)>,
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `s` as one JSON pointer token.
fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Whether a concrete path matches a path template, and how many literal segments agreed
/// (the most literal template wins, as OpenAPI says).
fn template_match(template: &str, path: &str) -> Option<usize> {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    if t.len() != p.len() {
        return None;
    }
    let mut literal = 0;
    for (t, p) in t.iter().zip(&p) {
        if t.starts_with('{') && t.ends_with('}') {
            if p.is_empty() {
                return None;
            }
        } else if t == p {
            literal += 1;
        } else {
            return None;
        }
    }
    Some(literal)
}

impl Checker {
    fn new(base: &str, doc: Value) -> Checker {
        let mut operations = Vec::new();
        for (template, item) in doc["paths"].as_object().expect("paths") {
            for method in METHODS {
                if item.get(method).is_some() {
                    operations.push(Operation {
                        method: method.to_uppercase(),
                        template: template.clone(),
                    });
                }
            }
        }
        Checker {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            doc,
            operations,
            validators: HashMap::new(),
            seen: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// The documented path template a concrete path falls under.
    fn template_of(&self, path: &str) -> Option<String> {
        self.doc["paths"]
            .as_object()?
            .keys()
            .filter_map(|t| template_match(t, path).map(|score| (score, t)))
            .max_by_key(|(score, _)| *score)
            .map(|(_, t)| t.clone())
    }

    /// The object at `pointer`, `$ref`s followed: it and its own pointer.
    fn resolve(&self, mut pointer: String) -> Option<(String, &Value)> {
        let mut value = self.doc.pointer(&pointer)?;
        while let Some(target) = value.get("$ref").and_then(Value::as_str) {
            pointer = target.strip_prefix('#')?.to_owned();
            value = self.doc.pointer(&pointer)?;
        }
        Some((pointer, value))
    }

    /// Validates `instance` against `schema` (found under `key`), `$ref`s resolved in the
    /// document: the schema is placed under the document's `$defs` and referenced from its
    /// root. The error messages, if any.
    fn validate(&mut self, key: &str, schema: &Value, instance: &Value) -> Vec<String> {
        if !self.validators.contains_key(key) {
            let mut root = self.doc.clone();
            root["$defs"] = json!({ "checked": schema });
            root["$ref"] = json!("#/$defs/checked");
            match jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&root)
            {
                Ok(validator) => {
                    self.validators.insert(key.to_owned(), validator);
                }
                Err(e) => return vec![format!("the schema at {key} does not compile: {e}")],
            }
        }
        self.validators[key]
            .iter_errors(instance)
            .map(|e| format!("{} (at `{}`)", e, e.instance_path()))
            .collect()
    }

    /// Checks one answer against a response object of the document (at `pointer`).
    fn check_response(
        &mut self,
        pointer: String,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Vec<String> {
        let Some((pointer, response)) = self.resolve(pointer.clone()) else {
            return vec![format!("no response object at {pointer}")];
        };
        let response = response.clone();
        let mut problems = Vec::new();
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            let value = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
            match value {
                None if header["required"] == true => {
                    problems.push(format!("required header {name} is missing"));
                }
                None => {}
                Some(value) => {
                    let schema = &header["schema"];
                    let instance = match (schema["type"].as_str(), value.parse::<i64>()) {
                        (Some("integer"), Ok(n)) => json!(n),
                        _ => json!(value),
                    };
                    let key = format!("{pointer}/headers/{}", pointer_token(name));
                    problems.extend(
                        self.validate(&key, schema, &instance)
                            .into_iter()
                            .map(|e| format!("header {name}: {e}")),
                    );
                }
            }
        }
        let Some(content) = response["content"].as_object() else {
            if !body.is_empty() {
                problems.push("a body where the document says there is none".into());
            }
            return problems;
        };
        let mime = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let Some((documented, media)) = content
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&mime))
        else {
            let listed: Vec<&String> = content.keys().collect();
            problems.push(format!(
                "content type {mime:?} is not documented ({listed:?})"
            ));
            return problems;
        };
        if mime != "application/json" {
            return problems;
        }
        let instance: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("the body is not JSON: {e}"));
                return problems;
            }
        };
        let key = format!("{pointer}/content/{}/schema", pointer_token(documented));
        let schema = media["schema"].clone();
        problems.extend(self.validate(&key, &schema, &instance));
        problems
    }

    /// Sends `call`: the status, headers and body of its answer.
    async fn exchange(&self, call: &Call) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let url = self.url(&call.path);
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).unwrap();
        let mut request = self.http.request(method, &url);
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        request = match &call.body {
            Body::None => request,
            Body::Json(v) => request.json(v),
            Body::Form(pairs) => request.form(pairs),
            Body::Raw(content_type, bytes) => request
                .header("content-type", *content_type)
                .body(bytes.clone()),
        };
        let response = request.send().await.unwrap_or_else(|e| {
            panic!("{} failed: {e}", call.describe());
        });
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap().to_vec();
        (status, headers, body)
    }

    /// Sends `call` and checks its answer against the document: the status, the body as
    /// JSON (`Null` when empty or not JSON) and the headers.
    async fn send(&mut self, call: Call) -> (u16, Value, reqwest::header::HeaderMap) {
        let (status, headers, body) = self.exchange(&call).await;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let url = self.url(&call.path);
        let mut problems = Vec::new();
        if !call.expect.is_empty() && !call.expect.contains(&status) {
            problems.push(format!("the table expected {:?}", call.expect));
        }
        problems.extend(self.check_operation(&call, &url, status, &headers, &body));
        self.fail(&call, status, &body, problems);
        (status, json, headers)
    }

    /// Checks (a) path and method, (b) status, (c) body of an answer to a documented
    /// operation.
    fn check_operation(
        &mut self,
        call: &Call,
        url: &str,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Vec<String> {
        let path = reqwest::Url::parse(url).unwrap().path().to_owned();
        let Some(template) = self.template_of(&path) else {
            return vec![format!("the path {path} is not in the document")];
        };
        let method = call.method.to_lowercase();
        let operation_pointer = format!("/paths/{}/{method}", pointer_token(&template));
        if self.doc.pointer(&operation_pointer).is_none() {
            return vec![format!("{} is not documented on {template}", call.method)];
        }
        self.seen
            .entry(Operation {
                method: call.method.to_owned(),
                template: template.clone(),
            })
            .or_default()
            .insert(status);
        let response = format!("{operation_pointer}/responses/{status}");
        if self.doc.pointer(&response).is_none() {
            return vec![format!(
                "status {status} is not documented for {} {template}",
                call.method
            )];
        }
        self.check_response(response, headers, body)
    }

    /// Records a mismatch (once per distinct text, counted).
    fn mismatch(&mut self, text: String) {
        match self.failures.iter_mut().find(|(seen, _)| *seen == text) {
            Some((_, count)) => *count += 1,
            None => self.failures.push((text, 1)),
        }
    }

    fn fail(&mut self, call: &Call, status: u16, body: &[u8], problems: Vec<String>) {
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().take(300).collect();
        for problem in problems {
            self.mismatch(format!(
                "{} → {status}: {problem}\n    body: {}",
                call.describe(),
                text.escape_debug()
            ));
        }
    }

    /// Every mismatch, one per line with its count; empty when there is none.
    fn report(&self) -> String {
        self.failures
            .iter()
            .map(|(text, count)| match count {
                1 => text.clone(),
                n => format!("{text}\n    ({n} times)"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends `call`, checks its answer; its JSON body.
    async fn check(&mut self, call: Call) -> Value {
        self.send(call).await.1
    }

    /// Sends `call` again and again (every answer checked) until `done` holds for its
    /// answer, or panics after `DEADLINE`.
    async fn until(&mut self, call: Call, done: impl Fn(u16, &Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (status, body, _) = self.send(call.clone()).await;
            if done(status, &body) {
                return body;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting on {}: last answer {status} {body}",
                call.describe()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every operation was exercised, and succeeded at least once.
    fn check_coverage(&mut self) {
        for operation in self.operations.clone() {
            let name = format!("{} {}", operation.method, operation.template);
            match self.seen.get(&operation) {
                None => self.mismatch(format!("{name}: documented but never exercised")),
                Some(statuses) if !statuses.iter().any(|s| (200..300).contains(s)) => {
                    let statuses = statuses.clone();
                    self.mismatch(format!("{name}: never succeeded (saw {statuses:?})"));
                }
                Some(_) => {}
            }
        }
    }
}

#[tokio::test]
async fn every_answer_matches_the_openapi_document() {
    let mut cluster = Cluster::start(Options {
        config: KEYS,
        env: &[
            ("API__RATE_LIMIT_PER_SECOND", "1"),
            ("API__RATE_LIMIT_BURST", "500"),
        ],
        ..Options::default()
    })
    .await;
    let base = cluster.api_url();
    let served: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .expect("/openapi.json is JSON");
    assert!(
        served["openapi"].as_str().unwrap_or("").starts_with("3.1."),
        "an OpenAPI 3.1 document: {}",
        served["openapi"]
    );
    let mut c = Checker::new(&base, served.clone());
    let file = std::fs::read_to_string(repo_root().join("api/openapi.json")).unwrap();
    let file: Value = serde_json::from_str(&file).expect("api/openapi.json is JSON");
    if file != served {
        c.mismatch(
            "the API serves another document than api/openapi.json: rebuild the binaries".into(),
        );
    }

    operations(&mut c).await;
    let alice = tokens(&mut c).await;
    let _socket = Socket::native(&cluster.edge_url(0), &alice).await;
    presence(&mut c).await;
    channels(&mut c).await;
    users(&mut c).await;
    messages(&mut c).await;
    webhooks(&mut c).await;
    templates(&mut c).await;
    webpush(&mut c).await;
    broadcasts(&mut c).await;
    graphql(&mut c).await;
    mozilla(&mut c).await;
    thunderpush(&mut c).await;
    vpush(&mut c).await;
    core(&mut c).await;
    rate_limits(&mut c).await;
    unmatched(&mut c).await;

    // Last, as it takes the cluster down: without a router `/health` answers 503.
    cluster.router.kill();
    c.until(get("/health").expect_any(&[200, 503]), |status, _| {
        status == 503
    })
    .await;

    c.check_coverage();
    assert!(
        c.failures.is_empty(),
        "{} distinct disagreements with the OpenAPI document:\n{}",
        c.failures.len(),
        c.report()
    );
}

/// `/health`, `/version`, `/metrics`, `/openapi.json`.
async fn operations(c: &mut Checker) {
    for path in ["/health", "/version", "/metrics", "/openapi.json"] {
        c.check(get(path).expect(200)).await;
    }
}

/// `POST /api/v1/tokens` with each way to present a key, and its refusals. Returns a
/// token of user `alice` who may subscribe to `news`.
async fn tokens(c: &mut Checker) -> String {
    let path = "/api/v1/tokens";
    let minted = c
        .check(
            post(path)
                .bearer(ADMIN)
                .json(json!({"user": "alice", "channels": ["news", "room:*"], "ttl": 600}))
                .expect(201),
        )
        .await;
    c.check(
        post(path)
            .header("authorization", ADMIN)
            .json(json!({"user": "bob", "topics": ["t"], "publish": true, "ack": true}))
            .expect(201),
    )
    .await;
    c.check(
        post(path)
            .header("x-api-key", ADMIN)
            .json(json!({"user": "carol", "origin": "http://example.com", "sourceIp": "::1"}))
            .expect(201),
    )
    .await;
    for body in [
        json!({}),
        json!({"user": 5}),
        json!({"user": "a", "ttl": 0}),
        json!({"user": "a", "channels": ["bad name"]}),
        json!({"user": "a", "sourceIp": "nowhere"}),
        json!([1]),
    ] {
        c.check(post(path).bearer(ADMIN).json(body).expect(400))
            .await;
    }
    c.check(
        post(path)
            .bearer(ADMIN)
            .raw("application/json", "{")
            .expect(400),
    )
    .await;
    c.check(post(path).bearer(ADMIN).json(oversized()).expect(413))
        .await;
    c.check(post(path).json(json!({"user": "a"})).expect(401))
        .await;
    c.check(
        post(path)
            .bearer(WRONG)
            .json(json!({"user": "a"}))
            .expect(401),
    )
    .await;
    c.check(
        post(path)
            .bearer(READER)
            .json(json!({"user": "a"}))
            .expect(403),
    )
    .await;
    minted["token"].as_str().unwrap().to_owned()
}

/// Presence while `alice` has a socket subscribed to `news`, through `/api/v1` and
/// Thunderpush (polled: an edge reports presence shortly after the connection).
async fn presence(c: &mut Checker) {
    let has_alice = |_: u16, body: &Value| body["users"].to_string().contains("alice");
    c.until(
        get("/api/v1/channels/news/users").bearer(ADMIN).expect(200),
        has_alice,
    )
    .await;
    c.until(
        get(format!("{THUNDER}/channels/news/"))
            .thunder(ADMIN)
            .expect(200),
        has_alice,
    )
    .await;
    c.until(
        get("/api/v1/users/alice").bearer(ADMIN).expect(200),
        |_, body| body["online"] == true,
    )
    .await;
    c.until(
        get(format!("{THUNDER}/users/alice/"))
            .thunder(ADMIN)
            .expect(200),
        |_, body| body["online"] == true,
    )
    .await;
    c.until(get("/api/v1/users").bearer(ADMIN).expect(200), |_, body| {
        body["count"].as_u64() >= Some(1)
    })
    .await;
    c.until(
        get(format!("{THUNDER}/users/")).thunder(ADMIN).expect(200),
        |_, body| body["count"].as_u64() >= Some(1),
    )
    .await;
}

/// The errors every `/api/v1/channels/{channel}…` route shares: a bad name (400), a
/// segment that is not UTF-8 (404), no or a wrong key (401), a key without the scope (403).
async fn channel_refusals(c: &mut Checker, method: &'static str, suffix: &str, weak: &str) {
    let body = || json!({"history": null, "data": 1});
    for (channel, secret, status) in [
        ("a%20b", ADMIN, 400),
        ("%FF", ADMIN, 404),
        ("news", WRONG, 401),
        ("news", weak, 403),
    ] {
        let path = format!("/api/v1/channels/{channel}{suffix}");
        c.check(
            call(method, path)
                .bearer(secret)
                .json(body())
                .expect(status),
        )
        .await;
    }
    let path = format!("/api/v1/channels/news{suffix}");
    c.check(call(method, path).json(body()).expect(401)).await;
}

/// `/api/v1/channels/{channel}`, its messages and history.
async fn channels(c: &mut Checker) {
    let news = "/api/v1/channels/news";
    c.check(
        put(news)
            .bearer(ADMIN)
            .json(json!({"history": {"size": 10, "ttl": 3600}}))
            .expect(200),
    )
    .await;
    c.check(
        put("/api/v1/channels/eph")
            .bearer(ADMIN)
            .json(json!({"history": null}))
            .expect(200),
    )
    .await;
    for body in [
        json!({}),
        json!({"history": {"size": 0}}),
        json!({"history": {"ttl": 99_999_999}}),
        json!({"history": 5}),
    ] {
        c.check(put(news).bearer(ADMIN).json(body).expect(400))
            .await;
    }
    c.check(put(news).bearer(ADMIN).json(oversized()).expect(413))
        .await;
    channel_refusals(c, "PUT", "", READER).await;

    c.check(get(news).bearer(READER).expect(200)).await;
    c.check(
        get("/api/v1/channels/never-configured")
            .bearer(ADMIN)
            .expect(200),
    )
    .await;
    channel_refusals(c, "GET", "", SENDER).await;

    let messages = format!("{news}/messages");
    c.check(
        post(&messages)
            .bearer(ADMIN)
            .json(json!({"data": {"n": 1}, "ttl": 60, "replaceId": "r"}))
            .expect(201),
    )
    .await;
    let keyed = json!({"data": [1, 2], "ttl": 60, "idempotencyKey": "once"});
    c.check(
        post(&messages)
            .bearer(ADMIN)
            .json(keyed.clone())
            .expect(201),
    )
    .await;
    let (_, _, headers) = c
        .send(post(&messages).bearer(ADMIN).json(keyed).expect(201))
        .await;
    assert_eq!(
        headers.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    c.check(
        post("/api/v1/channels/eph/messages")
            .bearer(SENDER)
            .json(json!({"data": "x"}))
            .expect(201),
    )
    .await;
    for body in [
        json!({}),
        json!({"data": null}),
        json!({"data": 1, "ttl": 0}),
        json!({"data": 1, "replaceId": ""}),
        json!({"data": 1, "idempotencyKey": "k".repeat(300)}),
    ] {
        c.check(post(&messages).bearer(ADMIN).json(body).expect(400))
            .await;
    }
    c.check(post(&messages).bearer(ADMIN).json(oversized()).expect(413))
        .await;
    channel_refusals(c, "POST", "/messages", READER).await;

    let page = c.check(get(&messages).bearer(READER).expect(200)).await;
    assert!(!page["items"].as_array().unwrap().is_empty(), "{page}");
    c.check(
        get(format!("{messages}?since=1&limit=1"))
            .bearer(ADMIN)
            .expect(200),
    )
    .await;
    for query in ["limit=0", "limit=1001", "since=x", "since=-1"] {
        c.check(get(format!("{messages}?{query}")).bearer(ADMIN).expect(400))
            .await;
    }
    channel_refusals(c, "GET", "/messages", SENDER).await;
    channel_refusals(c, "GET", "/users", SENDER).await;
}

/// `/api/v1/users…`.
async fn users(c: &mut Checker) {
    c.check(get("/api/v1/users").expect(401)).await;
    c.check(get("/api/v1/users").bearer(READER).expect(403))
        .await;
    c.check(get("/api/v1/users/bob").bearer(ADMIN).expect(200))
        .await;
    let long = "u".repeat(257);
    for (method, suffix) in [("GET", ""), ("DELETE", "/connections")] {
        for (user, secret, status) in [
            ("a%0Ab", ADMIN, 400),
            (long.as_str(), ADMIN, 400),
            ("%FF", ADMIN, 404),
            ("bob", WRONG, 401),
            ("bob", READER, 403),
        ] {
            let path = format!("/api/v1/users/{user}{suffix}");
            c.check(call(method, path).bearer(secret).expect(status))
                .await;
        }
    }
    c.check(
        delete("/api/v1/users/alice/connections")
            .bearer(ADMIN)
            .expect(204),
    )
    .await;
    c.check(
        delete("/api/v1/users/nobody/connections")
            .bearer(ADMIN)
            .expect(204),
    )
    .await;
}

/// Addressed messages: send (to many, to one user), read, cancel, list; their refusals.
async fn messages(c: &mut Checker) {
    let sent = c
        .check(
            post("/api/v1/messages")
                .bearer(SENDER)
                .json(
                    json!({"recipients": ["carol", {"id": "dan", "foreignId": "f1"}, "a\nb"],
                             "message": "hi", "topic": "t", "ttl": 600}),
                )
                .expect(201),
        )
        .await;
    let id = sent["items"][0]["id"].as_str().unwrap().to_owned();
    c.check(
        post("/api/v1/users/carol/messages")
            .bearer(ADMIN)
            .json(json!({"data": {"n": 1}, "expiresAt": "2099-01-01T00:00:00Z"}))
            .expect(201),
    )
    .await;
    for (body, secret, status) in [
        (json!({"recipients": [], "message": "x"}), ADMIN, 400),
        (json!({"recipients": ["a"]}), ADMIN, 400),
        (json!({"recipients": ["a"], "message": "x"}), READER, 403),
        (json!({"recipients": ["a"], "message": "x"}), WRONG, 401),
    ] {
        c.check(
            post("/api/v1/messages")
                .bearer(secret)
                .json(body)
                .expect(status),
        )
        .await;
    }
    c.check(
        post("/api/v1/users/a%0Ab/messages")
            .bearer(ADMIN)
            .json(json!({"message": "x"}))
            .expect(400),
    )
    .await;
    c.check(
        get(format!("/api/v1/messages/{id}"))
            .bearer(ADMIN)
            .expect(200),
    )
    .await;
    c.check(get("/api/v1/messages/nope").bearer(ADMIN).expect(404))
        .await;
    c.check(
        get(format!("/api/v1/messages/{id}"))
            .bearer(SENDER)
            .expect(403),
    )
    .await;
    let page = c
        .check(
            get("/api/v1/messages?recipient=carol&limit=1")
                .bearer(ADMIN)
                .expect(200),
        )
        .await;
    let token = page["nextToken"].as_str().unwrap().to_owned();
    c.check(
        get(format!(
            "/api/v1/messages?limit=1&recipient=carol&nextToken={token}"
        ))
        .bearer(ADMIN)
        .expect(200),
    )
    .await;
    for query in [
        "status=DONE",
        "limit=0",
        "createdFrom=yesterday",
        "nextToken=x",
    ] {
        c.check(
            get(format!("/api/v1/messages?{query}"))
                .bearer(ADMIN)
                .expect(400),
        )
        .await;
    }
    c.check(
        post(format!("/api/v1/messages/{id}/cancel"))
            .bearer(ADMIN)
            .expect(200),
    )
    .await;
    c.check(
        post(format!("/api/v1/messages/{id}/cancel"))
            .bearer(ADMIN)
            .expect(409),
    )
    .await;
    c.check(
        post("/api/v1/messages/nope/cancel")
            .bearer(ADMIN)
            .expect(404),
    )
    .await;
}

/// Socrate's GraphQL endpoint: a query, a mutation, and the transport-level refusals.
async fn graphql(c: &mut Checker) {
    c.check(
        post("/graphql")
            .header("x-api-key", ADMIN)
            .json(json!({"query": "{ version }"}))
            .expect(200),
    )
    .await;
    c.check(
        post("/graphql")
            .header("x-api-key", ADMIN)
            .json(json!({"query": "mutation($i: GlobalMessageInput!) { pushGlobalMessage(input: $i) { id } }",
                         "variables": {"i": {"message": "hi"}}}))
            .expect(200),
    )
    .await;
    c.check(
        post("/graphql")
            .json(json!({"query": "{ version }"}))
            .expect(401),
    )
    .await;
    c.check(
        post("/graphql")
            .header("x-api-key", ADMIN)
            .raw("application/json", "{")
            .expect(400),
    )
    .await;
    c.check(
        post("/graphql")
            .header("x-api-key", ADMIN)
            .json(oversized())
            .expect(413),
    )
    .await;
}

/// Broadcasts: send, list; their refusals.
async fn broadcasts(c: &mut Checker) {
    c.check(
        post("/api/v1/broadcasts")
            .bearer(SENDER)
            .json(json!({"message": "all", "topic": "t", "ttl": 60}))
            .expect(201),
    )
    .await;
    c.check(
        post("/api/v1/broadcasts")
            .bearer(ADMIN)
            .json(json!({"data": {"k": 1}}))
            .expect(201),
    )
    .await;
    c.check(
        post("/api/v1/broadcasts")
            .bearer(ADMIN)
            .json(json!({}))
            .expect(400),
    )
    .await;
    c.check(
        post("/api/v1/broadcasts")
            .bearer(READER)
            .json(json!({"message": "x"}))
            .expect(403),
    )
    .await;
    let page = c
        .check(get("/api/v1/broadcasts?limit=1").bearer(ADMIN).expect(200))
        .await;
    let token = page["nextToken"].as_str().unwrap().to_owned();
    c.check(
        get(format!(
            "/api/v1/broadcasts?limit=1&topic=t&nextToken={token}"
        ))
        .bearer(ADMIN)
        .expect(200),
    )
    .await;
    c.check(
        get("/api/v1/broadcasts?limit=abc")
            .bearer(ADMIN)
            .expect(400),
    )
    .await;
    c.check(get("/api/v1/broadcasts").bearer(SENDER).expect(403))
        .await;
}

/// Templates: create, read, send with, delete; their refusals.
/// `/api/v1/webpush/key` and `/api/v1/users/{user}/webpush[/{subscription}]`.
async fn webpush(c: &mut Checker) {
    let key = c
        .check(get("/api/v1/webpush/key").bearer(ADMIN).expect(200))
        .await;
    assert!(key["publicKey"].is_string(), "{key}");
    c.check(get("/api/v1/webpush/key").expect(401)).await;
    c.check(get("/api/v1/webpush/key").bearer(SENDER).expect(403))
        .await;
    // Any P-256 point will do as a browser's key; nothing is pushed in this test.
    let browser = api::webpush::VapidKey::generate();
    let body = json!({"endpoint": "https://push.example.invalid/send/1",
                      "keys": {"p256dh": browser.public_key(), "auth": "AAECAwQFBgcICQoLDA0ODw"}});
    let path = "/api/v1/users/wp-user/webpush";
    let created = c
        .check(post(path).bearer(ADMIN).json(body.clone()).expect(201))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    c.check(post(path).bearer(ADMIN).json(body.clone()).expect(200))
        .await;
    c.check(
        post(path)
            .bearer(ADMIN)
            .json(json!({"endpoint": "nope", "keys": body["keys"]}))
            .expect(400),
    )
    .await;
    c.check(post(path).bearer(SENDER).json(body.clone()).expect(403))
        .await;
    c.check(post(path).json(body.clone()).expect(401)).await;
    for n in 0..9 {
        let mut more = body.clone();
        more["endpoint"] = json!(format!("https://push.example.invalid/send/more-{n}"));
        c.check(post(path).bearer(ADMIN).json(more).expect(201))
            .await;
    }
    let mut eleventh = body.clone();
    eleventh["endpoint"] = json!("https://push.example.invalid/send/eleventh");
    c.check(post(path).bearer(ADMIN).json(eleventh).expect(409))
        .await;
    let listed = c.check(get(path).bearer(ADMIN).expect(200)).await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(10),
        "{listed}"
    );
    c.check(get(path).bearer(READER).expect(403)).await;
    c.check(delete(format!("{path}/{id}")).bearer(ADMIN).expect(204))
        .await;
    c.check(delete(format!("{path}/{id}")).bearer(ADMIN).expect(404))
        .await;
    c.check(delete(format!("{path}/{id}")).expect(401)).await;
}

async fn templates(c: &mut Checker) {
    let template = c
        .check(
            post("/api/v1/templates")
                .bearer(ADMIN)
                .json(json!({"title": "t", "body": "b", "data": {"k": 1},
                             "actionUrl": "https://x.example/", "icon": "https://x.example/i.png", "ttl": 60}))
                .expect(201),
        )
        .await;
    let id = template["id"].as_str().unwrap().to_owned();
    c.check(
        post("/api/v1/templates")
            .bearer(ADMIN)
            .json(json!({}))
            .expect(400),
    )
    .await;
    c.check(
        post("/api/v1/templates")
            .bearer(SENDER)
            .json(json!({"title": "t"}))
            .expect(403),
    )
    .await;
    c.check(
        get(format!("/api/v1/templates/{id}"))
            .bearer(ADMIN)
            .expect(200),
    )
    .await;
    c.check(
        post("/api/v1/messages")
            .bearer(ADMIN)
            .json(json!({"recipients": ["ivy"], "template": id}))
            .expect(201),
    )
    .await;
    c.check(
        post("/api/v1/messages")
            .bearer(ADMIN)
            .json(json!({"recipients": ["ivy"], "template": "nope"}))
            .expect(400),
    )
    .await;
    c.check(
        delete(format!("/api/v1/templates/{id}"))
            .bearer(ADMIN)
            .expect(204),
    )
    .await;
    c.check(
        get(format!("/api/v1/templates/{id}"))
            .bearer(ADMIN)
            .expect(404),
    )
    .await;
    c.check(
        delete(format!("/api/v1/templates/{id}"))
            .bearer(ADMIN)
            .expect(404),
    )
    .await;
}

/// The webhook: set, read, remove; its refusals.
async fn webhooks(c: &mut Checker) {
    c.check(get("/api/v1/webhook").bearer(ADMIN).expect(404))
        .await;
    c.check(delete("/api/v1/webhook").bearer(ADMIN).expect(404))
        .await;
    let config = json!({"url": "http://127.0.0.1:9/hook", "secret": "s", "events": ["sent"]});
    c.check(
        put("/api/v1/webhook")
            .bearer(ADMIN)
            .json(config.clone())
            .expect(200),
    )
    .await;
    c.check(get("/api/v1/webhook").bearer(ADMIN).expect(200))
        .await;
    for (body, secret, status) in [
        (json!({"url": "ftp://x/", "secret": "s"}), ADMIN, 400),
        (
            json!({"url": "http://x/", "secret": "s", "maxBatch": 0}),
            ADMIN,
            400,
        ),
        (config.clone(), READER, 403),
        (config.clone(), WRONG, 401),
    ] {
        c.check(
            put("/api/v1/webhook")
                .bearer(secret)
                .json(body)
                .expect(status),
        )
        .await;
    }
    c.check(
        put("/api/v1/webhook")
            .bearer(ADMIN)
            .json(oversized())
            .expect(413),
    )
    .await;
    c.check(get("/api/v1/webhook").bearer(SENDER).expect(403))
        .await;
    c.check(delete("/api/v1/webhook").bearer(SENDER).expect(403))
        .await;
    c.check(delete("/api/v1/webhook").bearer(ADMIN).expect(204))
        .await;
}

/// The Mozilla-compatible API: tokens, queues, messages, read marks, nodes.
async fn mozilla(c: &mut Checker) {
    let minted = c.check(post("/token/").expect(200)).await;
    let token = minted["token"].as_str().unwrap().to_owned();
    let own = minted["queue"].as_str().unwrap().to_owned();
    let other = c.check(post("/token/").expect(200)).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    c.check(post("/token/").raw("application/json", "[1]").expect(400))
        .await;
    c.check(post("/token/").json(oversized()).expect(413)).await;

    let queue = c
        .check(
            post("/queue/")
                .form(&[("token", token.as_str()), ("domain", "example.com")])
                .expect(200),
        )
        .await["queue"]
        .as_str()
        .unwrap()
        .to_owned();
    c.check(
        post("/queue/")
            .json(json!({"token": token, "domain": "example.com"}))
            .expect(200),
    )
    .await;
    let long_domain = "d".repeat(256);
    for form in [
        vec![],
        vec![("token", token.as_str())],
        vec![("token", "0123"), ("domain", "example.com")],
        vec![("token", token.as_str()), ("domain", long_domain.as_str())],
    ] {
        c.check(post("/queue/").form(&form).expect(400)).await;
    }

    c.check(post("/queue/").json(oversized()).expect(413)).await;

    c.check(get(format!("/queue/?token={token}")).expect(200))
        .await;
    c.check(get("/queue/").expect(400)).await;
    c.check(get(format!("/queue/?token={}", "a".repeat(64))).expect(400))
        .await;

    mozilla_messages(c, &token, &other, &own, &queue).await;

    let nodes = c.check(get("/nodes/").expect(200)).await;
    assert!(!nodes["nodes"].as_array().unwrap().is_empty(), "{nodes}");
}

/// Posting to, reading and deleting Mozilla queues.
async fn mozilla_messages(c: &mut Checker, token: &str, other: &str, own: &str, queue: &str) {
    let key = c
        .check(
            post(queue)
                .form(&[
                    ("title", "t"),
                    ("body", "b"),
                    ("actionUrl", "http://example.com/a"),
                    ("iconUrl", "http://example.com/i.png"),
                    ("replaceId", "r1"),
                ])
                .expect(200),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    c.check(post(queue).json(json!({"body": "only a body"})).expect(200))
        .await;
    c.check(post(format!("{own}?action=read&key={key}")).expect(200))
        .await;
    let unknown_queue = format!("/queue/{}/", "0".repeat(32));
    let long = "r".repeat(257);
    for (path, form, status) in [
        (queue.to_owned(), vec![], 400),
        (
            queue.to_owned(),
            vec![("title", "t"), ("replaceId", long.as_str())],
            400,
        ),
        (format!("{queue}?action=read&key={key}"), vec![], 400),
        (format!("{own}?action=read"), vec![], 400),
        (format!("{own}?action=forget"), vec![], 400),
        (
            format!("{own}?action=read&key={}", "f".repeat(32)),
            vec![],
            404,
        ),
        (unknown_queue.clone(), vec![("title", "t")], 404),
    ] {
        c.check(post(path).form(&form).expect(status)).await;
    }
    c.check(post(queue).json(oversized()).expect(413)).await;

    c.check(
        put(queue)
            .header("x-auth-token", token)
            .form(&[("timestamp", "12.5")])
            .expect(200),
    )
    .await;
    c.check(
        put(queue)
            .header("x-auth-token", token)
            .json(json!({"timestamp": 13}))
            .expect(200),
    )
    .await;
    c.check(
        put(queue)
            .header("x-auth-token", token)
            .json(oversized())
            .expect(413),
    )
    .await;
    c.check(put(queue).form(&[("timestamp", "1")]).expect(400))
        .await;
    for timestamp in ["", "soon", "-1"] {
        c.check(
            put(queue)
                .header("x-auth-token", token)
                .form(&[("timestamp", timestamp)])
                .expect(400),
        )
        .await;
    }
    c.check(
        put(queue)
            .header("x-auth-token", other)
            .form(&[("timestamp", "1")])
            .expect(404),
    )
    .await;

    let listed = c
        .check(get(own).header("x-auth-token", token).expect(200))
        .await;
    assert_eq!(listed["messages"].as_array().unwrap().len(), 3, "{listed}");
    c.check(
        get(format!("{queue}?since={key}&limit=5"))
            .header("x-auth-token", token)
            .expect(200),
    )
    .await;
    c.check(
        get(format!("{queue}?since=1.5"))
            .header("x-auth-token", token)
            .expect(200),
    )
    .await;
    let unknown_key = format!("since={}", "e".repeat(32));
    for query in ["limit=0", "since=zz", unknown_key.as_str()] {
        c.check(
            get(format!("{queue}?{query}"))
                .header("x-auth-token", token)
                .expect(400),
        )
        .await;
    }
    c.check(get(queue).expect(400)).await;
    c.check(get(queue).header("x-auth-token", other).expect(404))
        .await;
    c.check(
        get(&unknown_queue)
            .header("x-auth-token", token)
            .expect(404),
    )
    .await;

    c.check(delete(queue).expect(400)).await;
    c.check(delete(format!("{own}?token={token}")).expect(400))
        .await;
    c.check(delete(format!("{queue}?token={other}")).expect(404))
        .await;
    c.check(delete(format!("{queue}?token={token}")).expect(204))
        .await;
    c.check(delete(format!("{queue}?token={token}")).expect(404))
        .await;
}

/// The Thunderpush API: every route's success and refusals, and the CORS preflight.
async fn thunderpush(c: &mut Checker) {
    let channel = format!("{THUNDER}/channels/news/");
    c.check(
        post(&channel)
            .thunder(ADMIN)
            .json(json!({"x": 1}))
            .expect(200),
    )
    .await;
    c.check(
        post(&channel)
            .thunder(SENDER)
            .json(json!("text"))
            .expect(200),
    )
    .await;
    c.check(
        post(&channel)
            .thunder(ADMIN)
            .raw("text/plain", "nope")
            .expect(400),
    )
    .await;
    c.check(post(&channel).thunder(ADMIN).json(oversized()).expect(413))
        .await;
    let user = format!("{THUNDER}/users/bob/");
    c.check(post(&user).thunder(ADMIN).json(json!("hi")).expect(200))
        .await;
    c.check(
        post(&user)
            .thunder(ADMIN)
            .raw("application/json", "{")
            .expect(400),
    )
    .await;
    c.check(post(&user).thunder(ADMIN).json(oversized()).expect(413))
        .await;
    c.check(get(&user).thunder(ADMIN).expect(200)).await;
    c.check(delete(&user).thunder(ADMIN).expect(204)).await;

    // (method, path below the app, scope-less key): each refused with 400 (bad target),
    // 404 (not UTF-8), 401 (no key, wrong key, unknown app) and 403.
    for (method, resource, weak) in [
        ("POST", "channels/{}/", READER),
        ("GET", "channels/{}/", SENDER),
        ("GET", "users/{}/", READER),
        ("POST", "users/{}/", READER),
        ("DELETE", "users/{}/", READER),
    ] {
        let good = if resource.starts_with("channels") {
            "news"
        } else {
            "bob"
        };
        let bad = if resource.starts_with("channels") {
            "a%20b"
        } else {
            "a%0Ab"
        };
        let at = |app: &str, target: &str| {
            format!("/api/1.0.0/{app}/{}", resource.replace("{}", target))
        };
        for (path, secret, status) in [
            (at("dev-public", bad), Some(ADMIN), 400),
            (at("dev-public", "%FF"), Some(ADMIN), 404),
            (at("dev-public", good), None, 401),
            (at("dev-public", good), Some(WRONG), 401),
            (at("no-such-app", good), Some(ADMIN), 401),
            (at("dev-public", good), Some(weak), 403),
        ] {
            let mut request = call(method, path).json(json!(1)).expect(status);
            if let Some(secret) = secret {
                request = request.thunder(secret);
            }
            c.check(request).await;
        }
    }
    let users = format!("{THUNDER}/users/");
    c.check(get(&users).expect(401)).await;
    c.check(get(&users).thunder(READER).expect(403)).await;
    c.check(get("/api/1.0.0/%FF/users/").thunder(ADMIN).expect(404))
        .await;
    for path in [channel, users, user] {
        c.check(call("OPTIONS", path).expect(200)).await;
    }
}

/// The VPush API: contexts, signing (both spellings), the archive.
/// PushPushGo CORE's `/v1`: every operation once with success, and its refusals.
async fn core(c: &mut Checker) {
    let token = |call: Call, secret: &str| call.header("authorization", &format!("token={secret}"));
    c.check(get("/v1").expect(200)).await;
    let key = api::webpush::VapidKey::generate();
    let vapid = json!({"type": "vapid", "payload": {"publicKey": key.public_key(), "privateKey": key.private_key()}});
    let bucket = c
        .check(
            token(post("/v1/bucket"), ADMIN)
                .json(json!({"providerCredentials": [vapid],
                             "callbackConfig": {"type": "http", "payload": {"url": "http://127.0.0.1:9/hook"}}}))
                .expect(200),
        )
        .await;
    let bucket_id = bucket["bucketId"].as_str().unwrap().to_owned();
    let credential = bucket["credentials"][0]["id"].as_str().unwrap().to_owned();
    c.check(
        post("/v1/bucket")
            .header("x-token", ADMIN)
            .json(json!({"providerCredentials": [{"type": "hms", "payload": {}}], "callbackConfig": {"type": "none"}}))
            .expect(400),
    )
    .await;
    c.check(post("/v1/bucket").json(json!({})).expect(401))
        .await;
    c.check(
        token(post("/v1/bucket"), READER)
            .json(json!({}))
            .expect(403),
    )
    .await;
    c.check(
        token(post("/v1/bucket"), ADMIN)
            .json(oversized())
            .expect(413),
    )
    .await;
    let mut context = String::new();
    for kind in ["data", "silent", "raw"] {
        let path = format!("/v1/bucket/{bucket_id}/context/{kind}");
        let made = c
            .check(
                token(post(&path), ADMIN)
                    .json(json!({"title": "t"}))
                    .expect(200),
            )
            .await;
        if kind == "data" {
            context = made["contextId"].as_str().unwrap().to_owned();
        }
        let wrong = if kind == "raw" {
            json!({"common": 5})
        } else {
            json!({"ttl": "soon"})
        };
        c.check(token(post(&path), ADMIN).json(wrong).expect(400))
            .await;
        c.check(
            token(
                post(format!(
                    "/v1/bucket/00000000-0000-4000-8000-000000000000/context/{kind}"
                )),
                ADMIN,
            )
            .json(json!({}))
            .expect(404),
        )
        .await;
    }
    // Nothing listens on port 9: the pushes are retried in the background, harmlessly.
    let receiver = json!({"credentialId": credential, "foreignId": "f1", "endpoint": "http://127.0.0.1:9/push",
                          "p256dh": api::webpush::VapidKey::generate().public_key(), "auth": "AAECAwQFBgcICQoLDA0ODw"});
    let send = format!("/v1/bucket/{bucket_id}/context/{context}/send");
    let sent = c
        .check(
            token(post(&send), ADMIN)
                .json(json!({"receivers": [receiver, {"foreignId": "no credential"}]}))
                .expect(200),
        )
        .await;
    let message = sent["results"][0]["messageId"].as_str().unwrap().to_owned();
    c.check(
        token(post(&send), ADMIN)
            .json(json!({"receivers": []}))
            .expect(400),
    )
    .await;
    for suffix in ["", "/silent", "/raw"] {
        let path = format!("/v1/bucket/{bucket_id}/send{suffix}");
        c.check(
            token(post(&path), ADMIN)
                .json(json!({"receiver": receiver, "metadata": {}}))
                .expect(200),
        )
        .await;
        c.check(
            token(post(&path), ADMIN)
                .json(json!({"metadata": {}}))
                .expect(400),
        )
        .await;
    }
    for kind in ["delivered", "clicked", "closed"] {
        let path = format!("/v1/context/{context}/events/{kind}");
        c.check(post(&path).json(json!({"messageId": message})).expect(201))
            .await;
        c.check(
            post(format!(
                "/v1/context/00000000-0000-4000-8000-000000000000/events/{kind}"
            ))
            .json(json!({"messageId": message}))
            .expect(404),
        )
        .await;
        c.check(post(&path).json(json!({"messageId": 5})).expect(400))
            .await;
    }
}

async fn vpush(c: &mut Checker) {
    let contexts = "/push/api/v1/contexts";
    let plain = |call: Call, secret: &str| call.header("authorization", secret);
    let created = c
        .check(
            plain(post(contexts), ADMIN)
                .json(json!({"name": "room"}))
                .expect(201),
        )
        .await;
    let id = created["contextId"].as_str().unwrap().to_owned();
    c.check(plain(post(contexts), ADMIN).expect(201)).await;
    for body in [
        json!([1]),
        json!({"name": 5}),
        json!({"name": "n".repeat(257)}),
    ] {
        c.check(plain(post(contexts), ADMIN).json(body).expect(400))
            .await;
    }
    c.check(plain(post(contexts), ADMIN).json(oversized()).expect(413))
        .await;
    c.check(post(contexts).json(json!({})).expect(401)).await;
    c.check(plain(post(contexts), READER).json(json!({})).expect(403))
        .await;

    let listed = c.check(plain(get(contexts), ADMIN).expect(200)).await;
    assert!(listed["contexts"].to_string().contains(&id), "{listed}");
    c.check(get(contexts).expect(401)).await;
    c.check(plain(get(contexts), SENDER).expect(403)).await;

    for sign in ["/push/api/v1/contexts/sign", "/push/api/v1/context/sign"] {
        c.check(
            plain(post(sign), ADMIN)
                .json(json!({"contextId": id}))
                .expect(200),
        )
        .await;
        for (secret, body, status) in [
            (ADMIN, json!({}), 400),
            (ADMIN, json!({"contextId": 7}), 400),
            (ADMIN, json!({"contextId": "no-such-context"}), 404),
            (ADMIN, oversized(), 413),
            (WRONG, json!({"contextId": id}), 401),
            (READER, json!({"contextId": id}), 403),
        ] {
            c.check(plain(post(sign), secret).json(body).expect(status))
                .await;
        }
    }

    let archive = format!("{contexts}/{id}/messages");
    c.check(plain(get(&archive), READER).expect(200)).await;
    let channel = format!("/api/v1/channels/{id}");
    c.check(
        put(&channel)
            .bearer(ADMIN)
            .json(json!({"history": {"size": 5}}))
            .expect(200),
    )
    .await;
    for data in [json!("hello"), json!({"o": 1})] {
        c.check(
            post(format!("{channel}/messages"))
                .bearer(ADMIN)
                .json(json!({ "data": data }))
                .expect(201),
        )
        .await;
    }
    let archived = c.check(plain(get(&archive), ADMIN).expect(200)).await;
    assert_eq!(
        archived["messages"].as_array().unwrap().len(),
        2,
        "{archived}"
    );
    c.check(plain(get(format!("{contexts}/no-such-context/messages")), ADMIN).expect(404))
        .await;
    c.check(plain(get(format!("{contexts}/%FF/messages")), ADMIN).expect(404))
        .await;
    c.check(get(&archive).expect(401)).await;
    c.check(plain(get(&archive), SENDER).expect(403)).await;
}

/// 429 on each keyed surface: the `limited` key spends its burst, then every surface
/// refuses it (with `Retry-After`).
async fn rate_limits(c: &mut Checker) {
    for call in [
        get("/api/v1/users").bearer(LIMITED),
        get(format!("{THUNDER}/users/")).thunder(LIMITED),
        get("/push/api/v1/contexts").header("x-api-key", LIMITED),
    ] {
        let call = call.expect_any(&[200, 429]);
        let mut refused = false;
        for _ in 0..1_000 {
            if c.send(call.clone()).await.0 == 429 {
                refused = true;
                break;
            }
        }
        assert!(refused, "{} was never rate limited", call.describe());
    }
}

/// `x-unmatched-requests`: under each prefix an unknown path, and every documented path of
/// that prefix with a method it does not list, get the documented status and response.
async fn unmatched(c: &mut Checker) {
    let entries = c.doc["x-unmatched-requests"]
        .as_array()
        .expect("x-unmatched-requests")
        .clone();
    let prefixes: Vec<String> = entries
        .iter()
        .map(|e| e["prefix"].as_str().unwrap().to_owned())
        .collect();
    let owner = |path: &str| {
        prefixes
            .iter()
            .enumerate()
            // A prefix ending in `/` owns that path without the slash too (`/graphql`).
            .filter(|(_, p)| path.starts_with(p.as_str()) || p.strip_suffix('/') == Some(path))
            .max_by_key(|(_, p)| p.len())
            .map(|(i, _)| i)
    };
    let mut probes: Vec<(usize, String, &'static str, &'static str)> = Vec::new();
    for (i, prefix) in prefixes.iter().enumerate() {
        probes.push((
            i,
            format!("{prefix}no-such-endpoint/here"),
            "GET",
            "unknownPath",
        ));
    }
    let templates: Vec<String> = c.doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for template in templates {
        let i = owner(&template).expect("every path falls under a prefix");
        let path: Vec<String> = template
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "x".to_owned()
                } else {
                    s.to_owned()
                }
            })
            .collect();
        probes.push((i, path.join("/"), "PATCH", "wrongMethod"));
    }
    for (i, path, method, kind) in probes {
        let expected = &entries[i][kind];
        let status = expected["status"].as_u64().unwrap() as u16;
        let probe = call(method, path.clone()).expect(status);
        let (got, headers, body) = c.exchange(&probe).await;
        let mut problems = Vec::new();
        if kind == "unknownPath" && c.template_of(&path).is_some() {
            problems.push("the probe for an unknown path matches a documented one".into());
        }
        if got != status {
            problems.push(format!("x-unmatched-requests says {status} ({kind})"));
        }
        let pointer = format!("/x-unmatched-requests/{i}/{kind}/response");
        problems.extend(c.check_response(pointer, &headers, &body));
        c.fail(&probe, got, &body, problems);
    }
}
