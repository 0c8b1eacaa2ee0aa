//! The end-to-end harness: starts the real Herald binaries (built next to the test binary,
//! e.g. `target/release/herald-api`) on free loopback ports, each with its own temporary
//! SQLite file and log files, waits for their `/health` with a deadline, and kills them
//! when dropped. Plus thin clients for the Mozilla HTTP API and real WebSocket sockets.
//! Nothing here sleeps for a fixed time to wait for something: everything polls with a
//! deadline (`eventually`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::hosts::{Host, Network};

pub mod hosts;
pub mod load;
pub mod push_service;
pub mod receiver;
pub mod thunderpush;
pub mod tls;

/// How long a cluster may take to become healthy on a loaded 2-core machine.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// Default wait for an expected frame or state.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The repository root (where `etc/herald.toml` and `circus.ini` are).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The path of a Herald binary built in the same profile as the running executable: a test
/// lives in `target/<profile>/deps/`, the bench binary in `target/<profile>/`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    let path = dir.join(format!("herald-{name}"));
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`make test` runs `cargo build --release --bins`)",
        path.display()
    );
    path
}

pub use common::testing::free_port;

/// Polls `probe` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// A running Herald binary, killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    binary: String,
    config: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    log: PathBuf,
    host: Host,
    child: Option<Child>,
}

impl Proc {
    /// Starts `herald-<binary>` with the dev config, `env` overrides and extra `args`,
    /// appending stdout and stderr to `log`.
    pub fn start(
        name: &str,
        binary: &str,
        env: BTreeMap<String, String>,
        args: Vec<String>,
        log: PathBuf,
    ) -> Proc {
        let config = repo_root().join("etc/herald.toml");
        Proc::start_configured(name, binary, config, env, args, log)
    }

    /// Like `start`, with the config file `config`.
    pub fn start_configured(
        name: &str,
        binary: &str,
        config: PathBuf,
        env: BTreeMap<String, String>,
        args: Vec<String>,
        log: PathBuf,
    ) -> Proc {
        Proc::start_on(Host::loopback(), name, binary, config, env, log, args)
    }

    /// Like `start_configured`, on `host` (in its network namespace, if it has one).
    pub fn start_on(
        host: Host,
        name: &str,
        binary: &str,
        config: PathBuf,
        env: BTreeMap<String, String>,
        log: PathBuf,
        args: Vec<String>,
    ) -> Proc {
        let mut proc = Proc {
            name: name.into(),
            binary: binary.into(),
            config,
            args,
            env,
            log,
            host,
            child: None,
        };
        proc.spawn();
        proc
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .host
            .command(&binary(&self.binary))
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .envs(&self.env)
            .env(
                "RUST_LOG",
                std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (e.g. `libc::SIGTERM`, `libc::SIGSTOP`).
    pub fn signal(&self, signal: i32) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the process to exit by itself; its exit status.
    pub async fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = eventually(&format!("{} to exit", self.name), deadline, || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await;
        self.child = None;
        status
    }

    /// Starts the same command again (after `kill`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The environment variable `key` this process was started with.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// Restarts the process with `key=value` in its environment (e.g. a fault to inject).
    pub fn restart_with(&mut self, key: &str, value: &str) {
        self.env.insert(key.into(), value.into());
        self.restart();
    }

    /// The last lines of this process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last log lines of {} ---\n{}",
                self.name,
                self.log_tail(30)
            );
        }
        self.kill();
    }
}

/// Sends `signal` to `pid` (a process this test started).
#[allow(unsafe_code)]
pub fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; pid is our own child.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// Ports of one test cluster.
#[derive(Debug, Clone)]
pub struct Ports {
    pub api: u16,
    pub router_pull: u16,
    pub router_pub: u16,
    pub router_http: u16,
    pub monitor: u16,
    pub edges: Vec<u16>,
    /// The cluster's own `redis-server` when the store is Redis (`HERALD_E2E_STORE=redis`,
    /// or `Options::redis`).
    pub redis: Option<u16>,
    /// Routers after the first: `(pull, publish, http)` each.
    pub more_routers: Vec<(u16, u16, u16)>,
    /// API processes after the first.
    pub more_apis: Vec<u16>,
    /// Which host each process runs on.
    pub hosts: Placement,
}

