//! The edge's local index: which sockets of this process follow which stream, where each
//! stream stands, and the bounded outbound queue of each socket.
//!
//! A stream here (a Mozilla token's messages, SPEC §7) has one cursor: the offset of the
//! last entry handed to its sockets. An entry is handed over only when its offset is the
//! cursor + 1, under the stream's lock, so every socket gets a stream's entries once and in
//! order whether they come live from a router or from the store (recovery): older offsets
//! are duplicates and dropped, newer ones are parked (bounded) until the gap before them
//! fills — usually within moments, when two API processes or two tasks published out of
//! order — or until recovery reads the gap from the store. Correctness never depends on a
//! memory of recent message ids.
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

/// Close codes the hub asks sockets to close with.
pub mod close_code {
    /// Node draining: reconnect elsewhere.
    pub const GOING_AWAY: u16 = 1001;
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
    /// The streams this socket follows (keys into the hub's index).
    streams: Mutex<Vec<StreamKey>>,
    outbound: mpsc::Sender<Utf8Bytes>,
    queued_bytes: AtomicUsize,
    close_code: AtomicU16,
    closing: Notify,
    /// Counted in the hub until `unregister`.
    registered: AtomicBool,
}

impl Conn {
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

    /// Queues a frame without waiting.
    fn offer(&self, frame: &Utf8Bytes, limits: QueueLimits) -> Offer {
        let len = frame.len();
        if self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len > limits.bytes {
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
    /// The `outcome` label of `live_deliveries_total`.
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
    pub epoch: String,
    /// Offset of the last entry handed over.
    pub offset: u64,
    /// Some entry after a gap is parked.
    pub gap: bool,
}

/// A socket following a stream, and from which offset on it wants entries.
struct Subscriber {
    conn: Arc<Conn>,
    /// Entries at or before this offset predate the subscription.
    after: u64,
}

struct StreamState {
    epoch: String,
    cursor: u64,
    parked: BTreeMap<u64, Utf8Bytes>,
    subscribers: Vec<Subscriber>,
}

impl StreamState {
    /// Hands `frame` (the entry at `offset`) to every subscriber that wants it.
    fn fan_out(&self, offset: u64, frame: &Utf8Bytes, limits: QueueLimits) -> Fanout {
        let mut fanout = Fanout {
            entries: 1,
            ..Fanout::default()
        };
        for sub in self.subscribers.iter().filter(|s| offset > s.after) {
            match sub.conn.offer(frame, limits) {
                Offer::Queued => fanout.queued += 1,
                Offer::Overflow => fanout.overflowed += 1,
                Offer::Gone => {}
            }
        }
        fanout
    }

    /// Hands over the entry at `offset` (which must be after the cursor) and moves the
    /// cursor to it, then whatever parked entries follow without a gap.
    fn advance(&mut self, offset: u64, frame: &Utf8Bytes, limits: QueueLimits) -> Fanout {
        let mut fanout = self.fan_out(offset, frame, limits);
        self.cursor = offset;
        while let Some(entry) = self.parked.first_entry() {
            if *entry.key() > self.cursor + 1 {
                break;
            }
            let (next, frame) = entry.remove_entry();
            if next == self.cursor + 1 {
                fanout.add(self.fan_out(next, &frame, limits));
                self.cursor = next;
            }
        }
        fanout
    }
}

/// Every socket of this process, by the streams they follow.
pub struct Hub {
    streams: RwLock<HashMap<StreamKey, Arc<Mutex<StreamState>>>>,
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
    pub fn register(&self) -> Option<(Arc<Conn>, mpsc::Receiver<Utf8Bytes>)> {
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
            streams: Mutex::new(Vec::new()),
            outbound,
            queued_bytes: AtomicUsize::new(0),
            close_code: AtomicU16::new(0),
            closing: Notify::new(),
            registered: AtomicBool::new(true),
        });
        Some((conn, frames))
    }

