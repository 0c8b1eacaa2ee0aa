//! Webhooks (SPEC §4 Webhooks): an app's webhook configuration, and the events that have
//! no stored state change of their own — a client's `clicked` / `close` report on a
//! message, a user's socket opening or closing — recorded into the outbox. The events of
//! message transitions are recorded by the store itself (`common::store::webhooks`);
//! `crate::dispatch` sends the batches.

use common::clock::now_us;
use common::ids::{AppId, UserId, new_message_id};
use common::store::{BatchFormat, EventKind, Webhook, WebhookEvent, WebhookState};

use super::{ServiceError, ServiceResult, Services};

/// Most events per POST, and the default.
pub const MAX_BATCH: u32 = 1_000;
pub const DEFAULT_BATCH: u32 = 100;
/// Longest and default wait for a fuller batch, ms.
pub const MAX_DELAY_MS: u64 = 60_000;
pub const DEFAULT_DELAY_MS: u64 = 1_000;
/// Longest URL and secret, bytes.
pub const MAX_URL: usize = 2_048;
pub const MAX_SECRET: usize = 256;

/// A webhook as a caller configures it.
#[derive(Debug, Clone)]
pub struct WebhookInput {
    pub url: String,
    pub secret: String,
    /// Kind names as given (`delivered`, …).
    pub events: Vec<String>,
    pub max_batch: Option<u64>,
    pub max_delay_ms: Option<u64>,
}

