//! Configuration shared by every Herald binary: one TOML file (`etc/herald.toml` in
//! development) that all processes of a cluster read, overridden per setting by
//! environment variables `HERALD__SECTION__KEY` (e.g. `HERALD__API__LISTEN=fd:3`).
//! Every section has defaults, unknown keys are errors, and `validate` reports every
//! problem at once so an operator fixes a file in one pass.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::net::ListenAddr;

/// Prefix of environment overrides; `__` separates section and key.
pub const ENV_PREFIX: &str = "HERALD__";

/// The whole configuration of one Herald cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub store: StoreConfig,
    pub cluster: ClusterConfig,
    pub router: RouterConfig,
    pub api: ApiConfig,
    pub websockets: EdgeConfig,
    pub monitor: MonitorConfig,
    pub webhooks: WebhooksConfig,
    pub webpush: WebPushConfig,
    pub apps: Vec<AppConfig>,
}

/// Which store backend holds the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded SQLite file: nothing to install, several processes on one machine.
    #[default]
    Sqlite,
    /// A Redis server (`store.redis_url`) shared by processes on any number of machines.
    Redis,
}

/// `[store]`: where state lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// SQLite database file of durable state; its directory is created on start.
    pub sqlite_path: PathBuf,
    /// SQLite database file of live state (edge registry, presence), written without
    /// fsync; deleted and recreated if damaged.
    pub sqlite_live_path: PathBuf,
    /// How long a write waits for another process's transaction before failing.
    pub busy_timeout_ms: u64,
    /// Concurrent read connections per process.
    pub sqlite_readers: usize,
    /// The Redis server of `backend = "redis"`: `redis://[user:password@]host:port/db`.
    pub redis_url: String,
    /// What every Redis key starts with, so that several clusters can share a server.
    pub redis_prefix: String,
    /// Milliseconds an edge's registry entry and presence keys live in Redis after its
    /// last heartbeat, so they go even if no monitor prunes them.
    pub redis_live_ttl_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            sqlite_path: PathBuf::from("var/herald.db"),
            sqlite_live_path: PathBuf::from("var/herald-live.db"),
            busy_timeout_ms: 5_000,
            sqlite_readers: 4,
            redis_url: "redis://127.0.0.1:6379/".into(),
            redis_prefix: "herald:".into(),
            redis_live_ttl_ms: 3_600_000,
        }
    }
}

/// `[cluster]`: how the processes find each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Every router's PULL endpoint; each API process PUSHes to all of them.
    pub router_pull: Vec<String>,
    /// Every router's PUB endpoint; each edge SUBscribes to all of them.
    pub router_pub: Vec<String>,
    /// An edge whose last heartbeat is older than this is not offered to clients.
    pub node_ttl_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            router_pull: vec!["tcp://127.0.0.1:9988".into()],
            router_pub: vec!["tcp://127.0.0.1:9989".into()],
            node_ttl_ms: 10_000,
        }
    }
}

/// `[router]`: what one `herald-router` binds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// ZeroMQ PULL endpoint the API processes connect to.
    pub pull: String,
    /// ZeroMQ PUB endpoint the edges connect to.
    pub publish: String,
    /// HTTP address for `/health` and `/metrics`.
    pub listen: ListenAddr,
    /// Heartbeat period on PUB; edges treat three missed beats as a possible loss.
    pub heartbeat_ms: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            pull: "tcp://127.0.0.1:9988".into(),
            publish: "tcp://127.0.0.1:9989".into(),
            listen: ListenAddr::Tcp(([127, 0, 0, 1], 5004).into()),
            heartbeat_ms: 1_000,
        }
    }
}

