//! The Mozilla-compatible API of SPEC §3 (seed `003`, Mozilla push 2012): tokens, per-site
//! queues whose URL is the capability to post, messages with read sync, and `/nodes/`.
//!
//! Choices where the original is silent (also in docs/api.md): a token's own queue is not
//! listed by `GET /queue/` and cannot be deleted; `limit` above 100 is clamped to 100;
//! `since` that is neither a number nor a known key of the queue is a 400; `action=read`
//! stores a read mark — a message `{"read": K}` in the token's own queue — and answers
//! like any post, `{"key", "timestamp"}` of that mark.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::clock::{now_us, secs_to_us, us_to_secs};
use common::message::{Delivery, QueueBody, QueueMessage, queue_url};
use common::store::{After, Queue, QueueScope};
use common::token::{is_hex, mozilla_token_id, new_message_key, new_mozilla_token, new_queue_id};
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value, json};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::AppState;
use crate::params::{Location, MozError, Params};

/// Default and maximum page size of `GET /queue/<q>/`.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Longest accepted `domain` and `replaceId`.
const MAX_DOMAIN: usize = 255;
const MAX_REPLACE_ID: usize = 256;
/// A request body must arrive within this time (the head has its own timeout).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How far past the limit an oversized body is still read and discarded, so that its
/// sender gets the 413 rather than a connection reset.
const DRAIN_BYTES: usize = 1024 * 1024;
/// `GET /nodes/` lists at most this many edges.
const MAX_NODES: usize = 5;

type Outcome = Result<Response, MozError>;

/// The routes of SPEC §3.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let max_body = state.max_body_bytes;
    let with_state = warp::any().map(move || state.clone());
    let params = params(max_body);
    let auth = warp::header::optional::<String>("x-auth-token");

    let new_token = warp::path!("token")
        .and(warp::post())
        .and(with_state.clone())
        .and(params.clone())
        .then(|s, p| finish(s, "token_create", |s| new_token(s, p)));
    let new_queue = warp::path!("queue")
        .and(warp::post())
        .and(with_state.clone())
        .and(params.clone())
        .then(|s, p| finish(s, "queue_create", |s| new_queue(s, p)));
    let list_queues = warp::path!("queue")
        .and(warp::get())
        .and(with_state.clone())
        .and(params.clone())
        .then(|s, p| finish(s, "queue_list", |s| list_queues(s, p)));
    let post_message = warp::path!("queue" / String)
        .and(warp::post())
        .and(with_state.clone())
        .and(params.clone())
        .then(|q, s, p| finish(s, "message_post", |s| post_message(s, q, p)));
    let set_timestamp = warp::path!("queue" / String)
        .and(warp::put())
        .and(with_state.clone())
        .and(auth)
        .and(params.clone())
        .then(|q, s, t, p| finish(s, "queue_timestamp", |s| set_timestamp(s, q, t, p)));
    let get_messages = warp::path!("queue" / String)
        .and(warp::get())
        .and(with_state.clone())
        .and(auth)
        .and(params.clone())
        .then(|q, s, t, p| finish(s, "message_list", |s| get_messages(s, q, t, p)));
    let delete_queue = warp::path!("queue" / String)
        .and(warp::delete())
        .and(with_state.clone())
        .and(params)
        .then(|q, s, p| finish(s, "queue_delete", |s| delete_queue(s, q, p)));
    let nodes = warp::path!("nodes")
        .and(warp::get())
        .and(with_state)
        .then(|s| finish(s, "nodes", nodes));

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
}

/// Runs a handler, renders its error if any, and records the request.
async fn finish<F, Fut>(state: Arc<AppState>, route: &'static str, handler: F) -> Response
where
    F: FnOnce(Arc<AppState>) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let started = Instant::now();
    let response = handler(state.clone())
        .await
        .unwrap_or_else(MozError::into_response);
    state.observe(route, response.status().as_u16(), started);
    response
}

/// Query string + body, size-limited, parsed into `Params` (or the error to answer).
fn params(
    max_body: usize,
) -> impl Filter<Extract = (Result<Params, MozError>,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(move |query: String, content_type: Option<String>, length: Option<u64>, body| async move {
            let body = read_body(length, body, max_body).await?;
            Params::parse(&query, content_type.as_deref(), &body)
        })
}