/// `url` if it is an absolute `http://` or `https://` URL with a host and no credentials.
fn check_url(url: &str) -> ServiceResult<()> {
    if url.len() > MAX_URL {
        return Err(ServiceError::bad_request(
            "url",
            format!("is longer than {MAX_URL} bytes"),
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ServiceError::bad_request("url", format!("is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ServiceError::bad_request(
            "url",
            format!(
                "must be an http:// or https:// URL, not {}:",
                parsed.scheme()
            ),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ServiceError::bad_request("url", "has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ServiceError::bad_request(
            "url",
            "must not carry credentials; the signature authenticates Herald",
        ));
    }
    Ok(())
}

/// The kinds named in `events`: known, not repeated, at least one; sorted.
fn event_kinds(events: &[String]) -> ServiceResult<Vec<EventKind>> {
    if events.is_empty() {
        return Err(ServiceError::bad_request(
            "events",
            "must list at least one event kind",
        ));
    }
    let mut kinds = Vec::with_capacity(events.len());
    for (i, name) in events.iter().enumerate() {
        let kind = EventKind::parse(name)
            .filter(|k| EventKind::ALL.contains(k))
            .ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                ServiceError::bad_request(
                    &format!("events[{i}]"),
                    format!("must be one of {}", known.join(", ")),
                )
            })?;
        if kinds.contains(&kind) {
            return Err(ServiceError::bad_request(
                &format!("events[{i}]"),
                format!("repeats {name:?}"),
            ));
        }
        kinds.push(kind);
    }
    kinds.sort_unstable();
    Ok(kinds)
}

impl Services {
    /// Sets the app's webhook (replacing any, keeping its outbox); 400 naming the field
    /// for a URL that is not `http://`, an empty or oversized secret, an unknown or
    /// repeated event kind, or batching out of range.
    pub async fn put_webhook(
        &self,
        app: &AppId,
        input: WebhookInput,
    ) -> ServiceResult<(Webhook, WebhookState)> {
        check_url(&input.url)?;
        if input.secret.is_empty() || input.secret.len() > MAX_SECRET {
            return Err(ServiceError::bad_request(
                "secret",
                format!("must be 1 to {MAX_SECRET} bytes"),
            ));
        }
        let events = event_kinds(&input.events)?;
        let max_batch = match input.max_batch {
            None => DEFAULT_BATCH,
            Some(n) if (1..=u64::from(MAX_BATCH)).contains(&n) => n as u32,
            Some(_) => {
                return Err(ServiceError::bad_request(
                    "maxBatch",
                    format!("must be between 1 and {MAX_BATCH}"),
                ));
            }
        };
        let max_delay_ms = match input.max_delay_ms {
            None => DEFAULT_DELAY_MS,
            Some(n) if n <= MAX_DELAY_MS => n,
            Some(_) => {
                return Err(ServiceError::bad_request(
                    "maxDelayMs",
                    format!("must be between 0 and {MAX_DELAY_MS}"),
                ));
            }
        };
        let webhook = Webhook {
            app: app.clone(),
            url: input.url,
            secret: input.secret,
            events,
            max_batch,
            max_delay_ms,
            updated_us: now_us(),
            format: BatchFormat::Herald,
        };
        self.stores.webhooks.put_webhook(&webhook).await?;
        self.webhook(app).await
    }

    /// The app's webhook and how delivery to it is going; 404 without one.
    pub async fn webhook(&self, app: &AppId) -> ServiceResult<(Webhook, WebhookState)> {
        self.stores
            .webhooks
            .webhook(app)
            .await?
            .ok_or_else(no_webhook)
    }

    /// Removes the app's webhook and the events waiting for it; 404 without one.
    pub async fn delete_webhook(&self, app: &AppId) -> ServiceResult<()> {
        if self.stores.webhooks.delete_webhook(app).await? {
            Ok(())
        } else {
            Err(no_webhook())
        }
    }

    /// A client's report (`event` frame) that the user `user` clicked or closed message
    /// `message_id`: recorded for the webhook. 400 for another `kind`, 404 unless the
    /// message is the user's.
    pub async fn client_event(
        &self,
        app: &AppId,
        user: &UserId,
        message_id: &str,
        kind: &str,
    ) -> ServiceResult<()> {
        let kind = match kind {
            "clicked" => EventKind::Clicked,
            "close" => EventKind::Close,
            _ => {
                return Err(ServiceError::bad_request(
                    "kind",
                    "must be clicked or close",
                ));
            }
        };
        let message = self
            .stores
            .messages
            .addressed_message(app, message_id)
            .await?
            .filter(|m| &m.recipient == user)
            .ok_or_else(|| ServiceError::not_found("message", "No such message for this user."))?;
        // A message a PushPushGo bucket sent: its callback hears of it too.
        let events = message.webhook_events(kind, now_us());
        self.stores.webhooks.record_events(&events).await?;
        Ok(())
    }

    /// Records that sockets opened (`connected`) or closed (`disconnected`), in one store
    /// call, each for its app's webhook if it wants the kind.
    pub async fn socket_events(&self, events: &[SocketEvent]) -> ServiceResult<()> {
        let events: Vec<WebhookEvent> = events
            .iter()
            .map(|e| WebhookEvent {
                id: new_message_id(),
                app: e.app.clone(),
                kind: e.kind,
                message_id: None,
                foreign_id: None,
                recipient: Some(e.user.clone()),
                at_us: e.at_us,
            })
            .collect();
        self.stores.webhooks.record_events(&events).await?;
        Ok(())
    }
}

/// A user's socket opening or closing, as an edge saw it (µs since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEvent {
    pub app: AppId,
    pub user: UserId,
    pub kind: EventKind,
    pub at_us: i64,
}

fn no_webhook() -> ServiceError {
    ServiceError::not_found("webhook", "This app has no webhook.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("http://example.com/h?x=1").is_ok());
        assert!(check_url("https://hooks.example.com/herald").is_ok());
        for bad in [
            "",
            "hook",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "file:///etc/passwd",
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(e.to_string().starts_with("url:"), "{bad}: {e}");
        }
    }

    #[test]
    fn event_kinds_are_known_and_unique() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            event_kinds(&names(&["sent", "delivered"])).unwrap(),
            vec![EventKind::Sent, EventKind::Delivered]
        );
        assert!(event_kinds(&[]).is_err());
        let e = event_kinds(&names(&["delivered", "opened"])).unwrap_err();
        assert!(e.to_string().starts_with("events[1]:"), "{e}");
        let e = event_kinds(&names(&["close", "close"])).unwrap_err();
        assert!(e.to_string().starts_with("events[1]:"), "{e}");
    }
}