/// `[api]`: the HTTP API processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: ListenAddr,
    /// Base URL clients reach the API at; queue URLs are built from it.
    pub public_url: String,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Deliveries waiting for a router, per API process.
    pub publish_queue: usize,
    /// How long a request waits for room in that queue before the live push is dropped
    /// (the message is already stored; edges recover it).
    pub publish_timeout_ms: u64,
    /// Keep-alive beat to each router, so a dead router is noticed while idle.
    pub router_heartbeat_ms: u64,
    /// Open HTTP connections per process.
    pub max_connections: usize,
    /// Time allowed for in-flight requests after SIGTERM.
    pub drain_ms: u64,
    /// Requests per second each API key may make (`/api/v1`, Thunderpush, VPush); over
    /// it: 429 with `Retry-After`.
    pub rate_limit_per_second: u32,
    /// Requests a key may make at once above its rate.
    pub rate_limit_burst: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: ListenAddr::Tcp(([127, 0, 0, 1], 5001).into()),
            public_url: "http://127.0.0.1:5001".into(),
            max_body_bytes: 64 * 1024,
            publish_queue: 10_000,
            publish_timeout_ms: 5_000,
            router_heartbeat_ms: 1_000,
            max_connections: 10_000,
            drain_ms: 5_000,
            rate_limit_per_second: 1_000,
            rate_limit_burst: 2_000,
        }
    }
}

/// `[websockets]`: the edge processes holding client sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    pub listen: ListenAddr,
    /// URL clients reach this edge at (`ws://host:port`); registered in the store.
    pub public_url: String,
    /// Node id in the store; empty means `<hostname>-<pid>-<random>`.
    pub node_id: String,
    /// How often the edge writes its heartbeat and connection count to the store.
    pub heartbeat_ms: u64,
    pub handshake_timeout_ms: u64,
    pub ping_interval_ms: u64,
    pub pong_timeout_ms: u64,
    /// Largest frame or message a client may send.
    pub max_message_bytes: usize,
    /// Per-socket read buffer: the main memory cost of an idle socket.
    pub read_buffer_bytes: usize,
    /// Per-socket outbound queue bounds; over either, the socket is closed with 4008.
    pub outbound_queue_frames: usize,
    pub outbound_queue_bytes: usize,
    pub max_connections: usize,
    /// Sockets one user may hold on one edge; more get 429 at the handshake.
    pub max_user_connections: usize,
    /// How often the edge writes changed presence counts to the store.
    pub presence_flush_ms: u64,
    /// No envelope or heartbeat from a router for this long counts as a possible loss;
    /// while it lasts, every stream is checked against the store once per period.
    pub router_silence_ms: u64,
    /// How long an entry that arrived after a gap in its stream waits for the gap to fill
    /// (two publishers racing) before the gap is read from the store.
    pub reorder_window_ms: u64,
    /// A stream further behind the store than this many entries is not replayed: its
    /// sockets are told to re-read history (Mozilla dialect: close 4010).
    pub recovery_limit: u64,
    /// Time allowed to close sockets (1001) after SIGTERM.
    pub drain_ms: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            listen: ListenAddr::Tcp(([127, 0, 0, 1], 8888).into()),
            public_url: "ws://127.0.0.1:8888".into(),
            node_id: String::new(),
            heartbeat_ms: 2_000,
            handshake_timeout_ms: 10_000,
            ping_interval_ms: 25_000,
            pong_timeout_ms: 10_000,
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 4 * 1024,
            outbound_queue_frames: 1_000,
            outbound_queue_bytes: 1024 * 1024,
            max_connections: 20_000,
            max_user_connections: 100,
            presence_flush_ms: 250,
            router_silence_ms: 3_500,
            reorder_window_ms: 100,
            recovery_limit: 10_000,
            drain_ms: 5_000,
        }
    }
}

/// `[monitor]`: the cluster health process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    pub listen: ListenAddr,
    pub interval_ms: u64,
    /// A WebSocket handshake slower than this counts as a failed check.
    pub check_timeout_ms: u64,
    /// Consecutive failed checks before an edge is marked down.
    pub failures_before_down: u32,
    /// Rows of edges silent for this long are deleted.
    pub prune_after_ms: u64,
    /// Where the monitor keeps the token it presents to edges, so a restarted monitor
    /// reuses it instead of registering another.
    pub token_file: PathBuf,
    /// Whether each round also sends a canary (SPEC §9): one message published through
    /// the API (`api.public_url`) to the ephemeral channel `herald-canary`, which a socket
    /// on every edge must receive within `check_timeout_ms`.
    pub canary: bool,
    /// The app whose key publishes the canary and signs the monitor's connection token;
    /// empty: the first app with a key holding `messages:send` and `tokens:create`.
    pub canary_app: String,
    /// Routers whose `/health` each round reads (base URLs, `http://host:port`); empty:
    /// this file's `router.listen` when it is an address (the one router of circus.ini).
    pub routers: Vec<String>,
}

