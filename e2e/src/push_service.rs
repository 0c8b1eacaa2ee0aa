//! A real Web Push service on loopback, for tests of what Herald sends to browsers: the
//! npm package `web-push-testing` (it decrypts RFC 8291 `aes128gcm` bodies and verifies RFC
//! 8292 VAPID signatures against the subscription's `applicationServerKey`), run by
//! `e2e/webpush/push-service.js` on 127.0.0.1 and a port of its own, killed when dropped.
//! `make reference` installs the package into `e2e/webpush/node_modules`.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{DEADLINE, repo_root};

/// One running push service.
pub struct PushService {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    http: reqwest::Client,
    child: Child,
}

/// A subscription as a browser would hand it to a page (`PushSubscription.toJSON()`), plus
/// the push service's own handle for it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    pub client_hash: String,
}

impl PushService {
    /// Starts the service and waits until it listens.
    ///
    /// # Panics
    /// Node or the package is missing (run `make reference`), or it does not start in time.
    pub async fn start() -> PushService {
        let here = repo_root().join("e2e/webpush");
        assert!(
            here.join("node_modules/web-push-testing").is_dir(),
            "e2e/webpush/node_modules is missing: `make reference` installs web-push-testing"
        );
        let mut child = Command::new("node")
            .arg(here.join("push-service.js"))
            .current_dir(&here)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed to run web-push-testing");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("web-push-testing to listen in time")
            .expect("its stdout")
            .expect("a first line from push-service.js");
        let ready: Value = serde_json::from_str(&first).expect("{\"port\": N}");
        let port = ready["port"].as_u64().expect("a port");
        // Keep draining its stdout so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PushService {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            child,
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("the push service answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A new subscription for pushes signed with VAPID key `application_server_key`
    /// (base64url), as `pushManager.subscribe({userVisibleOnly: true, applicationServerKey})`
    /// gives it.
    pub async fn subscribe(&self, application_server_key: &str) -> Subscription {
        let request =
            json!({"userVisibleOnly": "true", "applicationServerKey": application_server_key});
        let (status, body) = self.post("/subscribe", request).await;
        assert_eq!(status, 200, "{body}");
        let data = &body["data"];
        let text = |v: &Value| v.as_str().expect("a string").to_owned();
        Subscription {
            endpoint: text(&data["endpoint"]),
            p256dh: text(&data["keys"]["p256dh"]),
            auth: text(&data["keys"]["auth"]),
            client_hash: text(&data["clientHash"]),
        }
    }

    /// Every payload pushed to the subscription so far, decrypted, oldest first.
    pub async fn notifications(&self, subscription: &Subscription) -> Vec<String> {
        let request = json!({"clientHash": subscription.client_hash});
        let (status, body) = self.post("/get-notifications", request).await;
        assert_eq!(status, 200, "{body}");
        body["data"]["messages"]
            .as_array()
            .expect("a list of messages")
            .iter()
            .map(|m| m.as_str().expect("a decrypted text").to_owned())
            .collect()
    }

    /// Expires the subscription: pushes to it are answered 410 from now on.
    pub async fn expire(&self, subscription: &Subscription) {
        let path = format!("/expire-subscription/{}", subscription.client_hash);
        let (status, body) = self.post(&path, json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
