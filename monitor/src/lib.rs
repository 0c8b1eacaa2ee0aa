//! `herald-monitor`: the cluster's health. Every `interval_ms` it reads the edge registry,
//! opens a real WebSocket handshake (with a token of its own, kept in `token_file` so that
//! restarts reuse it) to every edge URL whose
//! heartbeat is fresh, records the result in the store — `failures_before_down`
//! consecutive failures mark the edge down, so `GET /nodes/` stops offering it, and one
//! good check brings it back — deletes rows (and presence) of edges silent for
//! `prune_after_ms`, deletes expired channel history and idempotency keys, moves
//! addressed messages past their expiry from `PENDING` to `EXPIRED`, and removes
//! PushPushGo buckets a week past their lifetime (with their callbacks).
//!
//! With `canary` on (the default) the check is end to end (SPEC §9): the monitor opens a
//! native socket on every edge URL with a connection token it signs itself, following the
//! ephemeral channel `herald-canary`, then publishes one message there through the API
//! (`api.public_url`, with the canary app's key); an edge whose socket does not receive it
//! within `check_timeout_ms` failed its check. The publish→receive time is the histogram
//! `herald_monitor_canary_seconds{edge}`. When the API itself does not take the canary,
//! the edges are judged by their handshake alone (an API outage must not mark every edge
//! down). With `canary` off, the check is a handshake with the monitor's Mozilla token.
//!
//! It serves the last round as `/status` (JSON), `/` (a small HTML page), `/health` and
//! `/metrics`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::auth::{ApiKey, Apps};
use common::clock::{now_us, us_to_secs};
use common::config::{Config, MonitorConfig, ms};
use common::http::ServeOptions;
use common::ids::AppId;
use common::jwt::{Claims, may_sign, sign};
use common::metrics::Metrics;
use common::store::buckets::{BUCKET_RETENTION_US, callback_app};
use common::store::{NodeRecord, Queues, Stores};
use common::token::{mozilla_token_id, new_mozilla_token, new_queue_id};
use futures_util::StreamExt;
use futures_util::future::join_all;
use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

mod web;

/// The outcome of the last check of one edge URL.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    /// The handshake's duration.
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
    /// Seconds since the epoch.
    pub at: f64,
    /// The canary: `ok` (received), `lost` (not within `check_timeout_ms`), `not_sent`
    /// (the API did not take it, or no handshake), `off`.
    pub canary: &'static str,
    /// Publish→receive of the canary.
    pub canary_ms: Option<f64>,
}

/// The ephemeral channel the canary goes through, and the user the monitor's socket is.
pub const CANARY_CHANNEL: &str = "herald-canary";
pub const CANARY_USER: &str = "herald-monitor";

/// What the canary needs: where to publish and the key that publishes and signs.
struct Canary {
    app: AppId,
    key: ApiKey,
    publish_url: String,
    http: reqwest::Client,
}

impl Canary {
    /// The canary of `config`, if it is on and an app can send it; it publishes with `http`.
    fn of(config: &Config, http: reqwest::Client) -> Option<Canary> {
        if !config.monitor.canary {
            return None;
        }
        let apps = Apps::from_config(&config.apps);
        let wanted = &config.monitor.canary_app;
        let found = apps
            .iter()
            .filter(|a| wanted.is_empty() || a.id.as_str() == wanted)
            .find_map(|app| {
                let key = app
                    .keys
                    .iter()
                    .find(|k| may_sign(k) && k.allows("messages:send"))?;
                Some((app.id.clone(), key.clone()))
            });
        let Some((app, key)) = found else {
            tracing::warn!(
                "no app has a key with messages:send and tokens:create: the monitor checks edges by handshake only"
            );
            return None;
        };
        Some(Canary {
            app,
            key,
            publish_url: format!(
                "{}/api/v1/channels/{CANARY_CHANNEL}/messages",
                config.api.base_url()
            ),
            http,
        })
    }

