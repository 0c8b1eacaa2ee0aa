//! The Redis backend (SPEC §8, issue "Redis store and scaling out"): every concern on one
//! Redis server (or a primary with replicas behind Sentinel; not Redis Cluster — the Lua
//! scripts name keys they compute), shared by any number of processes on any number of
//! hosts; `store.backend = "redis"`. Each concern is in its own file with its keys in a
//! table at the top; the ones of this file are below.
//!
//! # Connection
//! One `redis::aio::ConnectionManager` per process (multiplexed, reconnects in the
//! background). Its first command after a dropped connection fails with an I/O error and
//! the next one succeeds (NOTES.md), so every call is tried once more on an I/O error
//! (`RedisStore::call`); what still fails is `StoreError::Unavailable`. Every transition
//! that reads before it writes is one Lua script (atomic on the server). A script run
//! again after its reply was lost gives its first result: appends recognise their message
//! (`published:…`, the queue message's key, the message id) and a status transition its
//! own time, so a retry never appends or records twice.
//!
//! # Key schema
//! Every key starts with the configured prefix `P` (`store.redis_prefix`, default
//! `herald:`), so several clusters or tests share one server. App, node, token, queue and
//! message ids hold no `:`; a free-form part (a user id, a channel name) comes last, or is
//! followed by `|` and more only where it cannot hold a `|` (channel names). Streams are
//! `stream:<S>` hashes (`epoch`, `head`, `last_us`, `active`) for every stream key `S`
//! (`c/…`, `t/…`, `i/…`); per-stream keys only — the sets that list apps, nodes or
//! channels for the background sweeps change only with configuration or membership. The
//! keys of the live concerns and the small ones are here; `channels.rs`, `queues.rs`,
//! `messages.rs`, `webhooks.rs` and `broadcasts.rs` open with theirs.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P revoked:<app>` | zset | user → µs before which their tokens are refused (`ZADD GT`) |
//! | `P template:<app>:<id>` | hash | `content`, `ttl`, `created_us` |
//! | `P context:<app>:<id>` | hash | `name`, `created_us` (VPush contexts) |
//! | `P contexts:<app>` | zset | context id by `created_us` (listing) |
//! | `P nodes` | set | ids of registered edges |
//! | `P node:<id>` | hash | `url`, `connections`, `status`, `started_us`, `heartbeat_us` (the edge's); `checked_us`, `check_failures`, `monitor_down` (the monitor's) |
//! | `P presence:<node>` | set | the presence keys below that `node` holds |
//! | `P presence:<node>:<app>:users` | hash | user → sockets on `node` |
//! | `P presence:<node>:<app>:ch:<channel>` | hash | user → sockets subscribed on `node` |
//! | `P presence_nodes` | set | nodes holding presence (pruning finds those gone) |
//! | `P probe` | string | written by `/health` probes, expires after 10 s |
//!
//! Durability is the server's: run it with `appendonly yes` and `appendfsync always` for
//! the SQLite default's guarantee that a 2xx survives a power cut (docs/operations.md).

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::metrics::observe;
use super::{Ping, StoreError, StoreResult};

mod broadcasts;
mod buckets;
mod channels;
mod contexts;
mod live;
mod messages;
mod queues;
mod revocations;
mod streams;
mod templates;
mod webhooks;
mod webpush;

