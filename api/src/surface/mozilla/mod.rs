//! The Mozilla-compatible API of SPEC §3 (seed `003`, Mozilla push 2012): tokens, per-site
//! queues whose URL is the capability to post, messages with read sync, and `/nodes/`.
//! Handlers parse (`params`), call `crate::service`, and render in the original's error
//! shape.
//!
//! Choices where the original is silent (also in docs/api.md): a token's own queue is not
//! listed by `GET /queue/` and cannot be deleted; `limit` above 100 is clamped to 100;
//! `since` that is neither a number nor a known key of the queue is a 400; `action=read`
//! stores a read mark — a message `{"read": K}` in the token's own queue — and answers
//! like any post, `{"key", "timestamp"}` of that mark.

use std::sync::Arc;

use bytes::Bytes;
use common::clock::{secs_to_us, us_to_secs};
use common::message::{QueueBody, queue_url};
use common::store::{After, Queue};
use common::token::is_hex;
use serde_json::{Map, Value, json};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::{BodyError, Surface, finish, with_state};
use crate::AppState;
use crate::service::ServiceError;

pub mod params;

use params::{ErrorEntry, Location, MozError, Params};

/// Default and maximum page size of `GET /queue/<q>/`.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Longest accepted `domain` and `replaceId`.
const MAX_DOMAIN: usize = 255;
const MAX_REPLACE_ID: usize = 256;
/// `GET /nodes/` lists at most this many edges.
const MAX_NODES: usize = 5;

type Outcome = Result<Response, MozError>;

/// The routes of SPEC §3, with unmatched requests answered in the Mozilla shape.
pub fn routes(state: Arc<AppState>) -> Surface {
    let max_body = state.max_body_bytes;
    let params = params(max_body);
    let with_state = with_state(state);
    let auth = warp::header::optional::<String>("x-auth-token");

    let new_token = warp::path!("token")
        .and(warp::post())
        .and(with_state.clone())
        .and(params.clone())
        .then(|s, p| respond(s, "token_create", |s| new_token(s, p)));
    let new_queue = warp::path!("queue")
        .and(warp::post())
        .and(with_state.clone())
        .and(params.clone())
        .then(|s, p| respond(s, "queue_create", |s| new_queue(s, p)));
    let list_queues = warp::path!("queue")
        .and(warp::get())
        .and(with_state.clone())
        .and(params.clone())
        .then(|s, p| respond(s, "queue_list", |s| list_queues(s, p)));
    let post_message = warp::path!("queue" / String)
        .and(warp::post())
        .and(with_state.clone())
        .and(params.clone())
        .then(|q, s, p| respond(s, "message_post", |s| post_message(s, q, p)));
    let set_timestamp = warp::path!("queue" / String)
        .and(warp::put())
        .and(with_state.clone())
        .and(auth)
        .and(params.clone())
        .then(|q, s, t, p| respond(s, "queue_timestamp", |s| set_timestamp(s, q, t, p)));
    let get_messages = warp::path!("queue" / String)
        .and(warp::get())
        .and(with_state.clone())
        .and(auth)
        .and(params.clone())
        .then(|q, s, t, p| respond(s, "message_list", |s| get_messages(s, q, t, p)));
    let delete_queue = warp::path!("queue" / String)
        .and(warp::delete())
        .and(with_state.clone())
        .and(params)
        .then(|q, s, p| respond(s, "queue_delete", |s| delete_queue(s, q, p)));
    let nodes = warp::path!("nodes")
        .and(warp::get())
        .and(with_state)
        .then(|s| respond(s, "nodes", nodes));

    new_token
        .or(new_queue)
        .unify()
        .or(list_queues)
        .unify()
        .or(post_message)
        .unify()
        .or(set_timestamp)
        .unify()
        .or(get_messages)
        .unify()
        .or(delete_queue)
        .unify()
        .or(nodes)
        .unify()
        .boxed()
}