    /// A connection token for the monitor's sockets, valid a few minutes.
    fn token(&self) -> Result<String, String> {
        let now = now_us();
        let claims = Claims {
            sub: CANARY_USER.into(),
            app: self.app.to_string(),
            channels: vec![CANARY_CHANNEL.into()],
            topics: Vec::new(),
            origin: None,
            sip: None,
            publish: false,
            ack: false,
            probe: true,
            exp: us_to_secs(now) + 300.0,
            iat: Some(us_to_secs(now)),
            nbf: None,
        };
        sign(&self.key, &claims).map_err(|e| e.to_string())
    }

    /// Publishes canary `id`; why not, if the API did not take it.
    async fn publish(&self, id: &str, timeout: Duration) -> Result<(), String> {
        let answer = self
            .http
            .post(&self.publish_url)
            .bearer_auth(String::from_utf8_lossy(self.key.secret()))
            .json(&serde_json::json!({ "data": { "canary": id } }))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("the API did not take the canary: {e}"))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("the API answered the canary {}", answer.status()))
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One edge as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatusView {
    pub id: String,
    pub url: String,
    pub status: &'static str,
    pub healthy: bool,
    pub connections: u64,
    pub heartbeat_age_ms: i64,
    pub check_failures: u32,
    pub monitor_down: bool,
    pub last_check: Option<Check>,
}

/// A router as its `/health` answered in the last round.
#[derive(Debug, Clone, Serialize)]
pub struct RouterView {
    /// The base URL checked (`monitor.routers`).
    pub url: String,
    /// It answered 200 with `"status": "ok"` within `check_timeout_ms`.
    pub healthy: bool,
    /// Its epoch (a restarted router has a new one) and last sequence number.
    pub epoch: Option<u64>,
    pub seq: Option<u64>,
    /// Why it is not healthy.
    pub error: Option<String>,
}

/// The last completed round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub round_at: f64,
    pub store: String,
    pub nodes: Vec<NodeStatusView>,
    pub routers: Vec<RouterView>,
}

struct MonitorState {
    store: Stores,
    config: MonitorConfig,
    node_ttl_us: i64,
    /// The monitor's own Mozilla token, presented on every handshake without a canary.
    token: String,
    canary: Option<Canary>,
    canaries: IntCounterVec,
    canary_latency: HistogramVec,
    checks: RwLock<BTreeMap<String, Check>>,
    snapshot: RwLock<Snapshot>,
    metrics: Metrics,
    check_outcomes: IntCounterVec,
    check_latency: Histogram,
    nodes_healthy: IntGauge,
    nodes_registered: IntGauge,
    /// `monitor.routers` (or `router.listen`), each read every round.
    routers: Vec<String>,
    routers_healthy: IntGauge,
    http: reqwest::Client,
}

/// A monitor with its listener bound and token registered, ready to `run`.
pub struct Monitor {
    listener: TcpListener,
    state: Arc<MonitorState>,
}

/// Opens the store, registers the monitor's token and binds the status listener.
pub async fn bind(config: &Config) -> anyhow::Result<Monitor> {
    let store = common::store::open(&config.store)
        .await
        .context("cannot open the store")?;
    let token = own_token(&*store.queues, &config.monitor.token_file).await?;
    let listener = config.monitor.listen.bind_setting("monitor.listen").await?;
    let metrics = Metrics::new("monitor");
    metrics.register_store();
    // The canary's publishes and the routers' `/health` share one connection pool.
    let http = reqwest::Client::new();
    let state = MonitorState {
        store,
        config: config.monitor.clone(),
        node_ttl_us: i64::try_from(config.cluster.node_ttl_ms.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        token,
        canary: Canary::of(config, http.clone()),
        canaries: metrics.counter_vec(
            "canaries_total",
            "Canary messages by outcome per edge (ok, lost, not_sent).",
            &["outcome"],
        ),
        canary_latency: metrics.latency_vec(
            "canary_seconds",
            "Canary publish (API) to receipt on a socket of the edge, per edge URL.",
            &["edge"],
        ),
        checks: RwLock::new(BTreeMap::new()),
        snapshot: RwLock::new(Snapshot::default()),
        check_outcomes: metrics.counter_vec(
            "checks_total",
            "Edge handshake checks by outcome.",
            &["outcome"],
        ),
        check_latency: metrics.latency("check_seconds", "Edge WebSocket handshake time."),
        nodes_healthy: metrics.gauge("nodes_healthy", "Edges offered to clients."),
        nodes_registered: metrics.gauge("nodes_registered", "Edges in the registry."),
        routers: config.monitor.router_urls(&config.router),
        routers_healthy: metrics.gauge(
            "routers_healthy",
            "Routers whose /health answered ok in the last round.",
        ),
        http,
        metrics,
    };
    Ok(Monitor {
        listener,
        state: Arc::new(state),
    })
}

/// Binds and runs until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(&config).await?.run(shutdown).await
}

