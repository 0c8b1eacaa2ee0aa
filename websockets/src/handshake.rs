//! The edge's HTTP side: `/health`, `/metrics`, and the WebSocket endpoints (SPEC §6):
//! `/ws?token=T` (native), `/?token=T` (Socrate: native frames), `/push/socket?
//! websocketToken=T` (VPush), `/socket?token=T` and `/` or `/socket` without a token
//! (Mozilla; the legacy first frame `token: T` then authenticates), and Thunderpush's
//! SockJS at `/connect` (`crate::thunder`: its socket authenticates with `CONNECT`).
//!
//! The opening handshake is checked as RFC 6455 §4.2.1 says — GET, HTTP/1.1 or later,
//! `Upgrade: websocket`, `Connection` listing `Upgrade` among any others, exactly one
//! `Sec-WebSocket-Key` that is base64 of 16 bytes, `Sec-WebSocket-Version: 13` (else 426
//! naming 13) — and then the token, before the upgrade: a missing, malformed, forged,
//! expired or revoked token gets 401, a valid one presented from the wrong `Origin` or
//! address 403, a full or draining node 503, each as plain HTTP with a JSON body, never an
//! opened-then-closed socket.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use common::clock::now_us;
use common::http::{json_response, text_response};
use common::jwt::{Grant, TokenError};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::connection::{self, Auth};
use crate::frames::Dialect;
use crate::session::{OpenError, Session};
use crate::{AuthError, EdgeState, thunder};

type Answer = Response<Full<Bytes>>;

/// A handshake refused as plain HTTP: status, error code and message (JSON body), and the
/// headers that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: &'static str) -> Refusal {
        Refusal {
            status,
            code,
            message,
        }
    }

    fn answer(&self) -> Answer {
        let mut answer = error(self.status, self.code, self.message);
        let headers = answer.headers_mut();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UPGRADE_REQUIRED {
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        answer
    }
}

/// Answers one HTTP request: an endpoint, or the start of a socket.
pub(crate) async fn route(
    edge: Arc<EdgeState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Answer {
    let token = |name| query_param(req.uri().query(), name);
    let endpoint = match req.uri().path() {
        "/health" if req.method() == Method::GET => return health(&edge).await,
        "/metrics" if req.method() == Method::GET => {
            return text_response(
                StatusCode::OK,
                common::metrics::CONTENT_TYPE,
                edge.metrics.render(),
            );
        }
        "/ws" | "/ws/" => Endpoint::Token(Dialect::Native, token("token")),
        "/push/socket" | "/push/socket/" => {
            Endpoint::Token(Dialect::VPush, token("websocketToken"))
        }
        "/socket" | "/socket/" => Endpoint::Mozilla(token("token")),
        "/" => match token("token") {
            Some(token) => Endpoint::Token(Dialect::Native, Some(token)),
            None => Endpoint::Mozilla(None),
        },
        path if path == "/connect" || path.starts_with("/connect/") => {
            if let Some(answer) = thunder::endpoint(req.method(), path, req.headers()) {
                return answer;
            }
            match thunder::socket_path(path) {
                Some(dialect) => Endpoint::Thunder(dialect),
                None => return error(StatusCode::NOT_FOUND, "not_found", "No such endpoint."),
            }
        }
        _ => return error(StatusCode::NOT_FOUND, "not_found", "No such endpoint."),
    };
    let key = match websocket_key(&req) {
        Ok(key) => key,
        Err(refusal) => return refusal.answer(),
    };
    if let Some(refusal) = capacity(&edge) {
        return refusal.answer();
    }
    let auth = match endpoint {
        Endpoint::Mozilla(token) => mozilla(&edge, token).await,
        Endpoint::Thunder(dialect) => edge
            .reserve_handshake()
            .map(|slot| {
                let origin = req
                    .headers()
                    .get(header::ORIGIN)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let start = thunder::Start {
                    dialect,
                    origin,
                    peer,
                };
                Auth::Thunder(slot, Box::new(start))
            })
            .ok_or_else(|| unavailable("This node is at its connection limit.")),
        Endpoint::Token(dialect, token) => {
            connection_token(&edge, &req, peer, dialect, token).await
        }
    };
    match auth {
        Ok(auth) => upgrade(edge, req, &key, auth),
        Err(refusal) => refusal.answer(),
    }
}

/// Which socket a request asks for.
enum Endpoint {
    /// A Mozilla token in the query, or none (first frame).
    Mozilla(Option<String>),
    /// A connection token (JWT), for sockets of `Dialect`.
    Token(Dialect, Option<String>),
    /// A Thunderpush socket (SockJS or raw), authenticated by its `CONNECT` command.
    Thunder(Dialect),
}

fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn unauthorized(edge: &EdgeState, message: &'static str) -> Refusal {
    edge.metrics
        .sockets
        .with_label_values(&["unauthorized"])
        .inc();
    Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn unavailable(message: &'static str) -> Refusal {
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
}

/// 503 while draining or at the connection limit.
fn capacity(edge: &EdgeState) -> Option<Refusal> {
    if edge.is_draining() {
        edge.metrics.sockets.with_label_values(&["draining"]).inc();
        return Some(unavailable("This node is draining; reconnect elsewhere."));
    }
    if edge.hub.is_full() {
        edge.metrics.sockets.with_label_values(&["full"]).inc();
        return Some(unavailable("This node is at its connection limit."));
    }
    None
}

fn opened(edge: &EdgeState, result: Result<Auth, OpenError>) -> Result<Auth, Refusal> {
    result.map_err(|e| open_refusal(edge, e))
}

/// The 503 for a session that could not open.
fn open_refusal(edge: &EdgeState, e: OpenError) -> Refusal {
    match e {
        OpenError::Full if edge.is_draining() => {
            unavailable("This node is draining; reconnect elsewhere.")
        }
        OpenError::Full => unavailable("This node is at its connection limit."),
        OpenError::Store(e) => {
            tracing::warn!(error = %e, "cannot open a session");
            unavailable("The store is unavailable; retry.")
        }
    }
}

/// A Mozilla socket: with a token in the query it is checked now; without, it
/// authenticates with its first frame.
async fn mozilla(edge: &Arc<EdgeState>, token: Option<String>) -> Result<Auth, Refusal> {
    let Some(token) = token else {
        return edge
            .reserve_handshake()
            .map(Auth::FirstFrame)
            .ok_or_else(|| unavailable("This node is at its connection limit."));
    };
    match edge.authenticate(&token).await {
        Ok((key, head)) => opened(
            edge,
            edge.open_mozilla(&key, &head)
                .map(|(session, frames)| Auth::Opened(Box::new(session), frames)),
        ),
        Err(AuthError::Unknown) => Err(unauthorized(edge, "Unknown or malformed token.")),
        Err(AuthError::Store) => Err(unavailable("The store is unavailable; retry.")),
    }
}

/// A connection token's socket: signature, expiry, `Origin`, peer address, per-user
/// limit — then its session opens, and its user must not have been logged out since.
async fn connection_token(
    edge: &Arc<EdgeState>,
    req: &Request<Incoming>,
    peer: SocketAddr,
    dialect: Dialect,
    token: Option<String>,
) -> Result<Auth, Refusal> {
    let token = token.ok_or_else(|| unauthorized(edge, "A connection token is required."))?;
    let grant = verify(edge, &token)?;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    match admit(edge, grant, origin, peer, dialect).await {
        Ok((session, frames)) => Ok(Auth::Opened(Box::new(session), frames)),
        Err(Denied::Binding(message)) => Err(forbidden(edge, message)),
        Err(Denied::UserLimit) => Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many sockets of this user on this node.",
        )),
        Err(Denied::Revoked) => Err(unauthorized(
            edge,
            "The token was revoked (the user was logged out).",
        )),
        Err(Denied::Open(e)) => Err(open_refusal(edge, e)),
        Err(Denied::Store) => Err(unavailable("The store is unavailable; retry.")),
    }
}

