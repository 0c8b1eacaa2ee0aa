//! The edge's local index: which sockets of this process follow which stream, where each
//! stream stands, and the bounded outbound queue of each socket.
//!
//! A resumable stream here (a Mozilla token's messages, a channel with history; SPEC §7)
//! has one cursor: the offset of the last entry handed to its sockets. An entry is handed
//! over only when its offset is the cursor + 1, under the stream's lock, so every socket
//! gets a stream's entries once and in order whether they come live from a router or from
//! the store (recovery): older offsets are duplicates and dropped, newer ones are parked
//! (bounded) until the gap before them fills — usually within moments, when two API
//! processes or two tasks published out of order — or until recovery reads the gap from
//! the store. Correctness never depends on a memory of recent message ids. An ephemeral
//! stream (a channel without history, a user's sockets) has no cursor: its entries are
//! handed over as they come, at most once.
//!
//! Delivery never waits on a socket: a frame goes into the socket's queue or, when the
//! queue is over either bound (frames or bytes), the socket is told to close with 4008
//! (slow consumer) and the frame is dropped for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use common::stream::{Position, StreamKey};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::frames::{Dialect, Rendered};

/// Close codes the hub asks sockets to close with.
pub mod close_code {
    /// Node draining: reconnect elsewhere.
    pub const GOING_AWAY: u16 = 1001;
    /// Force logout.
    pub const LOGGED_OUT: u16 = 4003;
    /// Outbound queue over its bound.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The socket missed more than recovery replays (Mozilla dialect): reconnect and
    /// re-read history over HTTP.
    pub const RESYNC: u16 = 4010;
}

/// Bounds of each socket's outbound queue, and of each stream's parked entries.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
    /// Out-of-order entries a stream holds while waiting for the gap before them.
    pub parked: usize,
}

/// One live socket as the hub sees it.
pub struct Conn {
    pub id: u64,
    pub dialect: Dialect,
    /// When its token was issued (µs; 0 for Mozilla tokens): a force logout closes the
    /// sockets whose tokens are older than it.
    pub issued_us: i64,
    /// The streams this socket follows (keys into the hub's index).
    streams: Mutex<Vec<StreamKey>>,
    outbound: mpsc::Sender<Utf8Bytes>,
    queued_bytes: AtomicUsize,
    /// Bytes the outbound queue may hold.
    max_bytes: usize,
    close_code: AtomicU16,
    closing: Notify,
    /// Counted in the hub until `unregister`.
    registered: AtomicBool,
    /// At-least-once mode (token claim `ack`): addressed messages become `DELIVERED` on the
    /// client's `ack`, not when handed over.
    ack: AtomicBool,
}

impl Conn {
    /// Puts the socket in at-least-once mode (its token's `ack` claim).
    pub fn set_ack_mode(&self) {
        self.ack.store(true, Ordering::Release);
    }

    /// Whether the socket is in at-least-once mode.
    pub fn ack_mode(&self) -> bool {
        self.ack.load(Ordering::Acquire)
    }

    /// Asks the socket task to close with `code` (the first code asked for wins).
    pub fn close(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.closing.notify_one();
    }

    /// Resolves once `close` was called; returns the code.
    pub async fn closed(&self) -> u16 {
        loop {
            let code = self.close_code.load(Ordering::Acquire);
            if code != 0 {
                return code;
            }
            self.closing.notified().await;
        }
    }

    /// The socket task reports a frame written, releasing its bytes from the bound.
    pub fn sent(&self, frame: &Utf8Bytes) {
        self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
    }

    /// Whether the socket follows `key`.
    pub fn follows(&self, key: &StreamKey) -> bool {
        self.streams.lock().is_ok_and(|s| s.contains(key))
    }

    /// Queues a frame without waiting.
    fn offer(&self, frame: &Utf8Bytes) -> Offer {
        let len = frame.len();
        if self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.close(close_code::SLOW_CONSUMER);
            return Offer::Overflow;
        }
        match self.outbound.try_send(frame.clone()) {
            Ok(()) => Offer::Queued,
            Err(e) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    self.close(close_code::SLOW_CONSUMER);
                    Offer::Overflow
                } else {
                    Offer::Gone
                }
            }
        }
    }
}

/// What happened to one frame offered to one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    Queued,
    Overflow,
    Gone,
}

/// Counts of frames handed to sockets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Frames queued on sockets.
    pub queued: usize,
    /// Sockets closed 4008 instead.
    pub overflowed: usize,
    /// Stream entries handed over (each to every socket of the stream).
    pub entries: usize,
}

impl Fanout {
    fn add(&mut self, other: Fanout) {
        self.queued += other.queued;
        self.overflowed += other.overflowed;
        self.entries += other.entries;
    }
}