impl Monitor {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Checks every `interval_ms` and serves the status until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(listen = %self.listener.local_addr()?, "monitor ready");
        let http = tokio::spawn(common::http::serve_filter(
            self.listener,
            web::routes(self.state.clone()),
            shutdown.clone(),
            ServeOptions::OPS,
        ));
        let mut tick = tokio::time::interval(ms(self.state.config.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => round(&self.state).await,
            }
        }
        let _ = http.await;
        Ok(())
    }
}

/// The token the monitor presents to edges: the one kept in `path` while the store still
/// knows it, else a new one — written to `path` (mode 0600) before it is registered, so
/// that however often the monitor restarts, it leaves at most one token behind.
async fn own_token(store: &dyn Queues, path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    match tokio::fs::read_to_string(path).await {
        Ok(text) => {
            let kept = text.trim();
            if let Some(id) = mozilla_token_id(kept)
                && store
                    .token_exists(&id)
                    .await
                    .context("cannot read the store")?
            {
                return Ok(kept.to_owned());
            }
            tracing::info!(file = %shown, "the kept monitor token is unknown; making a new one");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("monitor.token_file: cannot read {shown}")),
    }
    let token = new_mozilla_token();
    write_private(path, &token)
        .await
        .with_context(|| format!("monitor.token_file: cannot write {shown}"))?;
    let id = mozilla_token_id(&token).context("a fresh token has the token shape")?;
    store
        .create_token(&id, &new_queue_id(), now_us())
        .await
        .context("cannot register the monitor token")?;
    Ok(token)
}

/// Replaces `path` with `text`, readable by its owner only, in one rename.
async fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .await?;
    file.write_all(text.as_bytes()).await?;
    file.sync_all().await?;
    tokio::fs::rename(&partial, path).await
}

/// PushPushGo buckets pruned per round at most.
const PRUNE_BUCKETS: usize = 100;
/// Addressed messages expired per store call, and calls per round at most.
const EXPIRY_BATCH: usize = 1_000;
const EXPIRY_BATCHES: usize = 10;

