//! One client socket's task, after the HTTP upgrade: authenticate a legacy first frame if
//! needed, send the native `welcome`, then pump — outbound frames from the hub's bounded
//! queue (written in bursts, one flush each), client frames in the socket's dialect
//! (SPEC §6: subscribe with resume, unsubscribe, publish, ping), WebSocket pings every
//! `ping_interval_ms` with a close when no pong follows within `pong_timeout_ms`, the
//! token's expiry (4001), and closes the hub asks for (1001 draining, 4003 logged out,
//! 4008 slow consumer, 4010 resync).
//!
//! RFC 6455 is followed to the letter: a protocol violation the WebSocket layer detects
//! (unmasked frame, reserved bits or opcodes, oversized or fragmented control frame, bad
//! continuation, invalid close payload) is answered with close 1002, invalid UTF-8 with
//! 1007, never a silent drop. A bad frame gets an error frame; more than `MAX_BAD_FRAMES`
//! in a row close the socket with 1008.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::clock::now_us;
use common::config::ms;
use common::ids::ChannelName;
use common::message::{Delivery, Origin};
use common::stream::{Position, StreamKey};
use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::frames::{
    ClientFrame, Dialect, FrameError, Rendered, error_frame, parse_native, parse_vpush, pong_frame,
    resync_frame, subscribed_frame,
};
use crate::hub::{Joined, close_code};
use crate::session::Session;
use crate::{EdgeState, thunder};
use api::service::ServiceError;

/// The upgraded client socket.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// How the socket proves who it is.
pub enum Auth {
    /// Checked before the upgrade and already registered with the hub, so a delivery that
    /// arrives while the 101 is on its way is queued, not missed.
    Opened(Box<Session>, mpsc::Receiver<Utf8Bytes>),
    /// Mozilla's legacy first text frame `token: T`, within the handshake timeout; holds a
    /// connection slot until then.
    FirstFrame(crate::PendingHandshake),
    /// Thunderpush's `CONNECT` command, within the handshake timeout (`crate::thunder`);
    /// holds a connection slot until then.
    Thunder(crate::PendingHandshake, Box<thunder::Start>),
}

/// Frames written per flush at most.
const BURST: usize = 64;
/// A write (burst + flush) slower than this means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Closing gives up after this long.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive bad client frames tolerated before closing 1008.
const MAX_BAD_FRAMES: u32 = 10;
/// Entries of a resumed channel read from the store per page.
const REPLAY_PAGE: usize = 200;
/// Times a resuming socket may find the edge ahead of its replay before giving up.
const JOIN_ROUNDS: usize = 8;
/// Client frames a socket may send per second (and in a burst) before close 4029.
const CLIENT_RATE: u32 = 50;
const CLIENT_BURST: u32 = 100;

