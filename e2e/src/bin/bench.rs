//! `herald-bench`: measurements on a real local cluster (router, API, one edge, started by
//! the e2e harness on free loopback ports). It prints numbers and appends them to a file;
//! it asserts nothing — these machines are shared and noisy. The cluster keeps its state
//! in SQLite, or in a `redis-server` of its own with `HERALD_E2E_STORE=redis`; every
//! report line starts with `store=sqlite` or `store=redis` (`bench/run.sh` runs both and
//! prints them side by side).
//!
//! - `idle-sockets`: opens N idle Mozilla sockets on one edge and reports the edge's RSS
//!   growth per socket (SPEC §12 target: ≤ 10 KiB).
//! - `latency`: S sockets of one token, messages posted at R per second for T seconds;
//!   reports publish→deliver percentiles over every (message, socket) pair. With
//!   `--target channel`, S native sockets of one channel (with history, so every publish
//!   is durable as on the Mozilla path; `--ephemeral` for a channel without) and messages
//!   published with `POST /api/v1/channels/{ch}/messages`.
//! - `addressed`: U connected users (one native socket each), R requests of
//!   `POST /api/v1/messages` with K recipients each (sent back to back, `--in-flight` at
//!   once), a webhook wanting `sent` and `delivered` pointed at a local receiver; reports
//!   deliveries/s, send→deliver percentiles, lost deliveries, and webhook events/s until
//!   every event arrived.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use e2e::{Cluster, Options, Socket, V1};
use futures_util::future::join_all;
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(
    name = "herald-bench",
    about = "Benchmarks Herald on a local cluster (loopback only)."
)]
struct Args {
    /// Append results here.
    #[arg(long, default_value = "bench/results/results.txt")]
    out: PathBuf,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// RSS per idle socket on one edge.
    IdleSockets {
        #[arg(long, default_value_t = 5_000)]
        sockets: usize,
    },
    /// Publish→deliver latency percentiles through API → router → edge → socket.
    Latency {
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 20)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// `mozilla` (sockets of one token, posts to its queue) or `channel` (native
        /// sockets of one channel, `/api/v1` publishes).
        #[arg(long, value_enum, default_value_t = Target::Mozilla)]
        target: Target,
        /// With `--target channel`: a channel without history (publishes not stored).
        #[arg(long)]
        ephemeral: bool,
    },
    /// Addressed messages to many recipients, with their webhook events.
    Addressed {
        #[arg(long, default_value_t = 1_000)]
        users: usize,
        #[arg(long, default_value_t = 100)]
        requests: usize,
        #[arg(long, default_value_t = 100)]
        recipients: usize,
        #[arg(long, default_value_t = 4)]
        in_flight: usize,
    },
}

/// What the latency benchmark publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    Mozilla,
    Channel,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let report = match args.bench {
        Bench::IdleSockets { sockets } => idle_sockets(sockets).await,
        Bench::Latency {
            subscribers,
            rate,
            seconds,
            target,
            ephemeral,
        } => latency(subscribers, rate, seconds, target, ephemeral).await,
        Bench::Addressed {
            users,
            requests,
            recipients,
            in_flight,
        } => addressed(users, requests, recipients.min(users), in_flight).await,
    };
    let store = if e2e::redis_store() {
        "redis"
    } else {
        "sqlite"
    };
    let report = format!("store={store} {report}");
    println!("{report}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .unwrap();
    writeln!(file, "{report}").unwrap();
    eprintln!("appended to {}", args.out.display());
}

/// Resident set size of `pid` in bytes, from /proc (`e2e::load::rss`); the edge must be
/// running.
fn rss_bytes(pid: i32) -> u64 {
    let rss = e2e::load::rss(pid);
    assert!(rss > 0, "cannot read the RSS of process {pid}");
    rss
}

async fn edge_connections(cluster: &Cluster) -> u64 {
    let url = format!("http://127.0.0.1:{}/health", cluster.ports.edges[0]);
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["connections"].as_u64().unwrap_or(0)
}

async fn open_sockets(url: &str, token: &str, n: usize) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(n);
    while sockets.len() < n {
        let batch = (n - sockets.len()).min(250);
        sockets.extend(join_all((0..batch).map(|_| Socket::mozilla(url, token))).await);
    }
    sockets
}

/// `n` native sockets of users `bench-0`… following channel `bench` (welcomes read).
async fn open_channel_sockets(url: &str, v1: &V1, n: usize) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(n);
    while sockets.len() < n {
        let batch = (n - sockets.len()).min(250);
        let first = sockets.len();
        let tokens = join_all((first..first + batch).map(|i| {
            v1.token(serde_json::json!({"user": format!("bench-{i}"), "channels": ["bench"]}))
        }))
        .await;
        let opened = join_all(tokens.iter().map(|token| Socket::native(url, token))).await;
        sockets.extend(opened.into_iter().map(|(socket, _)| socket));
    }
    sockets
}

