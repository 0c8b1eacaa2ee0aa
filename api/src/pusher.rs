//! The Web Push sender of an API process (SPEC §5; docs/webpush.md): takes due jobs from
//! the push queue (a lease in the store, so one sender at a time holds a message) and
//! sends each addressed message to every Web Push subscription of its recipient — but only
//! while the message is still `PENDING` and the recipient has no live socket, so a
//! recipient who is online gets it on the socket and never also by Web Push.
//!
//! Per attempt, per subscription, the push service's answer (RFC 8030) decides:
//! - 201: the message becomes `DELIVERED` `via` `webpush` (once, whichever subscription
//!   took it first);
//! - 404/410: the subscription is gone and is removed, never tried again;
//! - 429/5xx/no answer: the job comes back after the push service's `Retry-After`, or an
//!   exponential backoff (`webpush.backoff_min_ms` doubling up to `backoff_max_ms`), at
//!   most `webpush.max_attempts` times;
//! - anything else (400, 401, 403, 413): that subscription failed this time, logged.
//!
//! When no subscription took it, the message stays `PENDING` and the recipient's next
//! connection delivers it, as for any offline recipient.
//!
//! A job may also be a message of a PushPushGo bucket's send (`service::buckets`): pushed
//! to its one receiver with the bucket's VAPID credential and the payload CORE's service
//! worker reads; 201 reports `sent` to the bucket's callback, a receiver gone (404/410)
//! `unregistered`, and neither is tried again, nor one refusing; 429/5xx are retried as
//! above. The payload is the native
//! WebSocket frame of the message (`{"type": "message", "id", "data", "createdAt",
//! "topic"?, "expiresAt"?}`); one too large for a push (`webpush::MAX_PLAINTEXT`) goes as
//! that frame without `data`, with `"truncated": true`.

use std::sync::Arc;
use std::time::Duration;

use common::clock::now_us;
use common::config::{WebPushConfig, ms};
use common::ids::{UserId, new_message_id};
use common::metrics::Metrics;
use common::store::{
    AddressedMessage, EventKind, MessageStatus, PushJob, Transition, Via, WebhookEvent,
};
use prometheus::IntCounterVec;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::service::{ServiceError, Services};
use crate::webpush::{self, Outcome, Push, SubscriptionKeys, VapidKey};

/// Jobs one claim takes at most.
const CLAIM: usize = 32;
/// Jobs one process works on at once.
const CONCURRENCY: usize = 16;

struct Sender {
    services: Services,
    config: WebPushConfig,
    http: reqwest::Client,
    /// The VAPID `sub` claim.
    subject: String,
    /// Pushes by result: sent, gone, retry, failed.
    pushes: IntCounterVec,
    /// Jobs by how they ended: delivered, online, settled (no longer `PENDING`),
    /// unsubscribed, retried, abandoned, raced.
    jobs: IntCounterVec,
}

/// The sender's HTTP client: HTTPS with the system's roots, no redirects, `timeout_ms`
/// per push.
///
/// # Errors
/// The TLS backend cannot start.
pub fn client(config: &WebPushConfig) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(ms(config.timeout_ms))
        .connect_timeout(ms(config.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald-webpush/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Starts this process's sender (unless `webpush.dispatch` is off); it stops at `stop`,
/// leaving claimed jobs to their leases.
pub fn start(
    services: Services,
    config: WebPushConfig,
    http: reqwest::Client,
    metrics: &Metrics,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !config.dispatch {
        return None;
    }
    let subject = config
        .subject
        .clone()
        .unwrap_or_else(|| services.settings.api_base.clone());
    let sender = Arc::new(Sender {
        services,
        http,
        subject,
        pushes: metrics.counter_vec(
            "webpush_pushes_total",
            "Web Push requests by the push service's answer (sent, gone, retry, failed).",
            &["result"],
        ),
        jobs: metrics.counter_vec(
            "webpush_jobs_total",
            "Web Push fallbacks by how they ended (delivered, online, settled, unsubscribed, retried, abandoned, raced).",
            &["result"],
        ),
        config,
    });
    Some(tokio::spawn(sender.run(stop)))
}

/// What one attempt at a job came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobEnd {
    Delivered,
    /// The recipient has a live socket: the socket delivers it.
    Online,
    /// No longer `PENDING` (delivered on a socket, cancelled, expired) or gone.
    Settled,
    /// The recipient has no subscription (left).
    Unsubscribed,
    /// Again after this wait.
    Retry(Duration),
    /// No subscription took it and retrying cannot help or is used up.
    Abandoned,
    /// A push service took it, but a socket delivered it first.
    Raced,
}

impl JobEnd {
    fn label(self) -> &'static str {
        match self {
            JobEnd::Delivered => "delivered",
            JobEnd::Online => "online",
            JobEnd::Settled => "settled",
            JobEnd::Unsubscribed => "unsubscribed",
            JobEnd::Retry(_) => "retried",
            JobEnd::Abandoned => "abandoned",
            JobEnd::Raced => "raced",
        }
    }
}

