//! The load generator behind `make bench` (`herald-load`) and its CI smoke: the same
//! scenarios, with the same client code, against Herald (the Mozilla path or native
//! channels) and against Nchan, so that their numbers can stand side by side.
//!
//! A target is reached only by its public URLs on loopback. Every published payload
//! carries a marker `HB:<index>:<sent µs since the epoch>;` that survives any wrapping
//! (a Mozilla `title`, a native `data` string, Nchan's raw body), so one reader measures
//! publish→deliver latency from the send time inside the payload and counts lost and
//! duplicated deliveries per socket. Server CPU and RSS are read from `/proc` for the
//! given server pids and all their descendants (circusd and its children; nginx's master
//! and workers).
//!
//! Scenarios:
//! - `fanout`: one channel × S sockets, R publishes/s for T seconds (at a high R, the
//!   saturation point: deliveries/s);
//! - `throughput`: C channels × 1 socket, publishes unpaced with K in flight for T seconds:
//!   publishes/s and server CPU per publish;
//! - `connect`: N idle sockets: connect time and server RSS per socket.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// The index of warm-up publishes (never counted).
const WARMUP: u64 = u64::MAX;
/// Sockets opened at once while connecting.
const CONNECT_BATCH: usize = 250;
/// How long deliveries may trail the last publish before the rest count as lost.
const DRAIN: Duration = Duration::from_secs(10);
/// How long every socket may take to see a warm-up publish.
const WARMUP_DEADLINE: Duration = Duration::from_secs(30);

/// The server under load, by its public URLs (`http://127.0.0.1:…`, `ws://127.0.0.1:…`).
#[derive(Debug, Clone)]
pub enum Target {
    /// Herald's Mozilla API: a channel is a token; publishes go to its queue (stored, then
    /// pushed); sockets connect to `/socket?token=`.
    HeraldMozilla { api: String, edge: String },
    /// Herald's native API: a channel with history (every publish durable); publishes
    /// `POST /api/v1/channels/{ch}/messages` with `secret`; sockets `/ws?token=` minted
    /// for the channel.
    HeraldChannel {
        api: String,
        edge: String,
        secret: String,
    },
    /// Nchan: `POST /pub?id=<ch>`, WebSocket `/sub?id=<ch>`.
    Nchan { base: String },
}

impl Target {
    /// The short name reports use.
    pub fn name(&self) -> &'static str {
        match self {
            Target::HeraldMozilla { .. } => "herald-mozilla",
            Target::HeraldChannel { .. } => "herald-channel",
            Target::Nchan { .. } => "nchan",
        }
    }
}

/// One channel of a target, ready to publish to and subscribe on.
#[derive(Debug, Clone)]
struct Channel {
    /// Where publishes go.
    publish: String,
    /// Herald Mozilla: the token every socket uses.
    token: Option<String>,
    name: String,
}

/// A client for one target: keep-alive HTTP and channel setup.
pub struct Client {
    target: Target,
    http: reqwest::Client,
}

impl Client {
    pub fn new(target: Target) -> Client {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Client { target, http }
    }

    /// Makes channel `name` (Herald: a token with its queue, or a channel with history).
    async fn channel(&self, name: &str) -> anyhow::Result<Channel> {
        match &self.target {
            Target::HeraldMozilla { api, .. } => {
                let answer: Value = self
                    .http
                    .post(format!("{api}/token/"))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let token = answer["token"].as_str().unwrap_or_default().to_owned();
                let queue = answer["queue"].as_str().unwrap_or_default().to_owned();
                anyhow::ensure!(!token.is_empty(), "POST /token/ answered {answer}");
                Ok(Channel {
                    publish: queue,
                    token: Some(token),
                    name: name.to_owned(),
                })
            }
            Target::HeraldChannel { api, secret, .. } => {
                self.http
                    .put(format!("{api}/api/v1/channels/{name}"))
                    .bearer_auth(secret)
                    .json(&json!({"history": {"size": 100}}))
                    .send()
                    .await?
                    .error_for_status()?;
                Ok(Channel {
                    publish: format!("{api}/api/v1/channels/{name}/messages"),
                    token: None,
                    name: name.to_owned(),
                })
            }
            Target::Nchan { base } => Ok(Channel {
                publish: format!("{base}/pub?id={name}"),
                token: None,
                name: name.to_owned(),
            }),
        }
    }