/// Which host each process of a cluster runs on: all on `127.0.0.1` unless the cluster
/// spans several hosts (`Options::hosts`).
#[derive(Debug, Clone)]
pub struct Placement {
    pub redis: Host,
    pub monitor: Host,
    /// One per router, the first router's first; likewise for APIs and edges.
    pub routers: Vec<Host>,
    pub apis: Vec<Host>,
    pub edges: Vec<Host>,
}

impl Placement {
    /// Everything on the loopback host.
    pub fn loopback(routers: usize, apis: usize, edges: usize) -> Placement {
        Placement::spread(&[Host::loopback()], routers, apis, edges)
    }

    /// Every process's host (repeated for processes sharing one).
    pub fn all(&self) -> impl Iterator<Item = &Host> {
        [&self.redis, &self.monitor]
            .into_iter()
            .chain(&self.routers)
            .chain(&self.apis)
            .chain(&self.edges)
    }

    /// Redis and the monitor on the first host; router, API and edge `i` each on host
    /// `1 + i % (n - 1)`, so with three hosts every kind of link crosses hosts.
    pub fn spread(hosts: &[Host], routers: usize, apis: usize, edges: usize) -> Placement {
        let on = |i: usize| {
            let host = match hosts.len() {
                1 => 0,
                n => 1 + i % (n - 1),
            };
            hosts[host].clone()
        };
        Placement {
            redis: hosts[0].clone(),
            monitor: hosts[0].clone(),
            routers: (0..routers.max(1)).map(on).collect(),
            apis: (0..apis.max(1)).map(on).collect(),
            edges: (0..edges).map(on).collect(),
        }
    }
}

impl Ports {
    /// Ports that were free a moment ago, with `edges` edge ports.
    pub fn free(edges: usize) -> Ports {
        Ports {
            api: free_port(),
            router_pull: free_port(),
            router_pub: free_port(),
            router_http: free_port(),
            monitor: free_port(),
            edges: (0..edges).map(|_| free_port()).collect(),
            redis: redis_store().then(free_port),
            more_routers: Vec::new(),
            more_apis: Vec::new(),
            hosts: Placement::loopback(1, 1, edges),
        }
    }

    /// The ports of the cluster `options` describe.
    pub fn for_options(options: &Options) -> Ports {
        let mut ports = Ports::free(options.edges);
        if options.redis && ports.redis.is_none() {
            ports.redis = Some(free_port());
        }
        ports.more_routers = (1..options.routers.max(1))
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        ports.more_apis = (1..options.apis.max(1)).map(|_| free_port()).collect();
        ports.hosts = Placement::loopback(options.routers, options.apis, options.edges);
        ports
    }

    /// `ip:port` of every router's `(pull, publish, http)` sockets, the first's first.
    pub fn router_addresses(&self) -> Vec<(String, String, String)> {
        self.routers()
            .into_iter()
            .zip(&self.hosts.routers)
            .map(|((pull, publish, http), host)| {
                let at = |port| format!("{}:{port}", authority(host.ip));
                (at(pull), at(publish), at(http))
            })
            .collect()
    }

    /// Every API process's `ip:port`, the first's first.
    pub fn api_addresses(&self) -> Vec<String> {
        std::iter::once(self.api)
            .chain(self.more_apis.iter().copied())
            .zip(&self.hosts.apis)
            .map(|(port, host)| format!("{}:{port}", authority(host.ip)))
            .collect()
    }

    /// Edge `i`'s `ip:port`.
    pub fn edge_address(&self, i: usize) -> String {
        format!("{}:{}", authority(self.hosts.edges[i].ip), self.edges[i])
    }

    /// Every router's `(pull, publish, http)` ports, the first router's first.
    pub fn routers(&self) -> Vec<(u16, u16, u16)> {
        let mut all = vec![(self.router_pull, self.router_pub, self.router_http)];
        all.extend(self.more_routers.iter().copied());
        all
    }
}

