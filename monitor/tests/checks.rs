//! In-process test of `herald-monitor`: a real edge and the monitor share one SQLite file;
//! a registered edge whose URL answers nothing is marked down after the configured number
//! of failed handshakes, the live one stays healthy, and `/status`, `/` and `/metrics` show it;
//! a restarted monitor presents the token it kept instead of registering another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use common::clock::now_us;
use common::store::{NodeHeartbeat, NodeStatus};
use common::testing::{free_endpoint, free_port, loopback_config};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn marks_unreachable_edges_down_and_keeps_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(dir.path());
    config.monitor.interval_ms = 100;
    config.monitor.check_timeout_ms = 1000;
    config.monitor.failures_before_down = 2;
    config.websockets.heartbeat_ms = 100;
    let shutdown = CancellationToken::new();

    let port = free_port();
    config.websockets.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let live_url = format!("ws://127.0.0.1:{port}");
    config.websockets.public_url = live_url.clone();
    let edge = websockets::bind(&config).await.unwrap();
    let edge_task = tokio::spawn(edge.run(shutdown.clone()));

    // A registered edge nobody answers for (a port that was free a moment ago).
    let store = common::store::open(&config.store).await.unwrap();
    let dead_url = free_endpoint().replace("tcp://", "ws://");
    let dead = |now_us| NodeHeartbeat {
        id: "dead-node".into(),
        url: dead_url.clone(),
        connections: 0,
        status: NodeStatus::Up,
        started_us: now_us,
        now_us,
    };
    store.nodes.upsert_node(&dead(now_us())).await.unwrap();

    let monitor = monitor::bind(&config).await.unwrap();
    let http = format!("http://{}", monitor.local_addr().unwrap());
    let monitor_task = tokio::spawn(monitor.run(shutdown.clone()));

    let start = Instant::now();
    let status = loop {
        // Keep the dead node's heartbeat fresh: only failed checks may take it down.
        store.nodes.upsert_node(&dead(now_us())).await.unwrap();
        let status: Value = reqwest::get(format!("{http}/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let node = |url: &str| {
            status["nodes"]
                .as_array()
                .and_then(|n| n.iter().find(|n| n["url"] == url).cloned())
        };
        let (dead_node, live_node) = (node(&dead_url), node(&live_url));
        if let (Some(d), Some(l)) = (dead_node, live_node)
            && d["monitor_down"] == true
            && d["healthy"] == false
            && l["healthy"] == true
            && l["last_check"]["ok"] == true
        {
            break status;
        }
        assert!(start.elapsed() < DEADLINE, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["store"], "ok");

    let page = reqwest::get(format!("{http}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Herald edges") && page.contains("dead-node"),
        "{page}"
    );
    let metrics = reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_monitor_checks_total{outcome=\"failed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_monitor_nodes_healthy 1"),
        "{metrics}"
    );
    let health = reqwest::get(format!("{http}/health")).await.unwrap();
    assert_eq!(health.status(), 200);

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, monitor_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::timeout(DEADLINE, edge_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_restarted_monitor_reuses_its_kept_token() {
    use common::token::{mozilla_token_id, new_mozilla_token};
    let dir = tempfile::tempdir().unwrap();
    let config = loopback_config(dir.path());
    let store = common::store::open(&config.store).await.unwrap();
    let file = &config.monitor.token_file;
    let kept = || std::fs::read_to_string(file).unwrap();
    let known = async |token: &str| {
        let id = mozilla_token_id(token).unwrap();
        store.queues.token_exists(&id).await.unwrap()
    };

    drop(monitor::bind(&config).await.unwrap());
    let first = kept();
    assert!(known(&first).await);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is its owner's only");

    // A crash loop: every start finds the same token and registers nothing new.
    for _ in 0..3 {
        drop(monitor::bind(&config).await.unwrap());
        assert_eq!(kept(), first);
    }

    // A kept token the store does not know (another store, or deleted) is replaced.
    let stranger = new_mozilla_token();
    std::fs::write(file, &stranger).unwrap();
    drop(monitor::bind(&config).await.unwrap());
    let replaced = kept();
    assert_ne!(replaced, stranger);
    assert!(known(&replaced).await);
    assert!(!known(&stranger).await);

    // A path that cannot hold the file is a start-up error naming the setting.
    let mut broken = config.clone();
    broken.monitor.token_file = dir.path().to_owned();
    let error = monitor::bind(&broken)
        .await
        .err()
        .expect("a directory is no token file");
    assert!(
        format!("{error:#}").contains("monitor.token_file"),
        "{error:#}"
    );
}
