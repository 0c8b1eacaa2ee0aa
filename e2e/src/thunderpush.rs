//! Thunderpush clients for the e2e tests: its HTTP API (`ThunderApi`), a SockJS client
//! over the WebSocket transport as sockjs-client opens it (`SockJs`), the original
//! `thunderpush.js` run by Node with the real sockjs-client (`BrowserClient`), and the
//! original server, thunderpush 1.0.1 (`OriginalServer`). The originals are fetched by
//! `e2e/thunderpush/setup.sh` into `target/reference` (`make test` runs it; the
//! `HERALD_REFERENCE` variable points elsewhere); they are never kept in the repository.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::{DEADLINE, Ending, Socket, V1, eventually, free_port, repo_root};

/// An app that does not trust bare user ids (Thunderpush `CONNECT` needs a Herald token),
/// to append to the dev config (`Options::config`); its public key and secret follow.
pub const STRICT_APP: &str = r#"
[[apps]]
id = "strict"
key = "strict-public"

[[apps.keys]]
name = "admin"
secret = "strict-secret-change-me"
scopes = ["*:*"]
"#;
pub const STRICT_KEY: &str = "strict-public";
pub const STRICT_SECRET: &str = "strict-secret-change-me";

/// How long a socket is watched for a frame that must not come.
pub const QUIET: Duration = Duration::from_millis(500);

/// What a SockJS socket received: the messages of one `a[...]` frame, or a `c[...]`
/// close (its text).
#[derive(Debug, PartialEq)]
pub enum Frame {
    Messages(Vec<Value>),
    Close(String),
}

/// A SockJS client over the WebSocket transport.
pub struct SockJs {
    socket: Socket,
}

impl SockJs {
    /// Opens `<prefix>/<server>/<session>/websocket` (`prefix` = `ws://host:port/connect`)
    /// and reads the `o` frame.
    pub async fn open(prefix: &str) -> SockJs {
        let mut socket = Socket::connect(&format!("{prefix}/123/a1b2c3d4/websocket")).await;
        assert_eq!(
            socket.try_next_text(DEADLINE).await.as_deref(),
            Some("o"),
            "SockJS opens with `o`"
        );
        SockJs { socket }
    }

    /// Sends commands as one SockJS frame (a JSON array of strings).
    pub async fn send(&mut self, commands: &[&str]) {
        self.socket
            .send_text(&serde_json::to_string(commands).unwrap())
            .await;
    }

    /// The next `a[...]` or `c[...]` frame (heartbeats skipped), if one comes in `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            let text = self.socket.try_next_text(wait).await?;
            if text == "h" {
                continue;
            }
            if let Some(array) = text.strip_prefix('a') {
                return Some(Frame::Messages(serde_json::from_str(array).unwrap()));
            }
            assert!(text.starts_with("c["), "not a SockJS frame: {text}");
            return Some(Frame::Close(text));
        }
    }

    /// The next message, which must come alone in its frame.
    pub async fn message(&mut self) -> Value {
        match self.next(DEADLINE).await {
            Some(Frame::Messages(mut messages)) if messages.len() == 1 => messages.remove(0),
            other => panic!("expected one message, got {other:?}"),
        }
    }

    /// Asserts nothing arrives for a while.
    pub async fn quiet(&mut self) {
        let got = self.next(QUIET).await;
        assert!(got.is_none(), "unexpected {got:?}");
    }

    /// The `c[...]` frame, then the end of the WebSocket; the close frame's text, decoded.
    pub async fn closed(&mut self) -> String {
        let close = match self.next(DEADLINE).await {
            Some(Frame::Close(close)) => close,
            other => panic!("expected c[...], got {other:?}"),
        };
        assert!(matches!(
            self.socket.ending(DEADLINE).await,
            Ending::Closed(_)
        ));
        close
    }
}

/// The Thunderpush HTTP API of one app: `<base>/api/1.0.0/<key>/…` with `secret`.
pub struct ThunderApi {
    pub base: String,
    pub key: String,
    pub secret: String,
    http: reqwest::Client,
}

/// An answer: status and body text.
pub type TextAnswer = (u16, String);

impl ThunderApi {
    pub fn new(base: &str, key: &str, secret: &str) -> ThunderApi {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        ThunderApi {
            base: base.to_owned(),
            key: key.to_owned(),
            secret: secret.to_owned(),
            http,
        }
    }