/// Where the latency benchmark publishes message `index`.
enum Publisher {
    Mozilla { moz: e2e::Moz, queue: String },
    Channel { v1: V1 },
}

impl Publisher {
    async fn publish(&self, index: usize) {
        let (status, body) = match self {
            Publisher::Mozilla { moz, queue } => {
                moz.form_post(queue, &[("title", &index.to_string())]).await
            }
            Publisher::Channel { v1 } => {
                let body = serde_json::json!({ "data": index });
                v1.call("POST", "channels/bench/messages", Some(body)).await
            }
        };
        assert!(status == 200 || status == 201, "{status} {body}");
    }
}

/// The message index a delivered frame carries (Mozilla: the title; native: the data).
fn index_of(frame: &Value) -> Option<usize> {
    if frame["type"] == "message" {
        return frame["data"].as_u64().map(|i| i as usize);
    }
    frame["body"]["title"].as_str().and_then(|t| t.parse().ok())
}

async fn idle_sockets(n: usize) -> String {
    let cluster = Cluster::start(Options::default()).await;
    let (token, _) = cluster.moz().token().await;
    let pid = cluster.edges[0].pid();
    // Warm the runtime and allocator with a few sockets, then measure from there.
    drop(open_sockets(&cluster.edge_url(0), &token, 50).await);
    while edge_connections(&cluster).await != 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_bytes(pid);
    let started = Instant::now();
    let sockets = open_sockets(&cluster.edge_url(0), &token, n).await;
    let opened_in = started.elapsed();
    while edge_connections(&cluster).await < n as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes(pid);
    let per_socket = after.saturating_sub(before) as f64 / n as f64;
    drop(sockets);
    format!(
        "idle-sockets sockets={n} edge_rss_before={:.1}MiB edge_rss_after={:.1}MiB per_socket={:.0}B ({:.2}KiB) opened_in={:.1}s",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        per_socket,
        per_socket / 1024.0,
        opened_in.as_secs_f64()
    )
}

async fn latency(
    subscribers: usize,
    rate: u32,
    seconds: u32,
    target: Target,
    ephemeral: bool,
) -> String {
    let cluster = Cluster::start(Options::default()).await;
    let edge = cluster.edge_url(0);
    let (sockets, publisher) = match target {
        Target::Mozilla => {
            let moz = cluster.moz();
            let (token, queue) = moz.token().await;
            let sockets = open_sockets(&edge, &token, subscribers).await;
            (sockets, Publisher::Mozilla { moz, queue })
        }
        Target::Channel => {
            let v1 = V1::new(&cluster.api_url());
            if !ephemeral {
                let history = serde_json::json!({"history": {"size": 1000}});
                let (status, body) = v1.call("PUT", "channels/bench", Some(history)).await;
                assert_eq!(status, 200, "{body}");
            }
            let sockets = open_channel_sockets(&edge, &v1, subscribers).await;
            (sockets, Publisher::Channel { v1 })
        }
    };
    let count = (rate * seconds) as usize;
    let sent: Arc<Vec<std::sync::OnceLock<Instant>>> =
        Arc::new((0..count).map(|_| std::sync::OnceLock::new()).collect());

    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(count);
                let deadline = Duration::from_secs(u64::from(seconds) + 30);
                let started = Instant::now();
                while samples.len() < count && started.elapsed() < deadline {
                    let Some(frame) = socket.try_next_json(Duration::from_secs(5)).await else {
                        break;
                    };
                    let received = Instant::now();
                    let Some(index) = index_of(&frame).filter(|i| *i < count) else {
                        continue;
                    };
                    if let Some(at) = sent[index].get() {
                        samples.push(received.duration_since(*at).as_micros() as u64);
                    }
                }
                samples
            })
        })
        .collect();

    // The POST's own round trip is the durable write (fsync'd) plus HTTP: the part of the
    // latency that Herald's guarantee costs and an in-memory server does not pay.
    let mut posts = Vec::with_capacity(count);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    for (index, slot) in sent.iter().enumerate() {
        tick.tick().await;
        let at = Instant::now();
        let _ = slot.set(at);
        publisher.publish(index).await;
        posts.push(at.elapsed().as_micros() as u64);
    }
    posts.sort_unstable();
    let mut samples: Vec<u64> = join_all(receivers)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    samples.sort_unstable();
    let expected = count * subscribers;
    let pct = |sorted: &[u64], p: f64| {
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    format!(
        "latency target={}{} subscribers={subscribers} rate={rate}/s seconds={seconds} deliveries={}/{expected} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms post_p50={:.2}ms post_p99={:.2}ms",
        match target {
            Target::Mozilla => "mozilla",
            Target::Channel => "channel",
        },
        if ephemeral { "(ephemeral)" } else { "" },
        samples.len(),
        pct(&samples, 0.50),
        pct(&samples, 0.90),
        pct(&samples, 0.99),
        pct(&samples, 0.999),
        samples.last().copied().unwrap_or(0) as f64 / 1000.0,
        pct(&posts, 0.50),
        pct(&posts, 0.99),
    )
}