/// How long a command may wait for its answer, and a connection for its handshake.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Every concern on one Redis server.
#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    prefix: String,
    /// How long an edge's registry hash and presence keys outlive its last heartbeat.
    live_ttl: Duration,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`, `rediss://…` is not compiled in); keys
    /// start with `prefix`.
    ///
    /// # Errors
    /// The URL does not parse, or the server does not answer within a few seconds.
    pub async fn open(url: &str, prefix: &str) -> anyhow::Result<RedisStore> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("store.redis_url {url:?}: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(6)
            .set_max_delay(Duration::from_millis(500));
        let con = tokio::time::timeout(
            TIMEOUT * 3,
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("store.redis_url {url:?}: no answer"))?
        .map_err(|e| anyhow::anyhow!("store.redis_url {url:?}: {e}"))?;
        Ok(RedisStore {
            con,
            prefix: prefix.to_owned(),
            live_ttl: Duration::from_millis(
                crate::config::StoreConfig::default().redis_live_ttl_ms,
            ),
        })
    }

    /// How long an edge's registry hash and presence keys outlive its last heartbeat
    /// (`store.redis_live_ttl_ms`; at least 1 ms).
    #[must_use]
    pub fn with_live_ttl(mut self, ttl: Duration) -> RedisStore {
        self.live_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// `live_ttl` in whole milliseconds, for `PEXPIRE`.
    fn live_ttl_ms(&self) -> u64 {
        u64::try_from(self.live_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// `prefix` + `rest`.
    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Runs `op` on the connection, once more after an I/O error (the manager has begun
    /// reconnecting by then); its time and outcome are recorded as store operation `kind`
    /// (`store::metrics`).
    async fn call<T, F, Fut>(&self, kind: &str, op: F) -> StoreResult<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = match op(self.con.clone()).await {
            Ok(value) => Ok(value),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                op(self.con.clone()).await.map_err(store_error)
            }
            Err(e) => Err(store_error(e)),
        };
        observe(kind, started, &result);
        result
    }
}

impl RedisStore {
    /// Sends `cmd` (again after an I/O error).
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> StoreResult<T> {
        self.call("command", |mut con| async move {
            cmd.query_async(&mut con).await
        })
        .await
    }

    /// Sends `pipe` (again after an I/O error; make it `atomic()` when it writes more than
    /// one key that must change together).
    async fn pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> StoreResult<T> {
        self.call("pipeline", |mut con| async move {
            pipe.query_async(&mut con).await
        })
        .await
    }

    /// Runs `script` with `keys` and `args` (`EVALSHA`, loading it on first use; again
    /// after an I/O error).
    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> StoreResult<T> {
        self.call("script", |mut con| async move {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            for arg in args {
                invocation.arg(arg);
            }
            invocation.invoke_async(&mut con).await
        })
        .await
    }
}

/// A hash's fields as `HGETALL` or a script returns them (`field, value, field, …`),
/// taken one by one into a record.
pub(super) struct Fields<'a> {
    what: &'static str,
    fields: std::collections::HashMap<&'a str, &'a str>,
}

impl<'a> Fields<'a> {
    /// The fields of a `what` (named in errors).
    pub(super) fn new(what: &'static str, flat: &'a [String]) -> Fields<'a> {
        let fields = flat
            .chunks_exact(2)
            .map(|kv| (kv[0].as_str(), kv[1].as_str()))
            .collect();
        Fields { what, fields }
    }

    pub(super) fn take(&mut self, name: &str) -> Option<String> {
        self.fields.remove(name).map(str::to_owned)
    }

    /// An integer field; absent is `None`, anything else not an integer an error.
    pub(super) fn int(&mut self, name: &str) -> StoreResult<Option<i64>> {
        self.take(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| StoreError::Internal(format!("{} {name}: {v:?}", self.what)))
            })
            .transpose()
    }
}

/// Whether a create-if-absent script created (`1`) or found the id taken.
fn created(reply: i64, what: &str, id: &str) -> StoreResult<()> {
    if reply == 1 {
        Ok(())
    } else {
        Err(StoreError::Internal(format!("{what} {id} already exists")))
    }
}

/// A Redis error as a `StoreError`: what the client deems worth retrying (connection
/// trouble, a loading or read-only server, `TRYAGAIN`) is `Unavailable`, the rest (a
/// script error, an unexpected reply) `Internal`.
fn store_error(e: redis::RedisError) -> StoreError {
    if e.is_timeout() || !matches!(e.retry_method(), redis::RetryMethod::NoRetry) {
        StoreError::Unavailable(format!("redis: {e}"))
    } else {
        StoreError::Internal(format!("redis: {e}"))
    }
}

