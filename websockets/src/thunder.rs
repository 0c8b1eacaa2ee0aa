//! Thunderpush's browser protocol (SPEC §5, seed `001`), as `thunderpush.js` speaks it
//! over SockJS at `/connect`: the SockJS endpoints this edge serves (`/connect`,
//! `/connect/info`, the WebSocket transport `/connect/{server}/{session}/websocket` with
//! its `o` / `h` / `a[...]` / `c[code,"reason"]` frames, and the raw `/connect/websocket`),
//! and the text commands `CONNECT <user>:<publicKey>`, `SUBSCRIBE a:b`, `UNSUBSCRIBE a:b`.
//!
//! Behaviour follows the original server (1.0.1): a command is split on single spaces and
//! only its first two parts count; an unknown or malformed command is ignored; an unknown
//! public key closes with 9000 `Invalid API key.`, `SUBSCRIBE`/`UNSUBSCRIBE` before
//! `CONNECT` with 9001 `Subscribing before connecting.`, a forced logout with 9002
//! `Server closed the connection (intentionally).`; a channel name the server cannot
//! take is ignored. Where Herald differs (docs/websocket.md): the user part of `CONNECT`
//! is a Herald connection token (JWT, whose `sub` is the user) unless the app sets
//! `trust_user_ids`; a channel is subscribed once however often it is named; a socket
//! that has not sent `CONNECT` within the handshake timeout is closed; only the WebSocket
//! transports are served (no XHR or EventSource fallbacks).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::clock::now_us;
use common::config::ms;
use common::http::text_response;
use common::ids::{ChannelName, ChannelPattern, UserId};
use common::jwt::{Grant, TokenError};
use common::stream::StreamKey;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::EdgeState;
use crate::connection::{Socket, stream_head, violation};
use crate::frames::{Dialect, FrameError};
use crate::handshake::{Denied, admit};
use crate::hub::close_code;
use crate::session::{OpenError, Session};

/// Why a socket closes: code and reason.
pub type Closing = (u16, &'static str);

/// 9000: `CONNECT` named a public key no app has.
pub const INVALID_KEY: Closing = (9000, "Invalid API key.");
/// 9001: `SUBSCRIBE` or `UNSUBSCRIBE` before `CONNECT`.
pub const SUBSCRIBE_BEFORE_CONNECT: Closing = (9001, "Subscribing before connecting.");
/// 9002: the user was logged out (`DELETE …/users/{id}/`).
pub const FORCED_LOGOUT: Closing = (9002, "Server closed the connection (intentionally).");

/// A token issued before its user was logged out.
const REVOKED: Closing = (1008, "The token was revoked (the user was logged out).");

/// SockJS's open frame.
const OPEN: &str = "o";
/// SockJS's heartbeat frame.
pub const HEARTBEAT: &str = "h";

/// Where a Thunderpush socket's handshake came from: what `CONNECT` checks a token against.
pub struct Start {
    pub dialect: Dialect,
    /// The handshake's `Origin`, for tokens bound to one.
    pub origin: Option<String>,
    pub peer: SocketAddr,
}

/// One message inside a SockJS array frame: `a[<message>]`.
pub fn sockjs_array(message_json: &str) -> String {
    format!("a[{message_json}]")
}

/// SockJS's close frame `c[code,"reason"]`.
fn sockjs_close((code, reason): Closing) -> String {
    let reason = serde_json::to_string(reason).unwrap_or_else(|_| "\"\"".into());
    format!("c[{code},{reason}]")
}

/// The closes of a Thunderpush socket: Herald's forced logout is the original's 9002.
fn thunder_closing(closing: Closing) -> Closing {
    if closing.0 == close_code::LOGGED_OUT {
        FORCED_LOGOUT
    } else {
        closing
    }
}

/// The WebSocket close frame's code for `closing`: a SockJS code outside RFC 6455's range
/// (9000–9002) cannot travel in a close frame; the raw endpoint maps them to 1008 (policy)
/// and 4003 (logged out), the SockJS transport has already said it in `c[...]`.
fn websocket_code(dialect: Dialect, (code, reason): Closing) -> Closing {
    match code {
        1000..=4999 => (code, reason),
        _ if dialect == Dialect::SockJs => (1000, ""),
        9002 => (close_code::LOGGED_OUT, reason),
        _ => (1008, reason),
    }
}

/// What a Thunderpush socket sends before its close frame, and the close frame's own
/// code: `c[code,"reason"]` first on SockJS.
pub fn closing_frames(dialect: Dialect, closing: Closing) -> (Option<Utf8Bytes>, Closing) {
    let closing = thunder_closing(closing);
    let frame = (dialect == Dialect::SockJs).then(|| Utf8Bytes::from(sockjs_close(closing)));
    (frame, websocket_code(dialect, closing))
}

/// The commands in one text frame: SockJS sends a JSON array of strings (or one JSON
/// string); the raw endpoint sends the command itself.
pub fn commands(dialect: Dialect, text: &str) -> Result<Vec<String>, FrameError> {
    if dialect == Dialect::ThunderRaw {
        return Ok(vec![text.to_owned()]);
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::String(one)) => Ok(vec![one]),
        Ok(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(not_sockjs()),
            })
            .collect(),
        _ => Err(not_sockjs()),
    }
}