    /// Makes `conn` follow `key` from `head` on (the stream's position when the socket
    /// subscribed: it gets the entries after it). True when this edge did not follow the
    /// stream before: its cursor starts at `head`, and a recovery check should confirm
    /// that no entry slipped past in between.
    pub fn subscribe(&self, conn: &Arc<Conn>, key: &StreamKey, head: &Position) -> bool {
        let Ok(mut map) = self.streams.write() else {
            return false;
        };
        let mut created = false;
        let entry = map.entry(key.clone()).or_insert_with(|| {
            created = true;
            Arc::new(Mutex::new(StreamState {
                epoch: head.epoch.clone(),
                cursor: head.offset,
                parked: BTreeMap::new(),
                subscribers: Vec::new(),
            }))
        });
        if let Ok(mut state) = entry.lock() {
            // A head from another epoch than the edge's (a reset the edge has not seen
            // yet) says nothing about its offsets: take everything.
            let after = if state.epoch == head.epoch {
                head.offset
            } else {
                0
            };
            state.subscribers.push(Subscriber {
                conn: conn.clone(),
                after,
            });
        }
        if let Ok(mut streams) = conn.streams.lock() {
            streams.push(key.clone());
        }
        // `close_all` sets `closed` before it walks the index: a socket that subscribed
        // after the walk sees the flag here.
        if self.is_closed() {
            conn.close(close_code::GOING_AWAY);
        }
        created
    }

