//! Who a socket is and what it follows: a Mozilla token's socket follows the token's
//! stream; a connection token's socket (native, Socrate, VPush) follows its user's stream
//! (user messages, force logout) and the channels it subscribed to, within what its token
//! allows. Opening a session registers the socket with the hub, counts its presence and
//! records a `connected` webhook event; closing it undoes both and records
//! `disconnected`.

use std::collections::HashMap;
use std::sync::Arc;

use api::service::webhooks::SocketEvent;
use common::clock::now_us;
use common::ids::ChannelName;
use common::jwt::Grant;
use common::store::{EventKind, MAX_HEADS, StoreError};
use common::stream::{Position, StreamKey};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::EdgeState;
use crate::frames::Dialect;
use crate::hub::{Conn, Joined};
use crate::presence::Key;

/// Who the socket is.
#[derive(Debug, Clone)]
pub enum Identity {
    /// A Mozilla token's socket, following the token's stream.
    Mozilla,
    /// A connection token's socket.
    Token(Box<Grant>),
}

/// One socket's session: its hub entry, dialect, identity and channels.
pub struct Session {
    pub conn: Arc<Conn>,
    pub dialect: Dialect,
    pub identity: Identity,
    /// Channels subscribed to, with their stream keys.
    pub channels: HashMap<ChannelName, StreamKey>,
    /// For a connection token's socket: the position of its user's inbox when the socket
    /// joined it (`None` while the inbox has no messages yet); the `PENDING` messages up to
    /// it are the socket's to fetch (`inbox::pending`), later ones arrive live.
    pub inbox_head: Option<Position>,
    /// For a connection token's socket: its token's topics, as registered with the edge's
    /// broadcast members (`None` for a probe, which is no member).
    topics: Option<Arc<[String]>>,
}

/// Why a session could not open.
#[derive(Debug)]
pub enum OpenError {
    /// At the connection limit, or draining.
    Full,
    Store(StoreError),
}

impl Session {
    /// The token's grant, for a connection token's socket.
    pub fn grant(&self) -> Option<&Grant> {
        match &self.identity {
            Identity::Token(grant) => Some(grant),
            Identity::Mozilla => None,
        }
    }

    /// The native `welcome` frame (only native sockets get one).
    pub fn welcome(&self, edge: &EdgeState) -> Option<Utf8Bytes> {
        if self.dialect != Dialect::Native {
            return None;
        }
        let grant = self.grant()?;
        let mut channels: Vec<&str> = self.channels.keys().map(ChannelName::as_str).collect();
        channels.sort_unstable();
        let heartbeat = edge.config.ping_interval_ms / 1000;
        let frame = json!({
            "type": "welcome",
            "connectionId": format!("{}-{}", edge.node_id, self.conn.id),
            "user": grant.user,
            "node": edge.node_id,
            "channels": channels,
            "heartbeat": heartbeat,
        });
        Some(Utf8Bytes::from(frame.to_string()))
    }

    /// Whether the token allows `channel`.
    pub fn may_use(&self, channel: &ChannelName) -> bool {
        self.grant()
            .is_some_and(|g| g.channels.iter().any(|p| p.matches(channel)))
    }

    fn presence_key(&self, channel: Option<&ChannelName>) -> Option<Key> {
        let grant = self.grant().filter(|g| !g.probe)?;
        Some(Key {
            app: grant.app.clone(),
            user: grant.user.clone(),
            channel: channel.cloned(),
        })
    }

    /// Records that the socket follows `channel` now.
    pub fn joined(&mut self, edge: &EdgeState, channel: ChannelName, key: StreamKey) {
        if let Some(presence) = self.presence_key(Some(&channel)) {
            edge.presence.add(presence);
        }
        self.channels.insert(channel, key);
    }

    /// Stops following `channel`; false if it did not.
    pub fn leave(&mut self, edge: &EdgeState, channel: &ChannelName) -> bool {
        let Some(key) = self.channels.remove(channel) else {
            return false;
        };
        edge.hub.unsubscribe(&self.conn, &key);
        if let Some(presence) = self.presence_key(Some(channel)) {
            edge.presence.remove(presence);
        }
        true
    }

    /// Unregisters the socket and takes its presence back.
    pub fn close(self, edge: &EdgeState) {
        edge.unregister(&self.conn);
        if let Some(grant) = self.grant() {
            edge.socket_event(grant, EventKind::Disconnected);
            if let Some(topics) = &self.topics {
                edge.members.remove(&grant.app, &grant.user, topics);
            }
        }
        if let Some(user) = self.presence_key(None) {
            for channel in self.channels.keys() {
                if let Some(key) = self.presence_key(Some(channel)) {
                    edge.presence.remove(key);
                }
            }
            edge.presence.remove(user);
        }
    }
}

/// The stream of a user's sockets.
pub fn user_stream(grant: &Grant) -> StreamKey {
    StreamKey::user(&grant.app, &grant.user)
}

