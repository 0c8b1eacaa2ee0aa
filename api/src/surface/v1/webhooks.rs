//! `/api/v1/webhook` (SPEC §4 Webhooks): `PUT` `{url, secret, events?, maxBatch?,
//! maxDelayMs?}` → 200 with the Webhook; `GET` → the Webhook; `DELETE` → 204. The Webhook
//! object is `{url, events, maxBatch, maxDelayMs, updatedAt, status: {pending, failures,
//! lastError, lastAttemptAt, lastSuccessAt, nextAttemptAt, dropped}}`; the secret is
//! write-only.

use common::clock::rfc3339;
use common::store::{EventKind, Webhook, WebhookState};
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Reply;

use super::{Outcome, Request, V1Request, ok};
use crate::service::webhooks::WebhookInput;

/// The Webhook object.
fn webhook_json(w: &Webhook, s: &WebhookState) -> Value {
    let kinds: Vec<&str> = w.events.iter().map(|k| k.as_str()).collect();
    json!({
        "url": w.url,
        "events": kinds,
        "maxBatch": w.max_batch,
        "maxDelayMs": w.max_delay_ms,
        "updatedAt": rfc3339(w.updated_us),
        "status": {
            "pending": s.pending,
            "failures": s.failures,
            "lastError": s.last_error,
            "lastAttemptAt": s.last_attempt_us.map(rfc3339),
            "lastSuccessAt": s.last_success_us.map(rfc3339),
            "nextAttemptAt": (s.failures > 0 && s.next_attempt_us > 0).then(|| rfc3339(s.next_attempt_us)),
            "dropped": s.dropped,
        },
    })
}

/// `PUT /api/v1/webhook`: sets the app's webhook; `events` absent means every kind.
pub async fn put(r: Request) -> Outcome {
    let caller = r.authorize("webhooks:write")?;
    let body = r.json()?;
    let events = if body.value("events").is_some() {
        body.strings("events")?
    } else {
        EventKind::ALL
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect()
    };
    let input = WebhookInput {
        url: body.required_string("url")?,
        secret: body.required_string("secret")?,
        events,
        max_batch: body.u64("maxBatch")?,
        max_delay_ms: body.u64("maxDelayMs")?,
    };
    let (webhook, state) = r.state.services.put_webhook(&caller.app.id, input).await?;
    ok(webhook_json(&webhook, &state))
}

/// `GET /api/v1/webhook`.
pub async fn get(r: Request) -> Outcome {
    let caller = r.authorize("webhooks:read")?;
    let (webhook, state) = r.state.services.webhook(&caller.app.id).await?;
    ok(webhook_json(&webhook, &state))
}

/// `DELETE /api/v1/webhook`: 204; the events waiting for it are dropped.
pub async fn delete(r: Request) -> Outcome {
    let caller = r.authorize("webhooks:write")?;
    r.state.services.delete_webhook(&caller.app.id).await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}