#[async_trait]
impl Ping for RedisStore {
    /// A write, so a read-only replica or a full disk (`MISCONF`) fails the probe.
    async fn ping(&self) -> StoreResult<()> {
        let key = self.key(format_args!("probe"));
        self.query(redis::cmd("SET").arg(&key).arg(1).arg("PX").arg(10_000))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;
    use crate::testing::RedisServer;

    #[tokio::test]
    async fn passes_the_store_conformance_suite() {
        let server = RedisServer::start();
        let config = crate::config::StoreConfig {
            backend: crate::config::StoreBackend::Redis,
            redis_url: server.url(),
            redis_prefix: "conformance:".into(),
            ..crate::config::StoreConfig::default()
        };
        let stores = crate::store::open(&config).await.unwrap();
        conformance::run_all(stores).await;
    }

    /// `call` runs a script again after an I/O error, which may follow a run whose reply
    /// was lost: the writes that append must then give their first result, not append twice.
    #[tokio::test]
    async fn a_repeated_append_returns_its_first_result() {
        use crate::ids::{AppId, ChannelName, UserId};
        use crate::message::{ChannelMessage, QueueBody, QueueMessage};
        use crate::store::{
            AddressedMessage, Channels, History, MessageBody, MessageStatus, Messages, Queues,
        };
        let server = RedisServer::start();
        let redis = RedisStore::open(&server.url(), "t:").await.unwrap();
        let app = AppId::parse("retry").unwrap();
        let channel = ChannelName::parse("news").unwrap();
        let history = History {
            size: Some(10),
            ttl: None,
        };
        redis
            .configure_channel(&app, &channel, history, 1)
            .await
            .unwrap();
        let message = ChannelMessage {
            id: "c1".into(),
            app: app.clone(),
            channel: channel.clone(),
            data: serde_json::json!(1).into(),
            created_us: 5,
            expires_us: None,
            replace_id: None,
        };
        let first = redis.publish_channel_message(&message, None).await.unwrap();
        let again = redis.publish_channel_message(&message, None).await.unwrap();
        assert_eq!(first, again);
        let kept = redis
            .channel_history(&app, &channel, 0, 10, 10)
            .await
            .unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");

        redis.create_token("tok", "own", 1).await.unwrap();
        let queued = QueueMessage {
            key: "k1".into(),
            queue: "own".into(),
            token: "tok".into(),
            created_us: 5,
            body: QueueBody::default(),
        };
        let first = redis.add_queue_message(&queued).await.unwrap();
        let again = redis.add_queue_message(&queued).await.unwrap();
        assert_eq!(first, again);

        let addressed = AddressedMessage {
            id: "m1".into(),
            app: app.clone(),
            recipient: UserId::parse("u1").unwrap(),
            foreign_id: None,
            body: MessageBody::Text("hi".into()),
            topic: None,
            status: MessageStatus::Pending,
            created_us: 5,
            expires_us: None,
            delivered_us: None,
            delivered_via: None,
            cancelled_us: None,
            expired_us: None,
            global_message_id: None,
            bucket: None,
        };
        let first = redis
            .create_messages(std::slice::from_ref(&addressed))
            .await
            .unwrap();
        let again = redis.create_messages(&[addressed]).await.unwrap();
        assert_eq!(first, again);
        let delivered = redis
            .transition_message(&app, "m1", MessageStatus::Delivered, 7)
            .await
            .unwrap();
        let repeated = redis
            .transition_message(&app, "m1", MessageStatus::Delivered, 7)
            .await
            .unwrap();
        assert!(matches!(delivered, Some(crate::store::Transition::Done(_))));
        assert_eq!(delivered, repeated, "the same transition again is done");
        let later = redis
            .transition_message(&app, "m1", MessageStatus::Delivered, 8)
            .await
            .unwrap();
        assert!(matches!(later, Some(crate::store::Transition::Refused(_))));
    }

    #[tokio::test]
    async fn a_restarted_server_costs_one_unavailable_call_at_most() {
        let mut server = RedisServer::start();
        let redis = RedisStore::open(&server.url(), "t:").await.unwrap();
        redis.ping().await.unwrap();
        server.restart();
        // The first call may see the dropped connection; the retry (or the next call)
        // reconnects.
        let mut errors = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while redis.ping().await.is_err() {
            errors += 1;
            assert!(std::time::Instant::now() < deadline, "never reconnected");
        }
        assert!(errors <= 1, "{errors} failed calls");
    }

    /// An edge's registry hash and presence keys stay while it heartbeats — longer than
    /// their lease, and for presence written once and never again — and all expire by
    /// themselves once it stops, with no monitor pruning.
    #[tokio::test]
    async fn a_silent_edges_live_keys_expire_without_a_monitor() {
        use crate::ids::{AppId, ChannelName, UserId};
        use crate::store::{Alive, NodeHeartbeat, NodeStatus, Nodes, Presence, PresenceCount};
        let server = RedisServer::start();
        let ttl = Duration::from_millis(600);
        let redis = RedisStore::open(&server.url(), "t:")
            .await
            .unwrap()
            .with_live_ttl(ttl);
        let app = AppId::parse("live").unwrap();
        let user = UserId::parse("alice").unwrap();
        let started = std::time::Instant::now();
        let beat = |now_us: i64| NodeHeartbeat {
            id: "edge-1".into(),
            url: "ws://10.0.0.2:8888".into(),
            connections: 1,
            status: NodeStatus::Up,
            started_us: 1,
            now_us,
        };
        redis.upsert_node(&beat(1)).await.unwrap();
        let counts = [
            PresenceCount {
                app: app.clone(),
                user: user.clone(),
                channel: None,
                connections: 1,
            },
            PresenceCount {
                app: app.clone(),
                user: user.clone(),
                channel: Some(ChannelName::parse("news").unwrap()),
                connections: 1,
            },
        ];
        redis.set_presence("edge-1", &counts).await.unwrap();
        let alive = Alive {
            heartbeat_after_us: 0,
        };
        let keys = || async {
            let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg("t:*")).await.unwrap();
            keys.into_iter()
                .filter(|k| k.starts_with("t:node:") || k.starts_with("t:presence:"))
                .count()
        };
        assert_eq!(
            keys().await,
            4,
            "the node hash, its presence set and two hashes"
        );
        // Heartbeats every 100 ms for four leases: everything stays.
        let mut n = 1;
        while started.elapsed() < ttl * 4 {
            n += 1;
            redis.upsert_node(&beat(n)).await.unwrap();
            assert_eq!(redis.user_connections(&app, &user, alive).await.unwrap(), 1);
            assert_eq!(redis.nodes().await.unwrap().len(), 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(keys().await, 4);
        // Silence: every key goes within a lease or so, and the readers forget the node.
        let deadline = std::time::Instant::now() + ttl * 20;
        while keys().await > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "live keys never expired"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(redis.user_connections(&app, &user, alive).await.unwrap(), 0);
        assert!(redis.nodes().await.unwrap().is_empty());
        let members: Vec<String> = redis
            .query(redis::cmd("SMEMBERS").arg("t:nodes"))
            .await
            .unwrap();
        assert!(members.is_empty(), "{members:?}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_open_error() {
        let port = crate::testing::free_port();
        let url = format!("redis://127.0.0.1:{port}/");
        let e = RedisStore::open(&url, "t:").await.err().unwrap();
        assert!(e.to_string().starts_with("store.redis_url"), "{e}");
    }
}