async fn read_body<S, B>(length: Option<u64>, body: S, max: usize) -> Result<Bytes, MozError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = || {
        MozError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Location::Body,
            "body",
            &format!("The request body is larger than {max} bytes."),
        )
    };
    // Past the drain bound the answer goes out at once and the connection closes; the
    // client may then see a reset instead of the 413.
    let drain_limit = max.saturating_add(DRAIN_BYTES) as u64;
    if length.is_some_and(|n| n > drain_limit) {
        return Err(too_large().closing());
    }
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut buf = BytesMut::new();
        let mut seen = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|_| {
                MozError::bad_request(
                    Location::Body,
                    "body",
                    "The request body could not be read.",
                )
                .closing()
            })?;
            seen += chunk.remaining() as u64;
            if seen > drain_limit {
                return Err(too_large().closing());
            }
            if seen > max as u64 {
                // Too large: keep reading (and discarding) so the client, still sending,
                // is not reset before it reads the 413.
                buf.clear();
            } else {
                buf.put(chunk);
            }
        }
        if seen > max as u64 {
            return Err(too_large());
        }
        Ok(buf)
    };
    let buf = tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| {
            MozError::new(
                StatusCode::REQUEST_TIMEOUT,
                Location::Body,
                "body",
                "The request body did not arrive in time.",
            )
            .closing()
        })??;
    Ok(buf.freeze())
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
    let token = new_mozilla_token();
    let id = mozilla_token_id(&token).expect("a fresh token has the token shape");
    let own_queue = new_queue_id();
    state.store.create_token(&id, &own_queue, now_us()).await?;
    ok(json!({"token": token, "queue": queue_url(&state.api_base, &own_queue)}))
}

/// `POST /queue/`: the token's queue for a domain (the same one when asked again).
async fn new_queue(state: Arc<AppState>, params: Result<Params, MozError>) -> Outcome {
    let params = params?;
    let (token, domain) = (params.string("token")?, params.string("domain")?);
    let (token, domain) = match (token, domain) {
        (Some(token), Some(domain)) => (token, domain),
        (token, domain) => {
            let mut missing = Vec::new();
            if token.is_none() {
                missing.push((params.location_of("token"), "token"));
            }
            if domain.is_none() {
                missing.push((params.location_of("domain"), "domain"));
            }
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
    let unknown = || MozError::bad_request(params.location_of("token"), "token", "Unknown token.");
    let id = mozilla_token_id(&token).ok_or_else(unknown)?;
    let queue = state
        .store
        .create_queue(&id, &domain, &new_queue_id(), now_us())
        .await?
        .ok_or_else(unknown)?;
    ok(json!({"queue": queue_url(&state.api_base, &queue.id)}))
}

/// `GET /queue/?token=T`: `{domain: queue URL}` for T's queues.
async fn list_queues(state: Arc<AppState>, params: Result<Params, MozError>) -> Outcome {
    let params = params?;
    let token = params
        .string("token")?
        .ok_or_else(|| MozError::missing(vec![(Location::Querystring, "token")]))?;
    let unknown = || MozError::bad_request(Location::Querystring, "token", "Unknown token.");
    let id = mozilla_token_id(&token).ok_or_else(unknown)?;
    if !state.store.token_exists(&id).await? {
        return Err(unknown());
    }
    let queues: Map<String, Value> = state
        .store
        .domain_queues(&id)
        .await?
        .into_iter()
        .filter_map(|q| Some((q.domain?, Value::String(queue_url(&state.api_base, &q.id)))))
        .collect();
    ok(Value::Object(queues))
}

/// The queue named in the path, or 404.
async fn lookup_queue(state: &AppState, queue: &str) -> Result<Queue, MozError> {
    let not_found = || MozError::not_found(Location::Path, "queue", "Not Found.");
    if !is_hex(queue, 32) {
        return Err(not_found());
    }
    state.store.queue(queue).await?.ok_or_else(not_found)
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
    let not_found = || MozError::not_found(Location::Path, "queue", "Not Found.");
    let id = mozilla_token_id(&token).ok_or_else(not_found)?;
    let queue = lookup_queue(state, queue).await?;
    if queue.token != id {
        return Err(not_found());
    }
    Ok(queue)
}

/// What a queue lists: its own messages, or for a token's own queue all of the token's.
fn scope(queue: &Queue) -> QueueScope<'_> {
    match queue.domain {
        Some(_) => QueueScope::Queue(&queue.id),
        None => QueueScope::Token(&queue.token),
    }
}

/// `POST /queue/<q>/`: store a message and push it, or with `action=read` record a read.
async fn post_message(
    state: Arc<AppState>,
    queue: String,
    params: Result<Params, MozError>,
) -> Outcome {
    let params = params?;
    let queue = lookup_queue(&state, &queue).await?;
    match params.string("action")?.as_deref() {
        None => add_message(state, queue, &params).await,
        Some("read") => mark_read(state, queue, &params).await,
        Some(_) => Err(MozError::bad_request(
            params.location_of("action"),
            "action",
            "The only supported action is `read`.",
        )),
    }
}

async fn add_message(state: Arc<AppState>, queue: Queue, params: &Params) -> Outcome {
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
                .map(|name| crate::params::ErrorEntry {
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
    append(state, &queue, body).await
}

/// Stores `body` as a new message of `queue`, then pushes it; answers its key and time.
async fn append(state: Arc<AppState>, queue: &Queue, body: QueueBody) -> Outcome {
    let message = QueueMessage {
        key: new_message_key(),
        queue: queue.id.clone(),
        token: queue.token.clone(),
        created_us: now_us(),
        body,
    };
    let (key, created_us) = detached(async move {
        let appended = state
            .store
            .add_queue_message(&message)
            .await?
            .ok_or_else(|| MozError::not_found(Location::Path, "queue", "Not Found."))?;
        let message = QueueMessage {
            created_us: appended.created_us,
            ..message
        };
        let key = message.key.clone();
        let delivery = Delivery::queue_message(message, appended.position);
        state.publisher.publish(&delivery).await;
        Ok((key, appended.created_us))
    })
    .await?;
    ok(json!({"key": key, "timestamp": us_to_secs(created_us)}))
}

/// Runs a store write and the publish that must follow it on a task of its own: when a
/// client goes away mid-request hyper drops the handler, and a committed write must still
/// be pushed.
async fn detached<T, F>(work: F) -> Result<T, MozError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, MozError>> + Send + 'static,
{
    tokio::spawn(work).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a write task failed");
        Err(MozError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Location::Body,
            "request",
            "Internal error.",
        ))
    })
}