/// `ip` as the host part of a URL (IPv6 in brackets).
pub fn authority(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Whether the clusters of this run keep their state in Redis: `HERALD_E2E_STORE=redis`
/// runs any e2e test on the Redis backend (each cluster starts its own `redis-server`);
/// unset or `sqlite`, on the SQLite default.
pub fn redis_store() -> bool {
    match std::env::var("HERALD_E2E_STORE").as_deref() {
        Ok("redis") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("HERALD_E2E_STORE={other}: give redis or sqlite"),
    }
}

/// A whole cluster of real processes: router(s), API(s), N edges, optionally the monitor.
pub struct Cluster {
    pub ports: Ports,
    pub router: Proc,
    pub api: Proc,
    /// Routers and API processes after the first (`Options::routers`, `Options::apis`).
    pub more_routers: Vec<Proc>,
    pub more_apis: Vec<Proc>,
    pub edges: Vec<Proc>,
    pub monitor: Option<Proc>,
    /// The Redis store's server, when `ports.redis` is set.
    pub redis: Option<common::testing::RedisServer>,
    /// The hosts of a cluster spread over several (`Options::hosts`), removed after the
    /// processes have stopped.
    pub network: Option<Network>,
    /// Last, so that it outlives the processes: their logs are read when a test fails.
    pub dir: tempfile::TempDir,
}

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub edges: usize,
    /// Routers and API processes (at least one of each).
    pub routers: usize,
    pub apis: usize,
    /// Keep the state in a `redis-server` of the cluster's own, whatever
    /// `HERALD_E2E_STORE` says.
    pub redis: bool,
    pub monitor: bool,
    /// Spread the processes over this many hosts (`hosts::Network`: network namespaces
    /// as root, else `127.0.0.2`, `127.0.0.3`, …; see `Placement::spread`), each with a
    /// directory of its own for its config and logs. 0 or 1: everything on `127.0.0.1`.
    /// Needs the Redis store, since SQLite is a file every process opens.
    pub hosts: usize,
    /// Extra `HERALD__*` overrides (without the prefix) for every process.
    pub env: &'static [(&'static str, &'static str)],
    /// TOML appended to a copy of `etc/herald.toml` (e.g. more `[[apps.keys]]` for the
    /// dev app, which the file ends with).
    pub config: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            edges: 1,
            routers: 1,
            apis: 1,
            redis: false,
            monitor: false,
            hosts: 0,
            env: &[],
            config: "",
        }
    }
}

