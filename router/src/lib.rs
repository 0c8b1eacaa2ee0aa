//! `herald-router`: the ZeroMQ broker between API processes and edges. It binds a PULL
//! socket (every API PUSHes into it) and a PUB socket (every edge SUBscribes to it), and
//! forwards each envelope after stamping it with this process's epoch (random per start)
//! and the next sequence number, so edges can detect both lost envelopes and a restarted
//! router. Between envelopes it publishes heartbeats carrying the last sequence number.
//! It never touches the store: a router can die and come back without losing state,
//! because everything it forwards was persisted before it was sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use common::config::{Config, ms};
use common::http::ServeOptions;
use common::metrics::Metrics;
use common::wire::{Envelope, Kind};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;
use zeromq::{PubSocket, PullSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

/// A router with its sockets bound, ready to `run`.
pub struct Router {
    pull: PullSocket,
    publish: PubSocket,
    pull_endpoint: String,
    pub_endpoint: String,
    http: TcpListener,
    heartbeat: Duration,
    state: Arc<RouterState>,
}

/// What the forwarding loop and the HTTP endpoints share.
struct RouterState {
    epoch: u64,
    seq: AtomicU64,
    metrics: Metrics,
    forwarded: IntCounterVec,
    invalid: IntCounter,
    upstream_heartbeats: IntCounter,
    seq_gauge: IntGauge,
    /// From the API publishing (the envelope's `origin_us`) to the router sending it on.
    forward_latency: Histogram,
}

/// Binds the PULL and PUB sockets and the HTTP listener from `config.router`.
pub async fn bind(config: &Config) -> anyhow::Result<Router> {
    let mut pull = PullSocket::new();
    let pull_endpoint = pull
        .bind(&config.router.pull)
        .await
        .with_context(|| format!("cannot bind router.pull {}", config.router.pull))?;
    let mut publish = PubSocket::new();
    let pub_endpoint = publish
        .bind(&config.router.publish)
        .await
        .with_context(|| format!("cannot bind router.publish {}", config.router.publish))?;
    let http = config.router.listen.bind_setting("router.listen").await?;
    let metrics = Metrics::new("router");
    let epoch_gauge = metrics.gauge(
        "epoch",
        "Random epoch of this router process (low 53 bits).",
    );
    let epoch = common::token::random_u64();
    epoch_gauge.set((epoch & ((1 << 53) - 1)) as i64);
    let state = RouterState {
        epoch,
        seq: AtomicU64::new(0),
        forwarded: metrics.counter_vec(
            "forwarded_total",
            "Envelopes forwarded to edges.",
            &["kind"],
        ),
        invalid: metrics.counter("invalid_total", "Malformed envelopes dropped."),
        upstream_heartbeats: metrics.counter(
            "upstream_heartbeats_total",
            "Keep-alives received from API processes.",
        ),
        seq_gauge: metrics.gauge("sequence", "Last sequence number stamped in this epoch."),
        forward_latency: metrics.latency(
            "forward_latency_seconds",
            "From the API publishing a delivery to this router sending it to the edges.",
        ),
        metrics,
    };
    Ok(Router {
        pull,
        publish,
        pull_endpoint: pull_endpoint.to_string(),
        pub_endpoint: pub_endpoint.to_string(),
        http,
        heartbeat: ms(config.router.heartbeat_ms),
        state: Arc::new(state),
    })
}

/// Binds and runs until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    bind(&config).await?.run(shutdown).await
}

impl Router {
    /// The PULL endpoint as bound (port resolved).
    pub fn pull_endpoint(&self) -> &str {
        &self.pull_endpoint
    }

    /// The PUB endpoint as bound (port resolved).
    pub fn pub_endpoint(&self) -> &str {
        &self.pub_endpoint
    }

    /// The HTTP address of `/health` and `/metrics`.
    pub fn http_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.http.local_addr()
    }

    /// Forwards envelopes until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(
            pull = %self.pull_endpoint,
            publish = %self.pub_endpoint,
            http = %self.http.local_addr()?,
            epoch = self.state.epoch,
            "router ready"
        );
        let http = tokio::spawn(common::http::serve_filter(
            self.http,
            routes(self.state.clone()),
            shutdown.clone(),
            ServeOptions::OPS,
        ));
        let mut beat = tokio::time::interval(self.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = self.pull.recv() => match received {
                    Ok(message) => forward(&self.state, &mut self.publish, message).await,
                    Err(e) => tracing::warn!(error = %e, "PULL receive failed"),
                },
                _ = beat.tick() => {
                    let mut envelope = Envelope::heartbeat(common::clock::now_us());
                    stamp(&self.state, &mut envelope, false);
                    send(&self.state, &mut self.publish, &envelope).await;
                }
            }
        }
        let _ = http.await;
        Ok(())
    }
}

/// Stamps, publishes and counts one envelope from an API process.
async fn forward(state: &RouterState, publish: &mut PubSocket, message: ZmqMessage) {
    let mut envelope = match Envelope::from_message(message) {
        Ok(envelope) => envelope,
        Err(e) => {
            state.invalid.inc();
            tracing::debug!(error = %e, "dropping a malformed envelope");
            return;
        }
    };
    match envelope.header.kind {
        Kind::Heartbeat => state.upstream_heartbeats.inc(),
        Kind::Deliver | Kind::Recover => {
            stamp(state, &mut envelope, true);
            send(state, publish, &envelope).await;
            let now_us = common::clock::now_us();
            if let Some(seconds) = common::clock::seconds_since(envelope.header.origin_us, now_us) {
                state.forward_latency.observe(seconds);
            }
        }
    }
}

/// Sets epoch and sequence: a delivery takes the next number, a heartbeat repeats the last.
fn stamp(state: &RouterState, envelope: &mut Envelope, next: bool) {
    let seq = if next {
        state.seq.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        state.seq.load(Ordering::Relaxed)
    };
    envelope.header.epoch = state.epoch;
    envelope.header.seq = seq;
    state.seq_gauge.set(i64::try_from(seq).unwrap_or(i64::MAX));
}

async fn send(state: &RouterState, publish: &mut PubSocket, envelope: &Envelope) {
    match publish.send(envelope.to_message()).await {
        Ok(()) => state
            .forwarded
            .with_label_values(&[envelope.header.kind.label()])
            .inc(),
        Err(e) => tracing::warn!(error = %e, "PUB send failed"),
    }
}

fn routes(
    state: Arc<RouterState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    use warp::Reply;
    let ops = common::http::metrics_and_version(state.metrics.clone());
    let health = warp::path!("health").and(warp::get()).map(move || {
        warp::reply::json(&serde_json::json!({
            "status": "ok",
            "epoch": state.epoch,
            "seq": state.seq.load(Ordering::Relaxed),
        }))
        .into_response()
    });
    health
        .or(ops)
        .unify()
        .recover(common::http::json_rejection)
        .unify()
}