/// `action=read&key=K` on a token's own queue: a read mark for K, stored and pushed like any
/// message so every device of the token — online now or later — learns that K was read.
async fn mark_read(state: Arc<AppState>, queue: Queue, params: &Params) -> Outcome {
    let key = params
        .string("key")?
        .ok_or_else(|| MozError::missing(vec![(params.location_of("key"), "key")]))?;
    if queue.domain.is_some() {
        return Err(MozError::bad_request(
            params.location_of("action"),
            "action",
            "`action=read` is only accepted on the token's own queue.",
        ));
    }
    let read = state.store.queue_message(scope(&queue), &key).await?;
    if read.is_none_or(|m| m.body.read.is_some()) {
        return Err(MozError::not_found(
            params.location_of("key"),
            "key",
            "No such message for this token.",
        ));
    }
    append(state, &queue, QueueBody::read_mark(&key)).await
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
        .store
        .advance_read_timestamp(&queue.id, read_us)
        .await?
        .ok_or_else(|| MozError::not_found(Location::Path, "queue", "Not Found."))?;
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
        .store
        .list_queue_messages(scope(&queue), &after, limit)
        .await?;
    let rendered: Vec<Value> = messages
        .iter()
        .map(|m| m.to_mozilla_json(&state.api_base))
        .collect();
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
    let location = params.location_of("since");
    if is_hex(&text, 32) {
        return match state.store.queue_message(scope(queue), &text).await? {
            Some(m) => Ok(After::Message {
                created_us: m.created_us,
                key: m.key,
            }),
            None => Err(MozError::bad_request(
                location,
                "since",
                "`since` is not the key of a message in this queue.",
            )),
        };
    }
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(secs_to_us)
        .map(After::Time)
        .ok_or_else(|| {
            MozError::bad_request(
                location,
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
    let queue = lookup_queue(&state, &queue).await?;
    let not_found = || MozError::not_found(Location::Path, "queue", "Not Found.");
    if mozilla_token_id(&token).as_deref() != Some(queue.token.as_str()) {
        return Err(not_found());
    }
    if queue.domain.is_none() {
        return Err(MozError::bad_request(
            Location::Path,
            "queue",
            "A token's own queue cannot be deleted.",
        ));
    }
    if !state.store.delete_queue(&queue.token, &queue.id).await? {
        return Err(not_found());
    }
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

/// `GET /nodes/`: healthy edges' socket URLs, least loaded first (processes sharing one
/// URL behind a shared socket count as one node with their connections summed).
async fn nodes(state: Arc<AppState>) -> Outcome {
    let now = now_us();
    let mut by_url: Vec<(String, u64)> = Vec::new();
    for node in state.store.nodes().await? {
        if !node.is_healthy(now, state.node_ttl_us) {
            continue;
        }
        match by_url.iter_mut().find(|(url, _)| *url == node.url) {
            Some((_, connections)) => *connections += node.connections,
            None => by_url.push((node.url, node.connections)),
        }
    }
    by_url.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let urls: Vec<String> = by_url
        .into_iter()
        .take(MAX_NODES)
        .map(|(url, _)| format!("{}/socket", url.trim_end_matches('/')))
        .collect();
    ok(json!({"nodes": urls}))
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