impl Cluster {
    /// Starts the processes and waits until each reports healthy.
    pub async fn start(options: Options) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = Ports::for_options(&options);
        let network = (options.hosts > 1).then(|| {
            assert!(
                ports.redis.is_some(),
                "a cluster on several hosts needs the Redis store (Options::redis)"
            );
            Network::create(options.hosts)
        });
        if let Some(network) = &network {
            ports.hosts =
                Placement::spread(&network.hosts, options.routers, options.apis, options.edges);
        }
        let redis = ports.redis.map(|port| {
            let host = &ports.hosts.redis;
            common::testing::RedisServer::start_at(host.ip, port, host.netns.as_deref())
        });
        let mut env = cluster_env(dir.path(), &ports);
        for (key, value) in options.env {
            env.insert(format!("HERALD__{key}"), (*value).to_owned());
        }
        let base = std::fs::read_to_string(repo_root().join("etc/herald.toml")).unwrap();
        let config = format!("{base}\n{}\n", options.config);
        // Each host's own directory (config, logs): nothing is shared through files. Each
        // config is written once, before any process that reads it starts.
        let host_dir = |host: &Host| match &network {
            Some(_) => dir.path().join(host.ip.to_string()),
            None => dir.path().to_path_buf(),
        };
        for host in ports.hosts.all() {
            let path = host_dir(host);
            if !path.join("herald.toml").exists() {
                std::fs::create_dir_all(&path).unwrap();
                std::fs::write(path.join("herald.toml"), &config).unwrap();
            }
        }
        let start = |name: &str, binary: &str, host: &Host, env: BTreeMap<String, String>| {
            let here = host_dir(host);
            let log = here.join(format!("{name}.log"));
            let config = here.join("herald.toml");
            Proc::start_on(host.clone(), name, binary, config, env, log, vec![])
        };
        let routers = ports.router_addresses();
        let mut routers: Vec<Proc> = routers
            .iter()
            .zip(&ports.hosts.routers)
            .enumerate()
            .map(|(i, ((pull, publish, http), host))| {
                let mut env = env.clone();
                for (key, value) in [
                    ("ROUTER__PULL", format!("tcp://{pull}")),
                    ("ROUTER__PUBLISH", format!("tcp://{publish}")),
                    ("ROUTER__LISTEN", http.clone()),
                ] {
                    env.insert(format!("HERALD__{key}"), value);
                }
                let name = if i == 0 {
                    "router".into()
                } else {
                    format!("router{i}")
                };
                start(&name, "router", host, env)
            })
            .collect();
        let mut apis: Vec<Proc> = ports
            .api_addresses()
            .iter()
            .zip(&ports.hosts.apis)
            .enumerate()
            .map(|(i, (address, host))| {
                let mut env = env.clone();
                env.insert("HERALD__API__LISTEN".into(), address.clone());
                env.insert(
                    "HERALD__API__PUBLIC_URL".into(),
                    format!("http://{address}"),
                );
                let name = if i == 0 {
                    "api".into()
                } else {
                    format!("api{i}")
                };
                start(&name, "api", host, env)
            })
            .collect();
        let edges = (0..ports.edges.len())
            .map(|i| {
                let address = ports.edge_address(i);
                let mut env = env.clone();
                env.insert("HERALD__WEBSOCKETS__LISTEN".into(), address.clone());
                env.insert(
                    "HERALD__WEBSOCKETS__PUBLIC_URL".into(),
                    format!("ws://{address}"),
                );
                start(
                    &format!("edge{i}"),
                    "websockets",
                    &ports.hosts.edges[i],
                    env,
                )
            })
            .collect();
        let monitor = options
            .monitor
            .then(|| start("monitor", "monitor", &ports.hosts.monitor, env.clone()));
        let router = routers.remove(0);
        let api = apis.remove(0);
        let cluster = Cluster {
            dir,
            network,
            redis,
            ports,
            router,
            api,
            more_routers: routers,
            more_apis: apis,
            edges,
            monitor,
        };
        cluster.wait_healthy().await;
        cluster
    }

    /// Waits for every process's `/health` to answer 200.
    pub async fn wait_healthy(&self) {
        for (_, _, http) in self.ports.router_addresses() {
            wait_health(&format!("http://{http}/health")).await;
        }
        for url in self.api_urls() {
            wait_health(&format!("{url}/health")).await;
        }
        for i in 0..self.edges.len() {
            let edge = self.ports.edge_address(i);
            wait_health(&format!("http://{edge}/health")).await;
        }
        if self.monitor.is_some() {
            wait_health(&format!("{}/health", self.monitor_url())).await;
        }
    }

    pub fn api_url(&self) -> String {
        self.api_urls().remove(0)
    }

    /// Every API process's `http://<ip>:<port>`, the first's first.
    pub fn api_urls(&self) -> Vec<String> {
        let addresses = self.ports.api_addresses();
        addresses.iter().map(|a| format!("http://{a}")).collect()
    }

    /// `ws://<ip>:<port>` of edge `i`.
    pub fn edge_url(&self, i: usize) -> String {
        format!("ws://{}", self.ports.edge_address(i))
    }

    /// Edge `i` as Mozilla's `GET /nodes/` lists it: `host:port`.
    pub fn edge_node(&self, i: usize) -> String {
        self.ports.edge_address(i)
    }

    /// `http://<ip>:<port>` of the monitor.
    pub fn monitor_url(&self) -> String {
        let host = authority(self.ports.hosts.monitor.ip);
        format!("http://{host}:{}", self.ports.monitor)
    }

    pub fn moz(&self) -> Moz {
        Moz::new(&self.api_url())
    }
}