/// Why the edge closes a socket.
type Closing = (u16, &'static str);

/// Serves one upgraded socket to the end.
pub async fn serve(edge: Arc<EdgeState>, mut ws: Socket, auth: Auth) {
    let (mut session, frames) = match auth {
        Auth::Opened(session, frames) => (*session, frames),
        Auth::FirstFrame(_slot) => match Box::pin(first_frame(&edge, &mut ws)).await {
            Ok(opened) => opened,
            Err(closing) => {
                edge.metrics
                    .sockets
                    .with_label_values(&["first_frame_rejected"])
                    .inc();
                close(&mut ws, Dialect::Mozilla, closing).await;
                return;
            }
        },
        Auth::Thunder(_slot, start) => {
            let opened = match Box::pin(thunder::open(&edge, &mut ws, &start)).await {
                Ok((mut session, frames, rest)) => {
                    match thunder::run(&edge, &mut session, rest).await {
                        Ok(()) => Ok((session, frames)),
                        Err(closing) => {
                            session.close(&edge);
                            Err(closing)
                        }
                    }
                }
                Err(closing) => Err(closing),
            };
            match opened {
                Ok(opened) => opened,
                Err(closing) => {
                    edge.metrics
                        .sockets
                        .with_label_values(&["connect_rejected"])
                        .inc();
                    close(&mut ws, start.dialect, closing).await;
                    return;
                }
            }
        }
    };
    let dialect = session.dialect;
    let welcomed = match session.welcome(&edge) {
        Some(welcome) => bounded(&session, WRITE_TIMEOUT, ws.send(Message::Text(welcome))).await,
        None => Ok(()),
    };
    let closing = match welcomed {
        Ok(()) => match Box::pin(send_pending(&edge, &mut ws, &session)).await {
            Ok(()) => pump(&edge, &mut ws, &mut session, frames).await,
            Err(end) => end,
        },
        Err(end) => end,
    };
    session.close(&edge);
    if let Some(closing) = closing {
        if closing.0 == close_code::SLOW_CONSUMER {
            edge.metrics.slow_consumers.inc();
        }
        close(&mut ws, dialect, closing).await;
    }
}

/// Writes the user's `PENDING` addressed messages up to the inbox head the socket joined
/// at (oldest first, settled as delivered), before anything live. A store failure leaves
/// them `PENDING` for the next connection.
async fn send_pending(
    edge: &EdgeState,
    ws: &mut Socket,
    session: &Session,
) -> Result<(), WriteEnd> {
    let Some(head) = &session.inbox_head else {
        return Ok(());
    };
    let pending = match crate::inbox::pending(edge, session, head).await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read pending messages");
            return Ok(());
        }
    };
    for rendered in pending {
        if let Some(frame) = rendered.frame(session.dialect) {
            bounded(
                session,
                WRITE_TIMEOUT,
                ws.send(Message::Text(frame.clone())),
            )
            .await?;
            edge.metrics
                .deliveries
                .with_label_values(&["pending"])
                .inc();
        }
    }
    Ok(())
}

/// Waits for `token: T` as the first text frame, checks T against the store and opens the
/// socket's session.
async fn first_frame(
    edge: &EdgeState,
    ws: &mut Socket,
) -> Result<(Session, mpsc::Receiver<Utf8Bytes>), Closing> {
    let deadline = Instant::now() + ms(edge.config.handshake_timeout_ms);
    let (key, head) = loop {
        let frame = tokio::select! {
            _ = edge.draining.cancelled() => return Err((close_code::GOING_AWAY, close_reason(close_code::GOING_AWAY))),
            frame = tokio::time::timeout_at(deadline, ws.next()) => {
                frame.map_err(|_| (1008, "no `token: <token>` frame in time"))?
            }
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                let token = text
                    .as_str()
                    .strip_prefix("token: ")
                    .ok_or((1008, "expected `token: <token>`"))?;
                break match edge.authenticate(token.trim()).await {
                    Ok(stream) => stream,
                    Err(crate::AuthError::Unknown) => return Err((1008, "unknown token")),
                    Err(crate::AuthError::Store) => return Err((1011, "store unavailable; retry")),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => return Err((1008, "expected `token: <token>`")),
            Some(Err(e)) => return Err(violation(&e).unwrap_or((1000, ""))),
            None => return Err((1000, "")),
        }
    };
    match edge.open_mozilla(&key, &head) {
        Ok(opened) => Ok(opened),
        Err(_) if edge.is_draining() => {
            Err((close_code::GOING_AWAY, close_reason(close_code::GOING_AWAY)))
        }
        Err(_) => Err((1013, "too many connections; try again later")),
    }
}

/// How a bounded write ended badly: `None` if the connection is gone, else the close to send.
type WriteEnd = Option<Closing>;

/// Runs a write that gives up after `limit` (the client stopped reading) or as soon as the
/// hub asks the socket to close (its queue overflowed meanwhile, or the node drains).
async fn bounded(
    session: &Session,
    limit: Duration,
    write: impl Future<Output = Result<(), WsError>>,
) -> Result<(), WriteEnd> {
    tokio::select! {
        written = tokio::time::timeout(limit, write) => match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some((close_code::SLOW_CONSUMER, close_reason(close_code::SLOW_CONSUMER)))),
        },
        code = session.conn.closed() => Err(Some((code, close_reason(code)))),
    }
}

