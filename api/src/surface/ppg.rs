//! PushPushGo CORE's own API under `/v1` (SPEC §5, seed `002`; its public OpenAPI document
//! `ppgco/ppg-core-open-api` and JS SDK; docs/pushpushgo.md), so code written against
//! CORE works after changing only its base URL to `https://<herald>/v1`:
//! - `POST /v1/bucket` `{providerCredentials: [{type, payload}], callbackConfig: {type:
//!   "http", payload: {url, headers?}} | {type: "none"}}` → 200 `{bucketId, credentials:
//!   [{id, type}]}`, one credential per provider in the order given (the SDK pairs them by
//!   position);
//! - `POST /v1/bucket/{bucketId}/context/{data|silent|raw}` `{…}` → 200 `{contextId}`;
//! - `POST /v1/bucket/{bucketId}/context/{contextId}/send` `{receivers: [...]}` (≤ 1000)
//!   → 200 `{results: [{messageId, errors}]}`, one per receiver in order;
//! - `POST /v1/bucket/{bucketId}/send[/silent|/raw]` `{receiver, metadata}` → 200
//!   `{messageId, errors: []}` (a one-off context);
//! - `POST /v1/context/{contextId}/events/{delivered|clicked|closed}` (no key) → 201 with
//!   an empty body: what a browser's service worker reports, for the bucket's callback;
//! - `GET /v1` → 200 `{currentVersion, discord, github, email}` (CORE's hello).
//!
//! Authenticated by an app key that holds `messages:send`, presented as CORE's SDK does
//! (`authorization: token=<secret>`) or as its OpenAPI document says (`x-token: <secret>`),
//! or as on `/api/v1` (`Authorization: Bearer`). Errors: CORE's `{"message", "errors":
//! [...]}` (4xx; `errors` lists `<field>: <what is wrong>`). Every answer carries
//! `Access-Control-Allow-Origin: *` and `OPTIONS` is answered without a key, since
//! browsers' service workers call CORE cross-origin. Routes answer with and without their
//! trailing slash.

use std::sync::Arc;

use common::store::{ContextKind, EventKind};
use serde_json::{Value, json};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::json::JsonObject;
use super::{Denied, Failure, Request, Surface};
use crate::AppState;
use crate::service::ServiceError;
use crate::service::buckets::{CallbackInput, MAX_RECEIVERS, ProviderInput, ReceiverInput};

/// What every `/v1` operation needs in the key's scopes.
const SCOPE: &str = "messages:send";
/// The body limit of a send to a context: 1000 receivers as the SDK writes them (about
/// 600 bytes each) do not fit `api.max_body_bytes`.
pub const MAX_SEND_BODY: usize = 2 << 20;

/// A refusal in CORE's shape.
#[derive(Debug)]
struct Refusal {
    failure: Failure,
    errors: Vec<String>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            failure: Failure::new(status, message),
            errors: Vec::new(),
        }
    }
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Refusal {
        match e {
            ServiceError::BadRequest { field, message } => Refusal {
                failure: Failure::new(StatusCode::BAD_REQUEST, "input command validation failed"),
                errors: vec![format!("{field}: {message}")],
            },
            other => Refusal {
                failure: Failure::from(other),
                errors: Vec::new(),
            },
        }
    }
}

fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("authorization, x-token, content-type"),
    );
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert("access-control-max-age", HeaderValue::from_static("86400"));
    response
}

fn render(refusal: Refusal) -> Response {
    let body = json!({"message": refusal.failure.message, "errors": refusal.errors});
    let response =
        warp::reply::with_status(warp::reply::json(&body), refusal.failure.status).into_response();
    cors(refusal.failure.decorate(response))
}

fn ok(body: Value) -> Outcome {
    Ok(cors(warp::reply::json(&body).into_response()))
}

type Outcome = Result<Response, Refusal>;

/// The key as CORE's clients present it: `authorization: token=<secret>`, `x-token`, or
/// `Authorization: Bearer <secret>`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(value) = header("authorization") {
        if let Some(secret) = value.strip_prefix("token=") {
            return Some(secret.trim());
        }
        return super::presented_secret(headers);
    }
    header("x-token")
}

/// The calling app.
fn authorize(r: &Request) -> Result<common::ids::AppId, Refusal> {
    let state = &r.state;
    match super::authorize(
        &state.services.apps,
        &state.rate_limit,
        presented(&r.headers),
        SCOPE,
    ) {
        Ok(caller) => Ok(caller.app.id.clone()),
        Err(Denied::Unauthenticated) => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "A valid token is required (authorization: token=<secret>, or x-token).",
        )),
        Err(Denied::Forbidden { scope }) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("The token lacks the {scope} scope."),
        )),
        Err(Denied::RateLimited { retry_after }) => Err(Refusal {
            failure: Failure {
                retry_after: Some(retry_after),
                ..Failure::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests.")
            },
            errors: Vec::new(),
        }),
    }
}

fn body(r: &Request) -> Result<JsonObject, Refusal> {
    match &r.body {
        Ok(bytes) => Ok(JsonObject::parse(bytes)?),
        Err(super::BodyError::TooLarge { max, .. }) => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than {max} bytes."),
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "The request body could not be read.",
        )),
    }
}