/// The environment that points every process of a test cluster at its own ports and files.
pub fn cluster_env(dir: &Path, ports: &Ports) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(format!("HERALD__{k}"), v);
    };
    set(
        "STORE__SQLITE_PATH",
        dir.join("herald.db").display().to_string(),
    );
    set(
        "STORE__SQLITE_LIVE_PATH",
        dir.join("herald-live.db").display().to_string(),
    );
    set(
        "MONITOR__TOKEN_FILE",
        dir.join("monitor.token").display().to_string(),
    );
    let list = |addresses: Vec<&String>| {
        let quoted: Vec<String> = addresses.iter().map(|a| format!("\"tcp://{a}\"")).collect();
        format!("[{}]", quoted.join(","))
    };
    let routers = ports.router_addresses();
    set(
        "CLUSTER__ROUTER_PULL",
        list(routers.iter().map(|r| &r.0).collect()),
    );
    set(
        "CLUSTER__ROUTER_PUB",
        list(routers.iter().map(|r| &r.1).collect()),
    );
    if let Some(port) = ports.redis {
        let host = authority(ports.hosts.redis.ip);
        set("STORE__BACKEND", "redis".into());
        set("STORE__REDIS_URL", format!("redis://{host}:{port}/"));
    }
    set("CLUSTER__NODE_TTL_MS", "3000".into());
    let (pull, publish, http) = routers[0].clone();
    set("ROUTER__PULL", format!("tcp://{pull}"));
    set("ROUTER__PUBLISH", format!("tcp://{publish}"));
    set("ROUTER__LISTEN", http);
    set("ROUTER__HEARTBEAT_MS", "200".into());
    let health: Vec<String> = routers
        .iter()
        .map(|r| format!("\"http://{}\"", r.2))
        .collect();
    set("MONITOR__ROUTERS", format!("[{}]", health.join(",")));
    let api = ports.api_addresses().remove(0);
    set("API__LISTEN", api.clone());
    set("API__PUBLIC_URL", format!("http://{api}"));
    set("API__ROUTER_HEARTBEAT_MS", "200".into());
    set("WEBSOCKETS__HEARTBEAT_MS", "300".into());
    set("WEBSOCKETS__ROUTER_SILENCE_MS", "1000".into());
    let monitor = authority(ports.hosts.monitor.ip);
    set("MONITOR__LISTEN", format!("{monitor}:{}", ports.monitor));
    set("MONITOR__INTERVAL_MS", "300".into());
    set("MONITOR__CHECK_TIMEOUT_MS", "1000".into());
    env
}

