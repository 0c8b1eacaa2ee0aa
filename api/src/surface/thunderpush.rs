//! The Thunderpush HTTP API (SPEC §5, seed `001`), under `/api/1.0.0/{appKey}/`, as the
//! original server 1.0.1 answers it: the public key in the path, the secret in
//! `X-Thunder-Secret-Key`, bodies `{"count": n}` / `{"users": [...]}` / `{"online": b}`,
//! errors `{"message": "...", "status": N}`, the same CORS headers on every answer and an
//! `OPTIONS` preflight that needs no key. Every route answers with and without its
//! trailing slash.
//!
//! Where Herald differs (docs/api.md): channel names and user ids follow SPEC §2 (a name
//! outside `[A-Za-z0-9_.:@-]{1,128}` is a 400); answers are `application/json`; a key
//! without the route's scope gets 403; `DELETE users/{id}/` closes *every* socket of the
//! user (the original skips every other one).

use std::sync::Arc;

use bytes::Bytes;
use common::ids::{AppId, ChannelName, UserId};
use common::message::JsonText;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::{BodyError, Denied, Failure, Request, Surface};
use crate::AppState;
use crate::service::ServiceError;
use crate::service::channels::ChannelPublish;

/// An answer body as the original writes it (`json.dumps` + newline).
fn reply(status: StatusCode, body: String) -> Response {
    let mut response = warp::reply::with_status(body, status).into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    cors(response)
}

/// The original's fixed CORS headers.
fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("X-Thunder-Secret-Key"),
    );
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, DELETE"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    render(Failure::new(status, message))
}

/// A refusal in the original's shape, `{"message": "...", "status": N}`.
fn render(failure: Failure) -> Response {
    let message = serde_json::to_string(&failure.message).unwrap_or_else(|_| "\"\"".into());
    let status = failure.status;
    let body = format!(
        "{{\"message\": {message}, \"status\": {}}}\n",
        status.as_u16()
    );
    failure.decorate(reply(status, body))
}

fn count(n: u64) -> Response {
    reply(StatusCode::OK, format!("{{\"count\": {n}}}\n"))
}

/// A request whose app key and secret were checked for the route's scope: the app, the
/// route's target segment (channel or user), the body.
struct Call {
    state: Arc<AppState>,
    app: AppId,
    target: String,
    body: Result<Bytes, BodyError>,
}

type Outcome = Result<Response, Failure>;

impl Call {
    /// Checks the key in the path and the secret header for `scope` — before anything
    /// else, as the original does (a 401 wins over a bad body).
    fn authorized(request: Request, scope: &'static str) -> Result<Call, Failure> {
        let app = authorize(&request.state, request.segment(0), &request.headers, scope)?;
        Ok(Call {
            app,
            target: request.segment(1).to_owned(),
            state: request.state,
            body: request.body,
        })
    }

    /// The body if it is JSON (any value), kept verbatim: subscribers get the posted text
    /// itself as `payload`, as the original sends it. Else the original's 400.
    fn json(&self) -> Result<JsonText, Failure> {
        match &self.body {
            Ok(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| JsonText::parse(text).ok())
                .ok_or_else(not_json),
            Err(BodyError::TooLarge { max, .. }) => Err(Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body is larger than {max} bytes."),
            )),
            Err(_) => Err(not_json()),
        }
    }

    fn channel(&self) -> Result<ChannelName, Failure> {
        ChannelName::parse(self.target.as_str()).map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                format!("Invalid channel name: {e}."),
            )
        })
    }

    fn user(&self) -> Result<UserId, Failure> {
        UserId::parse(self.target.as_str())
            .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("Invalid user id: {e}.")))
    }
}

fn not_json() -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, "Request body is not valid JSON.")
}

/// A route: `method` on `/api/1.0.0/<path>`, recorded as `name`.
fn route(
    state: &Arc<AppState>,
    method: Method,
    path: &'static [&'static str],
    name: &'static str,
    handler: super::Handler<Failure>,
) -> warp::filters::BoxedFilter<(Response,)> {
    let shape = super::Shape {
        wrong_method: || warp::reject::custom(WrongMethod),
        render,
    };
    super::route(state, shape, method, path, name, handler)
}

/// The app of `app_key`, provided the secret header is one of its keys with `scope`.
fn authorize(
    state: &AppState,
    app_key: &str,
    headers: &HeaderMap,
    scope: &'static str,
) -> Result<AppId, Failure> {
    let wrong = || Failure::new(StatusCode::UNAUTHORIZED, "Wrong API key/secret.");
    let app = state
        .services
        .apps
        .by_public_key(app_key)
        .ok_or_else(wrong)?;
    let secret = headers
        .get("x-thunder-secret-key")
        .and_then(|v| v.to_str().ok());
    match super::authorize(&state.services.apps, &state.rate_limit, secret, scope) {
        Ok(caller) if caller.app.id == app.id => Ok(app.id.clone()),
        Ok(_) | Err(Denied::Unauthenticated) => Err(wrong()),
        Err(Denied::Forbidden { scope }) => Err(Failure::new(
            StatusCode::FORBIDDEN,
            format!("The API key lacks the {scope} scope."),
        )),
        Err(Denied::RateLimited { retry_after }) => Err(Failure {
            retry_after: Some(retry_after),
            ..Failure::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests.")
        }),
    }
}