impl MonitorConfig {
    /// The router base URLs to check: `routers`, or `router`'s own HTTP address.
    pub fn router_urls(&self, router: &RouterConfig) -> Vec<String> {
        if !self.routers.is_empty() {
            return self
                .routers
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect();
        }
        match &router.listen {
            ListenAddr::Tcp(addr) => vec![format!("http://{addr}")],
            ListenAddr::Fd(_) => Vec::new(),
        }
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            listen: ListenAddr::Tcp(([127, 0, 0, 1], 5003).into()),
            interval_ms: 2_000,
            check_timeout_ms: 2_000,
            failures_before_down: 2,
            prune_after_ms: 3_600_000,
            token_file: PathBuf::from("var/monitor.token"),
            canary: true,
            canary_app: String::new(),
            routers: Vec::new(),
        }
    }
}

/// `[webhooks]`: how the API processes deliver webhook batches (SPEC §4 Webhooks;
/// docs/webhooks.md). Every API process runs a dispatcher; a lease in the store lets one
/// at a time send an app's batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Whether this process dispatches (the others still record events).
    pub dispatch: bool,
    /// How often an idle dispatcher looks for due batches.
    pub poll_ms: u64,
    /// A receiver that has not answered within this is a failed attempt.
    pub timeout_ms: u64,
    /// How long a claimed batch stays with its dispatcher; longer than `timeout_ms`, so a
    /// live dispatcher never loses it mid-request, and what a killed one delays.
    pub lease_ms: u64,
    /// Backoff after the first failure; doubles per failure up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Events older than this are dropped (counted in the webhook's `dropped`) instead of
    /// retried again.
    pub max_age_ms: u64,
    /// Most events kept per app while its receiver fails; the oldest beyond are dropped
    /// (counted).
    pub max_pending: u64,
    /// A PEM file of CA certificates trusted for `https://` receivers in addition to the
    /// system's roots (e.g. a company CA). Unset: the system's roots only.
    pub ca_file: Option<PathBuf>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            dispatch: true,
            poll_ms: 100,
            timeout_ms: 10_000,
            lease_ms: 30_000,
            backoff_min_ms: 1_000,
            backoff_max_ms: 300_000,
            max_age_ms: 24 * 3_600_000,
            max_pending: 100_000,
            ca_file: None,
        }
    }
}

/// `[webpush]`: sending addressed messages by Web Push to recipients with no live socket
/// (SPEC §5; docs/webpush.md). Every API process runs a sender; the push queue's leases
/// let one process at a time hold a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebPushConfig {
    /// Whether this process sends (the others still queue).
    pub dispatch: bool,
    /// The contact put in every VAPID signature (RFC 8292 §2.1 `sub`): a `mailto:` or
    /// `https:` URL a push service operator can reach you at. Unset: `api.public_url`.
    pub subject: Option<String>,
    /// How long an offline recipient's message waits before it goes out by Web Push, so a
    /// client that is reconnecting gets it on its socket instead.
    pub delay_ms: u64,
    /// How often an idle sender looks for due pushes.
    pub poll_ms: u64,
    /// A push service that has not answered within this is an attempt to retry.
    pub timeout_ms: u64,
    /// How long a claimed push stays with its sender; longer than `timeout_ms`.
    pub lease_ms: u64,
    /// Attempts per message while push services answer 429/5xx or not at all; after the
    /// last the message stays `PENDING` for the recipient's next connection.
    pub max_attempts: u32,
    /// Wait before the first retry (when the push service names none); doubles per attempt
    /// up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// How long a push service may keep a push for an offline browser (RFC 8030 `TTL`), at
    /// most; a message that expires sooner gets its remaining lifetime.
    pub ttl_seconds: u32,
    /// Longest a PushPushGo bucket's event waits for a fuller callback batch (the
    /// original's 60 s; batches hold at most 1000 events).
    pub bucket_callback_delay_ms: u64,
    /// How long a PushPushGo bucket can be used after it is created (the original's 24
    /// hours; at most 7 days).
    pub bucket_lifetime_ms: u64,
}