/// When the socket's token expires (close 4001), if it has one (a trusted Thunderpush
/// user id never expires).
fn expiry(session: &Session) -> Option<Instant> {
    let grant = session.grant()?;
    let left = grant.expires_us.saturating_sub(now_us()).max(0) as u64;
    Instant::now().checked_add(Duration::from_micros(left))
}

/// Moves frames both ways until the socket ends; the close to send, if any.
async fn pump(
    edge: &EdgeState,
    ws: &mut Socket,
    session: &mut Session,
    mut frames: mpsc::Receiver<Utf8Bytes>,
) -> Option<Closing> {
    let ping_every = ms(edge.config.ping_interval_ms);
    let pong_within = ms(edge.config.pong_timeout_ms);
    let timer = tokio::time::sleep(ping_every);
    tokio::pin!(timer);
    // Boxed where not every socket needs them, so an idle socket's task stays small.
    let mut expiring = expiry(session).map(|at| Box::pin(tokio::time::sleep_until(at)));
    let mut awaiting_pong = false;
    let mut bad_frames = 0;
    let mut limiter: Option<Box<DefaultDirectRateLimiter>> = None;
    loop {
        tokio::select! {
            code = session.conn.closed() => return Some((code, close_reason(code))),
            _ = async { if let Some(at) = expiring.as_mut() { at.await } }, if expiring.is_some() => {
                return Some((4001, "token expired"));
            }
            frame = frames.recv() => {
                let frame = frame?;
                if let Err(end) = bounded(session, WRITE_TIMEOUT, write_burst(ws, session, frame, &mut frames)).await {
                    return end;
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Pong(_))) => {
                    awaiting_pong = false;
                    timer.as_mut().reset(Instant::now() + ping_every);
                }
                // tungstenite queued the pong; send it now.
                Some(Ok(Message::Ping(_))) => {
                    if let Err(end) = bounded(session, WRITE_TIMEOUT, ws.flush()).await {
                        return end;
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
                    return None;
                }
                Some(Ok(Message::Text(text))) => {
                    let limiter = limiter.get_or_insert_with(|| Box::new(client_limiter()));
                    if limiter.check().is_err() {
                        return Some((4029, "rate limited"));
                    }
                    // Boxed: the handlers' state (replays, store reads) is allocated
                    // while a frame is handled, not carried by every idle socket's task.
                    match Box::pin(handle_text(edge, ws, session, text.as_str())).await {
                        Ok(()) => bad_frames = 0,
                        Err(Handled::Refused(error)) => {
                            edge.metrics.bad_frames.inc();
                            bad_frames += 1;
                            if bad_frames > MAX_BAD_FRAMES {
                                return Some((1008, "too many bad frames"));
                            }
                            if let Some(frame) = reply_to_error(session.dialect, &error)
                                && let Err(end) = bounded(session, WRITE_TIMEOUT, ws.send(Message::Text(frame))).await
                            {
                                return end;
                            }
                        }
                        Err(Handled::End(end)) => return end,
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    edge.metrics.bad_frames.inc();
                    bad_frames += 1;
                    if bad_frames > MAX_BAD_FRAMES {
                        return Some((1008, "too many bad frames"));
                    }
                    let error = FrameError::bad_request("binary frames are not accepted; send JSON text");
                    if let Some(frame) = reply_to_error(session.dialect, &error)
                        && let Err(end) = bounded(session, WRITE_TIMEOUT, ws.send(Message::Text(frame))).await
                    {
                        return end;
                    }
                }
                Some(Ok(Message::Frame(_))) => {}
                Some(Err(e)) => return violation(&e),
                None => return None,
            },
            _ = &mut timer => {
                if awaiting_pong {
                    return Some((1011, "no pong"));
                }
                if session.dialect == Dialect::SockJs
                    && let Err(end) = bounded(session, pong_within, ws.feed(Message::Text(Utf8Bytes::from_static(thunder::HEARTBEAT)))).await
                {
                    return end;
                }
                // A ping that cannot be written within the pong timeout: not reading.
                if let Err(end) = bounded(session, pong_within, ws.send(Message::Ping(Bytes::new()))).await {
                    return end;
                }
                awaiting_pong = true;
                timer.as_mut().reset(Instant::now() + pong_within);
            }
        }
    }
}

fn client_limiter() -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(CLIENT_RATE).expect("non-zero");
    let burst = NonZeroU32::new(CLIENT_BURST).expect("non-zero");
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

/// The close a WebSocket-layer error calls for: 1002 for a protocol violation, 1007 for
/// invalid UTF-8, 1009 for a message over the limit; `None` when the connection is gone.
pub(crate) fn violation(e: &WsError) -> Option<Closing> {
    match e {
        WsError::Utf8(_) => Some((1007, "invalid UTF-8")),
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some((1009, "message too big")),
        WsError::Capacity(_) => Some((1009, "frame too big")),
        WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing,
        ) => None,
        WsError::Protocol(_) => Some((1002, "protocol error")),
        _ => None,
    }
}

