//! `herald-api`: the HTTP API. A surface (`surface`) parses and authorises a request and
//! calls one operation of the service layer (`service`), which writes the store, and only
//! after the store accepted the write answers and hands the delivery to the routers
//! (`publisher`). Surfaces: the Mozilla-compatible API (SPEC §3), `/api/v1` (§4),
//! Thunderpush, VPush, Socrate's GraphQL and PushPushGo CORE's `/v1` (§5); plus `/health`, `/version`, `/metrics` and
//! `/openapi.json` (`ops`). Each process also runs a webhook dispatcher (`outbox`) and a
//! Web Push sender (`pusher`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::auth::Apps;
use common::config::{Config, ms};
use common::http::ServeOptions;
use common::metrics::Metrics;
use prometheus::{HistogramVec, IntCounterVec};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;

mod ops;
pub mod outbox;
pub mod publisher;
pub mod pusher;
pub mod service;
pub mod surface;
pub mod webpush;

use service::{Services, Settings};
use surface::RateLimit;

/// Token lifetime by default and at most (SPEC §4: 1 day, 30 days).
pub const TOKEN_TTL_DEFAULT: u64 = 24 * 3600;
pub const TOKEN_TTL_MAX: u64 = 30 * 24 * 3600;

/// Everything a request handler needs.
pub struct AppState {
    pub services: Services,
    /// The Socrate GraphQL schema (`surface::graphql`).
    pub graphql: surface::graphql::SocrateSchema,
    pub max_body_bytes: usize,
    pub rate_limit: RateLimit,
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
    /// The webhook dispatcher (`outbox`), unless `webhooks.dispatch` is off.
    webhooks: Option<tokio::task::JoinHandle<()>>,
    /// The Web Push sender (`pusher`), unless `webpush.dispatch` is off.
    pusher: Option<tokio::task::JoinHandle<()>>,
    drain: Duration,
    max_connections: usize,
}

/// The service layer of a process: the stores, a publisher to the routers (running until
/// `stop`), the apps, the settings. The edge builds one too, for what its clients publish.
pub async fn services(
    config: &Config,
    metrics: &Metrics,
    stop: CancellationToken,
) -> anyhow::Result<(Services, tokio::task::JoinHandle<()>)> {
    let stores = common::store::open(&config.store)
        .await
        .context("cannot open the store")?;
    let (publisher, dispatcher) = publisher::start(
        publisher::PublisherConfig {
            endpoints: config.cluster.router_pull.clone(),
            queue: config.api.publish_queue,
            timeout: ms(config.api.publish_timeout_ms),
            heartbeat: ms(config.api.router_heartbeat_ms),
        },
        metrics,
        stop,
    );
    let settings = Settings {
        api_base: config.api.base_url().to_owned(),
        node_ttl_us: i64::try_from(config.cluster.node_ttl_ms.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        token_ttl_default: TOKEN_TTL_DEFAULT,
        token_ttl_max: TOKEN_TTL_MAX,
        webpush_delay_us: i64::try_from(config.webpush.delay_ms.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        bucket_callback_delay_ms: config.webpush.bucket_callback_delay_ms,
        bucket_lifetime_us: i64::try_from(config.webpush.bucket_lifetime_ms.saturating_mul(1000))
            .unwrap_or(i64::MAX),
    };
    let services = Services {
        stores,
        publisher,
        apps: Arc::new(Apps::from_config(&config.apps)),
        settings: Arc::new(settings),
        vapid_keys: Arc::default(),
        queue_cache: Arc::default(),
    };
    Ok((services, dispatcher))
}

/// Opens the store, binds the listener and starts connecting to the routers.
pub async fn bind(config: &Config) -> anyhow::Result<Api> {
    // Before anything connects: a bad `webhooks.ca_file` stops the process at once.
    let webhook_client = outbox::client(&config.webhooks)?;
    let push_client = pusher::client(&config.webpush)?;
    let listener = config.api.listen.bind_setting("api.listen").await?;
    let metrics = Metrics::new("api");
    metrics.register_store();
    let stop_dispatcher = CancellationToken::new();
    let (services, dispatcher) = services(config, &metrics, stop_dispatcher.clone()).await?;
    let webhooks = outbox::start(
        services.stores.clone(),
        config.webhooks.clone(),
        webhook_client,
        &metrics,
        stop_dispatcher.clone(),
    )?;
    let pusher = pusher::start(
        services.clone(),
        config.webpush.clone(),
        push_client,
        &metrics,
        stop_dispatcher.clone(),
    );
    let state = AppState {
        services,
        graphql: surface::graphql::schema(),
        max_body_bytes: config.api.max_body_bytes,
        rate_limit: RateLimit::new(
            config.api.rate_limit_per_second,
            config.api.rate_limit_burst,
        ),
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
        webhooks,
        pusher,
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
        tracing::info!(listen = %self.listener.local_addr()?, public_url = %self.state.services.settings.api_base, "api ready");
        let options = ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            drain: self.drain,
            max_connections: self.max_connections,
        };
        common::http::serve_filter(self.listener, routes(self.state.clone()), shutdown, options)
            .await;
        self.stop_dispatcher.cancel();
        let _ = self.dispatcher.await;
        for task in [self.webhooks, self.pusher].into_iter().flatten() {
            let _ = task.await;
        }
        Ok(())
    }
}

/// Every route of the API. Each surface renders its own errors under its own prefix;
/// anything else unmatched gets the Mozilla shape (the API's original surface).
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    surface::v1::routes(state.clone())
        .or(surface::thunderpush::routes(state.clone()))
        .unify()
        .or(surface::vpush::routes(state.clone()))
        .unify()
        .or(surface::ppg::routes(state.clone()))
        .unify()
        .or(surface::graphql::routes(state.clone()))
        .unify()
        .or(ops::routes(state.clone()))
        .unify()
        .or(surface::mozilla::routes(state))
        .unify()
        .recover(surface::mozilla::rejection)
        .unify()
}
