//! `/api/v1/templates` (SPEC §4 Templates): `POST` `{title?, body?, data?, actionUrl?,
//! icon?, ttl?}` → 201 Template; `GET /templates/{id}` → Template; `DELETE` → 204. The
//! Template object is `{id, title?, body?, data?, actionUrl?, icon?, ttl?, createdAt}`;
//! a send with `"template": "<id>"` carries its content as the message's `data`.

use common::clock::rfc3339;
use common::store::Template;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Reply;

use super::{Outcome, Request, V1Request, created, ok};
use crate::service::templates::TemplateInput;

/// The Template object.
fn template_json(t: &Template) -> Value {
    let mut item = match t.content.value() {
        Value::Object(map) => Value::Object(map),
        _ => json!({}),
    };
    item["id"] = json!(t.id);
    item["createdAt"] = json!(rfc3339(t.created_us));
    if let Some(ttl) = t.ttl {
        item["ttl"] = json!(ttl);
    }
    item
}

/// `POST /api/v1/templates`.
pub async fn create(r: Request) -> Outcome {
    let caller = r.authorize("templates:write")?;
    let body = r.json()?;
    let input = TemplateInput {
        title: body.string("title")?,
        body: body.string("body")?,
        data: body.value("data").cloned(),
        action_url: body.string("actionUrl")?,
        icon: body.string("icon")?,
        ttl: body.u64("ttl")?,
    };
    let template = r
        .state
        .services
        .create_template(&caller.app.id, input)
        .await?;
    created(template_json(&template))
}

/// `GET /api/v1/templates/{id}`.
pub async fn get(r: Request) -> Outcome {
    let caller = r.authorize("templates:read")?;
    let template = r
        .state
        .services
        .template(&caller.app.id, r.segment(0))
        .await?;
    ok(template_json(&template))
}

/// `DELETE /api/v1/templates/{id}`: 204; messages sent with it keep their content.
pub async fn delete(r: Request) -> Outcome {
    let caller = r.authorize("templates:write")?;
    r.state
        .services
        .delete_template(&caller.app.id, r.segment(0))
        .await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}