impl Default for WebPushConfig {
    fn default() -> Self {
        WebPushConfig {
            dispatch: true,
            subject: None,
            delay_ms: 1_000,
            poll_ms: 100,
            timeout_ms: 10_000,
            lease_ms: 60_000,
            max_attempts: 5,
            backoff_min_ms: 1_000,
            backoff_max_ms: 300_000,
            ttl_seconds: 24 * 3600,
            bucket_callback_delay_ms: 60_000,
            bucket_lifetime_ms: 24 * 3_600_000,
        }
    }
}

/// `[[apps]]`: a tenant with its public key and secret API keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: String,
    /// The public key (Thunderpush's `apikey`).
    pub key: String,
    /// Thunderpush clients may `CONNECT` with a bare user id, not only a Herald token:
    /// only for apps whose users are not authenticated anyway (the original's model).
    #[serde(default)]
    pub trust_user_ids: bool,
    #[serde(default)]
    pub keys: Vec<ApiKeyConfig>,
}

/// `[[apps.keys]]`: one secret with its scopes (`resource:action`, `*` wildcards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    pub secret: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Every problem found in a configuration, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Reads `path` (when given), applies `HERALD__*` overrides and validates.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.is_file() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(|e| anyhow::anyhow!("cannot read configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything serde cannot: ranges, URL schemes, endpoints, unique apps.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.check_store(&mut problems);
        self.check_endpoints(&mut problems);
        self.check_numbers(&mut problems);
        self.check_apps(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    fn check_store(&self, problems: &mut Vec<String>) {
        if self.store.sqlite_path.as_os_str().is_empty() {
            problems.push("store.sqlite_path must not be empty".into());
        }
        if self.store.sqlite_live_path.as_os_str().is_empty() {
            problems.push("store.sqlite_live_path must not be empty".into());
        }
        if self.store.sqlite_live_path == self.store.sqlite_path {
            problems.push("store.sqlite_live_path must differ from store.sqlite_path".into());
        }
    }

    fn check_endpoints(&self, problems: &mut Vec<String>) {
        for (name, list) in [
            ("cluster.router_pull", &self.cluster.router_pull),
            ("cluster.router_pub", &self.cluster.router_pub),
        ] {
            if list.is_empty() {
                problems.push(format!("{name} must list at least one router"));
            }
            for (i, endpoint) in list.iter().enumerate() {
                check_zmq_endpoint(&format!("{name}[{i}]"), endpoint, problems);
            }
        }
        check_zmq_endpoint("router.pull", &self.router.pull, problems);
        check_zmq_endpoint("router.publish", &self.router.publish, problems);
        check_url(
            "api.public_url",
            &self.api.public_url,
            &["http://", "https://"],
            problems,
        );
        check_url(
            "websockets.public_url",
            &self.websockets.public_url,
            &["ws://", "wss://"],
            problems,
        );
        for (i, url) in self.monitor.routers.iter().enumerate() {
            check_url(
                &format!("monitor.routers[{i}]"),
                url,
                &["http://", "https://"],
                problems,
            );
        }
    }

    fn check_numbers(&self, problems: &mut Vec<String>) {
        let e = &self.websockets;
        let positive = [
            ("store.busy_timeout_ms", self.store.busy_timeout_ms),
            ("store.sqlite_readers", self.store.sqlite_readers as u64),
            ("cluster.node_ttl_ms", self.cluster.node_ttl_ms),
            ("router.heartbeat_ms", self.router.heartbeat_ms),
            ("api.publish_queue", self.api.publish_queue as u64),
            ("api.publish_timeout_ms", self.api.publish_timeout_ms),
            ("api.router_heartbeat_ms", self.api.router_heartbeat_ms),
            ("websockets.heartbeat_ms", e.heartbeat_ms),
            ("websockets.handshake_timeout_ms", e.handshake_timeout_ms),
            ("websockets.ping_interval_ms", e.ping_interval_ms),
            ("websockets.pong_timeout_ms", e.pong_timeout_ms),
            (
                "websockets.outbound_queue_frames",
                e.outbound_queue_frames as u64,
            ),
            (
                "websockets.outbound_queue_bytes",
                e.outbound_queue_bytes as u64,
            ),
            ("websockets.max_connections", e.max_connections as u64),
            (
                "websockets.max_user_connections",
                e.max_user_connections as u64,
            ),
            ("websockets.presence_flush_ms", e.presence_flush_ms),
            ("websockets.router_silence_ms", e.router_silence_ms),
            ("websockets.recovery_limit", e.recovery_limit),
            ("api.max_connections", self.api.max_connections as u64),
            (
                "api.rate_limit_per_second",
                u64::from(self.api.rate_limit_per_second),
            ),
            ("api.rate_limit_burst", u64::from(self.api.rate_limit_burst)),
            ("monitor.interval_ms", self.monitor.interval_ms),
            ("monitor.check_timeout_ms", self.monitor.check_timeout_ms),
            (
                "monitor.failures_before_down",
                self.monitor.failures_before_down as u64,
            ),
            ("monitor.prune_after_ms", self.monitor.prune_after_ms),
            ("webhooks.poll_ms", self.webhooks.poll_ms),
            ("webhooks.timeout_ms", self.webhooks.timeout_ms),
            ("webhooks.backoff_min_ms", self.webhooks.backoff_min_ms),
            ("webhooks.max_age_ms", self.webhooks.max_age_ms),
            ("webhooks.max_pending", self.webhooks.max_pending),
            ("webpush.poll_ms", self.webpush.poll_ms),
            ("webpush.timeout_ms", self.webpush.timeout_ms),
            ("webpush.max_attempts", u64::from(self.webpush.max_attempts)),
            ("webpush.backoff_min_ms", self.webpush.backoff_min_ms),
            ("webpush.ttl_seconds", u64::from(self.webpush.ttl_seconds)),
        ];
        for (name, value) in positive {
            if value == 0 {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
        let live_floor = self
            .cluster
            .node_ttl_ms
            .max(e.heartbeat_ms.saturating_mul(3));
        if self.store.backend == StoreBackend::Redis && self.store.redis_live_ttl_ms < live_floor {
            problems.push(format!(
                "store.redis_live_ttl_ms ({}) must be at least cluster.node_ttl_ms and 3 × \
                 websockets.heartbeat_ms ({live_floor}), or live edges' keys would expire",
                self.store.redis_live_ttl_ms
            ));
        }
        let w = &self.webhooks;
        check_retries(
            "webhooks",
            (w.lease_ms, w.timeout_ms),
            (w.backoff_min_ms, w.backoff_max_ms),
            problems,
        );
        let p = &self.webpush;
        check_retries(
            "webpush",
            (p.lease_ms, p.timeout_ms),
            (p.backoff_min_ms, p.backoff_max_ms),
            problems,
        );
        if let Some(subject) = &p.subject
            && !(subject.starts_with("mailto:") || subject.starts_with("https://"))
        {
            problems.push(format!(
                "webpush.subject ({subject:?}) must be a mailto: or https: URL (RFC 8292 §2.1)"
            ));
        }
        check_range(
            "webpush.bucket_lifetime_ms",
            usize::try_from(self.webpush.bucket_lifetime_ms).unwrap_or(usize::MAX),
            1,
            7 * 24 * 3_600_000,
            problems,
        );
        check_range(
            "api.max_body_bytes",
            self.api.max_body_bytes,
            1024,
            16 << 20,
            problems,
        );
        check_range(
            "websockets.max_message_bytes",
            e.max_message_bytes,
            1024,
            16 << 20,
            problems,
        );
        check_range(
            "websockets.read_buffer_bytes",
            e.read_buffer_bytes,
            256,
            1 << 20,
            problems,
        );
        if e.reorder_window_ms > 10_000 {
            problems.push("websockets.reorder_window_ms must be at most 10000".into());
        }
        if e.router_silence_ms <= self.router.heartbeat_ms {
            problems.push(
                "websockets.router_silence_ms must be longer than router.heartbeat_ms".into(),
            );
        }
    }

    fn check_apps(&self, problems: &mut Vec<String>) {
        let canary = &self.monitor.canary_app;
        if !canary.is_empty() && !self.apps.iter().any(|a| &a.id == canary) {
            problems.push(format!(
                "monitor.canary_app: no app `{canary}` is configured"
            ));
        }
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        let mut secrets = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let at = format!("apps[{i}]");
            if !is_name(&app.id, 64) {
                problems.push(format!("{at}.id must match [A-Za-z0-9_.-]{{1,64}}"));
            }
            if !ids.insert(&app.id) {
                problems.push(format!("{at}.id `{}` is used twice", app.id));
            }
            if app.id.starts_with("ppg.") {
                problems.push(format!(
                    "{at}.id `{}`: ids starting with `ppg.` are reserved for PushPushGo buckets' callbacks",
                    app.id
                ));
            }
            if !is_name(&app.key, 128) {
                problems.push(format!("{at}.key must match [A-Za-z0-9_.-]{{1,128}}"));
            }
            if !keys.insert(&app.key) {
                problems.push(format!("{at}.key `{}` is used twice", app.key));
            }
            for (j, key) in app.keys.iter().enumerate() {
                let at = format!("{at}.keys[{j}]");
                if key.name.is_empty() {
                    problems.push(format!("{at}.name must not be empty"));
                }
                if key.secret.len() < 16 {
                    problems.push(format!("{at}.secret must be at least 16 characters"));
                }
                if !secrets.insert(&key.secret) {
                    problems.push(format!("{at}.secret is used by another key"));
                }
                for scope in &key.scopes {
                    if !is_scope(scope) {
                        problems.push(format!(
                            "{at}.scopes: `{scope}` is not resource:action (e.g. messages:send, *:*)"
                        ));
                    }
                }
            }
        }
    }
}

impl ApiConfig {
    /// `public_url` without a trailing slash, ready to append paths to.
    pub fn base_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }
}