/// Only the native and VPush dialects have an error frame; elsewhere (Mozilla takes no
/// frames, Thunderpush ignores what it cannot use) the error is only counted.
fn reply_to_error(dialect: Dialect, error: &FrameError) -> Option<Utf8Bytes> {
    matches!(dialect, Dialect::Native | Dialect::VPush).then(|| error_frame(dialect, error))
}

/// How handling a client frame ended badly.
enum Handled {
    /// Refused: an error frame (not a close).
    Refused(FrameError),
    /// The socket must end.
    End(WriteEnd),
}

impl From<FrameError> for Handled {
    fn from(e: FrameError) -> Handled {
        Handled::Refused(e)
    }
}

/// One text frame from the client, in its dialect.
async fn handle_text(
    edge: &EdgeState,
    ws: &mut Socket,
    session: &mut Session,
    text: &str,
) -> Result<(), Handled> {
    match session.dialect {
        Dialect::Mozilla => Err(FrameError::bad_request("this socket takes no frames").into()),
        Dialect::SockJs | Dialect::ThunderRaw => {
            let commands = thunder::commands(session.dialect, text)?;
            thunder::run(edge, session, commands)
                .await
                .map_err(|closing| Handled::End(Some(closing)))
        }
        Dialect::VPush => {
            let message = parse_vpush(text)?;
            let channel = session
                .channels
                .keys()
                .next()
                .cloned()
                .ok_or_else(|| FrameError::new("forbidden", "this socket has no context"))?;
            publish(edge, session, channel, serde_json::Value::String(message)).await
        }
        Dialect::Native => match parse_native(text)? {
            ClientFrame::Ping => send(ws, session, pong_frame()).await,
            ClientFrame::Subscribe {
                channel,
                since,
                epoch,
            } => subscribe(edge, ws, session, &channel, since, epoch).await,
            ClientFrame::Unsubscribe { channel } => {
                let channel = channel_name(&channel)?;
                if !session.leave(edge, &channel) {
                    return Err(
                        FrameError::new("not_found", "not subscribed to that channel").into(),
                    );
                }
                Ok(())
            }
            ClientFrame::Publish { channel, data } => {
                let channel = channel_name(&channel)?;
                publish(edge, session, channel, data).await
            }
            ClientFrame::Ack { id } => {
                let grant = session
                    .grant()
                    .ok_or_else(|| FrameError::new("not_found", "no such message for this user"))?;
                edge.services
                    .acknowledge_message(&grant.app, &grant.user, &id)
                    .await
                    .map_err(|e| service_frame_error(&e).into())
            }
            ClientFrame::Event { id, kind } => client_event(edge, session, &id, &kind).await,
        },
    }
}

fn channel_name(name: &str) -> Result<ChannelName, FrameError> {
    ChannelName::parse(name).map_err(|e| FrameError::bad_request(format!("channel: {e}")))
}

/// Writes one frame of the socket's own, bounded.
async fn send(ws: &mut Socket, session: &Session, frame: Utf8Bytes) -> Result<(), Handled> {
    bounded(session, WRITE_TIMEOUT, ws.send(Message::Text(frame)))
        .await
        .map_err(Handled::End)
}

