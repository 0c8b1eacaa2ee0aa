//! The whole cluster under a real `circusd`, from the repository's own `circus.ini` with
//! only its ports and log paths rewritten: two API processes share one listening socket,
//! two edges share another, a message goes through both, `circusctl incr websockets`
//! adds a third edge that serves sockets, and `circusctl quit` stops every process. The
//! Redis layout, `etc/circus-redis.ini`, likewise: its own `redis-server`, two routers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{
    DEADLINE, Moz, Ports, START_DEADLINE, Socket, V1, cluster_env, collect_keys, eventually,
    free_port, repo_root, wait_health,
};
use serde_json::{Value, json};

/// circusd, stopped with `circusctl quit` (then SIGKILL) when dropped.
struct Circus {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

fn circus_tool(name: &str) -> PathBuf {
    let path = repo_root().join(".venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: `make test` creates the venv with circus",
        path.display()
    );
    path
}

impl Circus {
    fn ctl(&self, args: &[&str]) -> String {
        let output = Command::new(circus_tool("circusctl"))
            .arg("--endpoint")
            .arg(&self.endpoint)
            .arg("--timeout")
            .arg("10")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "circusctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn pids(&self, watcher: &str) -> BTreeSet<u32> {
        self.ctl(&["list", watcher])
            .split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }
}

impl Drop for Circus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- circusd log ---\n{log}");
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            e2e::send_signal(self.child.id() as i32, libc::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None))
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The repository's `ini` (e.g. `circus.ini`) with test ports (each `from` string becomes
/// its `to`), test log and data paths and this build's binaries.
fn rewrite_ini(dir: &Path, ini: &str, replacements: &[(String, String)]) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join(ini)).unwrap();
    let binaries = e2e::binary("api").parent().unwrap().display().to_string();
    let mut rewritten = text
        .replace("var/log/", &format!("{}/", dir.display()))
        .replace("var/redis", &dir.display().to_string())
        .replace("target/release", &binaries);
    for (from, to) in replacements {
        assert!(rewritten.contains(from.as_str()), "{ini} has no {from}");
        rewritten = rewritten.replace(from.as_str(), to);
    }
    let path = dir.join("circus.ini");
    std::fs::write(&path, rewritten).unwrap();
    path
}

/// circusd on `ini`, its endpoints and the shared sockets moved to the ports of `ports`
/// (plus `more` replacements), with the test cluster's environment.
fn start_circus(dir: &Path, ports: &Ports, ini: &str, more: &[(String, String)]) -> Circus {
    let (circus_port, pubsub_port) = (free_port(), free_port());
    let mut replacements = vec![
        ("port = 5001".into(), format!("port = {}", ports.api)),
        ("port = 8888".into(), format!("port = {}", ports.edges[0])),
        (":5555".into(), format!(":{circus_port}")),
        (":5556".into(), format!(":{pubsub_port}")),
    ];
    replacements.extend_from_slice(more);
    let ini = rewrite_ini(dir, ini, &replacements);
    let mut env = cluster_env(dir, ports);
    env.insert(
        "HERALD__WEBSOCKETS__PUBLIC_URL".into(),
        format!("ws://127.0.0.1:{}", ports.edges[0]),
    );
    let log = dir.join("circusd.out");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(circus_tool("circusd"))
        .arg(&ini)
        .current_dir(repo_root())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Circus {
        child,
        endpoint: format!("tcp://127.0.0.1:{circus_port}"),
        log: dir.join("circusd.log"),
    }
}

/// Polls `url` over fresh connections until `field` took every value in `expected`.
async fn see_every(url: &str, field: &str, expected: &BTreeSet<u32>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut seen = BTreeSet::new();
    while !expected.is_subset(&seen) {
        assert!(
            Instant::now() < deadline,
            "{url}: saw {seen:?}, expected each of {expected:?}"
        );
        if let Ok(response) = client.get(url).send().await
            && let Ok(body) = response.json::<Value>().await
            && let Some(pid) = body[field].as_u64()
        {
            seen.insert(pid as u32);
        }
    }
}