/// One round: prune, expire, check every live URL once, record, publish the snapshot.
async fn round(state: &MonitorState) {
    let now = now_us();
    let prune_before =
        now.saturating_sub((state.config.prune_after_ms as i64).saturating_mul(1000));
    if let Err(e) = state.store.nodes.prune_nodes(prune_before).await {
        tracing::warn!(error = %e, "cannot prune the edge registry");
    }
    match state.store.channels.prune_channels(now).await {
        Ok(0) => {}
        Ok(pruned) => tracing::debug!(pruned, "pruned expired history and idempotency keys"),
        Err(e) => tracing::warn!(error = %e, "cannot prune channel history"),
    }
    // Addressed messages past their expiry leave PENDING for EXPIRED (in bounded batches;
    // the edges never deliver them meanwhile).
    for _ in 0..EXPIRY_BATCHES {
        match state
            .store
            .messages
            .expire_messages(now, EXPIRY_BATCH)
            .await
        {
            Ok(expired) if expired.len() == EXPIRY_BATCH => continue,
            Ok(expired) => {
                if !expired.is_empty() {
                    tracing::debug!(expired = expired.len(), "expired addressed messages");
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot expire addressed messages");
                break;
            }
        }
    }
    // PushPushGo buckets a week past their lifetime go, with their callback's webhook.
    let retired = now.saturating_sub(BUCKET_RETENTION_US);
    match state
        .store
        .buckets
        .prune_buckets(retired, PRUNE_BUCKETS)
        .await
    {
        Ok(ids) => {
            for id in &ids {
                let Some(app) = callback_app(id) else {
                    continue;
                };
                if let Err(e) = state.store.webhooks.delete_webhook(&app).await {
                    tracing::warn!(error = %e, bucket = %id, "cannot remove a pruned bucket's callback");
                }
            }
            if !ids.is_empty() {
                tracing::debug!(pruned = ids.len(), "pruned PushPushGo buckets");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot prune PushPushGo buckets"),
    }
    let routers = check_routers(state).await;
    let nodes = match state.store.nodes.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the edge registry");
            publish(state, Vec::new(), routers, now, e.to_string());
            return;
        }
    };
    let mut urls: Vec<&str> = nodes
        .iter()
        .filter(|n| now - n.heartbeat_us <= state.node_ttl_us)
        .map(|n| n.url.as_str())
        .collect();
    urls.sort_unstable();
    urls.dedup();
    let results = check_all(state, &urls).await;
    for (url, result) in urls.iter().zip(results) {
        if let Err(e) = state
            .store
            .nodes
            .record_node_check(url, result.ok, now_us(), state.config.failures_before_down)
            .await
        {
            tracing::warn!(error = %e, "cannot record a check");
        }
        if let Ok(mut checks) = state.checks.write() {
            checks.insert((*url).to_owned(), result);
        }
    }
    let nodes = state.store.nodes.nodes().await.unwrap_or(nodes);
    publish(state, nodes, routers, now, "ok".into());
}

/// Reads every router's `/health` at once, each within `check_timeout_ms`.
async fn check_routers(state: &MonitorState) -> Vec<RouterView> {
    let timeout = Duration::from_millis(state.config.check_timeout_ms);
    let checks = state.routers.iter().map(|url| async move {
        let answer = async {
            let response = state
                .http
                .get(format!("{url}/health"))
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| format!("no answer: {e}"))?;
            let status = response.status();
            let body: serde_json::Value = response
                .json()
                .await
                .map_err(|e| format!("HTTP {status}, not JSON: {e}"))?;
            if status.is_success() && body["status"] == "ok" {
                Ok((body["epoch"].as_u64(), body["seq"].as_u64()))
            } else {
                Err(format!("HTTP {status}: {body}"))
            }
        }
        .await;
        match answer {
            Ok((epoch, seq)) => RouterView {
                url: url.clone(),
                healthy: true,
                epoch,
                seq,
                error: None,
            },
            Err(error) => RouterView {
                url: url.clone(),
                healthy: false,
                epoch: None,
                seq: None,
                error: Some(error),
            },
        }
    });
    let routers = futures_util::future::join_all(checks).await;
    state
        .routers_healthy
        .set(routers.iter().filter(|r| r.healthy).count() as i64);
    routers
}

/// Checks every URL: by handshake alone, or (with the canary) a socket on each and one
/// canary through the API that each must receive.
async fn check_all(state: &MonitorState, urls: &[&str]) -> Vec<Check> {
    let timeout = ms(state.config.check_timeout_ms);
    let Some(canary) = &state.canary else {
        return join_all(urls.iter().map(|url| async move {
            let target = format!("{url}/socket?token={}", state.token);
            let result = match handshake(&target, timeout, false).await {
                Ok((mut socket, took)) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                    Ok(took)
                }
                Err(e) => Err(e),
            };
            record(state, url, result, "off", None)
        }))
        .await;
    };
    let token = match canary.token() {
        Ok(token) => token,
        Err(e) => {
            tracing::warn!(error = %e, "cannot sign the canary token");
            return urls
                .iter()
                .map(|url| record(state, url, Err(e.clone()), "not_sent", None))
                .collect();
        }
    };
    let targets: Vec<String> = urls
        .iter()
        .map(|url| format!("{url}/ws?token={token}"))
        .collect();
    let opened = join_all(targets.iter().map(|t| handshake(t, timeout, true))).await;
    let id = common::token::random_hex(16);
    let sent = Instant::now();
    let published = if opened.iter().any(Result::is_ok) {
        canary.publish(&id, timeout).await
    } else {
        Err("no edge took a socket".into())
    };
    if let Err(e) = &published {
        tracing::warn!(error = %e, "canary not sent; edges judged by their handshake");
    }
    let deadline = tokio::time::Instant::now() + timeout;
    join_all(urls.iter().zip(opened).map(|(url, opened)| {
        let (id, published) = (&id, published.is_ok());
        async move {
            let (mut socket, took) = match opened {
                Ok(opened) => opened,
                Err(e) => return record(state, url, Err(e), "not_sent", None),
            };
            let outcome = if published {
                match tokio::time::timeout_at(deadline, receive_canary(&mut socket, id)).await {
                    Ok(true) => Some(sent.elapsed()),
                    _ => None,
                }
            } else {
                None
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
            match (published, outcome) {
                (false, _) => record(state, url, Ok(took), "not_sent", None),
                (true, Some(latency)) => record(state, url, Ok(took), "ok", Some(latency)),
                (true, None) => record(
                    state,
                    url,
                    Err(format!(
                        "the canary did not arrive within {} ms",
                        state.config.check_timeout_ms
                    )),
                    "lost",
                    None,
                ),
            }
        }
    }))
    .await
}

