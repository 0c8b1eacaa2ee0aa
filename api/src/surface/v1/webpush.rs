//! Web Push subscriptions of Herald users, under `/api/v1` (SPEC §4 Users; docs/webpush.md):
//! - `GET /webpush/key` → `{"publicKey"}`: the app's VAPID public key (base64url), what a
//!   browser passes to `pushManager.subscribe({applicationServerKey})`;
//! - `POST /users/{id}/webpush` `{endpoint, keys: {p256dh, auth}}` (the browser's
//!   `PushSubscription.toJSON()`) → 201 Subscription, or 200 with the existing one when
//!   the user has that endpoint already (its keys updated);
//! - `GET /users/{id}/webpush` → `{"items": [Subscription]}`, oldest first;
//! - `DELETE /users/{id}/webpush/{sid}` → 204, 404 when there is none.
//!
//! Subscription: `{id, endpoint, createdAt}` (the keys are never read back).

use common::clock::rfc3339;
use common::store::PushSubscription;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Reply;

use super::{ApiError, Outcome, Request, V1Request, created, ok};
use crate::service::webpush::NewSubscription;

fn subscription_json(s: &PushSubscription) -> Value {
    json!({"id": s.id, "endpoint": s.endpoint, "createdAt": rfc3339(s.created_us)})
}

/// `GET /api/v1/webpush/key`.
pub async fn key(r: Request) -> Outcome {
    let caller = r.authorize("users:read")?;
    let key = r.state.services.vapid_key(&caller.app.id).await?;
    ok(json!({ "publicKey": key.public_key() }))
}

/// `POST /api/v1/users/{id}/webpush`.
pub async fn subscribe(r: Request) -> Outcome {
    let caller = r.authorize("users:write")?;
    let body = r.json()?;
    let keys = body
        .object("keys")?
        .ok_or_else(|| ApiError::bad_request("keys", "is required"))?;
    let new = NewSubscription {
        endpoint: body.required_string("endpoint")?,
        p256dh: keys.required_string("p256dh")?,
        auth: keys.required_string("auth")?,
    };
    let (subscription, fresh) = r
        .state
        .services
        .add_webpush_subscription(&caller.app.id, r.segment(0), new)
        .await?;
    if fresh {
        created(subscription_json(&subscription))
    } else {
        ok(subscription_json(&subscription))
    }
}

/// `GET /api/v1/users/{id}/webpush`.
pub async fn list(r: Request) -> Outcome {
    let caller = r.authorize("users:read")?;
    let items = r
        .state
        .services
        .webpush_subscriptions(&caller.app.id, r.segment(0))
        .await?;
    let items: Vec<Value> = items.iter().map(subscription_json).collect();
    ok(json!({ "items": items }))
}

/// `DELETE /api/v1/users/{id}/webpush/{sid}`.
pub async fn remove(r: Request) -> Outcome {
    let caller = r.authorize("users:write")?;
    r.state
        .services
        .remove_webpush_subscription(&caller.app.id, r.segment(0), r.segment(1))
        .await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}
