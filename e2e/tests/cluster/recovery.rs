//! Recovery by position under load, through real binaries (SPEC §7, §11): several
//! publishers post ≥ 300 messages a second to one token, each request on a fresh
//! connection, while the router is stopped (SIGSTOP past the silence bound), killed -9 and
//! restarted twice, or an API process is killed -9 and restarted. The token's socket must
//! receive every acknowledged message exactly once and in creation order, and nothing that
//! was never posted; a message whose request died with the API may or may not arrive (it
//! may have been stored before the answer was lost), but at most once.
//!
//! Faults are placed by publishing progress, not by time; every wait polls with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::{Cluster, DEADLINE, Options, Socket, eventually};
use serde_json::Value;
use tokio::task::JoinHandle;

/// Total rate of one load, messages per second, and how many publishers share it.
const RATE: f64 = 320.0;
const PUBLISHERS: usize = 6;
/// How long every acknowledged message has to arrive once publishing is over.
const ARRIVAL_DEADLINE: Duration = Duration::from_secs(40);
/// No frame for this long after everything arrived: no late duplicate is on its way
/// (longer than a silence bound plus a recovery pass in the test cluster).
const QUIET: Duration = Duration::from_secs(3);

/// What became of each posted title.
#[derive(Debug, Default)]
struct Posted {
    /// Answered 2xx: must arrive exactly once.
    acked: BTreeSet<String>,
    /// No answer, or an error: may arrive, at most once.
    in_doubt: BTreeSet<String>,
}

/// A load of `total` messages to `queue` at `rate` per second over `PUBLISHERS`
/// publishers; `progress` counts finished requests.
struct Load {
    task: JoinHandle<Posted>,
    progress: Arc<AtomicUsize>,
}

impl Load {
    fn start(queue: &str, name: &str, total: usize, rate: f64) -> Load {
        let progress = Arc::new(AtomicUsize::new(0));
        let queue = queue.to_owned();
        let name = name.to_owned();
        let counter = progress.clone();
        let task = tokio::spawn(async move {
            let publishers: Vec<_> = (0..PUBLISHERS)
                .map(|p| {
                    let (queue, name, counter) = (queue.clone(), name.clone(), counter.clone());
                    let count = total / PUBLISHERS + usize::from(p < total % PUBLISHERS);
                    let every = Duration::from_secs_f64(PUBLISHERS as f64 / rate);
                    tokio::spawn(publish(queue, format!("{name}-{p}"), count, every, counter))
                })
                .collect();
            let mut posted = Posted::default();
            for publisher in publishers {
                let part = publisher.await.unwrap();
                posted.acked.extend(part.acked);
                posted.in_doubt.extend(part.in_doubt);
            }
            posted
        });
        Load { task, progress }
    }

    /// Waits until `n` requests have finished.
    async fn reached(&self, n: usize) {
        let progress = self.progress.clone();
        eventually(&format!("{n} requests"), DEADLINE, || {
            let done = progress.load(Ordering::Relaxed) >= n;
            async move { done.then_some(()) }
        })
        .await;
    }

    async fn finish(self) -> Posted {
        tokio::time::timeout(Duration::from_secs(120), self.task)
            .await
            .expect("the load finishes")
            .unwrap()
    }
}

/// One publisher: `count` posts, one every `every`, each on a fresh connection.
async fn publish(
    queue: String,
    name: String,
    count: usize,
    every: Duration,
    progress: Arc<AtomicUsize>,
) -> Posted {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut posted = Posted::default();
    for i in 0..count {
        tick.tick().await;
        let title = format!("{name}-{i}");
        let answer = http.post(&queue).form(&[("title", &title)]).send().await;
        match answer {
            Ok(response) if response.status().is_success() => posted.acked.insert(title),
            _ => posted.in_doubt.insert(title),
        };
        progress.fetch_add(1, Ordering::Relaxed);
    }
    posted
}

/// Reads every frame of a socket into a shared list until stopped.
struct Collector {
    frames: Arc<Mutex<Vec<Value>>>,
    task: JoinHandle<()>,
}

impl Collector {
    fn start(mut socket: Socket) -> Collector {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let sink = frames.clone();
        let task = tokio::spawn(async move {
            loop {
                let frame = socket.next_json(Duration::from_secs(3600)).await;
                sink.lock().unwrap().push(frame);
            }
        });
        Collector { frames, task }
    }

