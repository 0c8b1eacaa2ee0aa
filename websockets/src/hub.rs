//! The edge's local connection index: which sockets of which token live in this process,
//! and the bounded outbound queue of each. Delivery never waits on a socket: a frame goes
//! into the socket's queue or, when the queue is over either bound (frames or bytes), the
//! socket is told to close with 4008 (slow consumer) and the frame is dropped for it.
//!
//! Each socket remembers the dedup keys of the last `RECENT` deliveries, so a recovery pass
//! that replays from the store never sends a socket what it already received live.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Deliveries remembered per socket for de-duplication (recovery replays at most this
/// many per token, so a replay never outruns the memory).
pub const RECENT: usize = 256;

/// Close codes the hub asks sockets to close with.
pub mod close_code {
    /// Node draining: reconnect elsewhere.
    pub const GOING_AWAY: u16 = 1001;
    /// Outbound queue over its bound.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// Bounds of each socket's outbound queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
}

/// One live socket as the hub sees it.
pub struct Conn {
    pub id: u64,
    pub token: String,
    pub opened_us: i64,
    outbound: mpsc::Sender<Utf8Bytes>,
    queued_bytes: AtomicUsize,
    recent: Mutex<RecentKeys>,
    close_code: AtomicU16,
    closing: Notify,
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

    /// Queues a frame unless this delivery was already sent; false if not queued.
    fn offer(&self, dedup: u64, frame: &Utf8Bytes, limits: QueueLimits) -> Offer {
        if !self
            .recent
            .lock()
            .map(|mut r| r.remember(dedup))
            .unwrap_or(true)
        {
            return Offer::Duplicate;
        }
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
    Duplicate,
    Overflow,
    Gone,
}

/// Counts of one delivery across a token's sockets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    pub queued: usize,
    pub duplicates: usize,
    pub overflowed: usize,
}

/// A bounded FIFO set of dedup-key hashes.
#[derive(Default)]
struct RecentKeys {
    keys: VecDeque<u64>,
}

impl RecentKeys {
    /// False if `key` was seen; otherwise remembers it (forgetting the oldest past `RECENT`).
    fn remember(&mut self, key: u64) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        if self.keys.len() == RECENT {
            self.keys.pop_front();
        }
        self.keys.push_back(key);
        true
    }
}