/// Polls `url` until it answers 200.
pub async fn wait_health(url: &str) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    eventually(&format!("{url} to be healthy"), START_DEADLINE, || {
        let request = http.get(url).send();
        async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
}

/// A client of the Mozilla-compatible API.
#[derive(Clone)]
pub struct Moz {
    pub base: String,
    pub http: reqwest::Client,
}

/// A response's status and JSON body (`Null` when empty).
pub type Answer = (u16, Value);

impl Moz {
    pub fn new(base: &str) -> Moz {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Moz {
            base: base.into(),
            http,
        }
    }

    pub async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, body)
    }

    /// `POST /token/` → (token, own queue URL).
    pub async fn token(&self) -> (String, String) {
        let (status, body) = Self::answer(
            self.http
                .post(format!("{}/token/", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        (
            body["token"].as_str().unwrap().into(),
            body["queue"].as_str().unwrap().into(),
        )
    }

    /// `POST /queue/` → the queue URL.
    pub async fn queue(&self, token: &str, domain: &str) -> String {
        let (status, body) = self
            .form_post(
                &format!("{}/queue/", self.base),
                &[("token", token), ("domain", domain)],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["queue"].as_str().unwrap().into()
    }

    pub async fn form_post(&self, url: &str, form: &[(&str, &str)]) -> Answer {
        Self::answer(self.http.post(url).form(form).send().await.unwrap()).await
    }

    pub async fn json_post(&self, url: &str, body: &Value) -> Answer {
        Self::answer(self.http.post(url).json(body).send().await.unwrap()).await
    }

    /// Posts a message with a title; returns its key.
    pub async fn post(&self, queue: &str, title: &str) -> String {
        let (status, body) = self.form_post(queue, &[("title", title)]).await;
        assert_eq!(status, 200, "{body}");
        body["key"].as_str().unwrap().into()
    }

    /// `GET <queue>` with `X-Auth-Token` and query pairs.
    pub async fn messages(&self, queue: &str, token: &str, query: &[(&str, &str)]) -> Answer {
        let request = self
            .http
            .get(queue)
            .header("X-Auth-Token", token)
            .query(query);
        Self::answer(request.send().await.unwrap()).await
    }
}

/// A real WebSocket client socket. A task of its own reads it all the time, as a browser
/// does, so the edge's pings are answered even while a test is busy elsewhere; frames wait
/// for the test in a bounded queue.
pub struct Socket {
    sink: SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>,
    incoming: mpsc::Receiver<Incoming>,
    reader: tokio::task::JoinHandle<()>,
}

/// Most frames a socket holds for a test that has not read them yet.
const SOCKET_BACKLOG: usize = 100_000;

/// What the reader task saw.
#[derive(Debug)]
enum Incoming {
    Text(String),
    Close(Option<u16>),
    Error(String),
}

/// Why a socket ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Closed(Option<u16>),
    Error(String),
}

impl Drop for Socket {
    fn drop(&mut self) {
        // The read half goes with its task: the connection drops as it did unsplit.
        self.reader.abort();
    }
}

impl Socket {
    /// Connects to a full `ws://` URL; panics unless the handshake succeeds.
    pub async fn connect(url: &str) -> Socket {
        let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url))
            .await
            .expect("handshake in time")
            .unwrap_or_else(|e| panic!("handshake with {url} failed: {e}"));
        let (sink, mut stream) = ws.split();
        let (tx, incoming) = mpsc::channel(SOCKET_BACKLOG);
        let reader = tokio::spawn(async move {
            loop {
                let event = match stream.next().await {
                    Some(Ok(Message::Text(text))) => Incoming::Text(text.to_string()),
                    Some(Ok(Message::Close(frame))) => {
                        Incoming::Close(frame.map(|f| f.code.into()))
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Incoming::Error(e.to_string()),
                    None => Incoming::Close(None),
                };
                let last = !matches!(event, Incoming::Text(_));
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
        });
        Socket {
            sink,
            incoming,
            reader,
        }
    }

    /// Connects to edge `base` (`ws://host:port`) with a Mozilla token.
    pub async fn mozilla(base: &str, token: &str) -> Socket {
        Socket::connect(&format!("{base}/socket?token={token}")).await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.sink.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next text frame as JSON, within `deadline`.
    pub async fn next_json(&mut self, deadline: Duration) -> Value {
        self.try_next_json(deadline).await.expect("a frame in time")
    }

    /// The next text frame as JSON, or `None` if none arrives within `deadline`; panics
    /// if the socket ends first.
    pub async fn try_next_json(&mut self, deadline: Duration) -> Option<Value> {
        let text = self.try_next_text(deadline).await?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    /// The next text frame, or `None` if none arrives within `deadline`; panics if the
    /// socket ends first.
    pub async fn try_next_text(&mut self, deadline: Duration) -> Option<String> {
        let event = tokio::time::timeout(deadline, self.incoming.recv())
            .await
            .ok()?;
        match event {
            Some(Incoming::Text(text)) => Some(text),
            other => panic!("socket ended while waiting for a frame: {other:?}"),
        }
    }

    /// Waits for the socket to end; how.
    pub async fn ending(&mut self, deadline: Duration) -> Ending {
        tokio::time::timeout(deadline, async {
            loop {
                match self.incoming.recv().await {
                    Some(Incoming::Text(_)) => continue,
                    Some(Incoming::Close(code)) => return Ending::Closed(code),
                    Some(Incoming::Error(e)) => return Ending::Error(e),
                    None => return Ending::Closed(None),
                }
            }
        })
        .await
        .expect("the socket to end in time")
    }
}

/// Receives frames until every key in `keys` arrived as a message; panics on a deadline.
/// Returns how many frames carried each key (to check for duplicates).
pub async fn collect_keys(
    socket: &mut Socket,
    keys: &[String],
    deadline: Duration,
) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let start = Instant::now();
    while keys.iter().any(|k| !seen.contains_key(k)) {
        let left = deadline.checked_sub(start.elapsed()).unwrap_or_default();
        let missing = keys.iter().filter(|k| !seen.contains_key(*k)).count();
        assert!(
            !left.is_zero(),
            "{missing} of {} messages never arrived",
            keys.len()
        );
        let Some(frame) = socket.try_next_json(left).await else {
            panic!("{missing} of {} messages never arrived", keys.len())
        };
        if let Some(key) = frame["key"].as_str() {
            *seen.entry(key.to_owned()).or_default() += 1;
        }
    }
    seen
}

/// Keeps counting frames by key until none arrives for `quiet`: a late duplicate (from a
/// recovery replay) shows up here. Adds to `seen`.
pub async fn count_until_quiet(
    socket: &mut Socket,
    seen: &mut BTreeMap<String, usize>,
    quiet: Duration,
) {
    while let Some(frame) = socket.try_next_json(quiet).await {
        if let Some(key) = frame["key"].as_str() {
            *seen.entry(key.to_owned()).or_default() += 1;
        }
    }
}

/// The dev app's admin secret (`etc/herald.toml`), holding every scope.
pub const DEV_SECRET: &str = "dev-secret-change-me";

/// A client of `/api/v1` with one API key.
#[derive(Clone)]
pub struct V1 {
    pub base: String,
    pub secret: String,
    pub http: reqwest::Client,
}

impl V1 {
    /// A client of the cluster's API with the dev admin key.
    pub fn new(base: &str) -> V1 {
        V1::with_secret(base, DEV_SECRET)
    }

    pub fn with_secret(base: &str, secret: &str) -> V1 {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        V1 {
            base: base.into(),
            secret: secret.into(),
            http,
        }
    }

    /// `method` on `/api/v1/<path>` with the key as a bearer token and an optional JSON
    /// body; the status and JSON answer.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}/api/v1/{path}", self.base))
            .bearer_auth(&self.secret);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Moz::answer(request.send().await.unwrap()).await
    }

    /// Mints a connection token (`POST /api/v1/tokens`, expecting 201).
    pub async fn token(&self, request: Value) -> String {
        let (status, body) = self.call("POST", "tokens", Some(request)).await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }
}

impl Socket {
    /// A native socket (`/ws?token=`) on edge `base`, and its welcome frame.
    pub async fn native(base: &str, token: &str) -> (Socket, Value) {
        let mut socket = Socket::connect(&format!("{base}/ws?token={token}")).await;
        let welcome = socket.next_json(DEADLINE).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (socket, welcome)
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, frame: &Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// The next frame whose `type` is not `subscribed` (native acks are skipped).
    pub async fn next_event(&mut self, deadline: Duration) -> Value {
        loop {
            let frame = self.next_json(deadline).await;
            if frame["type"] != "subscribed" {
                return frame;
            }
        }
    }
}

/// The HTTP status a handshake to `url` is refused with (panics if it succeeds).
pub async fn refused(url: &str) -> u16 {
    refused_request(url.into_client_request_checked()).await
}

/// The HTTP status a handshake `request` is refused with (panics if it succeeds).
pub async fn refused_request(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> u16 {
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Ok(_) => panic!("the handshake succeeded"),
        Err(e) => panic!("the handshake failed otherwise: {e}"),
    }
}

/// A URL as a handshake request.
trait IntoRequest {
    fn into_client_request_checked(
        self,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request;
}

impl IntoRequest for &str {
    fn into_client_request_checked(
        self,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        self.into_client_request().unwrap()
    }
}
