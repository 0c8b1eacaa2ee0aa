//! Herald's own server API, `/api/v1` (SPEC §4): connection tokens, channels with history,
//! users and presence, addressed messages (`messages`), broadcasts (`broadcasts`), templates (`templates`), the webhook (`webhooks`), Web Push subscriptions (`webpush`). JSON only; authenticated with an app's API key (`Authorization:
//! Bearer`, `Authorization`, or `x-api-key`) that must hold each route's scope; rate
//! limited per key. Errors: `{"error": {"code", "message", "details"}}` with the status
//! of their code, `details.field` naming the input at fault.

use std::sync::Arc;

use common::clock::rfc3339;
use common::ids::{AppId, ChannelName, ChannelPattern, UserId};
use common::message::ChannelMessage;
use common::store::History;
use serde_json::{Value, json};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::json::JsonObject;
use super::{BodyError, Denied, Request, Surface};
use crate::AppState;
use crate::service::ServiceError;
use crate::service::channels::{ChannelPublish, ChannelView, Published};
use crate::service::tokens::TokenRequest;

mod broadcasts;
pub(crate) mod messages;
mod templates;
mod webhooks;
mod webpush;

/// Default and largest page of channel history.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

/// An error in the `/api/v1` shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
    retry_after: Option<u64>,
    close: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
            close: false,
        }
    }

    pub fn bad_request(field: &str, message: &str) -> ApiError {
        ApiError {
            details: Some(json!({ "field": field })),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{field}: {message}"),
            )
        }
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let body = json!({ "error": error });
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            headers.insert("retry-after", value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        if self.close {
            headers.insert("connection", HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::BadRequest { field, message } => ApiError::bad_request(&field, &message),
            ServiceError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            ServiceError::NotFound { message, .. } => ApiError::not_found(message),
            ServiceError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ServiceError::Unavailable(m) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            },
            ServiceError::Internal(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
            }
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        match d {
            Denied::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "A valid API key is required (Authorization: Bearer <secret>).",
            ),
            Denied::Forbidden { scope } => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("The API key lacks the {scope} scope."),
            ),
            Denied::RateLimited { retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many requests for this API key.",
                )
            },
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        let error = match e {
            BodyError::TooLarge { max, .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("The request body is larger than {max} bytes."),
            ),
            BodyError::Timeout => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "bad_request",
                "The request body did not arrive in time.",
            ),
            BodyError::Broken => ApiError::bad_request("body", "could not be read"),
        };
        ApiError {
            close: e.closes(),
            ..error
        }
    }
}

type Outcome = Result<Response, ApiError>;

/// What `/api/v1` handlers read from a request, with its errors in this API's shape.
trait V1Request {
    /// The calling app, provided its key holds `scope` and is within its rate.
    fn authorize(&self, scope: &'static str) -> Result<common::auth::Caller<'_>, ApiError>;
    fn json(&self) -> Result<JsonObject, ApiError>;
    /// The `{channel}` segment.
    fn channel(&self) -> Result<ChannelName, ApiError>;
    /// The `{id}` segment.
    fn user(&self) -> Result<UserId, ApiError>;
    fn query_u64(&self, name: &str) -> Result<Option<u64>, ApiError>;
    /// The `limit` query parameter: `default` when absent, else 1..=`max` or a 400.
    fn query_limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.query_u64("limit")? {
            None => Ok(default),
            Some(n) if (1..=max as u64).contains(&n) => Ok(n as usize),
            Some(_) => Err(ApiError::bad_request(
                "limit",
                &format!("must be between 1 and {max}"),
            )),
        }
    }
}

