//! The edge's HTTP side: `/health`, `/metrics`, and the WebSocket endpoints. A socket's
//! token is checked before the upgrade, and a failure is answered as plain HTTP with a JSON
//! body (401 unknown token, 503 draining or full), never as an opened-then-closed socket.
//! Only the Mozilla dialect (`/socket`) exists so far; its legacy form without `?token=`
//! authenticates with the first frame instead.

use std::sync::Arc;

use bytes::Bytes;
use common::clock::now_us;
use common::http::{json_response, text_response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::connection::{self, Auth};
use crate::{AuthError, EdgeState};

/// Answers one HTTP request: an endpoint, or the start of a socket.
pub(crate) async fn route(edge: Arc<EdgeState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => health(&edge).await,
        (&Method::GET, "/metrics") => text_response(
            StatusCode::OK,
            common::metrics::CONTENT_TYPE,
            edge.metrics.render(),
        ),
        (_, "/socket" | "/socket/") => mozilla_socket(edge, req).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", "No such endpoint."),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// `/socket?token=T` (or `/socket` + first frame `token: T`).
async fn mozilla_socket(edge: Arc<EdgeState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
            "Use GET with a WebSocket upgrade.",
        );
    }
    let Some(key) = websocket_key(req.headers()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Expected a WebSocket upgrade (Upgrade: websocket, Sec-WebSocket-Version: 13).",
        );
    };
    if edge.is_draining() {
        edge.metrics.sockets.with_label_values(&["draining"]).inc();
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "This node is draining; reconnect elsewhere.",
        );
    }
    if edge.hub.is_full() {
        edge.metrics.sockets.with_label_values(&["full"]).inc();
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "This node is at its connection limit.",
        );
    }
    let auth = match query_param(req.uri().query(), "token") {
        None => match edge.reserve_handshake() {
            Some(slot) => Auth::FirstFrame(slot),
            None => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "This node is at its connection limit.",
                );
            }
        },
        Some(token) => match edge.authenticate(&token).await {
            Ok((stream, head)) => match edge.register(&stream, &head) {
                Some((conn, frames)) => Auth::Registered(conn, frames),
                None => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "This node is at its connection limit.",
                    );
                }
            },
            Err(AuthError::Unknown) => {
                edge.metrics
                    .sockets
                    .with_label_values(&["unauthorized"])
                    .inc();
                return error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Unknown or malformed token.",
                );
            }
            Err(AuthError::Store) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The store is unavailable; retry.",
                );
            }
        },
    };
    upgrade(edge, req, &key, auth)
}

/// Answers 101 and hands the upgraded connection to a socket task.
fn upgrade(
    edge: Arc<EdgeState>,
    req: Request<Incoming>,
    key: &str,
    auth: Auth,
) -> Response<Full<Bytes>> {
    let task_edge = edge.clone();
    edge.sockets.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let config = Some(task_edge.ws_config);
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, config)
                        .await;
                connection::serve(task_edge, ws, auth).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                if let Auth::Registered(conn, _) = &auth {
                    task_edge.unregister(conn);
                }
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// The `Sec-WebSocket-Key` of a valid RFC 6455 upgrade request.
fn websocket_key(headers: &HeaderMap) -> Option<String> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    if !(has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
        && version_ok)
    {
        return None;
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// 200 when the store answers and a router stream is live (and not draining); else 503.
async fn health(edge: &EdgeState) -> Response<Full<Bytes>> {
    let store = common::store::probe(&*edge.store).await;
    let now = now_us();
    let silence_us = (edge.config.router_silence_ms as i64).saturating_mul(1000);
    let routers: Vec<_> = edge
        .routers
        .iter()
        .map(|view| {
            let state = view.state.lock().map(|s| s.clone()).ok();
            let live = state.as_ref().is_some_and(|s| s.is_live(now, silence_us));
            json!({
                "endpoint": view.endpoint,
                "live": live,
                "epoch": state.as_ref().and_then(|s| s.epoch),
                "seq": state.as_ref().map(|s| s.last_seq),
            })
        })
        .collect();
    let any_live = routers.iter().any(|r| r["live"] == true);
    let healthy = store.is_ok() && any_live && !edge.is_draining();
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "node": edge.node_id,
        "pid": std::process::id(),
        "connections": edge.hub.len(),
        "draining": edge.is_draining(),
        "store": store.err().unwrap_or_else(|| "ok".into()),
        "routers": routers,
    });
    json_response(
        if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn recognises_only_complete_upgrades() {
        let good = [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(
            websocket_key(&headers(&good)).as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        for skip in 0..good.len() {
            let partial: Vec<_> = good
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(
                websocket_key(&headers(&partial)),
                None,
                "without {:?}",
                good[skip]
            );
        }
    }

    #[test]
    fn finds_query_parameters() {
        assert_eq!(
            query_param(Some("a=1&token=x%20y"), "token").as_deref(),
            Some("x y")
        );
        assert_eq!(query_param(Some("a=1"), "token"), None);
        assert_eq!(query_param(None, "token"), None);
    }
}