/// Publishes `data` to `channel` for the socket, if its token allows it.
async fn publish(
    edge: &EdgeState,
    session: &Session,
    channel: ChannelName,
    data: serde_json::Value,
) -> Result<(), Handled> {
    let grant = session
        .grant()
        .ok_or_else(|| FrameError::new("forbidden", "this socket may not publish"))?;
    if !grant.publish || !session.may_use(&channel) {
        return Err(FrameError::new(
            "forbidden",
            "the token does not allow publishing to that channel",
        )
        .into());
    }
    // VPush: "to every other subscriber". Native sockets get their own message back.
    let origin = (session.dialect == Dialect::VPush).then(|| Origin {
        node: edge.node_id.clone(),
        connection: session.conn.id,
    });
    let publish = api::service::channels::ChannelPublish {
        app: grant.app.clone(),
        channel,
        data: data.into(),
        replace_id: None,
        ttl: None,
        idempotency_key: None,
        origin,
    };
    edge.services
        .publish_to_channel(publish)
        .await
        .map(|_| ())
        .map_err(|e| FrameError::new("unavailable", e.to_string()).into())
}

/// `event`: the client reports that its user clicked or closed addressed message `id`;
/// recorded for the app's webhook (`clicked`, `close`).
async fn client_event(
    edge: &EdgeState,
    session: &Session,
    id: &str,
    kind: &str,
) -> Result<(), Handled> {
    let grant = session
        .grant()
        .ok_or_else(|| FrameError::new("forbidden", "this socket has no user"))?;
    edge.services
        .client_event(&grant.app, &grant.user, id, kind)
        .await
        .map_err(|e| service_frame_error(&e).into())
}

/// The `error` frame for a refused service call: its code (`bad_request`, `forbidden`,
/// `not_found`, `conflict`, else `unavailable`) and message.
fn service_frame_error(e: &ServiceError) -> FrameError {
    let code = match e {
        ServiceError::BadRequest { .. } => "bad_request",
        ServiceError::Forbidden(_) => "forbidden",
        ServiceError::NotFound { .. } => "not_found",
        ServiceError::Conflict(_) => "conflict",
        ServiceError::Unavailable(_) | ServiceError::Internal(_) => "unavailable",
    };
    FrameError::new(code, e.to_string())
}

/// `subscribe`: follows `channel` live; with `since`, first replays its history after that
/// offset (written straight to the socket), then joins the live stream at exactly the
/// offset the replay reached — no gap, no duplicate. A `since` that cannot be honoured
/// (no history, another epoch, too far back) gets `resync` and goes live.
async fn subscribe(
    edge: &EdgeState,
    ws: &mut Socket,
    session: &mut Session,
    channel: &str,
    since: Option<u64>,
    epoch: Option<String>,
) -> Result<(), Handled> {
    let channel = channel_name(channel)?;
    if !session.may_use(&channel) {
        return Err(FrameError::new("forbidden", "the token does not allow that channel").into());
    }
    if session.channels.contains_key(&channel) {
        return Err(FrameError::new(
            "conflict",
            "already subscribed to that channel (channels named in the token are subscribed \
             on connect; grant a pattern to resume with since)",
        )
        .into());
    }
    let grant = session
        .grant()
        .cloned()
        .ok_or_else(|| FrameError::new("forbidden", "no token"))?;
    let key = StreamKey::channel(&grant.app, &channel);
    let head = stream_head(edge, &key)
        .await
        .map_err(|e| FrameError::new("unavailable", e.to_string()))?;
    // A `since` past the head is a position this stream never had (another store, a
    // client bug): it cannot be resumed from, and must never become the edge's cursor.
    let resumable = match (&since, &head) {
        (Some(since), Some(head)) => {
            epoch.as_ref().is_none_or(|e| *e == head.epoch)
                && *since <= head.offset
                && head.offset - since <= edge.config.recovery_limit
        }
        _ => false,
    };
    if since.is_some() && !resumable {
        send(ws, session, resync_frame(channel.as_str())).await?;
    }
    let joined = match (resumable, since, &head) {
        (true, Some(since), Some(head)) => resume(edge, ws, session, &key, head, since).await?,
        _ => edge.hub.subscribe(&session.conn, &key, head.as_ref()),
    };
    if joined.new && head.is_some() {
        edge.recovery.check_new(&key);
    }
    let position = head.as_ref().map(|h| Position {
        epoch: h.epoch.clone(),
        offset: joined.at,
    });
    let frame = subscribed_frame(channel.as_str(), position.as_ref());
    session.joined(edge, channel, key);
    send(ws, session, frame).await
}

