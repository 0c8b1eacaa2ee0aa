//! Fault tests on real processes: kill -9 of the router while publishing (nothing
//! acknowledged is lost, nothing is delivered twice), an API process riding out a router
//! restart, an edge killed and dropped from `/nodes/` by the monitor, an edge cut off from
//! the routers caught by the monitor's canary, and an edge draining on SIGTERM with close
//! code 1001.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{
    Cluster, DEADLINE, Ending, Options, Socket, collect_keys, count_until_quiet, eventually,
    wait_health,
};
use serde_json::Value;

#[tokio::test]
async fn killing_the_router_mid_stream_loses_no_acknowledged_message() {
    let mut cluster = Cluster::start(Options::default()).await;
    let moz = cluster.moz();
    let (token, _) = moz.token().await;
    let queue = moz.queue(&token, "faults.example").await;
    let mut socket = Socket::mozilla(&cluster.edge_url(0), &token).await;

    let mut acknowledged = Vec::new();
    for i in 0..150 {
        if i == 50 {
            cluster.router.kill();
        }
        if i == 100 {
            cluster.router.restart();
        }
        let (status, body) = moz.form_post(&queue, &[("title", &format!("m{i}"))]).await;
        assert_eq!(
            status, 200,
            "the API answers while the router is down: {body}"
        );
        acknowledged.push(body["key"].as_str().unwrap().to_owned());
    }
    let mut seen = collect_keys(&mut socket, &acknowledged, Duration::from_secs(40)).await;
    // Longer than a silence bound plus a recovery pass: a late replay would show.
    count_until_quiet(&mut socket, &mut seen, Duration::from_secs(3)).await;
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

#[tokio::test]
async fn the_api_rides_out_a_router_restart_by_itself() {
    let mut cluster = Cluster::start(Options::default()).await;
    let api_pid = cluster.api.pid();
    let moz = cluster.moz();
    let (token, _) = moz.token().await;
    let queue = moz.queue(&token, "restart.example").await;
    let mut socket = Socket::mozilla(&cluster.edge_url(0), &token).await;

    cluster.router.kill();
    let health = format!("{}/health", cluster.api_url());
    eventually("the API to report the router gone", DEADLINE, || {
        let health = health.clone();
        async move {
            let response = reqwest::get(&health).await.ok()?;
            (response.status() == 503).then_some(())
        }
    })
    .await;
    cluster.router.restart();
    wait_health(&health).await;
    assert_eq!(cluster.api.pid(), api_pid, "the same API process");

    // Live again: a message posted now arrives without any restart of the API.
    let key = moz.post(&queue, "after the restart").await;
    let seen = collect_keys(&mut socket, std::slice::from_ref(&key), DEADLINE).await;
    assert_eq!(seen[&key], 1);
}

#[tokio::test]
async fn a_killed_edge_is_dropped_from_nodes_by_the_monitor() {
    // A node TTL far longer than the test: only the monitor's failed checks can drop it.
    let options = Options {
        edges: 2,
        monitor: true,
        env: &[("CLUSTER__NODE_TTL_MS", "600000")],
        ..Options::default()
    };
    let mut cluster = Cluster::start(options).await;
    let moz = cluster.moz();
    let nodes_url = format!("{}/nodes/", cluster.api_url());
    let nodes = |moz: e2e::Moz| {
        let url = nodes_url.clone();
        async move {
            let body: Value = moz.http.get(url).send().await.ok()?.json().await.ok()?;
            serde_json::from_value::<Vec<String>>(body["nodes"].clone()).ok()
        }
    };
    eventually("both edges listed", DEADLINE, || {
        let moz = moz.clone();
        async move { nodes(moz).await.filter(|n| n.len() == 2) }
    })
    .await;

    cluster.edges[1].kill();
    let survivor = vec![cluster.edge_node(0)];
    eventually("the killed edge to leave /nodes/", DEADLINE, || {
        let (moz, survivor) = (moz.clone(), survivor.clone());
        async move { nodes(moz).await.filter(|n| *n == survivor) }
    })
    .await;
    let status_url = format!("http://127.0.0.1:{}/status", cluster.ports.monitor);
    let dead_url = cluster.edge_url(1);
    let status: Value = eventually("the monitor to report the edge down", DEADLINE, || {
        let (status_url, dead_url) = (status_url.clone(), dead_url.clone());
        async move {
            let status: Value = reqwest::get(&status_url).await.ok()?.json().await.ok()?;
            let dead = status["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["url"] == dead_url.as_str())?
                .clone();
            (dead["healthy"] == false && dead["last_check"]["ok"] == false).then_some(status)
        }
    })
    .await;
    assert!(
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["healthy"] == true),
        "{status}"
    );
}

/// The monitor's canary (SPEC §9) goes API → router → edge → socket each round: an edge
/// that still accepts sockets but receives nothing from the routers passes a handshake
/// check, fails the canary, and is marked down until it is reconnected.
#[tokio::test]
async fn the_canary_marks_down_an_edge_that_accepts_sockets_but_delivers_nothing() {
    let mut cluster = Cluster::start(Options {
        edges: 2,
        monitor: true,
        env: &[("CLUSTER__NODE_TTL_MS", "600000")],
        ..Options::default()
    })
    .await;
    let status_url = format!("{}/status", cluster.monitor_url());
    let (good, cut) = (cluster.edge_url(0), cluster.edge_url(1));
    let status = || async {
        let status: Value = reqwest::get(&status_url).await.ok()?.json().await.ok()?;
        Some(status)
    };
    let node = |status: &Value, url: &str| {
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["url"] == url).cloned())
    };
    let canary_ok = |status: &Value, url: &str| {
        node(status, url).is_some_and(|n| {
            n["healthy"] == true
                && n["last_check"]["canary"] == "ok"
                && n["last_check"]["canary_ms"]
                    .as_f64()
                    .is_some_and(|ms| ms > 0.0)
        })
    };
    eventually("a canary through both edges", DEADLINE, || async {
        let s = status().await?;
        (canary_ok(&s, &good) && canary_ok(&s, &cut)).then_some(())
    })
    .await;
    let metrics = reqwest::get(format!("{}/metrics", cluster.monitor_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for url in [&good, &cut] {
        let series = format!("herald_monitor_canary_seconds_count{{edge=\"{url}\"}}");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    let page = reqwest::get(cluster.monitor_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<th>canary</th>"), "{page}");

    // Edge 1 restarted with its router subscription pointing nowhere: handshakes succeed.
    let key = "HERALD__CLUSTER__ROUTER_PUB";
    let routers = cluster.edges[1].env_var(key).unwrap().to_owned();
    let nowhere = format!("[\"tcp://127.0.0.1:{}\"]", e2e::free_port());
    cluster.edges[1].restart_with(key, &nowhere);
    let down = eventually(
        "the cut-off edge marked down by its canary",
        DEADLINE,
        || async {
            let s = status().await?;
            let n = node(&s, &cut)?;
            (n["last_check"]["canary"] == "lost" && n["healthy"] == false).then_some(s)
        },
    )
    .await;
    assert!(canary_ok(&down, &good), "the other edge stays up: {down}");
    let nodes_url = format!("{}/nodes/", cluster.api_url());
    let only_good = vec![cluster.edge_node(0)];
    eventually("only the good edge in /nodes/", DEADLINE, || async {
        let body: Value = reqwest::get(&nodes_url).await.ok()?.json().await.ok()?;
        let nodes: Vec<String> = serde_json::from_value(body["nodes"].clone()).ok()?;
        (nodes == only_good).then_some(())
    })
    .await;

    // Reconnected, it passes the canary and is back.
    cluster.edges[1].restart_with(key, &routers);
    eventually("the reconnected edge back up", DEADLINE, || async {
        let s = status().await?;
        canary_ok(&s, &cut).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_drains_an_edge_with_close_1001() {
    let mut cluster = Cluster::start(Options::default()).await;
    let moz = cluster.moz();
    let (token, _) = moz.token().await;
    let mut socket = Socket::mozilla(&cluster.edge_url(0), &token).await;
    cluster.edges[0].signal(libc::SIGTERM);
    assert_eq!(socket.ending(DEADLINE).await, Ending::Closed(Some(1001)));
    let status = cluster.edges[0].wait_exit(DEADLINE).await;
    assert!(status.success(), "{status:?}");
    let nodes_url = format!("{}/nodes/", cluster.api_url());
    eventually("the drained edge to deregister", DEADLINE, || {
        let nodes_url = nodes_url.clone();
        async move {
            let body: Value = reqwest::get(&nodes_url).await.ok()?.json().await.ok()?;
            (body["nodes"] == serde_json::json!([])).then_some(())
        }
    })
    .await;
}