/// Opens sockets with `connect` until `done` holds for the monitor's view.
async fn open_until<F: Future<Output = Socket>>(
    status_url: &str,
    sockets: &mut Vec<Socket>,
    done: impl Fn(&[(String, u64)]) -> bool,
    connect: impl Fn() -> F,
) {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        sockets.push(connect().await);
        // Heartbeats carry connection counts every 300 ms: give them a few beats.
        let settle = Instant::now() + Duration::from_secs(2);
        while Instant::now() < settle {
            if edge_connections(status_url)
                .await
                .is_some_and(|nodes| done(&nodes))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            Instant::now() < deadline,
            "{} sockets opened, the edges never matched",
            sockets.len()
        );
    }
}

/// The monitor's view: node id → connections, for healthy edges.
async fn edge_connections(status_url: &str) -> Option<Vec<(String, u64)>> {
    let status: Value = reqwest::get(status_url).await.ok()?.json().await.ok()?;
    let nodes = status["nodes"].as_array()?;
    Some(
        nodes
            .iter()
            .filter(|n| n["healthy"] == true)
            .map(|n| {
                (
                    n["id"].as_str().unwrap_or("").to_owned(),
                    n["connections"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
    )
}

#[tokio::test]
async fn the_whole_cluster_runs_under_circusd() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free(1);
    let _redis = ports.redis.map(common::testing::RedisServer::start_on);
    let circus = start_circus(dir.path(), &ports, "circus.ini", &[]);
    let api = format!("http://127.0.0.1:{}", ports.api);
    let edge = format!("ws://127.0.0.1:{}", ports.edges[0]);
    wait_health(&format!("{api}/health")).await;
    wait_health(&format!("http://127.0.0.1:{}/health", ports.edges[0])).await;

    // Both API processes and both edges answer on their shared sockets.
    let api_pids = circus.pids("api");
    assert_eq!(api_pids.len(), 2, "{api_pids:?}");
    see_every(&format!("{api}/health"), "pid", &api_pids).await;
    let edge_pids = circus.pids("websockets");
    assert_eq!(edge_pids.len(), 2, "{edge_pids:?}");
    see_every(
        &format!("http://127.0.0.1:{}/health", ports.edges[0]),
        "pid",
        &edge_pids,
    )
    .await;

    // Sockets spread over both edges; every socket gets every message, whichever API
    // process took the post.
    let moz = Moz::new(&api);
    let (token, own_queue) = moz.token().await;
    let status_url = format!("http://127.0.0.1:{}/status", ports.monitor);
    let mut sockets = Vec::new();
    let busy = |nodes: &[(String, u64)]| nodes.iter().filter(|(_, c)| *c > 0).count() >= 2;
    let mozilla = || Socket::mozilla(&edge, &token);
    open_until(&status_url, &mut sockets, busy, mozilla).await;
    let fresh = Moz {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        ..moz.clone()
    };
    let mut keys = Vec::new();
    for i in 0..4 {
        keys.push(fresh.post(&own_queue, &format!("through circus {i}")).await);
    }
    for socket in &mut sockets {
        collect_keys(socket, &keys, DEADLINE).await;
    }

    // circusctl incr websockets: a third edge registers, takes sockets and delivers.
    let before: BTreeSet<String> = edge_connections(&status_url)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    circus.ctl(&["incr", "websockets"]);
    assert_eq!(circus.pids("websockets").len(), 3);
    let new_node = eventually("a third healthy edge", START_DEADLINE, || {
        let (status_url, before) = (status_url.clone(), before.clone());
        async move {
            let nodes = edge_connections(&status_url).await?;
            nodes
                .into_iter()
                .map(|(id, _)| id)
                .find(|id| !before.contains(id))
        }
    })
    .await;
    let mut late_sockets = Vec::new();
    let on_new = |nodes: &[(String, u64)]| nodes.iter().any(|(id, c)| *id == new_node && *c > 0);
    open_until(&status_url, &mut late_sockets, on_new, mozilla).await;
    let key = fresh.post(&own_queue, "after incr").await;
    for socket in sockets.iter_mut().chain(late_sockets.iter_mut()) {
        collect_keys(socket, std::slice::from_ref(&key), DEADLINE).await;
    }

    // circusctl quit stops every process it started.
    let all: Vec<u32> = circus
        .pids("api")
        .into_iter()
        .chain(circus.pids("websockets"))
        .chain(circus.pids("router"))
        .collect();
    circus.ctl(&["quit"]);
    eventually("every Herald process to exit", DEADLINE, || {
        let alive = all.iter().any(|pid| process_exists(*pid));
        async move { (!alive).then_some(()) }
    })
    .await;
}

#[allow(unsafe_code)]
fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// `etc/circus-redis.ini`: circusd starts a `redis-server` of its own and two routers; a
/// channel's messages go through whichever router its stream hashes to and reach sockets
/// on both edges in order; nothing is written to SQLite; `circusctl quit` stops every
/// process, Redis included.
#[tokio::test]
async fn the_redis_layout_runs_under_circusd() {
    let dir = tempfile::tempdir().unwrap();
    let mut ports = Ports::free(1);
    ports.redis = Some(free_port());
    // (the ini's port, the test's) for Redis, both routers' PULL, PUB and HTTP.
    let moved: Vec<(u16, u16)> = [6390, 9988, 9989, 9990, 9991, 5004, 5006]
        .into_iter()
        .map(|port| {
            (
                port,
                if port == 6390 {
                    ports.redis.unwrap()
                } else {
                    free_port()
                },
            )
        })
        .collect();
    let more: Vec<(String, String)> = moved
        .iter()
        .map(|(from, to)| (format!("{from}"), format!("{to}")))
        .collect();
    let circus = start_circus(dir.path(), &ports, "etc/circus-redis.ini", &more);
    let api = format!("http://127.0.0.1:{}", ports.api);
    let edge = format!("ws://127.0.0.1:{}", ports.edges[0]);
    for (from, to) in &moved {
        if [5004, 5006].contains(from) {
            wait_health(&format!("http://127.0.0.1:{to}/health")).await;
        }
    }
    wait_health(&format!("{api}/health")).await;
    wait_health(&format!("http://127.0.0.1:{}/health", ports.edges[0])).await;
    assert_eq!(circus.pids("redis").len(), 1);
    assert_eq!(circus.pids("api").len(), 2);
    assert_eq!(circus.pids("websockets").len(), 2);

    // Sockets on both edges; ten channels (so both routers carry streams), five messages
    // each, through fresh connections (so both API processes take posts).
    let v1 = V1::new(&api);
    let channels: Vec<String> = (0..10).map(|c| format!("c{c}")).collect();
    let status_url = format!("http://127.0.0.1:{}/status", ports.monitor);
    for channel in &channels {
        let history = json!({"history": {"size": 100}});
        let (status, body) = v1
            .call("PUT", &format!("channels/{channel}"), Some(history))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut sockets = Vec::new();
    let token = v1.token(json!({"user": "u", "channels": channels})).await;
    let busy = |nodes: &[(String, u64)]| nodes.iter().filter(|(_, c)| *c > 0).count() >= 2;
    let url = format!("{edge}/ws?token={token}");
    open_until(&status_url, &mut sockets, busy, || Socket::connect(&url)).await;
    let fresh = V1 {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        ..v1.clone()
    };
    for n in 0..5 {
        for channel in &channels {
            let path = format!("channels/{channel}/messages");
            let (status, body) = fresh.call("POST", &path, Some(json!({"data": n}))).await;
            assert_eq!(status, 201, "{body}");
        }
    }
    for socket in &mut sockets {
        let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        while seen.values().map(Vec::len).sum::<usize>() < 50 {
            let frame = socket.next_json(DEADLINE).await;
            if frame["type"] == "message" {
                let channel = frame["channel"].as_str().unwrap().to_owned();
                seen.entry(channel)
                    .or_default()
                    .push(frame["seq"].as_u64().unwrap());
            }
        }
        for channel in &channels {
            assert_eq!(
                seen[channel],
                [1, 2, 3, 4, 5],
                "{channel} once each, in order"
            );
        }
    }
    assert!(
        !dir.path().join("herald.db").exists(),
        "the Redis layout writes nothing to SQLite"
    );

    let all: Vec<u32> = [
        "redis",
        "router-a",
        "router-b",
        "api",
        "websockets",
        "monitor",
    ]
    .into_iter()
    .flat_map(|watcher| circus.pids(watcher))
    .collect();
    circus.ctl(&["quit"]);
    eventually("every process to exit", DEADLINE, || {
        let alive = all.iter().any(|pid| process_exists(*pid));
        async move { (!alive).then_some(()) }
    })
    .await;
}