    /// The WebSocket URL socket number `n` of `channel` connects to.
    async fn socket_url(&self, channel: &Channel, n: usize) -> anyhow::Result<String> {
        match &self.target {
            Target::HeraldMozilla { edge, .. } => Ok(format!(
                "{edge}/socket?token={}",
                channel.token.as_deref().unwrap_or_default()
            )),
            Target::HeraldChannel {
                api, edge, secret, ..
            } => {
                let answer: Value = self
                    .http
                    .post(format!("{api}/api/v1/tokens"))
                    .bearer_auth(secret)
                    .json(&json!({"user": format!("load-{n}"), "channels": [channel.name]}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let token = answer["token"].as_str().unwrap_or_default();
                Ok(format!("{edge}/ws?token={token}"))
            }
            Target::Nchan { base } => Ok(format!(
                "{}/sub?id={}",
                base.replacen("http", "ws", 1),
                channel.name
            )),
        }
    }

    /// Publishes the marker of `index` (sent now) to `channel`.
    async fn publish(&self, channel: &Channel, index: u64) -> anyhow::Result<()> {
        let marker = if index == WARMUP {
            format!("HB:W:{};", now_us())
        } else {
            format!("HB:{index}:{};", now_us())
        };
        let request = match &self.target {
            Target::HeraldMozilla { .. } => self
                .http
                .post(&channel.publish)
                .form(&[("title", marker.as_str())]),
            Target::HeraldChannel { secret, .. } => self
                .http
                .post(&channel.publish)
                .bearer_auth(secret)
                .json(&json!({ "data": marker })),
            Target::Nchan { .. } => self.http.post(&channel.publish).body(marker),
        };
        request.send().await?.error_for_status()?;
        Ok(())
    }
}

fn now_us() -> u64 {
    common::clock::now_us().unsigned_abs()
}

/// The `(index, sent µs)` of the marker in `text`, if it carries one.
pub fn marker(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.find("HB:")? + 3..];
    let end = rest.find(';')?;
    let (index, sent) = rest[..end].split_once(':')?;
    let index = if index == "W" {
        WARMUP
    } else {
        index.parse().ok()?
    };
    Some((index, sent.parse().ok()?))
}

/// What the readers of a run share.
#[derive(Default)]
struct Tally {
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    warmed: AtomicUsize,
    stop: AtomicBool,
}

/// A socket's latencies (µs) of first deliveries, shared with its reader.
type Samples = Arc<std::sync::Mutex<Vec<u32>>>;

/// One running reader: its task (aborted at the end of a run) and its samples.
struct Reader {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    samples: Samples,
}

/// One socket's reader: records each first delivery's latency until it is aborted, with
/// no timer per read so that the tool's own cost per frame stays small.
fn read_socket(url: String, tally: Arc<Tally>, connected: Arc<Semaphore>) -> Reader {
    let samples = Samples::default();
    let mine = samples.clone();
    let task = tokio::spawn(async move {
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .map_err(|e| anyhow::anyhow!("connecting {url}: {e}"))?;
        connected.add_permits(1);
        let (_sink, mut stream) = ws.split();
        let mut seen = HashSet::new();
        let mut warmed = false;
        while let Some(next) = stream.next().await {
            let text = match next {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(e) => anyhow::bail!("{url}: {e}"),
            };
            let received = now_us();
            let Some((index, sent)) = marker(&text) else {
                continue;
            };
            if index == WARMUP {
                if !warmed {
                    warmed = true;
                    tally.warmed.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            if seen.insert(index) {
                let latency = received.saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
                mine.lock().expect("samples lock").push(latency);
                tally.deliveries.fetch_add(1, Ordering::Relaxed);
            } else {
                tally.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
        if tally.stop.load(Ordering::Relaxed) {
            Ok(())
        } else {
            anyhow::bail!("{url}: the server closed the socket")
        }
    });
    Reader { task, samples }
}

/// CPU ticks and RSS of server processes (the given pids and their descendants).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// The current usage of `roots` and every process descending from them.
pub fn usage(roots: &[i32]) -> Usage {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|p| p.parse().ok()))
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut family: Vec<i32> = roots.to_vec();
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        for (pid, ppid) in &parents {
            if *ppid == parent && !family.contains(pid) {
                family.push(*pid);
            }
        }
        i += 1;
    }
    // /proc reports CPU time in USER_HZ ticks, 100 per second on every Linux ABI.
    let ticks = 100.0;
    let mut total = Usage::default();
    for pid in family {
        if let Some(fields) = stat_fields(pid) {
            // After the command: state(0) ppid(1) … utime(11) stime(12).
            let cpu: f64 = [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
                .sum();
            total.cpu_seconds += cpu / ticks;
        }
        total.rss_bytes += rss(pid);
    }
    total
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// Resident set size of `pid` in bytes (`VmRSS`), 0 if it cannot be read.
pub fn rss(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// The result of one scenario on one target: a JSON object (`target`, `scenario`, its
/// parameters and measures; times in ms, rates per second, sizes in bytes).
pub type Report = serde_json::Map<String, Value>;

/// Sorted µs samples' percentile `p`, in ms.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    f64::from(sorted[i]) / 1000.0
}

/// Opens one reader per URL (at most `CONNECT_BATCH` handshakes at once); returns when
/// every handshake finished.
async fn open(urls: Vec<String>, tally: &Arc<Tally>) -> anyhow::Result<Vec<Reader>> {
    let mut readers = Vec::with_capacity(urls.len());
    for batch in urls.chunks(CONNECT_BATCH) {
        let connected = Arc::new(Semaphore::new(0));
        let started: Vec<_> = batch
            .iter()
            .map(|url| read_socket(url.clone(), tally.clone(), connected.clone()))
            .collect();
        let wanted = started.len() as u32;
        let handshakes =
            tokio::time::timeout(Duration::from_secs(60), connected.acquire_many(wanted));
        // A reader that failed its handshake never adds its permit: look for it.
        tokio::select! {
            done = handshakes => { done.map_err(|_| anyhow::anyhow!("handshakes timed out"))??.forget(); }
            () = async {
                loop {
                    if started.iter().any(|r| r.task.is_finished()) { return; }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } => {
                for reader in started {
                    if reader.task.is_finished() {
                        reader.task.await??;
                    }
                }
                anyhow::bail!("a socket ended while connecting");
            }
        }
        readers.extend(started);
    }
    Ok(readers)
}

/// Publishes warm-ups to `channels` until every one of `sockets` saw one.
async fn warm_up(
    client: &Client,
    channels: &[Channel],
    tally: &Tally,
    sockets: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WARMUP_DEADLINE;
    while tally.warmed.load(Ordering::Relaxed) < sockets {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {sockets} sockets saw a warm-up publish",
            tally.warmed.load(Ordering::Relaxed)
        );
        join_all(channels.iter().map(|c| client.publish(c, WARMUP)))
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<()>>>()?;
        let wait = Instant::now() + Duration::from_millis(500);
        while Instant::now() < wait && tally.warmed.load(Ordering::Relaxed) < sockets {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// Waits until `expected` deliveries arrived or `DRAIN` passed, stops the readers (a
/// reader that failed fails the run), and gathers their samples (sorted).
async fn finish(
    readers: Vec<Reader>,
    tally: &Tally,
    expected: u64,
) -> anyhow::Result<(Vec<u32>, Instant)> {
    let deadline = Instant::now() + DRAIN;
    while tally.deliveries.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = Instant::now();
    let samples = stop(readers, tally).await?;
    Ok((samples, done))
}

/// Ends every reader; their samples, sorted.
async fn stop(readers: Vec<Reader>, tally: &Tally) -> anyhow::Result<Vec<u32>> {
    tally.stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for reader in readers {
        if reader.task.is_finished() {
            reader.task.await??;
        } else {
            reader.task.abort();
        }
        samples.extend(reader.samples.lock().expect("samples lock").drain(..));
    }
    samples.sort_unstable();
    Ok(samples)
}

fn latency_fields(report: &mut Report, samples: &[u32]) {
    for (name, p) in [
        ("p50_ms", 0.5),
        ("p90_ms", 0.9),
        ("p99_ms", 0.99),
        ("p999_ms", 0.999),
    ] {
        report.insert(name.into(), json!(round(percentile(samples, p))));
    }
    let max = samples.last().map_or(0.0, |m| f64::from(*m) / 1000.0);
    report.insert("max_ms".into(), json!(round(max)));
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A run id to keep channel names of runs apart.
fn run_id() -> String {
    format!("{:x}", now_us())
}

/// One channel × `subscribers` sockets; `rate` publishes per second for `seconds` (each
/// at most `in_flight` at once): publish→deliver percentiles over every (message,
/// socket), deliveries/s, lost and duplicated deliveries, server CPU and RSS.
pub async fn fanout(
    client: &Client,
    servers: &[i32],
    subscribers: usize,
    rate: u32,
    seconds: u32,
) -> anyhow::Result<Report> {
    let channel = client.channel(&format!("fan{}", run_id())).await?;
    let mut urls = Vec::with_capacity(subscribers);
    for n in 0..subscribers {
        urls.push(client.socket_url(&channel, n).await?);
    }
    let tally = Arc::new(Tally::default());
    let readers = open(urls, &tally).await?;
    warm_up(client, std::slice::from_ref(&channel), &tally, subscribers).await?;

    let count = u64::from(rate) * u64::from(seconds);
    let before = usage(servers);
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(64));
    let published = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(count as usize);
    let client = Arc::new(Client {
        target: client.target.clone(),
        http: client.http.clone(),
    });
    for index in 0..count {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (client, channel) = (client.clone(), channel.clone());
        let (published, failed) = (published.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            match client.publish(&channel, index).await {
                Ok(()) => published.fetch_add(1, Ordering::Relaxed),
                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        }));
    }
    join_all(tasks).await;
    let publishing = started.elapsed();
    let published = published.load(Ordering::Relaxed);
    let expected = published * subscribers as u64;
    let (samples, done) = finish(readers, &tally, expected).await?;
    let after = usage(servers);
    let elapsed = done.duration_since(started).as_secs_f64().max(1e-6);
    let mut report = head(
        &client,
        "fanout",
        json!({"subscribers": subscribers, "rate": rate, "seconds": seconds,
               "offered_per_s": round(count as f64 / publishing.as_secs_f64().max(1e-6)),
               "expected": expected,
               "deliveries_per_s": round(samples.len() as f64 / elapsed)}),
    );
    let failed = failed.load(Ordering::Relaxed);
    outcome(&mut report, (published, failed), expected, &samples, &tally);
    server_fields(&mut report, before, after, published);
    Ok(report)
}

/// The start of a report: the target, the scenario and its own fields (an object).
fn head(client: &Client, scenario: &str, fields: Value) -> Report {
    let mut report = Report::new();
    report.insert("target".into(), json!(client.target.name()));
    report.insert("scenario".into(), json!(scenario));
    if let Value::Object(fields) = fields {
        report.extend(fields);
    }
    report
}

/// What every delivering scenario reports: publishes made and failed, deliveries against
/// `expected`, lost and duplicated ones, and the latency percentiles.
fn outcome(
    report: &mut Report,
    (published, failed): (u64, u64),
    expected: u64,
    samples: &[u32],
    tally: &Tally,
) {
    report.insert("published".into(), json!(published));
    report.insert("publish_failed".into(), json!(failed));
    report.insert("deliveries".into(), json!(samples.len()));
    report.insert(
        "lost".into(),
        json!(expected.saturating_sub(samples.len() as u64)),
    );
    report.insert(
        "duplicates".into(),
        json!(tally.duplicates.load(Ordering::Relaxed)),
    );
    latency_fields(report, samples);
}

fn server_fields(report: &mut Report, before: Usage, after: Usage, published: u64) {
    let cpu = after.cpu_seconds - before.cpu_seconds;
    report.insert("server_cpu_s".into(), json!(round(cpu)));
    report.insert(
        "server_cpu_us_per_publish".into(),
        json!(round(cpu * 1e6 / published.max(1) as f64)),
    );
    report.insert("server_rss_before".into(), json!(before.rss_bytes));
    report.insert("server_rss_after".into(), json!(after.rss_bytes));
}

/// `channels` channels × 1 socket; publishes unpaced, `in_flight` at once, round robin
/// over the channels, for `seconds`: publishes/s, server CPU per publish, latency, lost
/// and duplicated deliveries.
pub async fn throughput(
    client: &Client,
    servers: &[i32],
    channels: usize,
    in_flight: usize,
    seconds: u32,
) -> anyhow::Result<Report> {
    let id = run_id();
    let mut made = Vec::with_capacity(channels);
    let names: Vec<String> = (0..channels).map(|i| format!("thr{id}-{i}")).collect();
    for batch in names.chunks(64) {
        let got = join_all(batch.iter().map(|name| client.channel(name))).await;
        for channel in got {
            made.push(channel?);
        }
    }
    let mut urls = Vec::with_capacity(channels);
    for (n, channel) in made.iter().enumerate() {
        urls.push(client.socket_url(channel, n).await?);
    }
    let tally = Arc::new(Tally::default());
    let readers = open(urls, &tally).await?;
    warm_up(client, &made, &tally, channels).await?;

    let before = usage(servers);
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(u64::from(seconds));
    let next = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let published = AtomicU64::new(0);
    let workers = (0..in_flight.max(1)).map(|_| async {
        while Instant::now() < stop_at {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let channel = &made[(index % made.len() as u64) as usize];
            match client.publish(channel, index).await {
                Ok(()) => published.fetch_add(1, Ordering::Relaxed),
                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
            };
        }
    });
    join_all(workers).await;
    let publishing = started.elapsed().as_secs_f64().max(1e-6);
    let published = published.load(Ordering::Relaxed);
    let (samples, _) = finish(readers, &tally, published).await?;
    let after = usage(servers);
    let mut report = head(
        client,
        "throughput",
        json!({"channels": channels, "in_flight": in_flight, "seconds": seconds,
               "publishes_per_s": round(published as f64 / publishing)}),
    );
    let failed = failed.load(Ordering::Relaxed);
    outcome(
        &mut report,
        (published, failed),
        published,
        &samples,
        &tally,
    );
    server_fields(&mut report, before, after, published);
    Ok(report)
}

/// `sockets` idle sockets on one channel: how long they took to connect and the server
/// RSS each one costs.
pub async fn connect(client: &Client, servers: &[i32], sockets: usize) -> anyhow::Result<Report> {
    let channel = client.channel(&format!("idle{}", run_id())).await?;
    let mut urls = Vec::with_capacity(sockets);
    for n in 0..sockets {
        urls.push(client.socket_url(&channel, n).await?);
    }
    // Let the server settle from the setup before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = usage(servers);
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let readers = open(urls, &tally).await?;
    let opened = started.elapsed().as_secs_f64();
    warm_up(client, std::slice::from_ref(&channel), &tally, sockets).await?;
    let after = usage(servers);
    stop(readers, &tally).await?;
    let per_socket = after.rss_bytes.saturating_sub(before.rss_bytes) / sockets.max(1) as u64;
    Ok(head(
        client,
        "connect",
        json!({"sockets": sockets, "connect_s": round(opened),
               "connects_per_s": round(sockets as f64 / opened.max(1e-6)),
               "rss_per_socket": per_socket,
               "server_rss_before": before.rss_bytes, "server_rss_after": after.rss_bytes}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_survive_any_wrapping() {
        assert_eq!(
            marker("HB:7:1700000000000001;"),
            Some((7, 1_700_000_000_000_001))
        );
        assert_eq!(
            marker(r#"{"type":"message","data":"HB:12:5;","id":"x"}"#),
            Some((12, 5))
        );
        assert_eq!(marker(r#"{"title":"HB:W:9;"}"#), Some((WARMUP, 9)));
        assert_eq!(marker(r#"{"type":"welcome"}"#), None);
        assert_eq!(marker("HB:x:1;"), None);
        assert_eq!(marker("HB:1:2"), None);
    }
}