/// The wait before retry number `attempt` (1 = the first retry): `backoff_min_ms`
/// doubling, at most `backoff_max_ms`; the push service's `Retry-After` when longer.
fn backoff(config: &WebPushConfig, attempt: u32, asked: Option<Duration>) -> Duration {
    let doubled = config
        .backoff_min_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    let ours = ms(doubled.min(config.backoff_max_ms));
    asked.map_or(ours, |asked| asked.max(ours))
}

/// What the service worker gets for `m` (see the module's docs).
pub fn payload(m: &AddressedMessage) -> Vec<u8> {
    let mut frame = common::message::addressed_frame(m);
    let full = frame.to_string().into_bytes();
    if full.len() <= webpush::MAX_PLAINTEXT {
        return full;
    }
    if let Some(object) = frame.as_object_mut() {
        object.remove("data");
    }
    frame["truncated"] = json!(true);
    frame.to_string().into_bytes()
}

impl Sender {
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let poll = ms(self.config.poll_ms);
        let lease_us = i64::try_from(self.config.lease_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
        loop {
            let room = slots.available_permits().min(CLAIM);
            let claimed = if room == 0 {
                Ok(Vec::new())
            } else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    claimed = self.services.stores.webpush.claim_pushes(now_us(), lease_us, room) => claimed,
                }
            };
            match claimed {
                Ok(jobs) if !jobs.is_empty() => {
                    for job in jobs {
                        let Ok(slot) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let me = self.clone();
                        tokio::spawn(async move {
                            me.work(job).await;
                            drop(slot);
                        });
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim Web Push jobs"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One attempt at `job`, then its end recorded in the queue. A store failure leaves
    /// the job to its lease (tried again later).
    async fn work(&self, job: PushJob) {
        let end = match self.attempt(&job).await {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(app = %job.app, message = %job.message_id, error = %e, "Web Push attempt failed on the store; retried after the lease");
                return;
            }
        };
        self.jobs.with_label_values(&[end.label()]).inc();
        let settled = match end {
            JobEnd::Retry(wait) => {
                let due =
                    now_us().saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
                self.services.stores.webpush.retry_push(&job.id, due).await
            }
            _ => self.services.stores.webpush.finish_push(&job.id).await,
        };
        if let Err(e) = settled {
            tracing::warn!(app = %job.app, message = %job.message_id, error = %e, "cannot settle a Web Push job; it is tried again after its lease");
        }
    }

    async fn attempt(&self, job: &PushJob) -> Result<JobEnd, ServiceError> {
        match &job.user {
            Some(user) => self.addressed(job, user).await,
            None => self.bucket_message(job).await,
        }
    }

    /// Pushes `body` to `target` with `key`; the push service's answer as an `Outcome`
    /// (a key that does not load is `Failed`), counted.
    async fn push(&self, key: &VapidKey, target: Target<'_>, body: &[u8], ttl: u32) -> Outcome {
        let outcome = match SubscriptionKeys::from_base64(target.p256dh, target.auth) {
            Ok(keys) => {
                let push = Push {
                    endpoint: target.endpoint,
                    keys: &keys,
                    payload: body,
                    ttl_seconds: ttl,
                };
                webpush::send(&self.http, key, &self.subject, push)
                    .await
                    .unwrap_or_else(|e| Outcome::Failed {
                        reason: e.to_string(),
                    })
            }
            Err(e) => Outcome::Failed {
                reason: e.to_string(),
            },
        };
        let result = match &outcome {
            Outcome::Sent => "sent",
            Outcome::Gone => "gone",
            Outcome::Retry { reason, .. } => {
                tracing::warn!(endpoint = %target.endpoint, %reason, "push service asks to retry");
                "retry"
            }
            Outcome::Failed { reason } => {
                tracing::warn!(endpoint = %target.endpoint, %reason, "push refused");
                "failed"
            }
        };
        self.pushes.with_label_values(&[result]).inc();
        outcome
    }

    /// The `TTL` of a push of a message expiring at `expires_us` (seconds left, at least
    /// 1, at most `webpush.ttl_seconds`).
    fn ttl(&self, expires_us: Option<i64>, now: i64) -> u32 {
        match expires_us {
            Some(expires) => {
                let left = expires.saturating_sub(now).div_euclid(1_000_000).max(1);
                u32::try_from(left)
                    .unwrap_or(u32::MAX)
                    .min(self.config.ttl_seconds)
            }
            None => self.config.ttl_seconds,
        }
    }

    /// What a job ends as when nothing was sent: again later while the push services ask
    /// for it and attempts are left, else abandoned.
    fn retry_or_abandon(&self, job: &PushJob, retry: Option<Option<Duration>>) -> JobEnd {
        let attempt = job.attempts.saturating_add(1);
        match retry {
            Some(asked) if attempt < self.config.max_attempts => {
                JobEnd::Retry(backoff(&self.config, attempt, asked))
            }
            _ => JobEnd::Abandoned,
        }
    }

    /// An addressed message to `user`, by every subscription of theirs.
    async fn addressed(&self, job: &PushJob, user: &UserId) -> Result<JobEnd, ServiceError> {
        let services = &self.services;
        let now = now_us();
        let Some(message) = services
            .stores
            .messages
            .addressed_message(&job.app, &job.message_id)
            .await?
        else {
            return Ok(JobEnd::Settled);
        };
        if message.status != MessageStatus::Pending || message.expires_us.is_some_and(|e| e <= now)
        {
            return Ok(JobEnd::Settled);
        }
        if services.user_connections(&job.app, user).await? > 0 {
            return Ok(JobEnd::Online);
        }
        let subscriptions = services
            .stores
            .webpush
            .subscriptions(&job.app, user)
            .await?;
        if subscriptions.is_empty() {
            return Ok(JobEnd::Unsubscribed);
        }
        let key = services.vapid_key(&job.app).await?;
        let body = payload(&message);
        let ttl = self.ttl(message.expires_us, now);
        let (mut sent, mut retry) = (false, None::<Option<Duration>>);
        for s in &subscriptions {
            let target = Target {
                endpoint: &s.endpoint,
                p256dh: &s.p256dh,
                auth: &s.auth,
            };
            match self.push(&key, target, &body, ttl).await {
                Outcome::Sent => sent = true,
                Outcome::Gone => {
                    services
                        .stores
                        .webpush
                        .remove_subscription(&job.app, user, &s.id)
                        .await?;
                    tracing::info!(app = %job.app, %user, subscription = %s.id, "Web Push subscription gone (404/410): removed");
                }
                Outcome::Retry { after, .. } => retry = Some(retry.flatten().max(after)),
                Outcome::Failed { .. } => {}
            }
        }
        if sent {
            let settled = services
                .stores
                .messages
                .deliver_messages(
                    &job.app,
                    std::slice::from_ref(&job.message_id),
                    Via::Webpush,
                    now_us(),
                )
                .await?;
            return Ok(match settled.first() {
                Some(Some(Transition::Done(_))) => JobEnd::Delivered,
                _ => {
                    tracing::warn!(app = %job.app, message = %job.message_id, "a socket delivered the message while its Web Push was in flight: the recipient may see it twice");
                    JobEnd::Raced
                }
            });
        }
        Ok(self.retry_or_abandon(job, retry))
    }

    /// A message of a PushPushGo bucket's send, to its one receiver; `sent` reported to the
    /// bucket's callback when the push service takes it.
    async fn bucket_message(&self, job: &PushJob) -> Result<JobEnd, ServiceError> {
        let stores = &self.services.stores;
        let now = now_us();
        let Some(message) = stores.buckets.bucket_message(&job.message_id).await? else {
            return Ok(JobEnd::Settled);
        };
        if message.expires_us <= now {
            return Ok(JobEnd::Settled);
        }
        let bucket = stores.buckets.bucket(&message.app, &message.bucket).await?;
        let context = stores.buckets.bucket_context(&message.context).await?;
        let (Some(bucket), Some(context)) = (bucket, context) else {
            return Ok(JobEnd::Settled);
        };
        let Some(credential) = bucket
            .credentials
            .iter()
            .find(|c| c.id == message.credential)
        else {
            return Ok(JobEnd::Settled);
        };
        let key = VapidKey::from_base64(&credential.private_key, &credential.public_key)
            .map_err(|e| ServiceError::Internal(format!("bucket {}: {e}", bucket.id)))?;
        let body = crate::service::buckets::push_payload(
            &context,
            &message.id,
            message.foreign_id.as_deref(),
            &message.endpoint,
        )
        .into_bytes();
        let target = Target {
            endpoint: &message.endpoint,
            p256dh: &message.p256dh,
            auth: &message.auth,
        };
        let ttl = self.ttl(Some(message.expires_us), now);
        let report = |kind: EventKind| -> Result<WebhookEvent, ServiceError> {
            Ok(WebhookEvent {
                id: new_message_id(),
                app: crate::service::buckets::callback_app(&bucket.id)?,
                kind,
                message_id: Some(message.id.clone()),
                foreign_id: message.foreign_id.clone(),
                recipient: None,
                at_us: now_us(),
            })
        };
        match self.push(&key, target, &body, ttl).await {
            Outcome::Sent => {
                stores
                    .webhooks
                    .record_events(&[report(EventKind::Sent)?])
                    .await?;
                Ok(JobEnd::Delivered)
            }
            Outcome::Gone => {
                let event = report(EventKind::Unregistered)?;
                stores.webhooks.record_events(&[event]).await?;
                Ok(JobEnd::Unsubscribed)
            }
            Outcome::Retry { after, .. } => Ok(self.retry_or_abandon(job, Some(after))),
            Outcome::Failed { .. } => Ok(JobEnd::Abandoned),
        }
    }
}

/// Where one push goes: a subscription's endpoint and keys.
#[derive(Clone, Copy)]
struct Target<'a> {
    endpoint: &'a str,
    p256dh: &'a str,
    auth: &'a str,
}

#[cfg(test)]
mod tests {
    use common::store::MessageBody;
    use serde_json::Value;

    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_honours_a_longer_retry_after() {
        let config = WebPushConfig {
            backoff_min_ms: 1_000,
            backoff_max_ms: 5_000,
            ..WebPushConfig::default()
        };
        let waits: Vec<u128> = (1..=5)
            .map(|a| backoff(&config, a, None).as_millis())
            .collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(
            backoff(&config, 1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(backoff(&config, 3, Some(Duration::from_secs(1))), ms(4_000));
    }

    #[test]
    fn a_payload_too_large_for_a_push_goes_without_its_data() {
        let mut m = AddressedMessage {
            id: "0123456789abcdef0123456789abcdef".into(),
            app: common::ids::AppId::parse("a").unwrap(),
            recipient: common::ids::UserId::parse("u").unwrap(),
            foreign_id: None,
            body: MessageBody::Text("hello".into()),
            topic: Some("news".into()),
            status: MessageStatus::Pending,
            created_us: 1_700_000_000_000_000,
            expires_us: None,
            delivered_us: None,
            delivered_via: None,
            cancelled_us: None,
            expired_us: None,
            global_message_id: None,
            bucket: None,
        };
        let small: Value = serde_json::from_slice(&payload(&m)).unwrap();
        assert_eq!(small["data"], "hello");
        assert_eq!(small["topic"], "news");
        assert_eq!(small["type"], "message");
        m.body = MessageBody::Text("x".repeat(webpush::MAX_PLAINTEXT));
        let big = payload(&m);
        assert!(big.len() <= webpush::MAX_PLAINTEXT);
        let big: Value = serde_json::from_slice(&big).unwrap();
        assert_eq!((big.get("data"), &big["truncated"]), (None, &json!(true)));
        assert_eq!(big["id"], m.id.as_str());
    }
}