impl V1Request for Request {
    fn authorize(&self, scope: &'static str) -> Result<common::auth::Caller<'_>, ApiError> {
        let secret = super::presented_secret(&self.headers);
        Ok(super::authorize(
            &self.state.services.apps,
            &self.state.rate_limit,
            secret,
            scope,
        )?)
    }

    fn json(&self) -> Result<JsonObject, ApiError> {
        let body = self.body.as_ref().map_err(|e| ApiError::from(*e))?;
        Ok(JsonObject::parse(body)?)
    }

    fn channel(&self) -> Result<ChannelName, ApiError> {
        ChannelName::parse(self.segment(0))
            .map_err(|e| ApiError::bad_request("channel", &e.to_string()))
    }

    fn user(&self) -> Result<UserId, ApiError> {
        UserId::parse(self.segment(0)).map_err(|e| ApiError::bad_request("user", &e.to_string()))
    }

    fn query_u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.query_param(name)
            .map_err(|_| ApiError::bad_request("query", "is not a valid query string"))?
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(name, "must be a non-negative integer"))
            })
            .transpose()
    }
}

type Handler = super::Handler<ApiError>;

/// A route: `method` on `/api/v1/<path>`, recorded as `name`.
fn route(
    state: &Arc<AppState>,
    method: warp::http::Method,
    path: &'static [&'static str],
    name: &'static str,
    handler: Handler,
) -> warp::filters::BoxedFilter<(Response,)> {
    let shape = super::Shape {
        wrong_method: || warp::reject::custom(WrongMethod),
        render: ApiError::into_response,
    };
    super::route(state, shape, method, path, name, handler)
}

/// The path matched but not the method (405 rather than 404).
#[derive(Debug)]
struct WrongMethod;
impl warp::reject::Reject for WrongMethod {}

