//! The webhook dispatcher of an API process (SPEC §4 Webhooks; docs/webhooks.md): claims
//! due batches from the outbox (a lease in the store, so one dispatcher at a time holds
//! an app), POSTs each as PushPushGo's event batch signed with `X-Herald-Signature`, and
//! settles it — sent events leave the outbox; on a non-2xx answer, a timeout or a refused
//! connection the app backs off exponentially (`webhooks.backoff_min_ms` doubling up to
//! `backoff_max_ms`) and the same events, with the same ids, are offered again. A
//! dispatcher killed mid-batch loses nothing: its lease runs out (`webhooks.lease_ms`) and
//! another sends the batch again.
//!
//! Body: `{"messages": [{"id", "messageId", "foreignId", "recipient", "result": {"kind"},
//! "ts"}]}` (`ts` in ms since the epoch). Signature: `t=<unix seconds>,v1=<hex
//! HMAC-SHA256(secret, "<t>.<body>")>`, computed afresh for each attempt. A PushPushGo
//! bucket's callback (`BatchFormat::PushPushGo`) gets the seed's shape instead —
//! `{"messages": [{"messageId", "foreignId"?, "result": {"kind"}, "ts"}]}` — unsigned, with
//! the bucket's own headers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use common::clock::now_us;
use common::config::{WebhooksConfig, ms};
use common::ids::new_message_id;
use common::metrics::Metrics;
use common::store::{Batch, BatchFormat, BatchOutcome, OutboxLimits, Stores, WebhookEvent};
use hmac::{Hmac, KeyInit, Mac};
use prometheus::{IntCounterVec, IntGauge};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Batches one process sends at once.
const CONCURRENCY: usize = 16;
/// Longest failure reason kept with the webhook.
const MAX_ERROR: usize = 300;

/// The `X-Herald-Signature` value of `body` sent at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// One event as the receiver gets it, in `format`.
fn event_json(format: &BatchFormat, e: &WebhookEvent) -> Value {
    match format {
        BatchFormat::Herald => json!({
            "id": e.id,
            "messageId": e.message_id,
            "foreignId": e.foreign_id,
            "recipient": e.recipient,
            "result": {"kind": e.kind.as_str()},
            "ts": e.at_us.div_euclid(1_000),
        }),
        BatchFormat::PushPushGo { .. } => {
            let mut event = json!({
                "messageId": e.message_id,
                "result": {"kind": e.kind.as_str()},
                "ts": e.at_us.div_euclid(1_000),
            });
            if let Some(foreign_id) = &e.foreign_id {
                event["foreignId"] = json!(foreign_id);
            }
            event
        }
    }
}

/// The body of a batch in `format`.
pub fn batch_body(format: &BatchFormat, events: &[WebhookEvent]) -> Vec<u8> {
    let messages: Vec<Value> = events.iter().map(|e| event_json(format, e)).collect();
    json!({ "messages": messages }).to_string().into_bytes()
}

/// Delay before the next attempt after `failures` failures in a row (≥ 1).
fn backoff(config: &WebhooksConfig, failures: u32) -> Duration {
    let doubled = config
        .backoff_min_ms
        .saturating_mul(1u64 << failures.saturating_sub(1).min(32));
    ms(doubled.min(config.backoff_max_ms))
}

struct Dispatcher {
    stores: Stores,
    config: WebhooksConfig,
    client: reqwest::Client,
    holder: String,
    limits: OutboxLimits,
    batches: IntCounterVec,
    events: IntCounterVec,
    /// Events in every app's outbox (cluster-wide), read at most every `DEPTH_EVERY`.
    depth: IntGauge,
}

/// How often the dispatcher reads the outbox's depth for its gauge.
const DEPTH_EVERY: Duration = Duration::from_secs(1);

/// Starts the dispatcher of this process (unless `webhooks.dispatch` is off) with `client`
/// (see [`client`]); it stops at
/// `stop`, abandoning in-flight batches to their leases.
pub fn start(
    stores: Stores,
    config: WebhooksConfig,
    client: reqwest::Client,
    metrics: &Metrics,
    stop: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !config.dispatch {
        return Ok(None);
    }
    let to_us = |v: u64| i64::try_from(v.saturating_mul(1_000)).unwrap_or(i64::MAX);
    let dispatcher = Arc::new(Dispatcher {
        stores,
        limits: OutboxLimits {
            lease_us: to_us(config.lease_ms),
            max_age_us: to_us(config.max_age_ms),
            max_pending: config.max_pending,
        },
        client,
        holder: format!("api-{}-{}", std::process::id(), new_message_id()),
        batches: metrics.counter_vec(
            "webhook_batches_total",
            "Webhook batches attempted, by result (sent, failed).",
            &["result"],
        ),
        events: metrics.counter_vec(
            "webhook_events_total",
            "Webhook events in attempted batches, by result (sent, failed).",
            &["result"],
        ),
        depth: metrics.gauge(
            "webhook_outbox_events",
            "Events waiting in every app's webhook outbox (the whole cluster's store).",
        ),
        config,
    });
    Ok(Some(tokio::spawn(dispatcher.run(stop))))
}