/// The `p` percentile of sorted µs samples, in ms.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

async fn addressed(users: usize, requests: usize, recipients: usize, in_flight: usize) -> String {
    use e2e::receiver::Receiver;
    let cluster = Cluster::start(Options {
        env: &[("WEBHOOKS__POLL_MS", "20")],
        ..Options::default()
    })
    .await;
    let v1 = V1::new(&cluster.api_url());
    let receiver = Receiver::start().await;
    let (status, body) = v1
        .call(
            "PUT",
            "webhook",
            Some(serde_json::json!({"url": receiver.url, "secret": "bench",
                "events": ["sent", "delivered"], "maxBatch": 1000, "maxDelayMs": 100})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // One native socket per user `u-<i>`.
    let edge = cluster.edge_url(0);
    let mut sockets = Vec::with_capacity(users);
    while sockets.len() < users {
        let first = sockets.len();
        let batch = (users - first).min(250);
        let tokens = join_all(
            (first..first + batch).map(|i| v1.token(serde_json::json!({"user": format!("u-{i}")}))),
        )
        .await;
        let opened = join_all(tokens.iter().map(|t| Socket::native(&edge, t))).await;
        sockets.extend(opened.into_iter().map(|(socket, _)| socket));
    }
    // Request r goes to users r*K .. r*K+K (mod U); each socket counts what it gets.
    let sent: Arc<Vec<std::sync::OnceLock<Instant>>> =
        Arc::new((0..requests).map(|_| std::sync::OnceLock::new()).collect());
    let expected = requests * recipients;
    let per_user: Vec<usize> = (0..users)
        .map(|u| {
            (0..requests)
                .filter(|r| (0..recipients).any(|k| (r * recipients + k) % users == u))
                .count()
        })
        .collect();
    let receivers: Vec<_> = sockets
        .into_iter()
        .zip(per_user)
        .map(|(mut socket, wanted)| {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(wanted);
                let mut last = None;
                while samples.len() < wanted {
                    let Some(frame) = socket.try_next_json(Duration::from_secs(30)).await else {
                        break;
                    };
                    let received = Instant::now();
                    let Some(r) = frame["data"]["r"].as_u64().map(|r| r as usize) else {
                        continue;
                    };
                    if let Some(at) = sent.get(r).and_then(|s| s.get()) {
                        samples.push(received.duration_since(*at).as_micros() as u64);
                        last = Some(received);
                    }
                }
                (samples, last)
            })
        })
        .collect();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders = (0..in_flight.max(1)).map(|_| {
        let (v1, next, sent) = (V1::new(&cluster.api_url()), next.clone(), sent.clone());
        async move {
            loop {
                let r = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if r >= requests {
                    return;
                }
                let to: Vec<String> = (0..recipients)
                    .map(|k| format!("u-{}", (r * recipients + k) % users))
                    .collect();
                let _ = sent[r].set(Instant::now());
                let body = serde_json::json!({"recipients": to, "data": {"r": r}});
                let (status, answer) = v1.call("POST", "messages", Some(body)).await;
                assert_eq!(status, 201, "{answer}");
            }
        }
    });
    join_all(senders).await;
    let posted_in = started.elapsed();
    let mut samples = Vec::with_capacity(expected);
    let mut last = started;
    for (s, l) in join_all(receivers).await.into_iter().map(|r| r.unwrap()) {
        samples.extend(s);
        last = l.map_or(last, |l| l.max(last));
    }
    samples.sort_unstable();
    let delivered_in = last.duration_since(started);
    // Webhook events: `sent` and `delivered` per message.
    let events_wanted = 2 * samples.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut events = receiver.accepted_events().len();
    while events < events_wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        events = receiver.accepted_events().len();
    }
    let events_in = started.elapsed();
    format!(
        "addressed users={users} requests={requests} recipients={recipients} in_flight={in_flight} deliveries={}/{expected} lost={} posted_in={:.2}s deliveries_per_s={:.0} p50={:.2}ms p99={:.2}ms webhook_events={events}/{events_wanted} webhook_events_per_s={:.0}",
        samples.len(),
        expected - samples.len(),
        posted_in.as_secs_f64(),
        samples.len() as f64 / delivered_in.as_secs_f64().max(1e-6),
        percentile_ms(&samples, 0.50),
        percentile_ms(&samples, 0.99),
        events as f64 / events_in.as_secs_f64().max(1e-6),
    )
}