/// The routes of `/api/v1`, with unmatched requests under it answered in its shape.
pub fn routes(state: Arc<AppState>) -> Surface {
    use warp::http::Method;
    let s = &state;
    let routes = route(s, Method::POST, &["tokens"], "v1_token_create", |r| {
        Box::pin(create_token(r))
    })
    .or(route(
        s,
        Method::PUT,
        &["channels", "{}"],
        "v1_channel_put",
        |r| Box::pin(put_channel(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::GET,
        &["channels", "{}"],
        "v1_channel_get",
        |r| Box::pin(get_channel(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::POST,
        &["channels", "{}", "messages"],
        "v1_channel_publish",
        |r| Box::pin(publish(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::GET,
        &["channels", "{}", "messages"],
        "v1_channel_history",
        |r| Box::pin(history(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::GET,
        &["channels", "{}", "users"],
        "v1_channel_users",
        |r| Box::pin(channel_users(r)),
    ))
    .unify()
    .or(route(s, Method::GET, &["users"], "v1_users_count", |r| {
        Box::pin(users_online(r))
    }))
    .unify()
    .or(route(
        s,
        Method::GET,
        &["users", "{}"],
        "v1_user_get",
        |r| Box::pin(user(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::DELETE,
        &["users", "{}", "connections"],
        "v1_user_logout",
        |r| Box::pin(logout(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::POST,
        &["users", "{}", "messages"],
        "v1_user_send",
        |r| Box::pin(messages::send_to_user(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::POST,
        &["messages"],
        "v1_message_send",
        |r| Box::pin(messages::send(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::GET,
        &["messages"],
        "v1_message_list",
        |r| Box::pin(messages::list(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::GET,
        &["messages", "{}"],
        "v1_message_get",
        |r| Box::pin(messages::get(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::POST,
        &["messages", "{}", "cancel"],
        "v1_message_cancel",
        |r| Box::pin(messages::cancel(r)),
    ))
    .unify()
    .boxed();
    // In two boxed halves: one long chain of `or`s overflows the trait solver.
    let routes = routes
        .or(route(
            s,
            Method::POST,
            &["broadcasts"],
            "v1_broadcast_send",
            |r| Box::pin(broadcasts::send(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::GET,
            &["broadcasts"],
            "v1_broadcast_list",
            |r| Box::pin(broadcasts::list(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::POST,
            &["templates"],
            "v1_template_create",
            |r| Box::pin(templates::create(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::GET,
            &["templates", "{}"],
            "v1_template_get",
            |r| Box::pin(templates::get(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::DELETE,
            &["templates", "{}"],
            "v1_template_delete",
            |r| Box::pin(templates::delete(r)),
        ))
        .unify()
        .or(route(s, Method::PUT, &["webhook"], "v1_webhook_put", |r| {
            Box::pin(webhooks::put(r))
        }))
        .unify()
        .or(route(s, Method::GET, &["webhook"], "v1_webhook_get", |r| {
            Box::pin(webhooks::get(r))
        }))
        .unify()
        .or(route(
            s,
            Method::DELETE,
            &["webhook"],
            "v1_webhook_delete",
            |r| Box::pin(webhooks::delete(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::GET,
            &["webpush", "key"],
            "v1_webpush_key",
            |r| Box::pin(webpush::key(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::POST,
            &["users", "{}", "webpush"],
            "v1_webpush_subscribe",
            |r| Box::pin(webpush::subscribe(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::GET,
            &["users", "{}", "webpush"],
            "v1_webpush_list",
            |r| Box::pin(webpush::list(r)),
        ))
        .unify()
        .or(route(
            s,
            Method::DELETE,
            &["users", "{}", "webpush", "{}"],
            "v1_webpush_remove",
            |r| Box::pin(webpush::remove(r)),
        ))
        .unify();
    warp::path("api")
        .and(warp::path("v1"))
        .and(routes.recover(rejection).unify())
        .boxed()
}

/// Unmatched requests under `/api/v1`.
async fn rejection(rejection: Rejection) -> Result<Response, std::convert::Infallible> {
    let error = if rejection.find::<WrongMethod>().is_some()
        || rejection.find::<warp::reject::MethodNotAllowed>().is_some()
    {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
            "Method not allowed on this path.",
        )
    } else if rejection.is_not_found() {
        ApiError::not_found("No such endpoint.")
    } else {
        ApiError::bad_request("request", "could not be read")
    };
    Ok(error.into_response())
}

fn created(body: Value) -> Outcome {
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
}

fn ok(body: Value) -> Outcome {
    Ok(warp::reply::json(&body).into_response())
}

/// `POST /api/v1/tokens`.
async fn create_token(r: Request) -> Outcome {
    let caller = r.authorize("tokens:create")?;
    let body = r.json()?;
    let request = TokenRequest {
        user: body.parsed("user", UserId::parse)?,
        channels: body.parsed_list("channels", ChannelPattern::parse)?,
        topics: body.strings("topics")?,
        origin: body.string("origin")?,
        source_ip: body.parsed("sourceIp", |s| s.parse::<std::net::IpAddr>())?,
        ttl: body.u64("ttl")?,
        publish: body.bool("publish")?,
        ack: body.bool("ack")?,
    };
    let minted = r.state.services.mint_token(caller, request).await?;
    created(json!({
        "token": minted.token,
        "connectionUri": minted.connection_uri,
        "expiresAt": rfc3339(minted.expires_us),
    }))
}

fn channel_json(view: &ChannelView) -> Value {
    json!({
        "name": view.name,
        "history": view.history.is_on().then_some(view.history),
        "subscribers": view.subscribers,
    })
}

/// `PUT /api/v1/channels/{ch}` `{history: {size?, ttl?} | null}`.
async fn put_channel(r: Request) -> Outcome {
    let caller = r.authorize("channels:write")?;
    let channel = r.channel()?;
    let body = r.json()?;
    let history = match body.object("history")? {
        Some(h) => History {
            size: h.u64("size")?,
            ttl: h.u64("ttl")?,
        },
        None if body.has("history") => History::default(),
        None => {
            return Err(ApiError::bad_request(
                "history",
                "is required ({} or null turns it off)",
            ));
        }
    };
    let view = r
        .state
        .services
        .configure_channel(&caller.app.id, &channel, history)
        .await?;
    ok(channel_json(&view))
}

/// `GET /api/v1/channels/{ch}`.
async fn get_channel(r: Request) -> Outcome {
    let caller = r.authorize("channels:read")?;
    let channel = r.channel()?;
    let view = r
        .state
        .services
        .channel_view(&caller.app.id, &channel)
        .await?;
    ok(channel_json(&view))
}

/// `POST /api/v1/channels/{ch}/messages` `{data, replaceId?, ttl?, idempotencyKey?}`.
async fn publish(r: Request) -> Outcome {
    let caller = r.authorize("messages:send")?;
    let channel = r.channel()?;
    let body = r.json()?;
    let data = body
        .value("data")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("data", "is required"))?
        .into();
    let publish = ChannelPublish {
        app: caller.app.id.clone(),
        channel,
        data,
        replace_id: body.string("replaceId")?,
        ttl: body.u64("ttl")?,
        idempotency_key: body.string("idempotencyKey")?,
        origin: None,
    };
    let published = r.state.services.publish_to_channel(publish).await?;
    let mut response = created(published_json(&published))?;
    if published.repeat {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn published_json(p: &Published) -> Value {
    let mut body = json!({"id": p.id, "channel": p.channel, "createdAt": rfc3339(p.created_us)});
    if let Some(position) = &p.position {
        body["seq"] = json!(position.offset);
    }
    if let Some(expires) = p.expires_us {
        body["expiresAt"] = json!(rfc3339(expires));
    }
    body
}

/// A history item: the message as sockets receive it, minus the frame type.
pub fn history_item(seq: u64, m: &ChannelMessage) -> Value {
    let mut item = json!({
        "id": m.id,
        "channel": m.channel,
        "seq": seq,
        "data": m.data.value(),
        "createdAt": rfc3339(m.created_us),
    });
    if let Some(expires) = m.expires_us {
        item["expiresAt"] = json!(rfc3339(expires));
    }
    if let Some(replace_id) = &m.replace_id {
        item["replaceId"] = json!(replace_id);
    }
    item
}

/// `GET /api/v1/channels/{ch}/messages?since=<seq>&limit=`.
async fn history(r: Request) -> Outcome {
    let caller = r.authorize("channels:read")?;
    let channel = r.channel()?;
    let since = r.query_u64("since")?.unwrap_or(0);
    let limit = r.query_limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let (items, next) = r
        .state
        .services
        .channel_history(&caller.app.id, &channel, since, limit)
        .await?;
    let items: Vec<Value> = items.iter().map(|(seq, m)| history_item(*seq, m)).collect();
    ok(json!({"items": items, "nextSince": next}))
}

/// `GET /api/v1/channels/{ch}/users`.
async fn channel_users(r: Request) -> Outcome {
    let caller = r.authorize("channels:read")?;
    let channel = r.channel()?;
    let users = r
        .state
        .services
        .channel_users(&caller.app.id, &channel)
        .await?;
    let users: Vec<&UserId> = users.iter().map(|(user, _)| user).collect();
    ok(json!({ "users": users }))
}

/// `GET /api/v1/users`.
async fn users_online(r: Request) -> Outcome {
    let caller = r.authorize("users:read")?;
    let count = r.state.services.users_online(&caller.app.id).await?;
    ok(json!({ "count": count }))
}

/// `GET /api/v1/users/{id}`.
async fn user(r: Request) -> Outcome {
    let caller = r.authorize("users:read")?;
    let user = r.user()?;
    let connections = r
        .state
        .services
        .user_connections(&caller.app.id, &user)
        .await?;
    ok(json!({"id": user, "online": connections > 0, "connections": connections}))
}

/// `DELETE /api/v1/users/{id}/connections`: always 204.
async fn logout(r: Request) -> Outcome {
    let caller = r.authorize("users:write")?;
    let user = r.user()?;
    let app: AppId = caller.app.id.clone();
    r.state.services.force_logout(&app, &user).await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}