    /// Removes a socket from every stream it follows (idempotent).
    pub fn unregister(&self, conn: &Conn) {
        let keys = conn
            .streams
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        if let Ok(mut map) = self.streams.write() {
            for key in keys {
                let empty = map.get(&key).is_some_and(|entry| {
                    entry.lock().is_ok_and(|mut state| {
                        state.subscribers.retain(|s| s.conn.id != conn.id);
                        state.subscribers.is_empty()
                    })
                });
                if empty {
                    map.remove(&key);
                }
            }
        }
        if conn.registered.swap(false, Ordering::AcqRel) {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn entry(&self, key: &StreamKey) -> Option<Arc<Mutex<StreamState>>> {
        self.streams.read().ok()?.get(key).cloned()
    }

    /// True if some socket here follows `key` (cheap pre-check before rendering a frame).
    pub fn follows(&self, key: &StreamKey) -> bool {
        self.streams
            .read()
            .map(|m| m.contains_key(key))
            .unwrap_or(false)
    }

    /// Offers a delivery that just arrived from a router; `position` is `None` for an
    /// ephemeral one, which is handed over at once.
    pub fn offer_live(
        &self,
        key: &StreamKey,
        position: Option<&Position>,
        frame: Utf8Bytes,
    ) -> Live {
        let Some(entry) = self.entry(key) else {
            return Live::NotHere;
        };
        let Ok(mut state) = entry.lock() else {
            return Live::NotHere;
        };
        let Some(position) = position else {
            return Live::Delivered(state.fan_out(0, &frame, self.limits));
        };
        if position.epoch != state.epoch {
            return Live::OtherEpoch;
        }
        let offset = position.offset;
        if offset <= state.cursor {
            return Live::Duplicate;
        }
        if offset == state.cursor + 1 {
            return Live::Delivered(state.advance(offset, &frame, self.limits));
        }
        if state.parked.contains_key(&offset) {
            return Live::Duplicate;
        }
        if state.parked.len() >= self.limits.parked {
            return Live::ParkFull;
        }
        let first = state.parked.is_empty();
        state.parked.insert(offset, frame);
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
        entries: impl IntoIterator<Item = (u64, Utf8Bytes)>,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        let Some(entry) = self.entry(key) else {
            return fanout;
        };
        let Ok(mut state) = entry.lock() else {
            return fanout;
        };
        if state.epoch != epoch {
            return fanout;
        }
        for (offset, frame) in entries {
            if offset > state.cursor {
                fanout.add(state.advance(offset, &frame, self.limits));
            }
        }
        fanout
    }

    /// Gives up on the entries between the cursor and `head`: moves the cursor there (in
    /// `head`'s epoch), forgets what is parked, and asks every socket of the stream to
    /// close with `code` so its client re-reads what it missed. How many sockets.
    pub fn skip_to(&self, key: &StreamKey, head: &Position, code: u16) -> usize {
        let Some(entry) = self.entry(key) else {
            return 0;
        };
        let Ok(mut state) = entry.lock() else {
            return 0;
        };
        state.epoch = head.epoch.clone();
        state.cursor = head.offset;
        state.parked.clear();
        for sub in &mut state.subscribers {
            sub.after = head.offset;
            sub.conn.close(code);
        }
        state.subscribers.len()
    }

    /// Follows `key` in a new `epoch` from its start: the stream was reset (recreated, or
    /// its history lost), so the old offsets mean nothing.
    pub fn reset_epoch(&self, key: &StreamKey, epoch: &str) {
        if let Some(entry) = self.entry(key)
            && let Ok(mut state) = entry.lock()
            && state.epoch != epoch
        {
            state.epoch = epoch.to_owned();
            state.cursor = 0;
            state.parked.clear();
            for sub in &mut state.subscribers {
                sub.after = 0;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueueLimits = QueueLimits {
        frames: 100,
        bytes: 1 << 20,
        parked: 4,
    };

    fn hub(limits: QueueLimits) -> Hub {
        Hub::new(limits, 3)
    }

    fn frame(text: &str) -> Utf8Bytes {
        Utf8Bytes::from(text.to_owned())
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

    fn drain(rx: &mut mpsc::Receiver<Utf8Bytes>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            out.push(f.as_str().to_owned());
        }
        out
    }

    fn live(hub: &Hub, stream: &StreamKey, offset: u64) -> Live {
        hub.offer_live(stream, Some(&at(offset)), frame(&offset.to_string()))
    }

    #[test]
    fn delivers_in_order_once_to_every_follower_of_the_stream() {
        let hub = hub(LIMITS);
        let t = key("t");
        let (a, mut rx_a) = hub.register().unwrap();
        let (b, mut rx_b) = hub.register().unwrap();
        let (c, mut rx_c) = hub.register().unwrap();
        assert!(hub.subscribe(&a, &t, &at(0)));
        assert!(!hub.subscribe(&b, &t, &at(0)));
        hub.subscribe(&c, &key("other"), &at(0));
        assert!(matches!(live(&hub, &t, 1), Live::Delivered(f) if f.queued == 2));
        assert_eq!(live(&hub, &t, 1), Live::Duplicate, "a repeat is dropped");
        assert_eq!(drain(&mut rx_a), ["1"]);
        assert_eq!(drain(&mut rx_b), ["1"]);
        assert!(drain(&mut rx_c).is_empty());
        assert_eq!(live(&hub, &key("nobody"), 1), Live::NotHere);
    }

    #[test]
    fn out_of_order_entries_wait_for_the_gap_then_flow_in_order() {
        let hub = hub(LIMITS);
        let t = key("t");
        let (a, mut rx) = hub.register().unwrap();
        hub.subscribe(&a, &t, &at(10));
        assert_eq!(live(&hub, &t, 13), Live::Parked { first: true });
        assert_eq!(live(&hub, &t, 12), Live::Parked { first: false });
        assert_eq!(live(&hub, &t, 13), Live::Duplicate, "already parked");
        assert!(hub.cursor(&t).unwrap().gap);
        assert!(matches!(live(&hub, &t, 11), Live::Delivered(f) if f.entries == 3));
        assert_eq!(drain(&mut rx), ["11", "12", "13"]);
        assert_eq!(
            hub.cursor(&t).unwrap(),
            Cursor {
                epoch: "e".into(),
                offset: 13,
                gap: false
            }
        );
    }

    #[test]
    fn parking_is_bounded() {
        let hub = hub(LIMITS);
        let t = key("t");
        let (a, _rx) = hub.register().unwrap();
        hub.subscribe(&a, &t, &at(0));
        for offset in 2..6 {
            assert!(matches!(live(&hub, &t, offset), Live::Parked { .. }));
        }
        assert_eq!(live(&hub, &t, 6), Live::ParkFull);
    }

    #[test]
    fn a_replay_fills_gaps_skips_holes_and_what_was_delivered() {
        let hub = hub(LIMITS);
        let t = key("t");
        let (a, mut rx) = hub.register().unwrap();
        hub.subscribe(&a, &t, &at(0));
        live(&hub, &t, 1);
        live(&hub, &t, 6);
        // The store has 1..=5 but 3 was deleted; 1 was delivered live, 6 is parked.
        let read = [1, 2, 4, 5].map(|o| (o, frame(&format!("r{o}"))));
        let fanout = hub.replay(&t, "e", read);
        assert_eq!(fanout.entries, 4, "2, 4, 5 and the parked 6");
        assert_eq!(drain(&mut rx), ["1", "r2", "r4", "r5", "6"]);
        assert_eq!(hub.cursor(&t).unwrap().offset, 6);
        assert_eq!(hub.replay(&t, "other-epoch", [(7, frame("x"))]).entries, 0);
    }

    #[test]
    fn a_late_subscriber_gets_only_what_follows_its_head() {
        let hub = hub(LIMITS);
        let t = key("t");
        let (early, mut rx_early) = hub.register().unwrap();
        hub.subscribe(&early, &t, &at(0));
        // The late socket read head 3 while the edge's cursor was still at 0.
        let (late, mut rx_late) = hub.register().unwrap();
        hub.subscribe(&late, &t, &at(3));
        for offset in 1..=4 {
            live(&hub, &t, offset);
        }
        assert_eq!(drain(&mut rx_early), ["1", "2", "3", "4"]);
        assert_eq!(drain(&mut rx_late), ["4"]);
    }

    #[test]
    fn skipping_closes_the_streams_sockets_and_resets_to_the_head() {
        let hub = hub(LIMITS);
        let t = key("t");
        let (a, _rx) = hub.register().unwrap();
        hub.subscribe(&a, &t, &at(0));
        live(&hub, &t, 5);
        assert_eq!(hub.skip_to(&t, &at(20_000), close_code::RESYNC), 1);
        assert_eq!(
            hub.cursor(&t).unwrap(),
            Cursor {
                epoch: "e".into(),
                offset: 20_000,
                gap: false
            }
        );
        assert_eq!(a.close_code.load(Ordering::Acquire), close_code::RESYNC);
    }

    #[test]
    fn a_new_epoch_starts_over_and_old_epochs_are_refused() {
        let hub = hub(LIMITS);
        let t = key("t");
        let (a, mut rx) = hub.register().unwrap();
        hub.subscribe(&a, &t, &at(7));
        let other = Position {
            epoch: "f".into(),
            offset: 1,
        };
        assert_eq!(
            hub.offer_live(&t, Some(&other), frame("f1")),
            Live::OtherEpoch
        );
        hub.reset_epoch(&t, "f");
        assert!(matches!(
            hub.offer_live(&t, Some(&other), frame("f1")),
            Live::Delivered(_)
        ));
        assert_eq!(drain(&mut rx), ["f1"]);
        assert_eq!(live(&hub, &t, 8), Live::OtherEpoch);
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_socket_with_4008() {
        let hub = hub(QueueLimits {
            frames: 2,
            ..LIMITS
        });
        let t = key("t");
        let (conn, _rx) = hub.register().unwrap();
        hub.subscribe(&conn, &t, &at(0));
        for offset in 1..=2 {
            assert!(matches!(live(&hub, &t, offset), Live::Delivered(f) if f.queued == 1));
        }
        assert!(matches!(live(&hub, &t, 3), Live::Delivered(f) if f.overflowed == 1));
        assert_eq!(conn.closed().await, close_code::SLOW_CONSUMER);
    }

    #[tokio::test]
    async fn the_byte_bound_also_closes() {
        let hub = hub(QueueLimits {
            bytes: 10,
            ..LIMITS
        });
        let t = key("t");
        let (conn, mut rx) = hub.register().unwrap();
        hub.subscribe(&conn, &t, &at(0));
        let big = frame("12345678");
        assert!(
            matches!(hub.offer_live(&t, Some(&at(1)), big.clone()), Live::Delivered(f) if f.queued == 1)
        );
        conn.sent(&rx.recv().await.unwrap());
        assert!(
            matches!(hub.offer_live(&t, Some(&at(2)), big.clone()), Live::Delivered(f) if f.queued == 1),
            "bytes were released"
        );
        assert!(
            matches!(hub.offer_live(&t, Some(&at(3)), big), Live::Delivered(f) if f.overflowed == 1)
        );
        assert_eq!(conn.closed().await, close_code::SLOW_CONSUMER);
    }

    #[test]
    fn limits_connections_and_unregisters() {
        let hub = hub(LIMITS);
        let t = key("t");
        let conns: Vec<_> = (0..3).map(|_| hub.register().unwrap()).collect();
        for (conn, _) in &conns {
            hub.subscribe(conn, &t, &at(0));
        }
        assert!(hub.register().is_none());
        assert!(hub.is_full());
        hub.unregister(&conns[0].0);
        hub.unregister(&conns[0].0);
        assert_eq!(hub.len(), 2);
        assert!(hub.register().is_some());
        for (conn, _) in &conns[1..] {
            hub.unregister(conn);
        }
        assert!(!hub.follows(&t));
        assert!(hub.stream_keys().is_empty());
    }

    #[test]
    fn a_closed_hub_takes_no_new_sockets() {
        let hub = hub(LIMITS);
        let (conn, _rx) = hub.register().unwrap();
        hub.subscribe(&conn, &key("t"), &at(0));
        hub.close_all(close_code::GOING_AWAY);
        assert!(hub.register().is_none());
        assert!(hub.is_closed());
        assert_eq!(
            conn.close_code.load(Ordering::Acquire),
            close_code::GOING_AWAY
        );
        hub.unregister(&conn);
        assert!(hub.is_empty());
    }
}