impl EdgeState {
    /// Opens the session of a Mozilla token's socket, following the token's stream from
    /// `head` on.
    pub fn open_mozilla(
        &self,
        key: &StreamKey,
        head: &Position,
    ) -> Result<(Session, mpsc::Receiver<Utf8Bytes>), OpenError> {
        let (conn, frames) = self.register(Dialect::Mozilla, 0)?;
        self.follow(&conn, key, Some(head));
        let session = Session {
            conn,
            dialect: Dialect::Mozilla,
            identity: Identity::Mozilla,
            channels: HashMap::new(),
            inbox_head: None,
            topics: None,
        };
        Ok((session, frames))
    }

    /// Opens the session of a connection token's socket: follows its user's stream and
    /// subscribes the exact channel names its token lists (a Thunderpush socket names its
    /// channels with `SUBSCRIBE` instead).
    pub async fn open_token(
        &self,
        grant: Grant,
        dialect: Dialect,
    ) -> Result<(Session, mpsc::Receiver<Utf8Bytes>), OpenError> {
        let listed: Vec<(ChannelName, StreamKey)> = grant
            .channels
            .iter()
            .filter(|_| !dialect.is_thunderpush())
            .filter_map(|p| p.exact())
            .map(|c| {
                let key = StreamKey::channel(&grant.app, &c);
                (c, key)
            })
            .collect();
        let inbox = StreamKey::inbox(&grant.app, &grant.user);
        let keys: Vec<StreamKey> = listed
            .iter()
            .map(|(_, k)| k.clone())
            .chain(std::iter::once(inbox.clone()))
            .collect();
        let mut heads: HashMap<StreamKey, Position> = HashMap::with_capacity(keys.len());
        for batch in keys.chunks(MAX_HEADS) {
            let read = self.services.stores.streams.stream_heads(batch).await;
            heads.extend(read.map_err(OpenError::Store)?);
        }
        let (conn, frames) = self.register(dialect, grant.issued_us)?;
        if grant.ack {
            conn.set_ack_mode();
        }
        self.hub.subscribe(&conn, &user_stream(&grant), None);
        self.hub
            .subscribe(&conn, &StreamKey::broadcast(&grant.app), None);
        // A probe socket is no broadcast recipient: it registers no topics.
        let topics = (!grant.probe).then(|| {
            let topics: Arc<[String]> = Arc::from(grant.topics.clone());
            self.members.add(&grant.app, &grant.user, topics.clone());
            topics
        });
        let inbox_head = heads.get(&inbox).cloned();
        self.follow(&conn, &inbox, inbox_head.as_ref());
        let mut session = Session {
            conn,
            dialect,
            identity: Identity::Token(Box::new(grant)),
            channels: HashMap::new(),
            inbox_head,
            topics,
        };
        if let Some(user) = session.presence_key(None) {
            self.presence.add(user);
        }
        if let Some(grant) = session.grant() {
            self.socket_event(grant, EventKind::Connected);
        }
        for (channel, key) in listed {
            if session.channels.contains_key(&channel) {
                continue;
            }
            self.follow(&session.conn, &key, heads.get(&key));
            session.joined(self, channel, key);
        }
        Ok((session, frames))
    }

    /// Makes `conn` follow `key` live from `head` (`hub::Hub::subscribe`); a resumable
    /// stream this edge follows anew gets a recovery check, in case entries were published
    /// between reading `head` and subscribing.
    pub fn follow(&self, conn: &Arc<Conn>, key: &StreamKey, head: Option<&Position>) -> Joined {
        let joined = self.hub.subscribe(conn, key, head);
        if joined.new && head.is_some() {
            self.recovery.check_new(key);
        }
        joined
    }

    fn register(
        &self,
        dialect: Dialect,
        issued_us: i64,
    ) -> Result<(Arc<Conn>, mpsc::Receiver<Utf8Bytes>), OpenError> {
        let Some(registered) = self.hub.register(dialect, issued_us) else {
            self.metrics.sockets.with_label_values(&["full"]).inc();
            return Err(OpenError::Full);
        };
        self.metrics.sockets.with_label_values(&["accepted"]).inc();
        self.metrics.connections.set(self.hub.len() as i64);
        Ok(registered)
    }

    /// Queues a user's socket opening or closing for the app's webhook (`events`: recorded
    /// in batches, off the socket's path); a probe socket's (the monitor's canary) are not
    /// the app's to hear of.
    fn socket_event(&self, grant: &Grant, kind: EventKind) {
        if grant.probe {
            return;
        }
        self.socket_events.push(SocketEvent {
            app: grant.app.clone(),
            user: grant.user.clone(),
            kind,
            at_us: now_us(),
        });
    }

    /// How many sockets of `user` this edge holds (per-user limit).
    pub fn user_sockets(&self, grant: &Grant) -> usize {
        self.hub.subscriber_count(&user_stream(grant))
    }
}
