//! The VPush API (SPEC §5, seed `000`) under `/push/api/v1/`: contexts (named channels),
//! signing a context into a websocket token, and a context's archive when its history is
//! on. Authenticated with `Authorization: <secret>` (any of SPEC §4's forms). Answers
//! `{"success": true, ...}`; errors `{"success": false, "error": "..."}`. The seed's prose
//! names `context/sign` where its code uses `contexts/sign`: both work, as does every
//! route with and without its trailing slash.

use std::sync::Arc;

use common::clock::rfc3339;
use common::store::Context;
use serde_json::{Value, json};
use warp::http::{Method, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::json::JsonObject;
use super::{BodyError, Denied, Failure, Request, Surface};
use crate::AppState;
use crate::service::ServiceError;

/// Most archived messages one request lists.
const MAX_ARCHIVE: usize = 1_000;

fn failure(status: StatusCode, message: &str) -> Response {
    render(Failure::new(status, message))
}

/// A refusal in VPush's shape, `{"success": false, "error": "..."}`.
fn render(failure: Failure) -> Response {
    let body = json!({"success": false, "error": failure.message});
    failure.decorate(
        warp::reply::with_status(warp::reply::json(&body), failure.status).into_response(),
    )
}

fn success(status: StatusCode, mut body: Value) -> Response {
    body["success"] = json!(true);
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn from_service(e: ServiceError) -> Failure {
    Failure::from(e)
}

fn from_denied(d: Denied) -> Failure {
    match d {
        Denied::Unauthenticated => Failure::new(StatusCode::UNAUTHORIZED, "Invalid API token."),
        Denied::Forbidden { scope } => Failure::new(
            StatusCode::FORBIDDEN,
            format!("The API token lacks the {scope} scope."),
        ),
        Denied::RateLimited { retry_after } => Failure {
            retry_after: Some(retry_after),
            ..Failure::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests.")
        },
    }
}

fn context_json(c: &Context) -> Value {
    json!({"contextId": c.id, "name": c.name, "createdAt": rfc3339(c.created_us)})
}

type Outcome = Result<Response, Failure>;

/// The calling app, provided its key holds `scope` and is within its rate.
fn caller<'a>(r: &'a Request, scope: &'static str) -> Result<common::auth::Caller<'a>, Failure> {
    let secret = super::presented_secret(&r.headers);
    super::authorize(&r.state.services.apps, &r.state.rate_limit, secret, scope)
        .map_err(from_denied)
}

fn json(r: &Request) -> Result<JsonObject, Failure> {
    match &r.body {
        Ok(bytes) => JsonObject::parse(bytes).map_err(from_service),
        Err(BodyError::TooLarge { max, .. }) => Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than {max} bytes."),
        )),
        Err(_) => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "The request body could not be read.",
        )),
    }
}

/// A route: `method` on `/push/api/v1/<path>`, recorded as `name`.
fn route(
    state: &Arc<AppState>,
    method: Method,
    path: &'static [&'static str],
    name: &'static str,
    handler: super::Handler<Failure>,
) -> warp::filters::BoxedFilter<(Response,)> {
    let shape = super::Shape {
        wrong_method: warp::reject::not_found,
        render,
    };
    super::route(state, shape, method, path, name, handler)
}

/// The routes under `/push/api/v1/`.
pub fn routes(state: Arc<AppState>) -> Surface {
    let s = &state;
    let routes = route(s, Method::POST, &["contexts", "sign"], "vpush_sign", |c| {
        Box::pin(sign(c))
    })
    .or(route(
        s,
        Method::POST,
        &["context", "sign"],
        "vpush_sign",
        |c| Box::pin(sign(c)),
    ))
    .unify()
    .or(route(
        s,
        Method::POST,
        &["contexts"],
        "vpush_context_create",
        |c| Box::pin(create(c)),
    ))
    .unify()
    .or(route(
        s,
        Method::GET,
        &["contexts"],
        "vpush_context_list",
        |c| Box::pin(list(c)),
    ))
    .unify()
    .or(route(
        s,
        Method::GET,
        &["contexts", "{}", "messages"],
        "vpush_archive",
        |c| Box::pin(archive(c)),
    ))
    .unify();
    warp::path("push")
        .and(warp::path("api"))
        .and(warp::path("v1"))
        .and(routes.recover(rejection).unify())
        .boxed()
}

async fn rejection(_: Rejection) -> Result<Response, std::convert::Infallible> {
    Ok(failure(StatusCode::NOT_FOUND, "No such endpoint."))
}

/// `POST contexts` `{name?}` → `{success, contextId}`.
async fn create(call: Request) -> Outcome {
    let caller = caller(&call, "channels:write")?;
    let name = json(&call)?.string("name").map_err(from_service)?;
    let context = call
        .state
        .services
        .create_context(&caller.app.id, name)
        .await
        .map_err(from_service)?;
    Ok(success(
        StatusCode::CREATED,
        json!({"contextId": context.id}),
    ))
}

/// `GET contexts` → `{success, contexts: [...]}`.
async fn list(call: Request) -> Outcome {
    let caller = caller(&call, "channels:read")?;
    let contexts = call
        .state
        .services
        .contexts(&caller.app.id)
        .await
        .map_err(from_service)?;
    let listed: Vec<Value> = contexts.iter().map(context_json).collect();
    Ok(success(StatusCode::OK, json!({ "contexts": listed })))
}

/// `POST contexts/sign` `{contextId}` → `{success, websocketToken}`.
async fn sign(call: Request) -> Outcome {
    let caller = caller(&call, "tokens:create")?;
    let body = json(&call)?;
    let id = body.required_string("contextId").map_err(from_service)?;
    let token = call
        .state
        .services
        .sign_context(caller, &id)
        .await
        .map_err(from_service)?;
    Ok(success(StatusCode::OK, json!({ "websocketToken": token })))
}

/// `GET contexts/{id}/messages` → `{success, messages: [{message, sentAt}]}` (empty while
/// the context keeps no history).
async fn archive(call: Request) -> Outcome {
    let caller = caller(&call, "channels:read")?;
    let services = &call.state.services;
    let context = services
        .context(&caller.app.id, call.segment(0))
        .await
        .map_err(from_service)?;
    let items = services
        .latest_channel_messages(&caller.app.id, &context.id, MAX_ARCHIVE)
        .await
        .map_err(from_service)?;
    let messages: Vec<Value> = items
        .iter()
        .map(|(_, m)| json!({"message": m.data.as_message_text(), "sentAt": rfc3339(m.created_us)}))
        .collect();
    Ok(success(StatusCode::OK, json!({ "messages": messages })))
}