/// Why a verified grant may not open a socket here (`admit`).
#[derive(Debug)]
pub(crate) enum Denied {
    /// Bound to another `Origin` or source address: the message says which.
    Binding(&'static str),
    /// The user already holds `websockets.max_user_connections` sockets on this edge.
    UserLimit,
    /// The user was logged out after the token was issued (seen once the user stream was
    /// joined).
    Revoked,
    /// Full, draining, or the store failed while opening.
    Open(OpenError),
    /// The store could not say whether the token was revoked.
    Store,
}

/// Opens the session of a verified `grant` presented with `origin` from `peer`: its
/// `origin` and `sip` bindings, the per-user limit, then the session, then revocation once
/// more — a force logout between the first check and the user stream's subscription would
/// have pushed its close before this socket could hear it. Shared by the handshake and by
/// Thunderpush's `CONNECT`, which map each refusal to their own answer.
pub(crate) async fn admit(
    edge: &EdgeState,
    grant: Grant,
    origin: Option<&str>,
    peer: SocketAddr,
    dialect: Dialect,
) -> Result<(Session, tokio::sync::mpsc::Receiver<Utf8Bytes>), Denied> {
    if let Some(bound) = &grant.origin
        && !origin.is_some_and(|o| same_origin(o, bound))
    {
        return Err(Denied::Binding("This token is bound to another Origin."));
    }
    if let Some(ip) = grant.source_ip
        && !same_ip(ip, peer.ip())
    {
        return Err(Denied::Binding(
            "This token is bound to another source address.",
        ));
    }
    if edge.user_sockets(&grant) >= edge.config.max_user_connections {
        edge.metrics
            .sockets
            .with_label_values(&["user_limit"])
            .inc();
        return Err(Denied::UserLimit);
    }
    let (session, frames) = edge
        .open_token(grant, dialect)
        .await
        .map_err(Denied::Open)?;
    let revoked = match session.grant() {
        Some(grant) => edge.is_revoked(grant).await,
        None => Ok(false),
    };
    match revoked {
        Ok(false) => Ok((session, frames)),
        Ok(true) => {
            session.close(edge);
            Err(Denied::Revoked)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot check revocations");
            session.close(edge);
            Err(Denied::Store)
        }
    }
}

fn forbidden(edge: &EdgeState, message: &'static str) -> Refusal {
    edge.metrics.sockets.with_label_values(&["forbidden"]).inc();
    Refusal::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// A token's grant if its signature and expiry are valid; else the 401 to answer. Whether
/// its user was logged out since is `admit`'s one check, made after the socket registered
/// so that a logout racing the handshake is not missed.
fn verify(edge: &EdgeState, token: &str) -> Result<Grant, Refusal> {
    let now = now_us() as f64 / 1e6;
    common::jwt::verify(&edge.services.apps, token, now).map_err(|e| {
        let message = match e {
            TokenError::Expired => "The token has expired.",
            _ => "Invalid token.",
        };
        tracing::debug!(error = %e, "token refused");
        unauthorized(edge, message)
    })
}

/// Origins compare as RFC 6454 serializations: scheme and host case-insensitively, no
/// trailing slash.
pub(crate) fn same_origin(presented: &str, bound: &str) -> bool {
    presented
        .trim_end_matches('/')
        .eq_ignore_ascii_case(bound.trim_end_matches('/'))
}

/// Addresses compare with IPv4-mapped IPv6 read as IPv4.
pub(crate) fn same_ip(bound: IpAddr, peer: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canonical(bound) == canonical(peer)
}

/// Answers 101 and hands the upgraded connection to a socket task.
fn upgrade(edge: Arc<EdgeState>, req: Request<Incoming>, key: &str, auth: Auth) -> Answer {
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
                if let Auth::Opened(session, _) = auth {
                    session.close(&task_edge);
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

/// The `Sec-WebSocket-Key` of a valid RFC 6455 opening handshake, or the refusal.
fn websocket_key<B>(req: &Request<B>) -> Result<String, Refusal> {
    if req.method() != Method::GET {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
            "Use GET with a WebSocket upgrade.",
        ));
    }
    if req.version() < Version::HTTP_11 {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "A WebSocket handshake needs HTTP/1.1 or later.",
        ));
    }
    let headers = req.headers();
    if !(has_token(headers, header::UPGRADE, "websocket")
        && has_token(headers, header::CONNECTION, "upgrade"))
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Expected a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade).",
        ));
    }
    let versions: Vec<&HeaderValue> = headers
        .get_all(header::SEC_WEBSOCKET_VERSION)
        .iter()
        .collect();
    if versions.len() != 1 || versions[0] != "13" {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "bad_request",
            "Only WebSocket version 13 (RFC 6455) is supported.",
        ));
    }
    let keys: Vec<&HeaderValue> = headers.get_all(header::SEC_WEBSOCKET_KEY).iter().collect();
    let key = match keys.as_slice() {
        [key] => key.to_str().ok().map(str::trim),
        _ => None,
    };
    let decoded_len = key
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .map(|d| d.len());
    match (key, decoded_len) {
        (Some(key), Some(16)) => Ok(key.to_owned()),
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Sec-WebSocket-Key must appear once and be the base64 of 16 bytes.",
        )),
    }
}