    /// `method` on `path` (under the app's prefix), with `secret` in
    /// `X-Thunder-Secret-Key` and `body` as sent.
    pub async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        secret: &str,
        body: Option<&str>,
    ) -> TextAnswer {
        let url = format!("{}/api/1.0.0/{}/{path}", self.base, self.key);
        let mut request = self
            .http
            .request(method, url)
            .header("X-Thunder-Secret-Key", secret);
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> TextAnswer {
        self.call_with(method, path, &self.secret, body).await
    }

    /// `POST path` with `body`, expecting 200; the JSON answer.
    pub async fn post(&self, path: &str, body: &str) -> Value {
        let (status, text) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Polls `GET path` until it answers 200 with `expected` (a channel's users compared
    /// as a set); the body text it answered then.
    pub async fn until(&self, path: &str, expected: Value) -> String {
        eventually(&format!("GET {path} to be {expected}"), DEADLINE, || {
            let expected = expected.clone();
            async move {
                let (status, text) = self.call(reqwest::Method::GET, path, None).await;
                let body: Value = serde_json::from_str(&text).ok()?;
                (status == 200 && sorted_users(body) == expected).then_some(text)
            }
        })
        .await
    }

    /// A Herald connection token of this app for `user` (Herald only).
    pub async fn token(&self, user: &str, channels: &[&str]) -> String {
        V1::with_secret(&self.base, &self.secret)
            .token(json!({"user": user, "channels": channels}))
            .await
    }
}

/// `{"users": [...]}` with the users sorted (the original lists them in subscription
/// order, Herald sorted); any other value as it is.
pub fn sorted_users(mut body: Value) -> Value {
    if let Some(users) = body.get_mut("users").and_then(Value::as_array_mut) {
        users.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    body
}

/// Where `e2e/thunderpush/setup.sh` put the originals.
pub fn reference_dir() -> PathBuf {
    let dir = std::env::var_os("HERALD_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/reference"));
    assert!(
        dir.join("venv/bin/thunderpush").is_file() && dir.join("thunderpush.js").is_file(),
        "the original Thunderpush is not in {}: run `e2e/thunderpush/setup.sh {}` \
         (`make test` does)",
        dir.display(),
        dir.display()
    );
    dir
}

/// The original Thunderpush server (1.0.1) on a free loopback port; killed when dropped.
pub struct OriginalServer {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl OriginalServer {
    /// Starts it with public key `key` and secret `secret`, and waits until it answers.
    pub async fn start(key: &str, secret: &str) -> OriginalServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("thunderpush.log")).unwrap();
        let child = Command::new(reference_dir().join("venv/bin/thunderpush"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string(), "--pid-path"])
            .arg(dir.path().join("thunderpush.pid"))
            .args([key, secret])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let info = format!("http://127.0.0.1:{port}/connect/info");
        eventually("the original Thunderpush to answer", DEADLINE, || {
            let info = info.clone();
            async move { reqwest::get(&info).await.ok().filter(|r| r.status() == 200) }
        })
        .await;
        OriginalServer {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for OriginalServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The original `thunderpush.js` with the real sockjs-client, run by Node
/// (`e2e/thunderpush/client.js`): what a page using it sees, event by event.
pub struct BrowserClient {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl BrowserClient {
    /// `Thunder.connect(server, key, channels, {user})` in a fresh Node process.
    pub fn connect(server: &str, key: &str, user: &str, channels: &[&str]) -> BrowserClient {
        let here = repo_root().join("e2e/thunderpush");
        let mut child = Command::new("node")
            .arg(here.join("client.js"))
            .args(["--server", server, "--key", key, "--user", user])
            .args(["--channels", &channels.join(",")])
            .args(["--timeout", "120"])
            .env("THUNDERPUSH_JS", reference_dir().join("thunderpush.js"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed to run thunderpush.js");
        let stdout = child.stdout.take().unwrap();
        BrowserClient {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next event the page saw (`{"event": "open" | "message" | "close", …}`).
    pub async fn event(&mut self) -> Value {
        let line = tokio::time::timeout(DEADLINE, self.lines.next_line())
            .await
            .expect("an event from thunderpush.js in time")
            .unwrap()
            .expect("client.js ended early");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for BrowserClient {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