/// Hashes a dedup key (a message key is random; collisions among 256 are negligible).
pub fn dedup_hash(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Every socket of this process, by token.
pub struct Hub {
    by_token: RwLock<HashMap<String, Vec<Arc<Conn>>>>,
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
            by_token: RwLock::new(HashMap::new()),
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

    /// Registers a socket of `token`; `None` at the connection limit or once draining.
    pub fn register(
        &self,
        token: &str,
        opened_us: i64,
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
            token: token.to_owned(),
            opened_us,
            outbound,
            queued_bytes: AtomicUsize::new(0),
            recent: Mutex::new(RecentKeys::default()),
            close_code: AtomicU16::new(0),
            closing: Notify::new(),
        });
        if let Ok(mut map) = self.by_token.write() {
            map.entry(conn.token.clone())
                .or_default()
                .push(conn.clone());
        }
        Some((conn, frames))
    }

    /// Removes a socket (idempotent).
    pub fn unregister(&self, conn: &Conn) {
        let Ok(mut map) = self.by_token.write() else {
            return;
        };
        let Some(list) = map.get_mut(&conn.token) else {
            return;
        };
        let before = list.len();
        list.retain(|c| c.id != conn.id);
        if list.len() < before {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        if list.is_empty() {
            map.remove(&conn.token);
        }
    }

    /// True if some socket of `token` is here (cheap pre-check before rendering a frame).
    pub fn has_token(&self, token: &str) -> bool {
        self.by_token
            .read()
            .map(|m| m.contains_key(token))
            .unwrap_or(false)
    }

    /// Offers `frame` to every socket of `token`. With `created_us`, sockets opened more
    /// than `margin_us` after it are skipped (recovery does not replay older history to
    /// new sockets).
    pub fn deliver(
        &self,
        token: &str,
        dedup: &str,
        frame: &Utf8Bytes,
        created: Option<(i64, i64)>,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        // Offering never blocks, so holding the read lock across the loop is cheap.
        let Ok(map) = self.by_token.read() else {
            return fanout;
        };
        let Some(conns) = map.get(token) else {
            return fanout;
        };
        let hash = dedup_hash(dedup);
        for conn in conns {
            if let Some((created_us, margin_us)) = created
                && created_us < conn.opened_us.saturating_sub(margin_us)
            {
                continue;
            }
            match conn.offer(hash, frame, self.limits) {
                Offer::Queued => fanout.queued += 1,
                Offer::Duplicate => fanout.duplicates += 1,
                Offer::Overflow => fanout.overflowed += 1,
                Offer::Gone => {}
            }
        }
        fanout
    }

    /// The tokens with sockets here now.
    pub fn tokens(&self) -> Vec<String> {
        self.by_token
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Asks every socket to close with `code`, and refuses registrations from now on.
    pub fn close_all(&self, code: u16) {
        self.closed.store(true, Ordering::Release);
        if let Ok(map) = self.by_token.read() {
            for conn in map.values().flatten() {
                conn.close(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(frames: usize, bytes: usize) -> Hub {
        Hub::new(QueueLimits { frames, bytes }, 3)
    }

    fn frame(text: &str) -> Utf8Bytes {
        Utf8Bytes::from(text.to_owned())
    }

    #[tokio::test]
    async fn delivers_to_every_socket_of_a_token_once() {
        let hub = hub(10, 1 << 20);
        let (_a, mut rx_a) = hub.register("t", 0).unwrap();
        let (_b, mut rx_b) = hub.register("t", 0).unwrap();
        let (_c, mut rx_c) = hub.register("other", 0).unwrap();
        let fanout = hub.deliver("t", "m:1", &frame("hello"), None);
        assert_eq!(fanout.queued, 2);
        assert_eq!(rx_a.recv().await.unwrap().as_str(), "hello");
        assert_eq!(rx_b.recv().await.unwrap().as_str(), "hello");
        assert!(rx_c.try_recv().is_err());
        let again = hub.deliver("t", "m:1", &frame("hello"), None);
        assert_eq!(
            (again.queued, again.duplicates),
            (0, 2),
            "a replay is de-duplicated"
        );
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_socket_with_4008() {
        let hub = hub(2, 1 << 20);
        let (conn, _rx) = hub.register("t", 0).unwrap();
        for i in 0..2 {
            assert_eq!(
                hub.deliver("t", &format!("m:{i}"), &frame("x"), None)
                    .queued,
                1
            );
        }
        assert_eq!(hub.deliver("t", "m:9", &frame("x"), None).overflowed, 1);
        assert_eq!(conn.closed().await, close_code::SLOW_CONSUMER);
    }

    #[tokio::test]
    async fn the_byte_bound_also_closes() {
        let hub = hub(100, 10);
        let (conn, mut rx) = hub.register("t", 0).unwrap();
        assert_eq!(hub.deliver("t", "m:1", &frame("12345678"), None).queued, 1);
        let sent = rx.recv().await.unwrap();
        conn.sent(&sent);
        assert_eq!(
            hub.deliver("t", "m:2", &frame("12345678"), None).queued,
            1,
            "bytes were released"
        );
        assert_eq!(
            hub.deliver("t", "m:3", &frame("12345678"), None).overflowed,
            1
        );
        assert_eq!(conn.closed().await, close_code::SLOW_CONSUMER);
    }

    #[test]
    fn limits_connections_and_unregisters() {
        let hub = hub(1, 1);
        let conns: Vec<_> = (0..3).map(|_| hub.register("t", 0).unwrap()).collect();
        assert!(hub.register("t", 0).is_none());
        assert!(hub.is_full());
        hub.unregister(&conns[0].0);
        hub.unregister(&conns[0].0);
        assert_eq!(hub.len(), 2);
        assert!(hub.register("u", 0).is_some());
        for (conn, _) in &conns[1..] {
            hub.unregister(conn);
        }
        assert!(!hub.has_token("t"));
    }

    #[tokio::test]
    async fn recovery_skips_sockets_opened_after_the_message() {
        let hub = hub(10, 1 << 20);
        let (_old, mut old_rx) = hub.register("t", 100).unwrap();
        let (_new, mut new_rx) = hub.register("t", 5_000).unwrap();
        let fanout = hub.deliver("t", "m:1", &frame("x"), Some((1_000, 500)));
        assert_eq!(fanout.queued, 1);
        assert!(old_rx.recv().await.is_some());
        assert!(new_rx.try_recv().is_err());
    }

    #[test]
    fn a_closed_hub_takes_no_new_sockets() {
        let hub = hub(1, 1);
        let (conn, _rx) = hub.register("t", 0).unwrap();
        hub.close_all(close_code::GOING_AWAY);
        assert!(hub.register("t", 0).is_none());
        assert_eq!(hub.len(), 1);
        assert_eq!(hub.tokens(), ["t"]);
        hub.unregister(&conn);
        assert!(hub.is_empty());
    }

    #[test]
    fn recent_keys_are_bounded() {
        let mut recent = RecentKeys::default();
        for k in 0..(RECENT as u64 + 10) {
            assert!(recent.remember(k));
        }
        assert_eq!(recent.keys.len(), RECENT);
        assert!(recent.remember(0), "the oldest were forgotten");
        assert!(!recent.remember(RECENT as u64 + 9));
    }
}