fn not_sockjs() -> FrameError {
    FrameError::bad_request("expected a SockJS frame: a JSON array of strings")
}

/// A Thunderpush command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `CONNECT <user>:<publicKey>` (exactly one `:`).
    Connect { user: String, key: String },
    /// `SUBSCRIBE a:b` (empty names skipped).
    Subscribe(Vec<String>),
    /// `UNSUBSCRIBE a:b`.
    Unsubscribe(Vec<String>),
    /// Anything else, ignored as the original ignores it.
    Ignored,
}

/// Parses one command as the original does: split on single spaces, the first part names
/// the command (case-sensitive), the second is its argument, the rest is ignored.
pub fn parse_command(text: &str) -> Command {
    let mut parts = text.split(' ');
    let (Some(name), Some(arg)) = (parts.next(), parts.next()) else {
        return Command::Ignored;
    };
    let names = || {
        arg.split(':')
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match name {
        "CONNECT" => match arg.split(':').collect::<Vec<_>>().as_slice() {
            [user, key] => Command::Connect {
                user: (*user).to_owned(),
                key: (*key).to_owned(),
            },
            _ => Command::Ignored,
        },
        "SUBSCRIBE" => Command::Subscribe(names()),
        "UNSUBSCRIBE" => Command::Unsubscribe(names()),
        _ => Command::Ignored,
    }
}

/// An opened Thunderpush session, its outbound queue, and the commands that came in the
/// same frame after `CONNECT`.
pub type Opened = (Session, mpsc::Receiver<Utf8Bytes>, Vec<String>);

/// Sends SockJS's `o`, then waits (within the handshake timeout) for `CONNECT` and opens
/// the session it names. The `Err` is the close to send.
pub async fn open(
    edge: &Arc<EdgeState>,
    ws: &mut Socket,
    start: &Start,
) -> Result<Opened, Closing> {
    if start.dialect == Dialect::SockJs {
        ws.send(Message::Text(Utf8Bytes::from_static(OPEN)))
            .await
            .map_err(|_| (1000, ""))?;
    }
    let deadline = Instant::now() + ms(edge.config.handshake_timeout_ms);
    loop {
        let frame = tokio::select! {
            _ = edge.draining.cancelled() => return Err((close_code::GOING_AWAY, "node draining; reconnect elsewhere")),
            frame = tokio::time::timeout_at(deadline, ws.next()) => {
                frame.map_err(|_| (1008, "no CONNECT in time"))?
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => return Err((1000, "")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(violation(&e).unwrap_or((1000, ""))),
        };
        let Ok(mut pending) = commands(start.dialect, text.as_str()) else {
            continue;
        };
        while !pending.is_empty() {
            let command = pending.remove(0);
            match parse_command(&command) {
                Command::Connect { user, key } => {
                    let (session, frames) = connect(edge, start, &user, &key).await?;
                    return Ok((session, frames, pending));
                }
                Command::Subscribe(_) | Command::Unsubscribe(_) => {
                    return Err(SUBSCRIBE_BEFORE_CONNECT);
                }
                Command::Ignored => {}
            }
        }
    }
}

/// `CONNECT <user>:<key>`: the app of the public key, the user (a token's `sub`, or the
/// bare id where the app trusts them), the checks a token gets at a handshake; then the
/// session opens, following the user's stream.
async fn connect(
    edge: &Arc<EdgeState>,
    start: &Start,
    user: &str,
    key: &str,
) -> Result<(Session, mpsc::Receiver<Utf8Bytes>), Closing> {
    let app = edge
        .services
        .apps
        .by_public_key(key)
        .ok_or(INVALID_KEY)?
        .clone();
    let grant = if looks_like_jwt(user) {
        let now = now_us() as f64 / 1e6;
        let grant = common::jwt::verify(&edge.services.apps, user, now).map_err(|e| match e {
            TokenError::Expired => (4001, "token expired"),
            _ => (1008, "Invalid token."),
        })?;
        if grant.app != app.id {
            return Err(INVALID_KEY);
        }
        // Revocation is checked once, by `admit`, after the socket registered.
        grant
    } else if app.trust_user_ids {
        let user = UserId::parse(user).map_err(|_| (1008, "Invalid user id."))?;
        trusted_grant(app.id.clone(), user)
    } else {
        return Err((
            1008,
            "This app takes a Herald connection token as the CONNECT user.",
        ));
    };
    admit(
        edge,
        grant,
        start.origin.as_deref(),
        start.peer,
        start.dialect,
    )
    .await
    .map_err(|denied| match denied {
        Denied::Binding(message) => (1008, message),
        Denied::UserLimit => (4029, "Too many sockets of this user on this node."),
        Denied::Revoked => REVOKED,
        Denied::Open(OpenError::Full) => (1013, "too many connections; try again later"),
        Denied::Open(OpenError::Store(_)) | Denied::Store => (1011, "store unavailable; retry"),
    })
}

/// A JWT is three base64url parts; a Thunderpush user id is whatever else was sent.
fn looks_like_jwt(user: &str) -> bool {
    user.split('.').count() == 3 && user.starts_with("eyJ")
}

/// A bare user id's grant where the app trusts them: every channel, no publishing, no
/// expiry; issued now, so a later forced logout closes it.
fn trusted_grant(app: common::ids::AppId, user: UserId) -> Grant {
    Grant {
        app,
        user,
        channels: ChannelPattern::parse("*").into_iter().collect(),
        topics: Vec::new(),
        origin: None,
        source_ip: None,
        publish: false,
        ack: false,
        probe: false,
        issued_us: now_us(),
        expires_us: i64::MAX,
    }
}

/// Runs commands of a connected socket: `SUBSCRIBE` follows each channel the socket may
/// use (live, from the channel's head), `UNSUBSCRIBE` stops; the rest is ignored. The
/// `Err` is the close to send (the store could not be read to join a channel).
pub async fn run(
    edge: &EdgeState,
    session: &mut Session,
    commands: Vec<String>,
) -> Result<(), Closing> {
    for command in commands {
        match parse_command(&command) {
            Command::Subscribe(names) => {
                for name in names {
                    subscribe(edge, session, &name).await?;
                }
            }
            Command::Unsubscribe(names) => {
                for name in names {
                    if let Ok(channel) = ChannelName::parse(name) {
                        session.leave(edge, &channel);
                    }
                }
            }
            Command::Connect { .. } | Command::Ignored => {}
        }
    }
    Ok(())
}

async fn subscribe(edge: &EdgeState, session: &mut Session, name: &str) -> Result<(), Closing> {
    let Ok(channel) = ChannelName::parse(name) else {
        return Ok(());
    };
    let Some(app) = session.grant().map(|g| g.app.clone()) else {
        return Ok(());
    };
    if !session.may_use(&channel) || session.channels.contains_key(&channel) {
        return Ok(());
    }
    let key = StreamKey::channel(&app, &channel);
    let head = stream_head(edge, &key)
        .await
        .map_err(|_| (1011, "store unavailable; retry"))?;
    edge.follow(&session.conn, &key, head.as_ref());
    session.joined(edge, channel, key);
    Ok(())
}

type Answer = Response<Full<Bytes>>;

/// The SockJS endpoints that are not sockets: `GET /connect` (the greeting),
/// `GET|OPTIONS /connect/info`. `None` for a socket endpoint or an unknown path.
pub fn endpoint(method: &Method, path: &str, headers: &HeaderMap) -> Option<Answer> {
    match (path, method) {
        ("/connect" | "/connect/", &Method::GET) => Some(text_response(
            StatusCode::OK,
            "text/plain; charset=UTF-8",
            "Welcome to SockJS!\n".into(),
        )),
        ("/connect/info", &Method::GET) => {
            let entropy =
                u32::from_str_radix(&common::ids::new_message_id()[24..], 16).unwrap_or_default();
            let body = format!(
                "{{\"websocket\":true,\"cookie_needed\":false,\"origins\":[\"*:*\"],\"entropy\":{entropy}}}"
            );
            let mut answer = text_response(StatusCode::OK, "application/json; charset=UTF-8", body);
            cors(answer.headers_mut(), headers);
            answer.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(
                    "no-store, no-cache, no-transform, must-revalidate, max-age=0",
                ),
            );
            Some(answer)
        }
        ("/connect/info", &Method::OPTIONS) => {
            let mut answer = text_response(StatusCode::NO_CONTENT, "text/plain", String::new());
            let out = answer.headers_mut();
            cors(out, headers);
            out.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("OPTIONS, GET"),
            );
            out.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("31536000"),
            );
            out.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000"),
            );
            if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            Some(answer)
        }
        ("/connect" | "/connect/" | "/connect/info", _) => Some(text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=UTF-8",
            "Method Not Allowed\n".into(),
        )),
        _ => None,
    }
}