/// Runs a handler, renders its error if any, and records the request.
async fn respond<F, Fut>(state: Arc<AppState>, route: &'static str, handler: F) -> Response
where
    F: FnOnce(Arc<AppState>) -> Fut,
    Fut: Future<Output = Outcome>,
{
    finish(state, route, |s| async move {
        handler(s).await.unwrap_or_else(MozError::into_response)
    })
    .await
}

/// Query string + body, size-limited, parsed into `Params` (or the error to answer).
fn params(
    max_body: usize,
) -> impl Filter<Extract = (Result<Params, MozError>,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and(warp::header::optional::<String>("content-type"))
        .and(super::body(max_body))
        .map(
            |query: String, content_type: Option<String>, body: Result<Bytes, BodyError>| {
                let body = body.map_err(body_error)?;
                Params::parse(&query, content_type.as_deref(), &body)
            },
        )
}

fn body_error(e: BodyError) -> MozError {
    let error = match e {
        BodyError::TooLarge { max, .. } => MozError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Location::Body,
            "body",
            &format!("The request body is larger than {max} bytes."),
        ),
        BodyError::Timeout => MozError::new(
            StatusCode::REQUEST_TIMEOUT,
            Location::Body,
            "body",
            "The request body did not arrive in time.",
        ),
        BodyError::Broken => MozError::bad_request(
            Location::Body,
            "body",
            "The request body could not be read.",
        ),
    };
    if e.closes() { error.closing() } else { error }
}

/// A service error in the Mozilla shape; a field error is located where the request had
/// that field (the queue: in the path).
fn service_error(e: ServiceError, params: Option<&Params>) -> MozError {
    let location = |field: &str| match (field, params) {
        ("queue", _) => Location::Path,
        (_, Some(p)) => p.location_of(field),
        (_, None) => Location::Body,
    };
    match e {
        ServiceError::BadRequest { field, message } => {
            MozError::bad_request(location(&field), &field, &message)
        }
        ServiceError::NotFound { what, message } => {
            MozError::not_found(location(what), what, &message)
        }
        ServiceError::Unavailable(message) => MozError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Location::Body,
            "store",
            &message,
        ),
        ServiceError::Forbidden(message) | ServiceError::Conflict(message) => {
            MozError::bad_request(Location::Body, "request", &message)
        }
        ServiceError::Internal(message) => MozError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Location::Body,
            "request",
            &message,
        ),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