/// The HTTP client of the dispatcher: HTTP/1.1 and HTTPS (rustls, TLS 1.2 and 1.3) with
/// the system's roots plus `webhooks.ca_file`, no redirects, `timeout_ms` per attempt.
///
/// # Errors
/// `webhooks.ca_file` unreadable or holding no PEM certificate.
pub fn client(config: &WebhooksConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(ms(config.timeout_ms))
        .connect_timeout(ms(config.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald-webhooks/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("webhooks.ca_file: cannot read {}", path.display()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("webhooks.ca_file: {} is not a PEM bundle", path.display()))?;
        anyhow::ensure!(
            !roots.is_empty(),
            "webhooks.ca_file: {} holds no PEM certificate",
            path.display()
        );
        builder = builder.tls_certs_merge(roots);
    }
    builder
        .build()
        .context("webhooks: cannot build the HTTPS client")
}

impl Dispatcher {
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let poll = ms(self.config.poll_ms);
        let mut depth_read: Option<std::time::Instant> = None;
        loop {
            if depth_read.is_none_or(|at| at.elapsed() >= DEPTH_EVERY) {
                depth_read = Some(std::time::Instant::now());
                match self.stores.webhooks.outbox_depth().await {
                    Ok(depth) => self.depth.set(i64::try_from(depth).unwrap_or(i64::MAX)),
                    Err(e) => tracing::warn!(error = %e, "cannot read the webhook outbox depth"),
                }
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let claimed = tokio::select! {
                _ = stop.cancelled() => return,
                claimed = self.stores.webhooks.claim_batch(&self.holder, now_us(), self.limits) => claimed,
            };
            match claimed {
                Ok(Some(batch)) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.send(batch).await;
                        drop(slot);
                    });
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim webhook batches"),
            }
            drop(slot);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Sends one batch and settles it.
    async fn send(&self, batch: Batch) {
        let format = &batch.webhook.format;
        let body = batch_body(format, &batch.events);
        let mut request = self
            .client
            .post(&batch.webhook.url)
            .header("content-type", "application/json");
        match format {
            BatchFormat::Herald => {
                let t = now_us().div_euclid(1_000_000);
                request = request.header(
                    "x-herald-signature",
                    signature(&batch.webhook.secret, t, &body),
                );
            }
            BatchFormat::PushPushGo { headers } => {
                for (name, value) in headers {
                    request = request.header(name.as_str(), value.as_str());
                }
            }
        }
        let answer = request.body(body).send().await;
        let outcome = match answer {
            Ok(response) if response.status().is_success() => BatchOutcome::Sent,
            Ok(response) => self.failed(&batch, format!("HTTP {}", response.status().as_u16())),
            Err(e) if e.is_timeout() => self.failed(
                &batch,
                format!("no answer within {} ms", self.config.timeout_ms),
            ),
            Err(e) => self.failed(&batch, error_chain(&e)),
        };
        let result = if outcome == BatchOutcome::Sent {
            "sent"
        } else {
            "failed"
        };
        self.batches.with_label_values(&[result]).inc();
        self.events
            .with_label_values(&[result])
            .inc_by(batch.events.len() as u64);
        if let BatchOutcome::Failed { error, .. } = &outcome {
            tracing::warn!(app = %batch.webhook.app, url = %batch.webhook.url, %error, failures = batch.failures + 1, "webhook batch failed");
        }
        let ids: Vec<String> = batch.events.iter().map(|e| e.id.clone()).collect();
        if let Err(e) = self
            .stores
            .webhooks
            .settle_batch(&batch.webhook.app, &self.holder, &ids, outcome, now_us())
            .await
        {
            // The lease runs out and the batch is offered again: a duplicate, never a loss.
            tracing::warn!(error = %e, "cannot settle a webhook batch");
        }
    }

    fn failed(&self, batch: &Batch, mut error: String) -> BatchOutcome {
        if error.len() > MAX_ERROR {
            let mut end = MAX_ERROR;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
        }
        let delay = backoff(&self.config, batch.failures.saturating_add(1));
        let delay_us = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
        BatchOutcome::Failed {
            error,
            retry_at_us: now_us().saturating_add(delay_us),
        }
    }
}

/// An error and its causes, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_holds_no_certificate_is_an_error_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WebhooksConfig::default();
        assert!(client(&config).is_ok(), "no ca_file: the system's roots");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a certificate\n").unwrap();
        for path in [dir.path().join("missing.pem"), text] {
            config.ca_file = Some(path.clone());
            let error = format!("{:#}", client(&config).unwrap_err());
            assert!(error.starts_with("webhooks.ca_file: "), "{error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
        }
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Known answer computed independently:
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"s3cret",b"1700000000.{}",hashlib.sha256).hexdigest())'
        assert_eq!(
            signature("s3cret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = WebhooksConfig {
            backoff_min_ms: 1_000,
            backoff_max_ms: 5_000,
            ..WebhooksConfig::default()
        };
        let delays: Vec<u64> = (1..=5)
            .map(|f| backoff(&config, f).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(backoff(&config, u32::MAX), ms(5_000));
    }
}