    fn titles(&self) -> Vec<String> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .map(|f| f["body"]["title"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits for every acknowledged title, then for quiet; checks exactly-once, nothing
    /// foreign, and creation order. Returns how many in-doubt titles arrived.
    async fn verify(self, posted: &Posted) -> usize {
        let missing = |titles: Vec<String>| {
            let got: BTreeSet<String> = titles.into_iter().collect();
            posted.acked.difference(&got).count()
        };
        let frames = self.frames.clone();
        let start = std::time::Instant::now();
        while missing(self.titles()) > 0 {
            assert!(
                start.elapsed() < ARRIVAL_DEADLINE,
                "{} of {} acknowledged messages never arrived",
                missing(self.titles()),
                posted.acked.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Quiet: no new frame for `QUIET`, so no late duplicate is still on its way.
        let mut seen = frames.lock().unwrap().len();
        let mut quiet_since = std::time::Instant::now();
        while quiet_since.elapsed() < QUIET {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = frames.lock().unwrap().len();
            if now != seen {
                (seen, quiet_since) = (now, std::time::Instant::now());
            }
        }
        self.task.abort();
        let frames = frames.lock().unwrap().clone();
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for title in frames
            .iter()
            .map(|f| f["body"]["title"].as_str().unwrap_or_default())
        {
            *count.entry(title.to_owned()).or_default() += 1;
        }
        let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "delivered more than once: {twice:?}");
        let foreign: Vec<_> = count
            .keys()
            .filter(|t| !posted.acked.contains(*t) && !posted.in_doubt.contains(*t))
            .collect();
        assert!(foreign.is_empty(), "never posted: {foreign:?}");
        let stamps: Vec<f64> = frames
            .iter()
            .map(|f| f["timestamp"].as_f64().unwrap())
            .collect();
        assert!(
            stamps.windows(2).all(|w| w[0] < w[1]),
            "not in creation order"
        );
        count
            .keys()
            .filter(|t| posted.in_doubt.contains(*t))
            .count()
    }
}

/// A value of the edge's `/metrics`.
async fn edge_metric(cluster: &Cluster, edge: usize, name: &str) -> f64 {
    let url = format!("http://127.0.0.1:{}/metrics", cluster.ports.edges[edge]);
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    common::testing::metric_value(&text, name).unwrap_or(0.0)
}

/// Waits until edge `edge` has seen its router silent `before + 1` times or more.
async fn until_silence_noticed(cluster: &Cluster, edge: usize, before: f64) {
    let name = "herald_websockets_router_anomalies_total{reason=\"silence\"}";
    let deadline = std::time::Instant::now() + DEADLINE;
    while edge_metric(cluster, edge, name).await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the edge never noticed the silence"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cluster, one token with its own queue, and a socket reading it on edge `edge`.
async fn token_with_socket(cluster: &Cluster, edge: usize) -> (String, Collector) {
    let moz = cluster.moz();
    let (token, own_queue) = moz.token().await;
    let socket = Socket::mozilla(&cluster.edge_url(edge), &token).await;
    (own_queue, Collector::start(socket))
}

#[tokio::test]
async fn a_router_stopped_past_the_silence_bound_loses_and_repeats_nothing() {
    let cluster = Cluster::start(Options::default()).await;
    let (queue, collector) = token_with_socket(&cluster, 0).await;
    let load = Load::start(&queue, "stop", 1_500, RATE);
    load.reached(300).await;
    let silences = edge_metric(
        &cluster,
        0,
        "herald_websockets_router_anomalies_total{reason=\"silence\"}",
    )
    .await;
    cluster.router.signal(libc::SIGSTOP);
    // Stopped until the edge has noticed twice (it then reads the store every period).
    until_silence_noticed(&cluster, 0, silences + 1.0).await;
    cluster.router.signal(libc::SIGCONT);
    let posted = load.finish().await;
    assert!(
        posted.acked.len() >= 1_400,
        "{} acknowledged",
        posted.acked.len()
    );
    collector.verify(&posted).await;
    let caught_up = edge_metric(
        &cluster,
        0,
        "herald_websockets_recovery_streams_total{outcome=\"caught_up\"}",
    )
    .await;
    assert!(
        caught_up >= 1.0,
        "recovery delivered while the router was stopped"
    );
}

#[tokio::test]
async fn a_router_killed_twice_loses_and_repeats_nothing() {
    let mut cluster = Cluster::start(Options::default()).await;
    let (queue, collector) = token_with_socket(&cluster, 0).await;
    let load = Load::start(&queue, "kill", 1_500, RATE);
    for at in [300, 900] {
        load.reached(at).await;
        cluster.router.kill();
        load.reached(at + 150).await;
        cluster.router.restart();
    }
    let posted = load.finish().await;
    assert_eq!(
        posted.acked.len(),
        1_500,
        "the API answers while the router is down"
    );
    collector.verify(&posted).await;
}

#[tokio::test]
async fn an_api_killed_twice_loses_and_repeats_nothing() {
    let mut cluster = Cluster::start(Options::default()).await;
    let (queue, collector) = token_with_socket(&cluster, 0).await;
    let load = Load::start(&queue, "api", 1_500, RATE);
    for at in [300, 900] {
        load.reached(at).await;
        cluster.api.restart();
    }
    let posted = load.finish().await;
    assert!(
        posted.acked.len() >= 1_000,
        "{} acknowledged",
        posted.acked.len()
    );
    let arrived_in_doubt = collector.verify(&posted).await;
    assert!(arrived_in_doubt <= posted.in_doubt.len());
}

/// Two tokens at different rates, each read on its own edge, through a stopped and a
/// killed router.
#[tokio::test]
async fn two_tokens_on_two_edges_at_different_rates_lose_and_repeat_nothing() {
    let mut cluster = Cluster::start(Options {
        edges: 2,
        ..Options::default()
    })
    .await;
    let (fast_queue, fast) = token_with_socket(&cluster, 0).await;
    let (slow_queue, slow) = token_with_socket(&cluster, 1).await;
    let fast_load = Load::start(&fast_queue, "fast", 1_500, RATE);
    let slow_load = Load::start(&slow_queue, "slow", 300, 60.0);
    fast_load.reached(300).await;
    let silences = edge_metric(
        &cluster,
        1,
        "herald_websockets_router_anomalies_total{reason=\"silence\"}",
    )
    .await;
    cluster.router.signal(libc::SIGSTOP);
    until_silence_noticed(&cluster, 1, silences).await;
    cluster.router.signal(libc::SIGCONT);
    fast_load.reached(900).await;
    cluster.router.kill();
    fast_load.reached(1_050).await;
    cluster.router.restart();
    let (fast_posted, slow_posted) = (fast_load.finish().await, slow_load.finish().await);
    assert_eq!(fast_posted.acked.len(), 1_500);
    assert_eq!(slow_posted.acked.len(), 300);
    fast.verify(&fast_posted).await;
    slow.verify(&slow_posted).await;
}