/// The routes under `/api/1.0.0/`: `{appKey}/channels/{ch}/`, `{appKey}/users/`,
/// `{appKey}/users/{id}/`.
pub fn routes(state: Arc<AppState>) -> Surface {
    let s = &state;
    let channel = &["{}", "channels", "{}"];
    let user = &["{}", "users", "{}"];
    let routes = route(s, Method::POST, channel, "thunder_channel_post", |r| {
        Box::pin(channel_post(r))
    })
    .or(route(
        s,
        Method::GET,
        channel,
        "thunder_channel_users",
        |r| Box::pin(channel_users(r)),
    ))
    .unify()
    .or(route(
        s,
        Method::GET,
        &["{}", "users"],
        "thunder_users_count",
        |r| Box::pin(users_count(r)),
    ))
    .unify()
    .or(route(s, Method::GET, user, "thunder_user_get", |r| {
        Box::pin(user_online(r))
    }))
    .unify()
    .or(route(s, Method::POST, user, "thunder_user_post", |r| {
        Box::pin(user_post(r))
    }))
    .unify()
    .or(route(s, Method::DELETE, user, "thunder_user_logout", |r| {
        Box::pin(user_logout(r))
    }))
    .unify();
    let preflight = warp::options().map(|| cors(warp::reply().into_response()));
    warp::path("api")
        .and(warp::path("1.0.0"))
        .and(preflight.or(routes).unify().recover(rejection).unify())
        .boxed()
}

/// The path matched but not the method: 405, as the original answers.
#[derive(Debug)]
struct WrongMethod;
impl warp::reject::Reject for WrongMethod {}

async fn rejection(rejection: Rejection) -> Result<Response, std::convert::Infallible> {
    Ok(if rejection.find::<WrongMethod>().is_some() {
        error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
    } else {
        error(StatusCode::NOT_FOUND, "Not Found")
    })
}

/// `POST channels/{ch}/`: any JSON body, pushed to the channel; how many sockets
/// subscribe to it.
async fn channel_post(request: Request) -> Outcome {
    let call = Call::authorized(request, "messages:send")?;
    let channel = call.channel()?;
    let data = call.json()?;
    let services = &call.state.services;
    let reached = services
        .stores
        .presence
        .channel_connections(&call.app, &channel, services.alive())
        .await
        .map_err(ServiceError::from)?;
    let publish = ChannelPublish {
        app: call.app.clone(),
        channel,
        data,
        replace_id: None,
        ttl: None,
        idempotency_key: None,
        origin: None,
    };
    services.publish_to_channel(publish).await?;
    Ok(count(reached))
}

/// `GET channels/{ch}/`: the users subscribed, each once per socket.
async fn channel_users(request: Request) -> Outcome {
    let call = Call::authorized(request, "channels:read")?;
    let channel = call.channel()?;
    let users = call
        .state
        .services
        .channel_users(&call.app, &channel)
        .await?;
    // As the original: a user once per socket subscribed.
    let listed: Vec<String> = users
        .iter()
        .flat_map(|(user, sockets)| {
            let user = serde_json::to_string(user.as_str()).unwrap_or_default();
            std::iter::repeat_n(user, *sockets as usize)
        })
        .collect();
    Ok(reply(
        StatusCode::OK,
        format!("{{\"users\": [{}]}}\n", listed.join(", ")),
    ))
}

/// `GET users/`: distinct users online.
async fn users_count(request: Request) -> Outcome {
    let call = Call::authorized(request, "users:read")?;
    Ok(count(call.state.services.users_online(&call.app).await?))
}

/// `GET users/{id}/`.
async fn user_online(request: Request) -> Outcome {
    let call = Call::authorized(request, "users:read")?;
    let user = call.user()?;
    let connections = call
        .state
        .services
        .user_connections(&call.app, &user)
        .await?;
    Ok(reply(
        StatusCode::OK,
        format!("{{\"online\": {}}}\n", connections > 0),
    ))
}

/// `POST users/{id}/`: any JSON body, pushed to every socket of the user; how many.
async fn user_post(request: Request) -> Outcome {
    let call = Call::authorized(request, "messages:send")?;
    let user = call.user()?;
    let data = call.json()?;
    Ok(count(
        call.state
            .services
            .send_to_user_now(&call.app, &user, data)
            .await?,
    ))
}

/// `DELETE users/{id}/`: force logout; always 204.
async fn user_logout(request: Request) -> Outcome {
    let call = Call::authorized(request, "users:write")?;
    let user = call.user()?;
    call.state.services.force_logout(&call.app, &user).await?;
    Ok(cors(
        warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response(),
    ))
}
