//! `herald-api`: the HTTP API. It validates and authorises a request, writes the store, and
//! only after the store accepted the write answers 2xx and hands the delivery to the
//! routers (`publisher`). This crate serves the Mozilla-compatible API of SPEC §3
//! (`mozilla`) plus `/health`, `/version` and `/metrics` (`ops`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::config::{Config, ms};
use common::http::ServeOptions;
use common::metrics::Metrics;
use common::store::Store;
use prometheus::{HistogramVec, IntCounterVec};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;

pub mod mozilla;
mod ops;
pub mod params;
pub mod publisher;

/// Everything a request handler needs.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub publisher: publisher::Publisher,
    /// `api.public_url` without the trailing slash.
    pub api_base: String,
    pub max_body_bytes: usize,
    pub node_ttl_us: i64,
    pub metrics: Metrics,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl AppState {
    /// Counts a finished request by route and status.
    pub fn observe(&self, route: &str, status: u16, started: std::time::Instant) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[route, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// An API process with its listener bound and its store open, ready to `run`.
pub struct Api {
    listener: TcpListener,
    state: Arc<AppState>,
    dispatcher: tokio::task::JoinHandle<()>,
    stop_dispatcher: CancellationToken,
    drain: Duration,
    max_connections: usize,
}

/// Opens the store, binds the listener and starts connecting to the routers.
pub async fn bind(config: &Config) -> anyhow::Result<Api> {
    let store = common::store::open(&config.store)
        .await
        .context("cannot open the store")?;
    let listener = config.api.listen.bind_setting("api.listen").await?;
    let metrics = Metrics::new("api");
    let stop_dispatcher = CancellationToken::new();
    let (publisher, dispatcher) = publisher::start(
        publisher::PublisherConfig {
            endpoints: config.cluster.router_pull.clone(),
            queue: config.api.publish_queue,
            timeout: ms(config.api.publish_timeout_ms),
            heartbeat: ms(config.api.router_heartbeat_ms),
        },
        &metrics,
        stop_dispatcher.clone(),
    );
    let state = AppState {
        store,
        publisher,
        api_base: config.api.base_url().to_owned(),
        max_body_bytes: config.api.max_body_bytes,
        node_ttl_us: i64::try_from(config.cluster.node_ttl_ms.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        requests: metrics.counter_vec(
            "requests_total",
            "HTTP requests by route and status.",
            &["route", "status"],
        ),
        latency: metrics.latency_vec(
            "request_seconds",
            "HTTP request latency by route.",
            &["route"],
        ),
        metrics,
    };
    Ok(Api {
        listener,
        state: Arc::new(state),
        dispatcher,
        stop_dispatcher,
        drain: ms(config.api.drain_ms),
        max_connections: config.api.max_connections,
    })
}

/// Binds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(&config).await?.run(shutdown).await
}

impl Api {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, drains in-flight requests, then flushes queued deliveries.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(listen = %self.listener.local_addr()?, public_url = %self.state.api_base, "api ready");
        let options = ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            drain: self.drain,
            max_connections: self.max_connections,
        };
        common::http::serve_filter(self.listener, routes(self.state.clone()), shutdown, options)
            .await;
        self.stop_dispatcher.cancel();
        let _ = self.dispatcher.await;
        Ok(())
    }
}

/// Every route of the API, with Mozilla-shaped errors for anything unmatched.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    mozilla::routes(state.clone())
        .or(ops::routes(state))
        .unify()
        .recover(mozilla::rejection)
        .unify()
}