/// What became of a live delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// No socket here follows the stream.
    NotHere,
    /// Handed over (with any parked entries it unblocked).
    Delivered(Fanout),
    /// At or before the cursor: already handed over.
    Duplicate,
    /// After a gap: parked until the gap fills. `first` when the stream had no gap before,
    /// i.e. a recovery check should be scheduled.
    Parked { first: bool },
    /// After a gap, and the parking space is full: dropped (it is in the store).
    ParkFull,
    /// From another epoch than the one this edge follows: the stream was reset.
    OtherEpoch,
}

impl Live {
    /// The `outcome` label of `live_entries_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Live::NotHere => "not_here",
            Live::Delivered(_) => "delivered",
            Live::Duplicate => "duplicate",
            Live::Parked { .. } => "parked",
            Live::ParkFull => "park_full",
            Live::OtherEpoch => "other_epoch",
        }
    }
}

/// Where a stream stands on this edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `None` for an ephemeral stream.
    pub epoch: Option<String>,
    /// Offset of the last entry handed over.
    pub offset: u64,
    /// Some entry after a gap is parked.
    pub gap: bool,
}

/// How a socket joined a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// This edge did not follow the stream before (a recovery check should confirm that
    /// nothing slipped by).
    pub new: bool,
    /// The socket gets the entries after this offset (0 for an ephemeral stream).
    pub at: u64,
}

/// A socket could not join: the edge already handed over entries up to `cursor`, after
/// the offset the socket has; it must first get those from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind {
    pub cursor: u64,
}

/// A socket following a stream, and from which offset on it wants entries.
struct Subscriber {
    conn: Arc<Conn>,
    /// Entries at or before this offset predate the subscription.
    after: u64,
}

struct StreamState {
    /// `None`: ephemeral, entries handed over as they come.
    epoch: Option<String>,
    cursor: u64,
    parked: BTreeMap<u64, Arc<Rendered>>,
    /// Sorted by connection id (ids only grow, so a new socket is appended): finding one
    /// is a binary search, not a scan, with thousands of sockets on one stream, and a
    /// stream with one socket costs no more than a `Vec` of one.
    subscribers: Vec<Subscriber>,
}

impl StreamState {
    /// Where socket `id` is in `subscribers`, or where it would go.
    fn position(&self, id: u64) -> Result<usize, usize> {
        self.subscribers.binary_search_by_key(&id, |s| s.conn.id)
    }
}

impl StreamState {
    /// Hands `rendered` (the entry at `offset`; 0 for an ephemeral one) to every
    /// subscriber that wants it, in its dialect.
    fn fan_out(&self, offset: u64, rendered: &Rendered) -> Fanout {
        let mut fanout = Fanout {
            entries: 1,
            ..Fanout::default()
        };
        for sub in &self.subscribers {
            if (offset != 0 && offset <= sub.after) || rendered.skip == Some(sub.conn.id) {
                continue;
            }
            let Some(frame) = rendered.frame(sub.conn.dialect) else {
                continue;
            };
            match sub.conn.offer(frame) {
                Offer::Queued => fanout.queued += 1,
                Offer::Overflow => fanout.overflowed += 1,
                Offer::Gone => {}
            }
        }
        fanout
    }

    /// Hands over the entry at `offset` (which must be after the cursor) and moves the
    /// cursor to it, then whatever parked entries follow without a gap.
    fn advance(&mut self, offset: u64, rendered: &Rendered) -> Fanout {
        let mut fanout = self.fan_out(offset, rendered);
        self.cursor = offset;
        while let Some(entry) = self.parked.first_entry() {
            if *entry.key() > self.cursor + 1 {
                break;
            }
            let (next, rendered) = entry.remove_entry();
            if next == self.cursor + 1 {
                fanout.add(self.fan_out(next, &rendered));
                self.cursor = next;
            }
        }
        fanout
    }
}

type Entry = Arc<Mutex<StreamState>>;

/// Every socket of this process, by the streams they follow.
pub struct Hub {
    streams: RwLock<HashMap<StreamKey, Entry>>,
    count: AtomicUsize,
    next_id: AtomicU64,
    limits: QueueLimits,
    max_connections: usize,
    /// Set by `close_all`: no socket registers after the drain began.
    closed: AtomicBool,
}

impl Hub {
    pub fn new(limits: QueueLimits, max_connections: usize) -> Hub {
        Hub {
            streams: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            limits,
            max_connections,
            closed: AtomicBool::new(false),
        }
    }

