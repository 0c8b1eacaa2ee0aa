//! `herald-monitor`: the cluster's health. Every `interval_ms` it reads the edge registry,
//! opens a real WebSocket handshake (with a token of its own, kept in `token_file` so that
//! restarts reuse it) to every edge URL whose
//! heartbeat is fresh, records the result in the store — `failures_before_down`
//! consecutive failures mark the edge down, so `GET /nodes/` stops offering it, and one
//! good check brings it back — deletes rows (and presence) of edges silent for
//! `prune_after_ms`, deletes expired channel history and idempotency keys, moves
//! addressed messages past their expiry from `PENDING` to `EXPIRED`, and removes
//! PushPushGo buckets a week past their lifetime (with their callbacks).
//! It serves the last round as `/status` (JSON), `/` (a small HTML page), `/health` and
//! `/metrics`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::clock::{now_us, us_to_secs};
use common::config::{Config, MonitorConfig, ms};
use common::http::ServeOptions;
use common::metrics::Metrics;
use common::store::buckets::{BUCKET_RETENTION_US, callback_app};
use common::store::{NodeRecord, Queues, Stores};
use common::token::{mozilla_token_id, new_mozilla_token, new_queue_id};
use futures_util::future::join_all;
use prometheus::{Histogram, IntCounterVec, IntGauge};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod web;

/// The outcome of the last handshake check of one edge URL.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
    /// Seconds since the epoch.
    pub at: f64,
}

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

/// The last completed round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub round_at: f64,
    pub store: String,
    pub nodes: Vec<NodeStatusView>,
}

struct MonitorState {
    store: Stores,
    config: MonitorConfig,
    node_ttl_us: i64,
    /// The monitor's own Mozilla token, presented on every handshake.
    token: String,
    checks: RwLock<BTreeMap<String, Check>>,
    snapshot: RwLock<Snapshot>,
    metrics: Metrics,
    check_outcomes: IntCounterVec,
    check_latency: Histogram,
    nodes_healthy: IntGauge,
    nodes_registered: IntGauge,
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
    let state = MonitorState {
        store,
        config: config.monitor.clone(),
        node_ttl_us: i64::try_from(config.cluster.node_ttl_ms.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        token,
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
    let nodes = match state.store.nodes.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the edge registry");
            publish(state, Vec::new(), now, e.to_string());
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
    let results = join_all(urls.iter().map(|url| check(state, url))).await;
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
    publish(state, nodes, now, "ok".into());
}

/// A real WebSocket handshake against `url`'s Mozilla endpoint.
async fn check(state: &MonitorState, url: &str) -> Check {
    let started = Instant::now();
    let target = format!("{url}/socket?token={}", state.token);
    let attempt = tokio::time::timeout(
        ms(state.config.check_timeout_ms),
        tokio_tungstenite::connect_async(target),
    )
    .await;
    let error = match attempt {
        Ok(Ok((mut socket, _))) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
            None
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "no handshake within {} ms",
            state.config.check_timeout_ms
        )),
    };
    let elapsed = started.elapsed();
    let outcome = if error.is_none() { "ok" } else { "failed" };
    state.check_outcomes.with_label_values(&[outcome]).inc();
    if error.is_none() {
        state.check_latency.observe(elapsed.as_secs_f64());
    } else {
        tracing::warn!(%url, error = error.as_deref().unwrap_or(""), "edge check failed");
    }
    Check {
        ok: error.is_none(),
        latency_ms: error.is_none().then_some(elapsed.as_secs_f64() * 1e3),
        error,
        at: us_to_secs(now_us()),
    }
}

fn publish(state: &MonitorState, nodes: Vec<NodeRecord>, now: i64, store: String) {
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
        };
    }
}
