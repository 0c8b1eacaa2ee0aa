//! The HTTP surfaces (DESIGN.md §2): one module per API Herald speaks, each exporting one
//! boxed warp filter that parses, authorises, calls one service operation and renders in
//! its own error shape — `mozilla` (SPEC §3), `v1` (§4), `thunderpush` and `vpush` (§5).
//! What they share lives here: the bounded body reader, API-key authentication with scopes
//! and the per-key rate limit, percent-decoded path segments and request metrics.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::auth::{Apps, Caller};
use futures_util::{Stream, StreamExt};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use warp::Filter;
use warp::http::HeaderMap;
use warp::reply::Response;

use crate::AppState;

pub mod graphql;
pub mod json;
pub mod mozilla;
pub mod ppg;
pub mod thunderpush;
pub mod v1;
pub mod vpush;

/// A request body must arrive within this time (the head has its own timeout).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How far past the limit an oversized body is still read and discarded, so that its
/// sender gets the 413 rather than a connection reset.
const DRAIN_BYTES: usize = 1024 * 1024;

/// A boxed filter producing a finished response (errors rendered in the surface's shape).
pub type Surface = warp::filters::BoxedFilter<(Response,)>;

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit (`max` bytes). `closing`: it was not read to the end, so the
    /// connection closes after the answer.
    TooLarge { max: usize, closing: bool },
    /// Did not arrive within `BODY_TIMEOUT` (the connection closes).
    Timeout,
    /// The connection broke mid-body (the connection closes).
    Broken,
}

impl BodyError {
    /// Whether the answer must say `Connection: close`.
    pub fn closes(self) -> bool {
        !matches!(self, BodyError::TooLarge { closing: false, .. })
    }
}

/// The request body, at most `max` bytes.
pub fn body(
    max: usize,
) -> impl Filter<Extract = (Result<Bytes, BodyError>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(move |length: Option<u64>, stream| read_body(length, stream, max))
}

async fn read_body<S, B>(length: Option<u64>, body: S, max: usize) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    // Past the drain bound the answer goes out at once and the connection closes; the
    // client may then see a reset instead of the 413.
    let drain_limit = max.saturating_add(DRAIN_BYTES) as u64;
    if length.is_some_and(|n| n > drain_limit) {
        return Err(BodyError::TooLarge { max, closing: true });
    }
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut buf = BytesMut::new();
        let mut seen = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|_| BodyError::Broken)?;
            seen += chunk.remaining() as u64;
            if seen > drain_limit {
                return Err(BodyError::TooLarge { max, closing: true });
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
            return Err(BodyError::TooLarge {
                max,
                closing: false,
            });
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| BodyError::Timeout)?
}

/// A path segment, percent-decoded (user ids may hold any UTF-8).
pub fn segment() -> impl Filter<Extract = (String,), Error = warp::Rejection> + Copy {
    warp::path::param::<String>().and_then(|raw: String| async move {
        percent_encoding::percent_decode_str(&raw)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| warp::reject::not_found())
    })
}