    /// Sockets registered now.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when no further socket may register.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max_connections
    }

    /// Registers a socket (following nothing yet); `None` at the connection limit or once
    /// draining.
    pub fn register(
        &self,
        dialect: Dialect,
        issued_us: i64,
    ) -> Option<(Arc<Conn>, mpsc::Receiver<Utf8Bytes>)> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let (outbound, frames) = mpsc::channel(self.limits.frames);
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            dialect,
            issued_us,
            streams: Mutex::new(Vec::new()),
            outbound,
            queued_bytes: AtomicUsize::new(0),
            max_bytes: self.limits.bytes,
            close_code: AtomicU16::new(0),
            closing: Notify::new(),
            registered: AtomicBool::new(true),
            ack: AtomicBool::new(false),
        });
        Some((conn, frames))
    }

    /// Makes `conn` follow `key` live from `head` on (the stream's position when the
    /// socket subscribed; `None` for an ephemeral stream). If this edge already handed
    /// over entries past `head` to other sockets, the socket joins at the edge's cursor
    /// instead: it subscribed while those were being delivered, and [`Joined::at`] says
    /// where it starts. Subscribing twice is a no-op.
    pub fn subscribe(&self, conn: &Arc<Conn>, key: &StreamKey, head: Option<&Position>) -> Joined {
        let after = head.map_or(0, |h| h.offset);
        match self.attach(conn, key, head, after, true) {
            Ok(joined) => joined,
            Err(Behind { cursor }) => Joined {
                new: false,
                at: cursor,
            },
        }
    }

    /// Makes `conn` follow `key` if it is not behind: it has every entry up to `after`
    /// (read from the store), and the stream's head was `head` when that began.
    pub fn join(
        &self,
        conn: &Arc<Conn>,
        key: &StreamKey,
        head: Option<&Position>,
        after: u64,
    ) -> Result<Joined, Behind> {
        self.attach(conn, key, head, after, false)
    }

    fn attach(
        &self,
        conn: &Arc<Conn>,
        key: &StreamKey,
        head: Option<&Position>,
        after: u64,
        live: bool,
    ) -> Result<Joined, Behind> {
        let Ok(mut map) = self.streams.write() else {
            return Ok(Joined {
                new: false,
                at: after,
            });
        };
        let mut new = false;
        let entry = map.entry(key.clone()).or_insert_with(|| {
            new = true;
            Arc::new(Mutex::new(StreamState {
                epoch: head.map(|h| h.epoch.clone()),
                cursor: after,
                parked: BTreeMap::new(),
                subscribers: Vec::new(),
            }))
        });
        let mut at = after;
        if let Ok(mut state) = entry.lock() {
            let slot = match state.position(conn.id) {
                Ok(existing) => {
                    return Ok(Joined {
                        new: false,
                        at: state.subscribers[existing].after,
                    });
                }
                Err(slot) => slot,
            };
            if state.epoch.is_none() && head.is_some() {
                // Followed as ephemeral so far; it keeps history now: adopt its position.
                state.epoch = head.map(|h| h.epoch.clone());
                state.cursor = after;
            }
            let same_epoch =
                state.epoch.is_some() && state.epoch.as_deref() == head.map(|h| h.epoch.as_str());
            if same_epoch && after < state.cursor {
                if !live {
                    return Err(Behind {
                        cursor: state.cursor,
                    });
                }
                at = state.cursor;
            }
            // A head from another epoch than the edge's (a reset the edge has not seen
            // yet) says nothing about its offsets: take everything.
            if !same_epoch && head.is_some() {
                at = 0;
            }
            state.subscribers.insert(
                slot,
                Subscriber {
                    conn: conn.clone(),
                    after: at,
                },
            );
        }
        if let Ok(mut streams) = conn.streams.lock() {
            streams.push(key.clone());
        }
        // `close_all` sets `closed` before it walks the index: a socket that subscribed
        // after the walk sees the flag here.
        if self.is_closed() {
            conn.close(close_code::GOING_AWAY);
        }
        Ok(Joined { new, at })
    }

    /// Stops `conn` following `key`; false if it did not.
    pub fn unsubscribe(&self, conn: &Conn, key: &StreamKey) -> bool {
        let followed = conn
            .streams
            .lock()
            .map(|mut s| {
                let before = s.len();
                s.retain(|k| k != key);
                s.len() < before
            })
            .unwrap_or(false);
        if followed {
            self.leave(conn, std::slice::from_ref(key));
        }
        followed
    }

    /// Removes a socket from every stream it follows (idempotent).
    pub fn unregister(&self, conn: &Conn) {
        let keys = conn
            .streams
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        self.leave(conn, &keys);
        if conn.registered.swap(false, Ordering::AcqRel) {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn leave(&self, conn: &Conn, keys: &[StreamKey]) {
        let Ok(mut map) = self.streams.write() else {
            return;
        };
        for key in keys {
            let empty = map.get(key).is_some_and(|entry| {
                entry.lock().is_ok_and(|mut state| {
                    if let Ok(at) = state.position(conn.id) {
                        state.subscribers.remove(at);
                    }
                    state.subscribers.is_empty()
                })
            });
            if empty {
                map.remove(key);
            }
        }
    }

    fn entry(&self, key: &StreamKey) -> Option<Entry> {
        self.streams.read().ok()?.get(key).cloned()
    }

    /// True if some socket here follows `key` (cheap pre-check before rendering a frame).
    pub fn follows(&self, key: &StreamKey) -> bool {
        self.streams
            .read()
            .map(|m| m.contains_key(key))
            .unwrap_or(false)
    }

    /// Offers a delivery that just arrived from a router.
    pub fn offer_live(&self, rendered: Arc<Rendered>) -> Live {
        let key = &rendered.delivery.stream;
        let Some(entry) = self.entry(key) else {
            return Live::NotHere;
        };
        let Ok(mut state) = entry.lock() else {
            return Live::NotHere;
        };
        let Some(position) = &rendered.delivery.position else {
            return Live::Delivered(state.fan_out(0, &rendered));
        };
        let Some(epoch) = &state.epoch else {
            // An ephemeral stream gained history: follow its positions from here.
            state.epoch = Some(position.epoch.clone());
            return Live::Delivered(state.advance(position.offset, &rendered));
        };
        if *epoch != position.epoch {
            return Live::OtherEpoch;
        }
        let offset = position.offset;
        if offset <= state.cursor {
            return Live::Duplicate;
        }
        if offset == state.cursor + 1 {
            return Live::Delivered(state.advance(offset, &rendered));
        }
        if state.parked.contains_key(&offset) {
            return Live::Duplicate;
        }
        if state.parked.len() >= self.limits.parked {
            return Live::ParkFull;
        }
        let first = state.parked.is_empty();
        state.parked.insert(offset, rendered);
        Live::Parked { first }
    }

    /// Where `key` stands here; `None` if no socket here follows it.
    pub fn cursor(&self, key: &StreamKey) -> Option<Cursor> {
        let entry = self.entry(key)?;
        let state = entry.lock().ok()?;
        Some(Cursor {
            epoch: state.epoch.clone(),
            offset: state.cursor,
            gap: !state.parked.is_empty(),
        })
    }

    /// Hands over entries read from the store (ascending offsets of `epoch`): those after
    /// the cursor, in order, moving the cursor over holes the store has (deleted entries).
    /// Parked entries they pass or unblock are handled too. Ignored if the stream is no
    /// longer here or is in another epoch now.
    pub fn replay(
        &self,
        key: &StreamKey,
        epoch: &str,
        entries: impl IntoIterator<Item = (u64, Arc<Rendered>)>,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        let Some(entry) = self.entry(key) else {
            return fanout;
        };
        let Ok(mut state) = entry.lock() else {
            return fanout;
        };
        if state.epoch.as_deref() != Some(epoch) {
            return fanout;
        }
        for (offset, rendered) in entries {
            if offset > state.cursor {
                fanout.add(state.advance(offset, &rendered));
            }
        }
        fanout
    }

    /// Gives up on the entries between the cursor and `head`: moves the cursor there (in
    /// `head`'s epoch), forgets what is parked, and tells every socket of the stream: a
    /// native socket gets `resync` (`resync` renders it), any other is asked to close
    /// with `code` so its client re-reads what it missed. How many sockets.
    pub fn skip_to(
        &self,
        key: &StreamKey,
        head: &Position,
        code: u16,
        resync: &Utf8Bytes,
    ) -> usize {
        let Some(entry) = self.entry(key) else {
            return 0;
        };
        let Ok(mut state) = entry.lock() else {
            return 0;
        };
        state.epoch = Some(head.epoch.clone());
        state.cursor = head.offset;
        state.parked.clear();
        for sub in &mut state.subscribers {
            sub.after = head.offset;
            tell_resync(&sub.conn, code, resync);
        }
        state.subscribers.len()
    }

    /// Tells the native sockets of an ephemeral stream that they may have missed entries
    /// (nothing can be replayed); how many sockets were told.
    pub fn resync_ephemeral(&self, key: &StreamKey, resync: &Utf8Bytes) -> usize {
        let Some(entry) = self.entry(key) else {
            return 0;
        };
        let Ok(state) = entry.lock() else {
            return 0;
        };
        if state.epoch.is_some() {
            return 0;
        }
        // Ephemeral streams are at most once: only the native protocol has a frame to
        // say so; Mozilla and VPush sockets keep their connection (a close would send a
        // whole cluster reconnecting after one router blip).
        let mut told = 0;
        for sub in &state.subscribers {
            if sub.conn.dialect == Dialect::Native {
                sub.conn.offer(resync);
                told += 1;
            }
        }
        told
    }

    /// Follows a stream that was ephemeral here from `head` on (its history was turned on).
    pub fn join_head(&self, key: &StreamKey, head: &Position) {
        if let Some(entry) = self.entry(key)
            && let Ok(mut state) = entry.lock()
            && state.epoch.is_none()
        {
            state.epoch = Some(head.epoch.clone());
            state.cursor = head.offset;
        }
    }

    /// Follows `key` in a new `epoch` from its start: the stream was reset (recreated, or
    /// its history lost), so the old offsets mean nothing.
    pub fn reset_epoch(&self, key: &StreamKey, epoch: &str) {
        if let Some(entry) = self.entry(key)
            && let Ok(mut state) = entry.lock()
            && state.epoch.as_deref() != Some(epoch)
        {
            state.epoch = Some(epoch.to_owned());
            state.cursor = 0;
            state.parked.clear();
            for sub in &mut state.subscribers {
                sub.after = 0;
            }
        }
    }

    /// Closes (4003) the sockets following `key` whose tokens were issued before
    /// `before_us`; how many.
    pub fn logout(&self, key: &StreamKey, before_us: i64) -> usize {
        let Some(entry) = self.entry(key) else {
            return 0;
        };
        let Ok(state) = entry.lock() else {
            return 0;
        };
        let mut closed = 0;
        for sub in state
            .subscribers
            .iter()
            .filter(|s| s.conn.issued_us < before_us)
        {
            sub.conn.close(close_code::LOGGED_OUT);
            closed += 1;
        }
        closed
    }

    /// Whether some socket here follows `key` in the default delivery mode (not `ack`).
    pub fn any_default_mode(&self, key: &StreamKey) -> bool {
        self.entry(key)
            .and_then(|e| {
                e.lock()
                    .ok()
                    .map(|s| s.subscribers.iter().any(|sub| !sub.conn.ack_mode()))
            })
            .unwrap_or(false)
    }

    /// How many sockets here follow `key`.
    pub fn subscriber_count(&self, key: &StreamKey) -> usize {
        self.entry(key)
            .and_then(|e| e.lock().ok().map(|s| s.subscribers.len()))
            .unwrap_or(0)
    }

    /// The streams some socket here follows.
    pub fn stream_keys(&self) -> Vec<StreamKey> {
        self.streams
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Asks every socket to close with `code`, and refuses registrations from now on.
    /// (Sockets that follow no stream yet close when they try to.)
    pub fn close_all(&self, code: u16) {
        self.closed.store(true, Ordering::Release);
        if let Ok(map) = self.streams.read() {
            for entry in map.values() {
                if let Ok(state) = entry.lock() {
                    state.subscribers.iter().for_each(|s| s.conn.close(code));
                }
            }
        }
    }

    /// True once `close_all` ran.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A native socket gets the `resync` frame; others are closed with `code`.
fn tell_resync(conn: &Conn, code: u16, resync: &Utf8Bytes) {
    match conn.dialect {
        Dialect::Native => {
            conn.offer(resync);
        }
        Dialect::Mozilla | Dialect::VPush | Dialect::SockJs | Dialect::ThunderRaw => {
            conn.close(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::message::{Delivery, QueueBody, QueueMessage};

    const LIMITS: QueueLimits = QueueLimits {
        frames: 100,
        bytes: 1 << 20,
        parked: 4,
    };

    fn hub(limits: QueueLimits) -> Hub {
        Hub::new(limits, 3)
    }

    fn at(offset: u64) -> Position {
        Position {
            epoch: "e".into(),
            offset,
        }
    }

    fn key(name: &str) -> StreamKey {
        StreamKey::mozilla_token(name)
    }

    /// An entry of token stream `token` whose Mozilla frame's title is `title`.
    fn entry(token: &str, position: Position, title: &str) -> Arc<Rendered> {
        let message = QueueMessage {
            key: title.into(),
            queue: "q".into(),
            token: token.into(),
            created_us: 0,
            body: QueueBody {
                title: Some(title.into()),
                ..QueueBody::default()
            },
        };
        Arc::new(Rendered::new(
            Delivery::queue_message(message, position),
            None,
            "",
        ))
    }

    fn register(hub: &Hub) -> (Arc<Conn>, mpsc::Receiver<Utf8Bytes>) {
        hub.register(Dialect::Mozilla, 0).unwrap()
    }

    fn drain(rx: &mut mpsc::Receiver<Utf8Bytes>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            let frame: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
            out.push(frame["key"].as_str().unwrap().to_owned());
        }
        out
    }

    fn live(hub: &Hub, stream: &str, offset: u64) -> Live {
        hub.offer_live(entry(stream, at(offset), &offset.to_string()))
    }

    #[test]
    fn delivers_in_order_once_to_every_follower_of_the_stream() {
        let hub = hub(LIMITS);
        let (a, mut rx_a) = register(&hub);
        let (b, mut rx_b) = register(&hub);
        let (c, mut rx_c) = register(&hub);
        assert!(hub.subscribe(&a, &key("t"), Some(&at(0))).new);
        assert!(!hub.subscribe(&b, &key("t"), Some(&at(0))).new);
        hub.subscribe(&c, &key("other"), Some(&at(0)));
        assert!(matches!(live(&hub, "t", 1), Live::Delivered(f) if f.queued == 2));
        assert_eq!(live(&hub, "t", 1), Live::Duplicate, "a repeat is dropped");
        assert_eq!(drain(&mut rx_a), ["1"]);
        assert_eq!(drain(&mut rx_b), ["1"]);
        assert!(drain(&mut rx_c).is_empty());
        assert_eq!(live(&hub, "nobody", 1), Live::NotHere);
    }

    /// Sockets join a stream in any order of their ids (an older socket subscribing after
    /// newer ones), leave from the middle, and join again: each follower gets each entry
    /// once, and one who left gets nothing.
    #[test]
    fn followers_join_and_leave_in_any_order() {
        let hub = Hub::new(LIMITS, 10);
        let mut sockets: Vec<_> = (0..6).map(|_| register(&hub)).collect();
        for i in [3, 0, 5, 1, 4, 2] {
            hub.subscribe(&sockets[i].0, &key("t"), Some(&at(0)));
        }
        assert!(!hub.subscribe(&sockets[2].0, &key("t"), Some(&at(0))).new);
        assert!(hub.unsubscribe(&sockets[1].0, &key("t")));
        assert!(hub.unsubscribe(&sockets[4].0, &key("t")));
        assert!(!hub.unsubscribe(&sockets[4].0, &key("t")), "already left");
        assert_eq!(hub.subscriber_count(&key("t")), 4);
        assert!(matches!(live(&hub, "t", 1), Live::Delivered(f) if f.queued == 4));
        hub.subscribe(&sockets[1].0, &key("t"), Some(&at(1)));
        assert!(matches!(live(&hub, "t", 2), Live::Delivered(f) if f.queued == 5));
        let got: Vec<Vec<String>> = sockets.iter_mut().map(|(_, rx)| drain(rx)).collect();
        assert_eq!(got[0], ["1", "2"]);
        assert_eq!(got[1], ["2"], "joined again after 1");
        assert!(got[4].is_empty(), "left before both");
        for (conn, _) in &sockets {
            hub.unregister(conn);
        }
        assert_eq!(hub.subscriber_count(&key("t")), 0);
        assert!(
            hub.stream_keys().is_empty(),
            "the stream left with its last follower"
        );
    }

    #[test]
    fn out_of_order_entries_wait_for_the_gap_then_flow_in_order() {
        let hub = hub(LIMITS);
        let (a, mut rx) = register(&hub);
        hub.subscribe(&a, &key("t"), Some(&at(10)));
        assert_eq!(live(&hub, "t", 13), Live::Parked { first: true });
        assert_eq!(live(&hub, "t", 12), Live::Parked { first: false });
        assert_eq!(live(&hub, "t", 13), Live::Duplicate, "already parked");
        assert!(hub.cursor(&key("t")).unwrap().gap);
        assert!(matches!(live(&hub, "t", 11), Live::Delivered(f) if f.entries == 3));
        assert_eq!(drain(&mut rx), ["11", "12", "13"]);
        assert_eq!(
            hub.cursor(&key("t")).unwrap(),
            Cursor {
                epoch: Some("e".into()),
                offset: 13,
                gap: false
            }
        );
    }

    #[test]
    fn parking_is_bounded() {
        let hub = hub(LIMITS);
        let (a, _rx) = register(&hub);
        hub.subscribe(&a, &key("t"), Some(&at(0)));
        for offset in 2..6 {
            assert!(matches!(live(&hub, "t", offset), Live::Parked { .. }));
        }
        assert_eq!(live(&hub, "t", 6), Live::ParkFull);
    }

    #[test]
    fn a_replay_fills_gaps_skips_holes_and_what_was_delivered() {
        let hub = hub(LIMITS);
        let (a, mut rx) = register(&hub);
        hub.subscribe(&a, &key("t"), Some(&at(0)));
        live(&hub, "t", 1);
        live(&hub, "t", 6);
        // The store has 1..=5 but 3 was deleted; 1 was delivered live, 6 is parked.
        let read = [1, 2, 4, 5].map(|o| (o, entry("t", at(o), &format!("r{o}"))));
        let fanout = hub.replay(&key("t"), "e", read);
        assert_eq!(fanout.entries, 4, "2, 4, 5 and the parked 6");
        assert_eq!(drain(&mut rx), ["1", "r2", "r4", "r5", "6"]);
        assert_eq!(hub.cursor(&key("t")).unwrap().offset, 6);
        let other = [(7, entry("t", at(7), "x"))];
        assert_eq!(hub.replay(&key("t"), "other-epoch", other).entries, 0);
    }

    #[test]
    fn a_late_subscriber_gets_only_what_follows_its_head() {
        let hub = hub(LIMITS);
        let (early, mut rx_early) = register(&hub);
        hub.subscribe(&early, &key("t"), Some(&at(0)));
        // The late socket read head 3 while the edge's cursor was still at 0.
        let (late, mut rx_late) = register(&hub);
        hub.subscribe(&late, &key("t"), Some(&at(3)));
        for offset in 1..=4 {
            live(&hub, "t", offset);
        }
        assert_eq!(drain(&mut rx_early), ["1", "2", "3", "4"]);
        assert_eq!(drain(&mut rx_late), ["4"]);
    }

    #[test]
    fn a_resuming_socket_that_is_behind_must_catch_up_first() {
        let hub = hub(LIMITS);
        let (early, _rx) = register(&hub);
        hub.subscribe(&early, &key("t"), Some(&at(0)));
        for offset in 1..=5 {
            live(&hub, "t", offset);
        }
        let (late, mut rx) = register(&hub);
        assert_eq!(
            hub.join(&late, &key("t"), Some(&at(5)), 3),
            Err(Behind { cursor: 5 })
        );
        assert!(!late.follows(&key("t")));
        assert_eq!(
            hub.join(&late, &key("t"), Some(&at(5)), 5),
            Ok(Joined { new: false, at: 5 })
        );
        live(&hub, "t", 6);
        assert_eq!(drain(&mut rx), ["6"]);
    }

    #[test]
    fn a_live_subscriber_whose_head_the_edge_passed_joins_at_the_cursor() {
        let hub = hub(LIMITS);
        let (early, _rx) = register(&hub);
        hub.subscribe(&early, &key("t"), Some(&at(0)));
        // The late socket read head 3; entries 4 and 5 were handed over meanwhile.
        for offset in 1..=5 {
            live(&hub, "t", offset);
        }
        let (late, mut rx) = register(&hub);
        let joined = hub.subscribe(&late, &key("t"), Some(&at(3)));
        assert_eq!(joined, Joined { new: false, at: 5 });
        assert!(late.follows(&key("t")));
        live(&hub, "t", 6);
        assert_eq!(drain(&mut rx), ["6"]);
    }

    #[test]
    fn subscribing_twice_delivers_once() {
        let hub = hub(LIMITS);
        let (conn, mut rx) = register(&hub);
        hub.subscribe(&conn, &key("t"), Some(&at(0)));
        let again = hub.subscribe(&conn, &key("t"), Some(&at(0)));
        assert_eq!(again, Joined { new: false, at: 0 });
        live(&hub, "t", 1);
        assert_eq!(drain(&mut rx), ["1"]);
        assert!(hub.unsubscribe(&conn, &key("t")));
        assert!(!hub.follows(&key("t")));
    }

    #[test]
    fn skipping_tells_the_streams_sockets_and_resets_to_the_head() {
        let hub = hub(LIMITS);
        let (a, _rx) = register(&hub);
        hub.subscribe(&a, &key("t"), Some(&at(0)));
        live(&hub, "t", 5);
        let resync = Utf8Bytes::from_static("resync");
        assert_eq!(
            hub.skip_to(&key("t"), &at(20_000), close_code::RESYNC, &resync),
            1
        );
        assert_eq!(
            hub.cursor(&key("t")).unwrap(),
            Cursor {
                epoch: Some("e".into()),
                offset: 20_000,
                gap: false
            }
        );
        assert_eq!(a.close_code.load(Ordering::Acquire), close_code::RESYNC);
    }

    #[test]
    fn a_new_epoch_starts_over_and_old_epochs_are_refused() {
        let hub = hub(LIMITS);
        let (a, mut rx) = register(&hub);
        hub.subscribe(&a, &key("t"), Some(&at(7)));
        let other = Position {
            epoch: "f".into(),
            offset: 1,
        };
        assert_eq!(
            hub.offer_live(entry("t", other.clone(), "f1")),
            Live::OtherEpoch
        );
        hub.reset_epoch(&key("t"), "f");
        assert!(matches!(
            hub.offer_live(entry("t", other, "f1")),
            Live::Delivered(_)
        ));
        assert_eq!(drain(&mut rx), ["f1"]);
        assert_eq!(live(&hub, "t", 8), Live::OtherEpoch);
    }

    #[test]
    fn an_ephemeral_resync_tells_native_sockets_and_closes_none() {
        let hub = hub(LIMITS);
        let (native, mut rx) = hub.register(Dialect::Native, 0).unwrap();
        let (vpush, _rx) = hub.register(Dialect::VPush, 0).unwrap();
        hub.subscribe(&native, &key("t"), None);
        hub.subscribe(&vpush, &key("t"), None);
        let frame = Utf8Bytes::from_static(r#"{"type":"resync","channel":"t"}"#);
        assert_eq!(hub.resync_ephemeral(&key("t"), &frame), 1);
        assert_eq!(rx.try_recv().unwrap(), frame);
        assert_eq!(vpush.close_code.load(Ordering::Acquire), 0, "kept open");
        assert_eq!(native.close_code.load(Ordering::Acquire), 0, "kept open");
    }

    #[test]
    fn ephemeral_streams_hand_over_as_they_come_and_adopt_positions() {
        let hub = hub(LIMITS);
        let (a, mut rx) = register(&hub);
        hub.subscribe(&a, &key("t"), None);
        assert_eq!(hub.cursor(&key("t")).unwrap().epoch, None);
        let mut unpositioned = Rendered::new(entry("t", at(0), "x").delivery.clone(), None, "");
        unpositioned.delivery.position = None;
        let unpositioned = Arc::new(unpositioned);
        assert!(matches!(
            hub.offer_live(unpositioned.clone()),
            Live::Delivered(_)
        ));
        assert!(
            matches!(hub.offer_live(unpositioned), Live::Delivered(_)),
            "no dedup"
        );
        assert!(
            matches!(live(&hub, "t", 40), Live::Delivered(_)),
            "history turned on"
        );
        assert_eq!(live(&hub, "t", 40), Live::Duplicate);
        assert_eq!(drain(&mut rx), ["x", "x", "40"]);
    }

    #[test]
    fn the_publishing_socket_is_skipped() {
        let hub = hub(LIMITS);
        let (a, mut rx_a) = register(&hub);
        let (b, mut rx_b) = register(&hub);
        hub.subscribe(&a, &key("t"), Some(&at(0)));
        hub.subscribe(&b, &key("t"), Some(&at(0)));
        let from_a = Rendered::new(entry("t", at(1), "1").delivery.clone(), Some(a.id), "");
        hub.offer_live(Arc::new(from_a));
        assert!(drain(&mut rx_a).is_empty());
        assert_eq!(drain(&mut rx_b), ["1"]);
    }

    #[test]
    fn logout_closes_sockets_with_older_tokens() {
        let hub = hub(LIMITS);
        let (old, _rx1) = hub.register(Dialect::Native, 100).unwrap();
        let (new, _rx2) = hub.register(Dialect::Native, 300).unwrap();
        let user = key("user");
        hub.subscribe(&old, &user, None);
        hub.subscribe(&new, &user, None);
        assert_eq!(hub.logout(&user, 200), 1);
        assert_eq!(
            old.close_code.load(Ordering::Acquire),
            close_code::LOGGED_OUT
        );
        assert_eq!(new.close_code.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_socket_with_4008() {
        let hub = hub(QueueLimits {
            frames: 2,
            ..LIMITS
        });
        let (conn, _rx) = register(&hub);
        hub.subscribe(&conn, &key("t"), Some(&at(0)));
        for offset in 1..=2 {
            assert!(matches!(live(&hub, "t", offset), Live::Delivered(f) if f.queued == 1));
        }
        assert!(matches!(live(&hub, "t", 3), Live::Delivered(f) if f.overflowed == 1));
        assert_eq!(conn.closed().await, close_code::SLOW_CONSUMER);
    }

    #[tokio::test]
    async fn the_byte_bound_also_closes() {
        let frame_len = entry("t", at(1), "1")
            .frame(Dialect::Mozilla)
            .unwrap()
            .len();
        let hub = hub(QueueLimits {
            bytes: frame_len * 2 - 1,
            ..LIMITS
        });
        let (conn, mut rx) = register(&hub);
        hub.subscribe(&conn, &key("t"), Some(&at(0)));
        assert!(matches!(live(&hub, "t", 1), Live::Delivered(f) if f.queued == 1));
        conn.sent(&rx.recv().await.unwrap());
        assert!(
            matches!(live(&hub, "t", 2), Live::Delivered(f) if f.queued == 1),
            "bytes were released"
        );
        assert!(matches!(live(&hub, "t", 3), Live::Delivered(f) if f.overflowed == 1));
        assert_eq!(conn.closed().await, close_code::SLOW_CONSUMER);
    }

    #[test]
    fn limits_connections_and_unregisters() {
        let hub = hub(LIMITS);
        let conns: Vec<_> = (0..3).map(|_| register(&hub)).collect();
        for (conn, _) in &conns {
            hub.subscribe(conn, &key("t"), Some(&at(0)));
        }
        assert!(hub.register(Dialect::Native, 0).is_none());
        assert!(hub.is_full());
        assert!(hub.unsubscribe(&conns[0].0, &key("t")));
        assert!(!hub.unsubscribe(&conns[0].0, &key("t")));
        hub.unregister(&conns[0].0);
        hub.unregister(&conns[0].0);
        assert_eq!(hub.len(), 2);
        assert!(hub.register(Dialect::Native, 0).is_some());
        for (conn, _) in &conns[1..] {
            hub.unregister(conn);
        }
        assert!(!hub.follows(&key("t")));
        assert!(hub.stream_keys().is_empty());
    }

    #[test]
    fn a_closed_hub_takes_no_new_sockets() {
        let hub = hub(LIMITS);
        let (conn, _rx) = register(&hub);
        hub.subscribe(&conn, &key("t"), Some(&at(0)));
        hub.close_all(close_code::GOING_AWAY);
        assert!(hub.register(Dialect::Native, 0).is_none());
        assert!(hub.is_closed());
        assert_eq!(
            conn.close_code.load(Ordering::Acquire),
            close_code::GOING_AWAY
        );
        hub.unregister(&conn);
        assert!(hub.is_empty());
    }
}