/// Whether a comma-separated header lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// 200 when the store answers and a router stream is live (and not draining); else 503.
async fn health(edge: &EdgeState) -> Answer {
    let store = edge.services.stores.probe().await;
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

    fn request(pairs: &[(&'static str, &'static str)]) -> Request<()> {
        let mut builder = Request::builder().method(Method::GET).uri("/ws");
        for (k, v) in pairs {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn recognises_only_valid_opening_handshakes() {
        assert_eq!(
            websocket_key(&request(&GOOD)).unwrap(),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        for (skip, missing) in GOOD.iter().enumerate() {
            let partial: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            assert!(
                websocket_key(&request(&partial)).is_err(),
                "without {missing:?}"
            );
        }
    }

    #[test]
    fn keys_must_be_one_base64_of_16_bytes() {
        let with_key = |keys: &[&'static str]| {
            let mut pairs: Vec<_> = GOOD[..3].to_vec();
            pairs.extend(keys.iter().map(|k| ("sec-websocket-key", *k)));
            websocket_key(&request(&pairs))
        };
        assert_eq!(with_key(&["x"]).unwrap_err().status, 400);
        assert_eq!(
            with_key(&["AAAAAAAAAAA="]).unwrap_err().status,
            400,
            "8 bytes"
        );
        assert_eq!(
            with_key(&["dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=="])
                .unwrap_err()
                .status,
            400,
            "two keys"
        );
    }

    #[test]
    fn other_versions_get_426_naming_13() {
        let mut pairs = GOOD.to_vec();
        pairs[2] = ("sec-websocket-version", "8");
        let answer = websocket_key(&request(&pairs)).unwrap_err().answer();
        assert_eq!(answer.status(), 426);
        assert_eq!(answer.headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn origins_and_addresses_compare_canonically() {
        assert!(same_origin("https://App.example", "https://app.example/"));
        assert!(!same_origin("https://evil.example", "https://app.example"));
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(same_ip(v4, mapped));
        assert!(!same_ip(v4, "127.0.0.2".parse().unwrap()));
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