fn bad(field: &str, message: &str) -> Refusal {
    Refusal::from(ServiceError::bad_request(field, message))
}

/// A route: `method` on `/v1/<path>`, recorded as `name`.
fn route(
    state: &Arc<AppState>,
    method: Method,
    path: &'static [&'static str],
    name: &'static str,
    handler: super::Handler<Refusal>,
) -> warp::filters::BoxedFilter<(Response,)> {
    super::route(state, shape(), method, path, name, handler)
}

fn shape() -> super::Shape<Refusal> {
    super::Shape {
        wrong_method: || warp::reject::custom(WrongMethod),
        render,
    }
}

/// The path matched but not the method.
#[derive(Debug)]
struct WrongMethod;
impl warp::reject::Reject for WrongMethod {}

/// The routes under `/v1`.
pub fn routes(state: Arc<AppState>) -> Surface {
    let s = &state;
    let routes = route(s, Method::GET, &[], "ppg_hello", |r| Box::pin(hello(r)))
        .or(route(
            s,
            Method::POST,
            &["bucket"],
            "ppg_bucket_create",
            |r| Box::pin(create_bucket(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::POST,
            &["bucket", "{}", "context", "{}"],
            "ppg_context_create",
            |r| Box::pin(create_context(r)),
        ))
        .unify()
        .or(super::route_with_body_limit(
            s,
            shape(),
            Method::POST,
            &["bucket", "{}", "context", "{}", "send"],
            "ppg_context_send",
            |r| Box::pin(send_context(r)),
            MAX_SEND_BODY.max(state.max_body_bytes),
        ))
        .unify()
        .or(route(
            s,
            Method::POST,
            &["bucket", "{}", "send"],
            "ppg_send",
            |r| Box::pin(send_one(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::POST,
            &["bucket", "{}", "send", "{}"],
            "ppg_send_kind",
            |r| Box::pin(send_one(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::POST,
            &["context", "{}", "events", "{}"],
            "ppg_event",
            |r| Box::pin(event(r)),
        ))
        .unify();
    let preflight = warp::options().map(|| {
        cors(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
    });
    warp::path("v1")
        .and(preflight.or(routes).unify().recover(rejection).unify())
        .boxed()
}

async fn rejection(rejection: Rejection) -> Result<Response, std::convert::Infallible> {
    Ok(if rejection.find::<WrongMethod>().is_some() {
        render(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed on this path.",
        ))
    } else {
        render(Refusal::new(StatusCode::NOT_FOUND, "No such endpoint."))
    })
}

/// `GET /v1`: CORE's hello, with this server's version.
async fn hello(_: Request) -> Outcome {
    ok(json!({
        "currentVersion": env!("CARGO_PKG_VERSION"),
        "discord": "",
        "github": "",
        "email": "",
    }))
}

/// `POST /v1/bucket`.
async fn create_bucket(r: Request) -> Outcome {
    let app = authorize(&r)?;
    let body = body(&r)?;
    let callback = body.object("callbackConfig")?.ok_or_else(|| {
        bad(
            "callbackConfig",
            "is required: {\"type\": \"http\", \"payload\": {\"url\"}} or {\"type\": \"none\"}",
        )
    })?;
    let callback = match callback.required_string("type")?.as_str() {
        "none" => CallbackInput::None,
        "http" => {
            let payload = callback
                .object("payload")?
                .ok_or_else(|| bad("callbackConfig.payload", "is required for type http"))?;
            let url = payload.required_string("url")?;
            let headers = match payload.value("headers") {
                None => Vec::new(),
                Some(Value::Object(map)) => map
                    .iter()
                    .map(|(name, value)| match value {
                        Value::String(v) => Ok((name.clone(), v.clone())),
                        _ => Err(bad(
                            &format!("callbackConfig.payload.headers.{name}"),
                            "must be a string",
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(bad(
                        "callbackConfig.payload.headers",
                        "must be an object of strings",
                    ));
                }
            };
            CallbackInput::Http { url, headers }
        }
        other => {
            return Err(bad(
                "callbackConfig.type",
                &format!("must be \"http\" or \"none\", not {other:?}"),
            ));
        }
    };
    let providers = match body.value("providerCredentials") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let field = format!("providerCredentials[{i}]");
                let item = item
                    .as_object()
                    .ok_or_else(|| bad(&field, "must be an object {type, payload}"))?;
                let kind = item
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&format!("{field}.type"), "must be a string"))?;
                let payload = match item.get("payload") {
                    Some(Value::Object(map)) => map.clone(),
                    None | Some(Value::Null) => Default::default(),
                    Some(_) => return Err(bad(&format!("{field}.payload"), "must be an object")),
                };
                Ok(ProviderInput {
                    kind: kind.to_owned(),
                    payload,
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("providerCredentials", "must be an array")),
    };
    let bucket = r
        .state
        .services
        .create_bucket(&app, providers, callback)
        .await?;
    let credentials: Vec<Value> = bucket
        .credentials
        .iter()
        .map(|c| json!({"id": c.id, "type": c.provider}))
        .collect();
    ok(json!({"bucketId": bucket.id, "credentials": credentials}))
}

/// `POST /v1/bucket/{bucketId}/context/{data|silent|raw}`.
async fn create_context(r: Request) -> Outcome {
    let app = authorize(&r)?;
    let Some(kind) = ContextKind::parse(r.segment(1)) else {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "No such endpoint."));
    };
    let content = body(&r)?.into_map();
    let context = r
        .state
        .services
        .create_bucket_context(&app, r.segment(0), kind, content)
        .await?;
    ok(json!({ "contextId": context.id }))
}

/// A receiver as CORE's SDK sends it: flat `{credentialId, foreignId?, endpoint, p256dh,
/// auth}` plus fields of its own (ignored); `keys: {p256dh, auth}` is read too. Herald's
/// extension `{user, foreignId?}` names a Herald user of the bucket's app.
fn receiver(value: &Value) -> ReceiverInput {
    let Some(object) = value.as_object() else {
        return ReceiverInput::default();
    };
    let keys = object.get("keys").and_then(Value::as_object);
    let mut malformed = Vec::new();
    let mut text = |name: &str| match object.get(name).or_else(|| keys.and_then(|k| k.get(name))) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        None | Some(Value::Null) => None,
        Some(_) => {
            malformed.push(format!("{name}: must be a string"));
            None
        }
    };
    let credential_id = text("credentialId");
    let foreign_id = text("foreignId");
    let endpoint = text("endpoint");
    let p256dh = text("p256dh");
    let auth = text("auth");
    let user = text("user");
    ReceiverInput {
        credential_id,
        foreign_id,
        endpoint,
        p256dh,
        auth,
        user,
        malformed,
    }
}

/// `POST /v1/bucket/{bucketId}/context/{contextId}/send` `{receivers}` → `{results:
/// [{messageId, errors: []} | {errors: [...]}]}`, one per receiver in order.
async fn send_context(r: Request) -> Outcome {
    let app = authorize(&r)?;
    let body = body(&r)?;
    let receivers = match body.value("receivers") {
        Some(Value::Array(items)) => items.iter().map(receiver).collect::<Vec<_>>(),
        Some(_) => return Err(bad("receivers", "must be an array")),
        None => return Err(bad("receivers", "is required")),
    };
    if receivers.len() > MAX_RECEIVERS {
        return Err(bad(
            "receivers",
            &format!(
                "lists {} receivers; at most {MAX_RECEIVERS} per request",
                receivers.len()
            ),
        ));
    }
    let results = r
        .state
        .services
        .send_bucket_context(&app, r.segment(0), r.segment(1), receivers)
        .await?;
    let results: Vec<Value> = results
        .into_iter()
        .map(|result| match result {
            Ok(id) => json!({"messageId": id, "errors": []}),
            Err(errors) => json!({ "errors": errors }),
        })
        .collect();
    ok(json!({ "results": results }))
}

/// `POST /v1/bucket/{bucketId}/send[/silent|/raw]` `{receiver, metadata}` →
/// `{messageId, errors: []}`.
async fn send_one(r: Request) -> Outcome {
    let app = authorize(&r)?;
    let kind = if r.path.len() > 1 {
        match r.segment(1) {
            "silent" => ContextKind::Silent,
            "raw" => ContextKind::Raw,
            _ => return Err(Refusal::new(StatusCode::NOT_FOUND, "No such endpoint.")),
        }
    } else {
        ContextKind::Data
    };
    let body = body(&r)?;
    let target = body
        .value("receiver")
        .filter(|v| v.is_object())
        .ok_or_else(|| {
            bad(
                "receiver",
                "is required: {credentialId, endpoint, p256dh, auth} or {user}",
            )
        })?;
    let target = receiver(target);
    let metadata = match body.value("metadata") {
        None => Default::default(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(bad("metadata", "must be an object")),
    };
    let id = r
        .state
        .services
        .send_bucket_message(&app, r.segment(0), kind, metadata, target)
        .await?;
    ok(json!({"messageId": id, "errors": []}))
}

/// `POST /v1/context/{contextId}/events/{delivered|clicked|closed}` (`close` too)
/// `{messageId, foreignId?, action?}`, from a browser's service worker or a mobile SDK:
/// no key; 201 with an empty `text/plain` body, as CORE answers.
async fn event(r: Request) -> Outcome {
    let kind = match r.segment(1) {
        "delivered" => EventKind::Delivered,
        "clicked" => EventKind::Clicked,
        "closed" | "close" => EventKind::Close,
        _ => return Err(Refusal::new(StatusCode::NOT_FOUND, "No such endpoint.")),
    };
    let body = body(&r)?;
    let message = body
        .string("messageId")?
        .ok_or_else(|| bad("messageId", "is required"))?;
    // Checked as a string; the event carries the foreignId the message was sent with.
    body.string("foreignId")?;
    r.state
        .services
        .record_bucket_event(r.segment(0), kind, &message)
        .await?;
    let mut response = warp::reply::with_status("", StatusCode::CREATED).into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    Ok(cors(response))
}