/// The stream's head, `None` while it keeps no history.
pub(crate) async fn stream_head(
    edge: &EdgeState,
    key: &StreamKey,
) -> Result<Option<Position>, common::store::StoreError> {
    let mut heads = edge
        .services
        .stores
        .streams
        .stream_heads(std::slice::from_ref(key))
        .await?;
    Ok(heads.pop().map(|(_, head)| head))
}

/// Replays `key` after `since` to the socket, then joins the live stream where the replay
/// ended: whether the edge follows the stream anew, and the offset the socket is at.
async fn resume(
    edge: &EdgeState,
    ws: &mut Socket,
    session: &Session,
    key: &StreamKey,
    head: &Position,
    since: u64,
) -> Result<Joined, Handled> {
    let mut sent = since;
    let mut first_page = true;
    for _ in 0..JOIN_ROUNDS {
        loop {
            let page = edge
                .services
                .stores
                .streams
                .read_stream(key, sent, REPLAY_PAGE, now_us())
                .await
                .map_err(|e| FrameError::new("unavailable", e.to_string()))?;
            let full = page.len() == REPLAY_PAGE;
            if std::mem::take(&mut first_page) {
                // History no longer reaching back to `since` (trimmed, expired): what the
                // socket missed cannot all be replayed.
                let next = page.first().map_or(head.offset + 1, Delivery::offset);
                if head.offset > since && next > since + 1 {
                    send(ws, session, resync_frame(key.channel_name())).await?;
                }
            }
            for delivery in page {
                if delivery
                    .position
                    .as_ref()
                    .is_none_or(|p| p.epoch != head.epoch)
                {
                    continue;
                }
                let offset = delivery.offset();
                let rendered = Rendered::new(delivery, None, &edge.api_base);
                if let Some(frame) = rendered.frame(session.dialect) {
                    send(ws, session, frame.clone()).await?;
                }
                sent = offset;
            }
            edge.metrics
                .deliveries
                .with_label_values(&["resumed"])
                .inc();
            if !full {
                break;
            }
        }
        if let Ok(joined) = edge.hub.join(&session.conn, key, Some(head), sent) {
            return Ok(joined);
        }
    }
    // The stream moves faster than this socket can catch up: live from where the edge is.
    send(ws, session, resync_frame(key.channel_name())).await?;
    Ok(edge.hub.subscribe(&session.conn, key, Some(head)))
}

/// Writes `first` and whatever else is queued (up to `BURST`), then flushes once.
async fn write_burst(
    ws: &mut Socket,
    session: &Session,
    first: Utf8Bytes,
    frames: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), WsError> {
    session.conn.sent(&first);
    ws.feed(Message::Text(first)).await?;
    for _ in 1..BURST {
        let Ok(frame) = frames.try_recv() else { break };
        session.conn.sent(&frame);
        ws.feed(Message::Text(frame)).await?;
    }
    ws.flush().await
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close_code::GOING_AWAY => "node draining; reconnect elsewhere",
        close_code::LOGGED_OUT => "logged out",
        close_code::SLOW_CONSUMER => "slow consumer",
        close_code::RESYNC => "messages were missed; re-read history",
        _ => "",
    }
}

/// Closes the socket with `closing`; a Thunderpush socket says it its own way first
/// (`thunder::closing_frames`).
async fn close(ws: &mut Socket, dialect: Dialect, closing: Closing) {
    let (code, reason) = if dialect.is_thunderpush() {
        let (frame, closing) = thunder::closing_frames(dialect, closing);
        if let Some(frame) = frame {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(Message::Text(frame))).await;
        }
        closing
    } else {
        closing
    };
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
}