/// SockJS's CORS answer: the request's `Origin` (or `*`), with credentials.
fn cors(out: &mut HeaderMap, request: &HeaderMap) {
    let origin = request
        .get(header::ORIGIN)
        .filter(|o| o.as_bytes() != b"null")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("*"));
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

/// The dialect of a SockJS socket path: `/connect/websocket` (raw) or
/// `/connect/{server}/{session}/websocket`, whose `server` and `session` are non-empty and
/// hold no `.` (SockJS's rule).
pub fn socket_path(path: &str) -> Option<Dialect> {
    let rest = path.strip_prefix("/connect/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["websocket"] => Some(Dialect::ThunderRaw),
        [server, session, "websocket"]
            if [server, session]
                .iter()
                .all(|p| !p.is_empty() && !p.contains('.')) =>
        {
            Some(Dialect::SockJs)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_as_the_original_splits_them() {
        assert_eq!(
            parse_command("CONNECT u1:key"),
            Command::Connect {
                user: "u1".into(),
                key: "key".into()
            }
        );
        assert_eq!(
            parse_command("CONNECT u1:key trailing"),
            Command::Connect {
                user: "u1".into(),
                key: "key".into()
            }
        );
        for ignored in [
            "CONNECT u1",
            "CONNECT a:b:c",
            "connect u:k",
            "SUBSCRIBE",
            "",
            "PING x",
        ] {
            assert_eq!(parse_command(ignored), Command::Ignored, "{ignored:?}");
        }
        assert_eq!(
            parse_command("SUBSCRIBE a::b:"),
            Command::Subscribe(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_command("UNSUBSCRIBE a"),
            Command::Unsubscribe(vec!["a".into()])
        );
    }

    #[test]
    fn sockjs_frames_carry_commands_and_closes() {
        assert_eq!(
            commands(Dialect::SockJs, r#"["CONNECT u:k","SUBSCRIBE a"]"#).unwrap(),
            vec!["CONNECT u:k", "SUBSCRIBE a"]
        );
        assert_eq!(
            commands(Dialect::SockJs, r#""SUBSCRIBE a""#).unwrap(),
            vec!["SUBSCRIBE a"]
        );
        assert!(commands(Dialect::SockJs, "SUBSCRIBE a").is_err());
        assert!(commands(Dialect::SockJs, "[1]").is_err());
        assert_eq!(
            commands(Dialect::ThunderRaw, "SUBSCRIBE a").unwrap(),
            vec!["SUBSCRIBE a"]
        );
        let (frame, close) =
            closing_frames(Dialect::SockJs, (close_code::LOGGED_OUT, "logged out"));
        assert_eq!(
            frame.unwrap().as_str(),
            r#"c[9002,"Server closed the connection (intentionally)."]"#
        );
        assert_eq!(close, (1000, ""));
        let (frame, close) = closing_frames(Dialect::ThunderRaw, INVALID_KEY);
        assert!(frame.is_none());
        assert_eq!(close, (1008, "Invalid API key."));
        let (_, close) = closing_frames(Dialect::ThunderRaw, (close_code::LOGGED_OUT, "x"));
        assert_eq!(close.0, close_code::LOGGED_OUT);
    }

    #[test]
    fn socket_paths_follow_sockjs() {
        assert_eq!(socket_path("/connect/websocket"), Some(Dialect::ThunderRaw));
        assert_eq!(
            socket_path("/connect/000/abcdefgh/websocket"),
            Some(Dialect::SockJs)
        );
        for other in [
            "/connect/info",
            "/connect/a.b/c/websocket",
            "/connect//c/websocket",
            "/connect/000/s1/xhr",
            "/connection/websocket",
        ] {
            assert_eq!(socket_path(other), None, "{other}");
        }
    }
}
