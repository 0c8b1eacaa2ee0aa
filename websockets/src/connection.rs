//! One client socket's task, after the HTTP upgrade: authenticate a legacy first frame if
//! needed, register with the hub, then pump — outbound frames from the hub's bounded queue
//! (written in bursts, one flush each), inbound frames from the client, WebSocket pings
//! every `ping_interval_ms` with a close when no pong follows within `pong_timeout_ms`,
//! and closes the hub asks for (1001 draining, 4008 slow consumer).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::config::ms;
use common::stream::{Position, StreamKey};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::EdgeState;
use crate::hub::{Conn, close_code};

/// The upgraded client socket.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// How the socket proves who it is.
pub enum Auth {
    /// Checked before the upgrade (`?token=`) and already registered with the hub, so a
    /// delivery that arrives while the 101 is on its way is queued, not missed.
    Registered(Arc<Conn>, mpsc::Receiver<Utf8Bytes>),
    /// Mozilla's legacy first text frame `token: T`, within the handshake timeout; holds a
    /// connection slot until then.
    FirstFrame(crate::PendingHandshake),
}

/// Frames written per flush at most.
const BURST: usize = 64;
/// A write (burst + flush) slower than this means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Closing gives up after this long.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive unexpected client frames tolerated before closing 1008.
const MAX_BAD_FRAMES: u32 = 10;

/// Why the edge closes a socket.
type Closing = (u16, &'static str);

/// Serves one upgraded socket to the end.
pub async fn serve(edge: Arc<EdgeState>, mut ws: Socket, auth: Auth) {
    let (conn, frames) = match auth {
        Auth::Registered(conn, frames) => (conn, frames),
        Auth::FirstFrame(_slot) => {
            let token = match first_frame_token(&edge, &mut ws).await {
                Ok(token) => token,
                Err(closing) => {
                    edge.metrics
                        .sockets
                        .with_label_values(&["first_frame_rejected"])
                        .inc();
                    close(&mut ws, closing).await;
                    return;
                }
            };
            match edge.register(&token.0, &token.1) {
                Some(registered) => registered,
                None if edge.is_draining() => {
                    let code = close_code::GOING_AWAY;
                    close(&mut ws, (code, close_reason(code))).await;
                    return;
                }
                None => {
                    close(&mut ws, (1013, "too many connections; try again later")).await;
                    return;
                }
            }
        }
    };
    let closing = pump(&edge, &mut ws, &conn, frames).await;
    edge.unregister(&conn);
    if let Some(closing) = closing {
        if closing.0 == close_code::SLOW_CONSUMER {
            edge.metrics.slow_consumers.inc();
        }
        close(&mut ws, closing).await;
    }
}

/// Waits for `token: T` as the first text frame and checks T against the store: T's stream
/// and its position.
async fn first_frame_token(
    edge: &EdgeState,
    ws: &mut Socket,
) -> Result<(StreamKey, Position), Closing> {
    let deadline = Instant::now() + ms(edge.config.handshake_timeout_ms);
    loop {
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
                return match edge.authenticate(token.trim()).await {
                    Ok(stream) => Ok(stream),
                    Err(crate::AuthError::Unknown) => Err((1008, "unknown token")),
                    Err(crate::AuthError::Store) => Err((1011, "store unavailable; retry")),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => return Err((1008, "expected `token: <token>`")),
            Some(Err(_)) | None => return Err((1000, "")),
        }
    }
}

/// How a bounded write ended badly: `None` if the connection is gone, else the close to send.
type WriteEnd = Option<Closing>;

/// Runs a write that gives up after `limit` (the client stopped reading) or as soon as the
/// hub asks the socket to close (its queue overflowed meanwhile, or the node drains).
async fn bounded(
    conn: &Conn,
    limit: Duration,
    write: impl Future<Output = Result<(), WsError>>,
) -> Result<(), WriteEnd> {
    tokio::select! {
        written = tokio::time::timeout(limit, write) => match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some((close_code::SLOW_CONSUMER, close_reason(close_code::SLOW_CONSUMER)))),
        },
        code = conn.closed() => Err(Some((code, close_reason(code)))),
    }
}

/// Moves frames both ways until the socket ends; the close to send, if any.
async fn pump(
    edge: &EdgeState,
    ws: &mut Socket,
    conn: &Conn,
    mut frames: mpsc::Receiver<Utf8Bytes>,
) -> Option<Closing> {
    let ping_every = ms(edge.config.ping_interval_ms);
    let pong_within = ms(edge.config.pong_timeout_ms);
    let timer = tokio::time::sleep(ping_every);
    tokio::pin!(timer);
    let mut awaiting_pong = false;
    let mut bad_frames = 0;
    loop {
        tokio::select! {
            code = conn.closed() => return Some((code, close_reason(code))),
            frame = frames.recv() => {
                let frame = frame?;
                if let Err(end) = bounded(conn, WRITE_TIMEOUT, write_burst(ws, conn, frame, &mut frames)).await {
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
                    if let Err(end) = bounded(conn, WRITE_TIMEOUT, ws.flush()).await {
                        return end;
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
                    return None;
                }
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    // The Mozilla dialect takes nothing after the token.
                    edge.metrics.bad_frames.inc();
                    bad_frames += 1;
                    if bad_frames > MAX_BAD_FRAMES {
                        return Some((1008, "unexpected frames"));
                    }
                }
                Some(Ok(Message::Frame(_))) => {}
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    return Some((1009, "message too big"));
                }
                Some(Err(_)) | None => return None,
            },
            _ = &mut timer => {
                if awaiting_pong {
                    return Some((1011, "no pong"));
                }
                // A ping that cannot be written within the pong timeout: not reading.
                if let Err(end) = bounded(conn, pong_within, ws.send(Message::Ping(Bytes::new()))).await {
                    return end;
                }
                awaiting_pong = true;
                timer.as_mut().reset(Instant::now() + pong_within);
            }
        }
    }
}

/// Writes `first` and whatever else is queued (up to `BURST`), then flushes once.
async fn write_burst(
    ws: &mut Socket,
    conn: &Conn,
    first: Utf8Bytes,
    frames: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), WsError> {
    conn.sent(&first);
    ws.feed(Message::Text(first)).await?;
    for _ in 1..BURST {
        let Ok(frame) = frames.try_recv() else { break };
        conn.sent(&frame);
        ws.feed(Message::Text(frame)).await?;
    }
    ws.flush().await
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close_code::GOING_AWAY => "node draining; reconnect elsewhere",
        close_code::SLOW_CONSUMER => "slow consumer",
        close_code::RESYNC => "messages were missed; re-read history",
        _ => "",
    }
}

async fn close(ws: &mut Socket, (code, reason): Closing) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
}
