//! The HTTP/1.1 serving loop every Herald process uses (warp filters via `warp::service`,
//! the edge's own hyper service): bounded header-read time, upgrades allowed, and a
//! graceful drain on shutdown — stop accepting, let in-flight requests finish, close idle
//! keep-alives, give up after the drain budget. Upgraded connections (WebSockets) leave
//! this loop at the upgrade; their owner drains them.
//!
//! Request heads are bounded on every port (SPEC §11): more than `MAX_HEAD_BYTES` or more
//! than `MAX_HEADERS` header fields and hyper itself answers 431 and closes the connection,
//! before any service sees the request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest request head accepted, in bytes: the request line and every header line,
/// line ends included. A longer head gets 431 (hyper's `max_header_size`, a hard limit on
/// the parsed head; `max_buf_size` would not do: it bounds the read buffer only loosely, a
/// 450 KB header passes its ~400 KiB default).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most header fields a request may carry (a count, `Host` included); one more gets 431.
/// Up to 100 hyper keeps them on the stack, so this costs no allocation.
pub const MAX_HEADERS: usize = 100;

/// Limits of the serving loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// A client must send its request head within this time.
    pub header_read_timeout: Duration,
    /// After shutdown, in-flight requests get this long.
    pub drain: Duration,
    /// Open HTTP connections at most; further clients wait in the kernel's backlog.
    /// (A WebSocket leaves this count at its upgrade.)
    pub max_connections: usize,
}

impl ServeOptions {
    /// Small surfaces (router, monitor): 10 s heads, 2 s drain, 1024 connections.
    pub const OPS: ServeOptions = ServeOptions {
        header_read_timeout: Duration::from_secs(10),
        drain: Duration::from_secs(2),
        max_connections: 1024,
    };
}

/// Serves `listener` until `shutdown`, building one service per connection.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    make_service: M,
    shutdown: CancellationToken,
    options: ServeOptions,
) where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = make_service(peer);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout)
                .max_header_size(MAX_HEAD_BYTES)
                .max_headers(MAX_HEADERS)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(options.drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(left = connections.len(), "HTTP drain timed out");
    }
}

/// Serves a warp filter (already `recover`ed, so it never rejects) with `serve`.
pub async fn serve_filter<F, R>(
    listener: TcpListener,
    filter: F,
    shutdown: CancellationToken,
    options: ServeOptions,
) where
    F: warp::Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    R: warp::Reply,
{
    let make =
        move |_peer| hyper_util::service::TowerToHyperService::new(warp::service(filter.clone()));
    serve(listener, make, shutdown, options).await;
}

/// `GET /metrics` (this registry) and `GET /version`, the same on every warp-served process.
pub fn metrics_and_version(
    metrics: crate::metrics::Metrics,
) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    use warp::{Filter, Reply};
    let exposition = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            metrics.render(),
            "content-type",
            crate::metrics::CONTENT_TYPE,
        )
        .into_response()
    });
    let version = warp::path!("version")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"version": crate::VERSION})).into_response());
    exposition.or(version).unify()
}

/// Turns warp's rejections into the `/api/v1` error shape (`{"error": {code, message}}`),
/// for the small HTTP surfaces of the router and monitor.
pub async fn json_rejection(
    rejection: warp::Rejection,
) -> Result<warp::reply::Response, Infallible> {
    use warp::Reply;
    let (status, code) = if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "not_found")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "bad_request")
    } else {
        (StatusCode::BAD_REQUEST, "bad_request")
    };
    let body = serde_json::json!({"error": {"code": code, "message": status.canonical_reason()}});
    Ok(warp::reply::with_status(warp::reply::json(&body), status).into_response())
}

/// A complete JSON response.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A complete plain-text response with the given content type.
pub fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Result type of a hyper service that never fails (errors are responses).
pub type Reply = Result<Response<Full<Bytes>>, Infallible>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves a service that answers every request 200 on a loopback port.
    async fn start() -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let make = |_peer| {
            hyper::service::service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(text_response(StatusCode::OK, "text/plain", "ok".into()))
            })
        };
        tokio::spawn(serve(listener, make, shutdown.clone(), ServeOptions::OPS));
        (addr, shutdown)
    }

    /// Writes `request` (while reading, so a server that answers early is not blocked) and
    /// returns the status code of the answer, or `None` when the connection ended without one.
    async fn status(addr: SocketAddr, request: Vec<u8>) -> Option<u16> {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&request).await;
            write
        });
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        let read_all = async {
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("an answer or a close in time");
        drop(writer.await);
        let head = String::from_utf8_lossy(&answer);
        head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    fn get(headers: &[(String, String)]) -> Vec<u8> {
        let mut request = String::from("GET /version HTTP/1.1\r\nHost: localhost\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.into_bytes()
    }

    /// A `GET` whose head is exactly `len` bytes long, padded with one `X-Pad` header.
    fn head_of_len(len: usize) -> Vec<u8> {
        let bare = get(&[("X-Pad".into(), String::new())]).len();
        let request = get(&[("X-Pad".into(), "a".repeat(len - bare))]);
        assert_eq!(request.len(), len);
        request
    }

    /// A `GET` with `count` header fields, `Host` included.
    fn with_headers(count: usize) -> Vec<u8> {
        let extra: Vec<_> = (1..count)
            .map(|i| (format!("X-H{i}"), "v".into()))
            .collect();
        get(&extra)
    }

    #[tokio::test]
    async fn heads_over_the_byte_limit_get_431() {
        let (addr, shutdown) = start().await;
        assert_eq!(status(addr, head_of_len(MAX_HEAD_BYTES)).await, Some(200));
        assert_eq!(
            status(addr, head_of_len(MAX_HEAD_BYTES + 1)).await,
            Some(431)
        );
        let big = get(&[("X-Big".into(), "a".repeat(450_000))]);
        assert_eq!(status(addr, big).await, Some(431), "one 450 KB header");
        assert_eq!(status(addr, get(&[])).await, Some(200), "still serving");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn more_headers_than_the_limit_get_431() {
        let (addr, shutdown) = start().await;
        assert_eq!(status(addr, with_headers(MAX_HEADERS)).await, Some(200));
        assert_eq!(status(addr, with_headers(MAX_HEADERS + 1)).await, Some(431));
        assert_eq!(status(addr, with_headers(150)).await, Some(431));
        assert_eq!(status(addr, get(&[])).await, Some(200), "still serving");
        shutdown.cancel();
    }
}