/// A WebSocket handshake with `target` within `timeout` (and the native welcome frame, when
/// `welcome`): the socket and how long the handshake took.
async fn handshake(
    target: &str,
    timeout: Duration,
    welcome: bool,
) -> Result<(Socket, Duration), String> {
    let started = Instant::now();
    let opened = async {
        let (mut socket, _) = tokio_tungstenite::connect_async(target)
            .await
            .map_err(|e| e.to_string())?;
        let took = started.elapsed();
        if welcome {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) if text.contains("\"welcome\"") => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the edge closed the socket before its welcome".into()),
                }
            }
        }
        Ok((socket, took))
    };
    tokio::time::timeout(timeout, opened)
        .await
        .unwrap_or_else(|_| Err(format!("no handshake within {} ms", timeout.as_millis())))
}

/// Reads `socket` until canary `id` arrives (true) or the socket ends (false).
async fn receive_canary(socket: &mut Socket, id: &str) -> bool {
    while let Some(Ok(frame)) = socket.next().await {
        if let Message::Text(text) = frame
            && let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text)
            && frame["type"] == "message"
            && frame["data"]["canary"] == id
        {
            return true;
        }
    }
    false
}

/// Counts one URL's check (`result`: the handshake's duration or why it failed) and its
/// canary, and makes its `Check`.
fn record(
    state: &MonitorState,
    url: &str,
    result: Result<Duration, String>,
    canary: &'static str,
    canary_latency: Option<Duration>,
) -> Check {
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    state.check_outcomes.with_label_values(&[outcome]).inc();
    if canary != "off" {
        state.canaries.with_label_values(&[canary]).inc();
    }
    if let Some(latency) = canary_latency {
        state
            .canary_latency
            .with_label_values(&[url])
            .observe(latency.as_secs_f64());
    }
    match &result {
        Ok(took) => state.check_latency.observe(took.as_secs_f64()),
        Err(e) => tracing::warn!(%url, error = %e, "edge check failed"),
    }
    Check {
        ok: result.is_ok(),
        latency_ms: result.as_ref().ok().map(|d| d.as_secs_f64() * 1e3),
        error: result.err(),
        at: us_to_secs(now_us()),
        canary,
        canary_ms: canary_latency.map(|d| d.as_secs_f64() * 1e3),
    }
}

fn publish(
    state: &MonitorState,
    nodes: Vec<NodeRecord>,
    routers: Vec<RouterView>,
    now: i64,
    store: String,
) {
    let checks = state.checks.read().map(|c| c.clone()).unwrap_or_default();
    let views: Vec<NodeStatusView> = nodes
        .into_iter()
        .map(|n| NodeStatusView {
            healthy: n.is_healthy(now, state.node_ttl_us),
            status: n.status.as_str(),
            heartbeat_age_ms: (now - n.heartbeat_us) / 1000,
            last_check: checks.get(&n.url).cloned(),
            id: n.id,
            url: n.url,
            connections: n.connections,
            check_failures: n.check_failures,
            monitor_down: n.monitor_down,
        })
        .collect();
    state.nodes_registered.set(views.len() as i64);
    state
        .nodes_healthy
        .set(views.iter().filter(|v| v.healthy).count() as i64);
    if let Ok(mut snapshot) = state.snapshot.write() {
        *snapshot = Snapshot {
            round_at: us_to_secs(now),
            store,
            nodes: views,
            routers,
        };
    }
}