/// A refusal of a surface whose error body is just a message (Thunderpush, VPush): the
/// status, the message, and for 429 the seconds to wait. Each surface renders it in its
/// own shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: warp::http::StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl Failure {
    pub fn new(status: warp::http::StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After` to a rendered refusal when it has one.
    pub fn decorate(&self, mut response: Response) -> Response {
        if let Some(seconds) = self.retry_after
            && let Ok(value) = warp::http::HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert("retry-after", value);
        }
        response
    }
}

impl From<crate::service::ServiceError> for Failure {
    fn from(e: crate::service::ServiceError) -> Failure {
        use crate::service::ServiceError;
        use warp::http::StatusCode;
        match e {
            ServiceError::BadRequest { field, message } => {
                Failure::new(StatusCode::BAD_REQUEST, format!("{field}: {message}"))
            }
            ServiceError::Forbidden(m) => Failure::new(StatusCode::FORBIDDEN, m),
            ServiceError::NotFound { message, .. } => Failure::new(StatusCode::NOT_FOUND, message),
            ServiceError::Conflict(m) => Failure::new(StatusCode::CONFLICT, m),
            ServiceError::Unavailable(m) => Failure {
                retry_after: Some(1),
                ..Failure::new(StatusCode::SERVICE_UNAVAILABLE, m)
            },
            ServiceError::Internal(m) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

/// Passes requests of `method`; others are rejected with `reject()` (a surface may want
/// 405 where warp would say 404).
pub fn method_is(
    method: warp::http::Method,
    reject: fn() -> warp::Rejection,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::method()
        .and_then(move |m: warp::http::Method| {
            let matches = m == method;
            async move { if matches { Ok(()) } else { Err(reject()) } }
        })
        .untuple_one()
}

/// One request as a route's handler sees it.
pub struct Request {
    pub state: Arc<AppState>,
    pub headers: HeaderMap,
    /// The percent-decoded `{}` segments of the route's path, in order.
    pub path: Vec<String>,
    /// The raw query string (empty when there is none).
    pub query: String,
    pub body: Result<Bytes, BodyError>,
}

impl Request {
    /// The `{}` segment at `index` (routes declare how many they have).
    pub fn segment(&self, index: usize) -> &str {
        self.path.get(index).map_or("", String::as_str)
    }

    /// The first query parameter named `name`; an error for a query string that does not
    /// parse.
    pub fn query_param(&self, name: &str) -> Result<Option<String>, serde_urlencoded::de::Error> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&self.query)?;
        Ok(pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v))
    }
}

/// A route's handler.
pub type Handler<E> =
    fn(Request) -> std::pin::Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

/// How a surface builds its routes: what another method on a known path is rejected with,
/// and how a handler's refusal is rendered in the surface's error shape.
#[derive(Clone, Copy)]
pub struct Shape<E> {
    pub wrong_method: fn() -> warp::Rejection,
    pub render: fn(E) -> Response,
}

/// A route: `method` on `path` below the surface's prefix (`{}` stands for a
/// percent-decoded segment; the trailing slash is optional), recorded as `name`.
pub fn route<E: Send + 'static>(
    state: &Arc<AppState>,
    shape: Shape<E>,
    method: warp::http::Method,
    path: &'static [&'static str],
    name: &'static str,
    handler: Handler<E>,
) -> warp::filters::BoxedFilter<(Response,)> {
    let max_body = state.max_body_bytes;
    route_with_body_limit(state, shape, method, path, name, handler, max_body)
}

/// `route` with its own body limit (`max_body` bytes) instead of `api.max_body_bytes`.
pub fn route_with_body_limit<E: Send + 'static>(
    state: &Arc<AppState>,
    shape: Shape<E>,
    method: warp::http::Method,
    path: &'static [&'static str],
    name: &'static str,
    handler: Handler<E>,
    max_body: usize,
) -> warp::filters::BoxedFilter<(Response,)> {
    let mut filter = warp::any().map(Vec::<String>::new).boxed();
    for part in path {
        filter = if *part == "{}" {
            filter
                .and(segment())
                .map(|mut params: Vec<String>, p: String| {
                    params.push(p);
                    params
                })
                .boxed()
        } else {
            filter.and(warp::path(*part)).boxed()
        };
    }
    filter
        .and(warp::path::end())
        .and(method_is(method, shape.wrong_method))
        .and(with_state(state.clone()))
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(body(max_body))
        .then(move |path, state: Arc<AppState>, headers, query, body| {
            let request = Request {
                state: state.clone(),
                headers,
                path,
                query,
                body,
            };
            finish(state, name, move |_| async move {
                handler(request).await.unwrap_or_else(shape.render)
            })
        })
        .boxed()
}

/// Why a request was not let through to its operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or unknown ones (401).
    Unauthenticated,
    /// Known key without the scope (403).
    Forbidden { scope: &'static str },
    /// Over the key's request rate (429); seconds to wait.
    RateLimited { retry_after: u64 },
}

/// The per-key request rate limit (GCRA, `governor`).
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl RateLimit {
    /// `per_second` requests per second per key, bursts of `burst`.
    pub fn new(per_second: u32, burst: u32) -> RateLimit {
        let rate = NonZeroU32::new(per_second.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
        RateLimit {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// Counts one request of `key`; `Err(seconds to wait)` when over the limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        use governor::clock::{Clock, DefaultClock};
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
    }
}

/// The secret a request presents: `Authorization: Bearer <secret>`, `Authorization:
/// <secret>` (VPush) or `x-api-key: <secret>` (Socrate).
pub fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        let secret = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => value,
        };
        return (!secret.is_empty()).then_some(secret);
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Authenticates `secret`, checks `scope` and the key's rate.
pub fn authorize<'a>(
    apps: &'a Apps,
    limit: &RateLimit,
    secret: Option<&str>,
    scope: &'static str,
) -> Result<Caller<'a>, Denied> {
    let caller = secret
        .and_then(|s| apps.authenticate(s))
        .ok_or(Denied::Unauthenticated)?;
    if !caller.key.allows(scope) {
        return Err(Denied::Forbidden { scope });
    }
    limit
        .check(&format!("{}/{}", caller.app.id, caller.key.name))
        .map_err(|retry_after| Denied::RateLimited { retry_after })?;
    Ok(caller)
}

/// The shared state, for filters.
pub fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Runs a handler and records the request under `route` (a bounded label).
pub async fn finish<F, Fut>(state: Arc<AppState>, route: &'static str, handler: F) -> Response
where
    F: FnOnce(Arc<AppState>) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = Instant::now();
    let response = handler(state.clone()).await;
    state.observe(route, response.status().as_u16(), started);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    #[test]
    fn every_header_form_presents_a_secret() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_secret(&headers), None);
        headers.insert("x-api-key", HeaderValue::from_static(" k1 "));
        assert_eq!(presented_secret(&headers), Some("k1"));
        headers.insert("authorization", HeaderValue::from_static("Bearer k2"));
        assert_eq!(
            presented_secret(&headers),
            Some("k2"),
            "Authorization first"
        );
        headers.insert("authorization", HeaderValue::from_static("bearer  k3"));
        assert_eq!(presented_secret(&headers), Some("k3"));
        headers.insert("authorization", HeaderValue::from_static("k4"));
        assert_eq!(
            presented_secret(&headers),
            Some("k4"),
            "VPush: the bare secret"
        );
    }

    #[test]
    fn the_rate_limit_counts_per_key() {
        let limit = RateLimit::new(1, 2);
        assert!(limit.check("a").is_ok() && limit.check("a").is_ok());
        let wait = limit.check("a").unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        assert!(limit.check("b").is_ok(), "another key has its own budget");
    }
}
