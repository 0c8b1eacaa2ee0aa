//! The Redis backend (SPEC §8, issue "Redis store and scaling out"): every concern on one
//! Redis server (or a primary with replicas behind Sentinel; not Redis Cluster — the Lua
//! scripts name keys they compute), shared by any number of processes on any number of
//! hosts. Being built concern by concern; `store::open` does not offer it until every
//! concern is here (see `Stores` in `super`).
//!
//! # Connection
//! One `redis::aio::ConnectionManager` per process (multiplexed, reconnects in the
//! background). Its first command after a dropped connection fails with an I/O error and
//! the next one succeeds (NOTES.md), so every call is tried once more on an I/O error
//! (`RedisStore::call`); what still fails is `StoreError::Unavailable`. Every transition
//! that reads before it writes is one Lua script (atomic on the server).
//!
//! # Key schema
//! Every key starts with the configured prefix `P` (default `herald:`), so several
//! clusters or tests share one server. App ids hold no `:`, node ids none either; a key
//! has at most one free-form part (a user id or channel name), always last.
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
//!
//! Durability is the server's: run it with `appendonly yes` and `appendfsync always` for
//! the SQLite default's guarantee that a 2xx survives a power cut (docs/operations.md).

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Ping, StoreError, StoreResult};

mod channels;
mod contexts;
mod live;
mod messages;
mod queues;
mod revocations;
mod streams;
mod templates;
mod webhooks;

/// How long a command may wait for its answer, and a connection for its handshake.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Every concern on one Redis server.
#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    prefix: String,
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
        })
    }

    /// `prefix` + `rest`.
    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Runs `op` on the connection, once more after an I/O error (the manager has begun
    /// reconnecting by then).
    async fn call<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match op(self.con.clone()).await {
            Ok(value) => Ok(value),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                op(self.con.clone()).await.map_err(store_error)
            }
            Err(e) => Err(store_error(e)),
        }
    }
}

impl RedisStore {
    /// Sends `cmd` (again after an I/O error).
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> StoreResult<T> {
        self.call(|mut con| async move { cmd.query_async(&mut con).await })
            .await
    }

    /// Sends `pipe` (again after an I/O error; make it `atomic()` when it writes more than
    /// one key that must change together).
    async fn pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> StoreResult<T> {
        self.call(|mut con| async move { pipe.query_async(&mut con).await })
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
        self.call(|mut con| async move {
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

    /// Streams of the kinds Redis keeps from Redis, the others from SQLite.
    struct Hybrid {
        redis: RedisStore,
        sqlite: std::sync::Arc<dyn crate::store::Streams>,
    }

    #[async_trait]
    impl crate::store::Streams for Hybrid {
        async fn stream_heads(
            &self,
            streams: &[crate::stream::StreamKey],
        ) -> StoreResult<Vec<(crate::stream::StreamKey, crate::stream::Position)>> {
            let mut heads = self.redis.stream_heads(streams).await?;
            heads.extend(self.sqlite.stream_heads(streams).await?);
            Ok(heads)
        }

        async fn read_stream(
            &self,
            stream: &crate::stream::StreamKey,
            after: u64,
            limit: usize,
            now_us: i64,
        ) -> StoreResult<Vec<crate::message::Delivery>> {
            match stream.kind() {
                Some(
                    crate::stream::StreamKind::Channel { .. }
                    | crate::stream::StreamKind::MozillaToken(_)
                    | crate::stream::StreamKind::Inbox { .. },
                ) => self.redis.read_stream(stream, after, limit, now_us).await,
                _ => self.sqlite.read_stream(stream, after, limit, now_us).await,
            }
        }
    }

    /// The SQLite stores with the concerns Redis has so far swapped in.
    async fn stores(redis: &RedisStore, dir: &tempfile::TempDir) -> crate::store::Stores {
        let config = crate::config::StoreConfig {
            sqlite_path: dir.path().join("herald.db"),
            sqlite_live_path: dir.path().join("herald-live.db"),
            ..crate::config::StoreConfig::default()
        };
        let mut stores = crate::store::open(&config).await.unwrap();
        let r = std::sync::Arc::new(redis.clone());
        stores.streams = std::sync::Arc::new(Hybrid {
            redis: redis.clone(),
            sqlite: stores.streams.clone(),
        });
        stores.channels = r.clone();
        stores.queues = r.clone();
        stores.messages = r.clone();
        stores.webhooks = r.clone();
        stores.revocations = r.clone();
        stores.templates = r.clone();
        stores.contexts = r.clone();
        stores.nodes = r.clone();
        stores.presence = r;
        stores
    }

    #[tokio::test]
    async fn passes_the_conformance_of_the_concerns_it_has() {
        let server = RedisServer::start();
        let redis = RedisStore::open(&server.url(), "t:").await.unwrap();
        redis.ping().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = stores(&redis, &dir).await;
        conformance::channels::run(&s).await;
        conformance::queues::run(&s).await;
        conformance::messages::run(&s).await;
        conformance::webhooks::run(&s).await;
        conformance::revocations::run(&s).await;
        conformance::templates::run(&s).await;
        conformance::contexts::run(&s).await;
        conformance::nodes::run(&s).await;
        conformance::presence::run(&s).await;
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

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_open_error() {
        let port = crate::testing::free_port();
        let url = format!("redis://127.0.0.1:{port}/");
        let e = RedisStore::open(&url, "t:").await.err().unwrap();
        assert!(e.to_string().starts_with("store.redis_url"), "{e}");
    }
}