impl EdgeConfig {
    /// `public_url` without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }
}

/// Milliseconds from config as a `Duration`.
pub fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

fn check_zmq_endpoint(name: &str, endpoint: &str, problems: &mut Vec<String>) {
    let valid = endpoint
        .strip_prefix("tcp://")
        .and_then(|rest| rest.rsplit_once(':'))
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid {
        problems.push(format!(
            "{name}: `{endpoint}` is not a ZeroMQ tcp endpoint (tcp://host:port)"
        ));
    }
}

fn check_url(name: &str, url: &str, schemes: &[&str], problems: &mut Vec<String>) {
    let rest = schemes.iter().find_map(|s| url.strip_prefix(s));
    if rest.is_none_or(|host| host.trim_end_matches('/').is_empty()) {
        problems.push(format!(
            "{name}: `{url}` must start with {} and name a host",
            schemes.join(" or ")
        ));
    }
}

/// The rules of a `section` that sends with leases and retries: the lease outlasts an
/// attempt (`lease_ms > timeout_ms`) and the backoff's cap is not below its start.
fn check_retries(
    section: &str,
    (lease_ms, timeout_ms): (u64, u64),
    (backoff_min_ms, backoff_max_ms): (u64, u64),
    problems: &mut Vec<String>,
) {
    if lease_ms <= timeout_ms {
        problems.push(format!(
            "{section}.lease_ms ({lease_ms}) must be greater than {section}.timeout_ms ({timeout_ms})"
        ));
    }
    if backoff_max_ms < backoff_min_ms {
        problems.push(format!(
            "{section}.backoff_max_ms ({backoff_max_ms}) must be at least {section}.backoff_min_ms ({backoff_min_ms})"
        ));
    }
}

