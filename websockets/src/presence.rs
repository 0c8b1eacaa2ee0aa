//! This edge's share of cluster-wide presence (SPEC §4 Users): how many of its sockets each
//! user has, in all and per channel. Sockets change the counts in memory; a flusher writes
//! the counts that changed to the store every `websockets.presence_flush_ms`, in one batch
//! off the durable writer (`common::store::Presence`). The store forgets this node's rows
//! when the node leaves or dies, so nothing here needs undoing on a crash.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ids::{AppId, ChannelName, UserId};
use common::store::PresenceCount;
use tokio_util::sync::CancellationToken;

use crate::EdgeState;

/// A user's presence, in all (`channel: None`) or in one channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub app: AppId,
    pub user: UserId,
    pub channel: Option<ChannelName>,
}

#[derive(Default)]
struct Counts {
    counts: HashMap<Key, u64>,
    changed: HashSet<Key>,
}

/// The counts, and which changed since the last flush.
#[derive(Default)]
pub struct Tracker {
    state: Mutex<Counts>,
}

impl Tracker {
    /// One more socket for `key`.
    pub fn add(&self, key: Key) {
        self.change(key, |n| n + 1);
    }

    /// One socket fewer for `key`.
    pub fn remove(&self, key: Key) {
        self.change(key, |n| n.saturating_sub(1));
    }

    fn change(&self, key: Key, f: impl FnOnce(u64) -> u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let count = state.counts.entry(key.clone()).or_default();
        *count = f(*count);
        if *count == 0 {
            state.counts.remove(&key);
        }
        state.changed.insert(key);
    }

    /// The counts that changed since the last call (0 for a key that went away).
    fn take_changes(&self) -> Vec<PresenceCount> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        let changed = std::mem::take(&mut state.changed);
        changed
            .into_iter()
            .map(|key| PresenceCount {
                connections: state.counts.get(&key).copied().unwrap_or(0),
                app: key.app,
                user: key.user,
                channel: key.channel,
            })
            .collect()
    }

    /// Marks counts as changed again (a flush that failed).
    fn restore(&self, counts: &[PresenceCount]) {
        if let Ok(mut state) = self.state.lock() {
            for c in counts {
                state.changed.insert(Key {
                    app: c.app.clone(),
                    user: c.user.clone(),
                    channel: c.channel.clone(),
                });
            }
        }
    }
}

/// Writes changed counts, and the socket events waiting (`events::flush`), every `every`
/// until `shutdown`.
pub async fn run(edge: Arc<EdgeState>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let changes = edge.presence.take_changes();
        if !changes.is_empty()
            && let Err(e) = edge
                .services
                .stores
                .presence
                .set_presence(&edge.node_id, &changes)
                .await
        {
            tracing::warn!(error = %e, "cannot write presence; retrying");
            edge.presence.restore(&changes);
        }
        crate::events::flush(&edge).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, channel: Option<&str>) -> Key {
        Key {
            app: AppId::parse("dev").unwrap(),
            user: UserId::parse(user).unwrap(),
            channel: channel.map(|c| ChannelName::parse(c).unwrap()),
        }
    }

    #[test]
    fn changes_are_reported_once_with_their_current_count() {
        let tracker = Tracker::default();
        tracker.add(key("a", None));
        tracker.add(key("a", None));
        tracker.add(key("a", Some("news")));
        let mut changes = tracker.take_changes();
        changes.sort_by_key(|c| c.channel.is_some());
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].connections, 2);
        assert!(tracker.take_changes().is_empty(), "nothing changed since");
        tracker.remove(key("a", Some("news")));
        tracker.remove(key("a", Some("news")));
        let changes = tracker.take_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].connections, 0, "gone: the row is removed");
        tracker.restore(&changes);
        assert_eq!(tracker.take_changes().len(), 1, "a failed flush is retried");
    }
}