fn ok(body: Value) -> Outcome {
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /token/`: a new token and its own queue.
async fn new_token(state: Arc<AppState>, params: Result<Params, MozError>) -> Outcome {
    params?;
    let (token, own_queue) = state
        .services
        .create_mozilla_token()
        .await
        .map_err(|e| service_error(e, None))?;
    ok(json!({"token": token, "queue": queue_url(&state.services.settings.api_base, &own_queue)}))
}

/// `POST /queue/`: the token's queue for a domain (the same one when asked again).
async fn new_queue(state: Arc<AppState>, params: Result<Params, MozError>) -> Outcome {
    let params = params?;
    let (token, domain) = (params.string("token")?, params.string("domain")?);
    let (token, domain) = match (token, domain) {
        (Some(token), Some(domain)) => (token, domain),
        (token, domain) => {
            let missing = [("token", token.is_none()), ("domain", domain.is_none())]
                .into_iter()
                .filter(|(_, missing)| *missing)
                .map(|(name, _)| (params.location_of(name), name))
                .collect();
            return Err(MozError::missing(missing));
        }
    };
    if domain.len() > MAX_DOMAIN {
        let description = format!("`domain` must be at most {MAX_DOMAIN} bytes.");
        return Err(MozError::bad_request(
            params.location_of("domain"),
            "domain",
            &description,
        ));
    }
    let queue = state
        .services
        .create_queue(&token, &domain)
        .await
        .map_err(|e| service_error(e, Some(&params)))?;
    ok(json!({"queue": queue_url(&state.services.settings.api_base, &queue.id)}))
}

/// `GET /queue/?token=T`: `{domain: queue URL}` for T's queues.
async fn list_queues(state: Arc<AppState>, params: Result<Params, MozError>) -> Outcome {
    let params = params?;
    let token = params
        .string("token")?
        .ok_or_else(|| MozError::missing(vec![(Location::Querystring, "token")]))?;
    let queues = state
        .services
        .domain_queues(&token)
        .await
        .map_err(|e| service_error(e, Some(&params)))?;
    let base = &state.services.settings.api_base;
    let listed: Map<String, Value> = queues
        .into_iter()
        .filter_map(|q| Some((q.domain?, Value::String(queue_url(base, &q.id)))))
        .collect();
    ok(Value::Object(listed))
}

/// The queue, provided `X-Auth-Token` names its owner: 400 without the header, 404 for
/// anyone else (not revealing whether the queue exists).
async fn owned_queue(
    state: &AppState,
    queue: &str,
    token: Option<String>,
) -> Result<Queue, MozError> {
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
        MozError::bad_request(
            Location::Header,
            "X-Auth-Token",
            "An X-Auth-Token header must be included.",
        )
    })?;
    state
        .services
        .owned_queue(queue, &token)
        .await
        .map_err(|e| service_error(e, None))
}

/// `POST /queue/<q>/`: store a message and push it, or with `action=read` record a read.
async fn post_message(
    state: Arc<AppState>,
    queue: String,
    params: Result<Params, MozError>,
) -> Outcome {
    let params = params?;
    let queue = state
        .services
        .posting_queue(&queue)
        .await
        .map_err(|e| service_error(e, Some(&params)))?;
    let (key, created_us) = match params.string("action")?.as_deref() {
        None => {
            let body = message_body(&params)?;
            state.services.append_queue_message(&queue, body).await
        }
        Some("read") => {
            let key = params
                .string("key")?
                .ok_or_else(|| MozError::missing(vec![(params.location_of("key"), "key")]))?;
            state.services.mark_read(&queue, &key).await
        }
        Some(_) => {
            return Err(MozError::bad_request(
                params.location_of("action"),
                "action",
                "The only supported action is `read`.",
            ));
        }
    }
    .map_err(|e| service_error(e, Some(&params)))?;
    ok(json!({"key": key, "timestamp": us_to_secs(created_us)}))
}

/// The message fields of a post, checked.
fn message_body(params: &Params) -> Result<QueueBody, MozError> {
    let body = QueueBody {
        title: params.string("title")?,
        body: params.string("body")?,
        action_url: params.string("actionUrl")?,
        icon_url: params.string("iconUrl")?,
        replace_id: params.string("replaceId")?,
        read: None,
    };
    if body.title.is_none() && body.body.is_none() {
        let description = "At least one of `title` and `body` is required.";
        return Err(MozError {
            status: StatusCode::BAD_REQUEST,
            errors: ["title", "body"]
                .into_iter()
                .map(|name| ErrorEntry {
                    location: Location::Body,
                    name: name.into(),
                    description: description.into(),
                })
                .collect(),
            close: false,
        });
    }
    if body
        .replace_id
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REPLACE_ID)
    {
        let description = format!("`replaceId` must be at most {MAX_REPLACE_ID} bytes.");
        return Err(MozError::bad_request(
            params.location_of("replaceId"),
            "replaceId",
            &description,
        ));
    }
    Ok(body)
}

/// `PUT /queue/<q>/`: move the read timestamp forward.
async fn set_timestamp(
    state: Arc<AppState>,
    queue: String,
    token: Option<String>,
    params: Result<Params, MozError>,
) -> Outcome {
    let queue = owned_queue(&state, &queue, token).await?;
    let params = params?;
    let seconds = params.float("timestamp")?.ok_or_else(|| {
        MozError::bad_request(Location::Body, "timestamp", "Need a `timestamp` parameter.")
    })?;
    let read_us = secs_to_us(seconds).ok_or_else(|| {
        MozError::bad_request(
            params.location_of("timestamp"),
            "timestamp",
            "`timestamp` must be a non-negative float.",
        )
    })?;
    let stored = state
        .services
        .advance_read_timestamp(&queue, read_us)
        .await
        .map_err(|e| service_error(e, Some(&params)))?;
    ok(json!({"timestamp": us_to_secs(stored)}))
}

/// `GET /queue/<q>/`: messages oldest first, with the read timestamp.
async fn get_messages(
    state: Arc<AppState>,
    queue: String,
    token: Option<String>,
    params: Result<Params, MozError>,
) -> Outcome {
    let queue = owned_queue(&state, &queue, token).await?;
    let params = params?;
    let limit = parse_limit(&params)?;
    let after = parse_since(&state, &queue, &params).await?;
    let messages = state
        .services
        .queue_messages(&queue, &after, limit)
        .await
        .map_err(|e| service_error(e, Some(&params)))?;
    let base = &state.services.settings.api_base;
    let rendered: Vec<Value> = messages.iter().map(|m| m.to_mozilla_json(base)).collect();
    let read = us_to_secs(queue.read_us);
    ok(json!({"messages": rendered, "timestamp": read, "last_seen": read}))
}

/// `limit`: a positive integer, 20 by default, clamped to 100.
fn parse_limit(params: &Params) -> Result<usize, MozError> {
    let Some(text) = params.string("limit")? else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
        _ => Err(MozError::bad_request(
            params.location_of("limit"),
            "limit",
            "`limit` must be a positive integer.",
        )),
    }
}

/// `since`: float epoch seconds (strictly later), or the key of a message in this queue
/// (strictly after it).
async fn parse_since(state: &AppState, queue: &Queue, params: &Params) -> Result<After, MozError> {
    let Some(text) = params.string("since")? else {
        return Ok(After::Start);
    };
    if is_hex(&text, 32) {
        return state
            .services
            .after_message(queue, &text)
            .await
            .map_err(|e| service_error(e, Some(params)));
    }
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(secs_to_us)
        .map(After::Time)
        .ok_or_else(|| {
            MozError::bad_request(
                params.location_of("since"),
                "since",
                "`since` must be a timestamp (float seconds) or a message key.",
            )
        })
}

/// `DELETE /queue/<q>/?token=T`.
async fn delete_queue(
    state: Arc<AppState>,
    queue: String,
    params: Result<Params, MozError>,
) -> Outcome {
    let params = params?;
    let token = params
        .string("token")?
        .ok_or_else(|| MozError::missing(vec![(Location::Querystring, "token")]))?;
    let services = &state.services;
    let outcome = match services.queue(&queue).await {
        Ok(queue) => services.delete_queue(&queue, &token).await,
        Err(e) => Err(e),
    };
    outcome.map_err(|e| service_error(e, Some(&params)))?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// `GET /nodes/`: healthy edges as `"host:port"`, least loaded first, as the original
/// lists them; its client opens `ws://host:port/` and sends `token: T` first.
async fn nodes(state: Arc<AppState>) -> Outcome {
    let edges = state
        .services
        .edges(MAX_NODES)
        .await
        .map_err(|e| service_error(e, None))?;
    let nodes: Vec<String> = edges.iter().map(|e| host_port(&e.url)).collect();
    ok(json!({"nodes": nodes}))
}

/// The `host:port` of an edge's public URL (`ws://host:port`), the port made explicit
/// from the scheme when the URL leaves it out (80 for `ws`/`http`, 443 for `wss`/`https`).
fn host_port(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("ws", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        return authority.to_owned();
    }
    let port = if matches!(scheme, "wss" | "https") {
        443
    } else {
        80
    };
    format!("{authority}:{port}")
}

/// Unmatched routes and other rejections, in the Mozilla error shape.
pub async fn rejection(rejection: Rejection) -> Result<Response, std::convert::Infallible> {
    // Header errors first: warp also records MethodNotAllowed from the other routes tried.
    let error = if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        MozError::bad_request(Location::Header, e.name(), "Invalid header value.")
    } else if rejection.is_not_found() {
        MozError::not_found(Location::Path, "path", "Not Found.")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        MozError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Location::Path,
            "method",
            "Method not allowed.",
        )
    } else {
        tracing::debug!(?rejection, "unhandled rejection");
        MozError::bad_request(Location::Body, "request", "Bad request.")
    };
    Ok(error.into_response())
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn nodes_are_host_and_port() {
        assert_eq!(host_port("ws://127.0.0.1:8888"), "127.0.0.1:8888");
        assert_eq!(host_port("ws://edge.example/"), "edge.example:80");
        assert_eq!(host_port("wss://edge.example/push"), "edge.example:443");
        assert_eq!(host_port("ws://[::1]:9000"), "[::1]:9000");
        assert_eq!(host_port("wss://[::1]"), "[::1]:443");
    }
}