fn check_range(name: &str, value: usize, min: usize, max: usize, problems: &mut Vec<String>) {
    if !(min..=max).contains(&value) {
        problems.push(format!("{name} must be between {min} and {max}"));
    }
}

fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_scope(scope: &str) -> bool {
    let parts: Vec<&str> = scope.split(':').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && (*p == "*"
                    || p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*')))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_app() -> AppConfig {
        AppConfig {
            id: "dev".into(),
            key: "dev-public".into(),
            trust_user_ids: false,
            keys: vec![ApiKeyConfig {
                name: "admin".into(),
                secret: "0123456789abcdef".into(),
                scopes: vec!["*:*".into()],
            }],
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    /// In a Jail: it holds figment's global lock, so the env-setting test below cannot
    /// change HERALD__* variables under this one.
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn the_shipped_dev_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/herald.toml");
        figment::Jail::expect_with(|_| {
            let config = Config::load(Some(&path)).expect("loads");
            assert_eq!(config.apps[0].id, "dev");
            assert_eq!(config.api.base_url(), "http://127.0.0.1:5001");
            Ok(())
        });
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut config = Config::default();
        config.cluster.router_pull = vec![];
        config.router.publish = "udp://x".into();
        config.api.public_url = "ftp://x".into();
        config.websockets.outbound_queue_frames = 0;
        config.websockets.max_message_bytes = 10;
        config.websockets.reorder_window_ms = 60_000;
        config.webpush.lease_ms = config.webpush.timeout_ms;
        config.webpush.backoff_max_ms = 1;
        config.webpush.subject = Some("ops@example.com".into());
        config.webpush.bucket_lifetime_ms = 8 * 24 * 3_600_000;
        config.monitor.routers = vec!["http://127.0.0.1:5004".into(), "127.0.0.1:5005".into()];
        let mut app = dev_app();
        app.keys[0].secret = "short".into();
        app.keys[0].scopes = vec!["nocolon".into()];
        let mut reserved = dev_app();
        reserved.id = "ppg.x".into();
        reserved.key = "other-key".into();
        reserved.keys.clear();
        config.apps = vec![app.clone(), app, reserved];
        let problems = config.validate().unwrap_err().problems;
        let text = problems.join("\n");
        for needle in [
            "cluster.router_pull must list",
            "router.publish",
            "api.public_url",
            "websockets.outbound_queue_frames",
            "websockets.max_message_bytes",
            "websockets.reorder_window_ms must be at most",
            "secret must be at least 16",
            "nocolon",
            "apps[1].id `dev` is used twice",
            "secret is used by another key",
            "webpush.lease_ms (10000) must be greater than webpush.timeout_ms (10000)",
            "webpush.backoff_max_ms (1) must be at least webpush.backoff_min_ms",
            "webpush.subject",
            "webpush.bucket_lifetime_ms must be between",
            "apps[2].id `ppg.x`: ids starting with `ppg.` are reserved",
            "monitor.routers[1]: `127.0.0.1:5005` must start with http:// or https://",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Figment::new()
            .merge(Toml::string(
                "[api]\nlisten = \"127.0.0.1:1\"\nlsiten = 3\n",
            ))
            .extract::<Config>()
            .unwrap_err();
        assert!(err.to_string().contains("lsiten"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn env_overrides_nested_keys_and_lists() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("h.toml", "[api]\npublic_url = \"http://file:1\"\n")?;
            jail.set_env("HERALD__API__PUBLIC_URL", "http://env:2");
            jail.set_env("HERALD__API__LISTEN", "fd:7");
            jail.set_env(
                "HERALD__CLUSTER__ROUTER_PULL",
                "[\"tcp://127.0.0.1:1\", \"tcp://127.0.0.1:2\"]",
            );
            let config = Config::load(Some(Path::new("h.toml"))).expect("loads");
            assert_eq!(config.api.public_url, "http://env:2");
            assert_eq!(config.api.listen, ListenAddr::Fd(7));
            assert_eq!(config.cluster.router_pull.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/herald.toml"))).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
