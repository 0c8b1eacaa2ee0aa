//! Scale-out on the Redis store (SPEC §7, §8): two routers, two API processes and three
//! edges sharing one `redis-server` of the test's own. Users on different edges receive a
//! channel's fan-out and their own addressed messages exactly once and in publish order
//! per stream while the publishes alternate between the APIs; a router killed with
//! SIGKILL mid-stream, or Redis restarted mid-stream (`appendfsync always`), loses no
//! message that was answered 2xx, repeats none, and needs no process restarted. And the
//! same cluster on three hosts (network namespaces as root, else loopback aliases).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::{Cluster, DEADLINE, Ending, Options, Socket, V1, eventually};
use serde_json::{Value, json};

const USERS: usize = 6;

fn options() -> Options {
    Options {
        edges: 3,
        routers: 2,
        apis: 2,
        redis: true,
        ..Options::default()
    }
}

/// One client per API process, used in turn.
fn apis(cluster: &Cluster) -> Vec<V1> {
    cluster.api_urls().iter().map(|url| V1::new(url)).collect()
}

/// Creates `news` with history on, through `api`.
async fn create_news(api: &V1) {
    let (status, body) = api
        .call(
            "PUT",
            "channels/news",
            Some(json!({"history": {"size": 10_000}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// `USERS` users, user `i` on edge `i % 3`, each joined to `news` (history on).
async fn users(cluster: &Cluster, api: &V1) -> Vec<Socket> {
    create_news(api).await;
    let mut sockets = Vec::new();
    for i in 0..USERS {
        let token = api
            .token(json!({"user": format!("u{i}"), "channels": ["news"]}))
            .await;
        let (socket, welcome) = Socket::native(&cluster.edge_url(i % 3), &token).await;
        assert_eq!(welcome["channels"], json!(["news"]), "{welcome}");
        sockets.push(socket);
    }
    sockets
}

/// What one socket received: channel seqs and addressed message ids, in arrival order.
#[derive(Debug, Default)]
struct Received {
    seqs: Vec<u64>,
    ids: Vec<String>,
}

/// Reads `socket` until it holds every seq in `seqs` and every id in `ids`, then for a
/// quiet second more (a repeat would show), within `deadline`.
async fn receive(
    socket: &mut Socket,
    seqs: &[u64],
    ids: &[String],
    deadline: Duration,
) -> Received {
    let mut got = Received::default();
    let end = Instant::now() + deadline;
    let complete = |got: &Received| {
        seqs.iter().all(|s| got.seqs.contains(s)) && ids.iter().all(|i| got.ids.contains(i))
    };
    while !complete(&got) {
        let left = end.saturating_duration_since(Instant::now());
        let Some(frame) = socket.try_next_json(left).await else {
            panic!(
                "missing after {deadline:?}: seqs {:?}, ids {:?}",
                seqs.iter()
                    .filter(|s| !got.seqs.contains(s))
                    .collect::<Vec<_>>(),
                ids.iter()
                    .filter(|i| !got.ids.contains(i))
                    .collect::<Vec<_>>()
            );
        };
        record(&mut got, &frame);
    }
    while let Some(frame) = socket.try_next_json(Duration::from_secs(1)).await {
        record(&mut got, &frame);
    }
    got
}

fn record(got: &mut Received, frame: &Value) {
    if frame["type"] != "message" {
        return;
    }
    if frame["channel"] == "news" {
        got.seqs.push(frame["seq"].as_u64().expect("a seq"));
    } else if let Some(id) = frame["id"].as_str() {
        got.ids.push(id.to_owned());
    }
}

/// Publishes message `n` to `news` and sends one addressed message to every user, through
/// API `apis[n % len]`; the channel seq and the message ids when answered 2xx.
async fn publish(apis: &[V1], n: usize) -> (Option<u64>, Vec<String>) {
    let api = &apis[n % apis.len()];
    let (status, body) = api
        .call("POST", "channels/news/messages", Some(json!({"data": n})))
        .await;
    let seq = (status == 201).then(|| body["seq"].as_u64().expect("a seq"));
    let recipients: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    let (status, body) = api
        .call(
            "POST",
            "messages",
            Some(json!({"recipients": recipients, "message": format!("m{n}")})),
        )
        .await;
    let ids = if status == 201 {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    } else {
        Vec::new()
    };
    (seq, ids)
}

/// `rounds` rounds of `publish`, the first router SIGKILLed before round `kill_at`: the
/// channel seqs and each round's message ids, every one answered 201 (one router is
/// enough).
async fn publish_killing_the_first_router(
    cluster: &mut Cluster,
    apis: &[V1],
    rounds: usize,
    kill_at: usize,
) -> (Vec<u64>, Vec<Vec<String>>) {
    let mut seqs = Vec::new();
    let mut ids = Vec::new();
    for n in 0..rounds {
        if n == kill_at {
            cluster.router.kill();
        }
        let (seq, round) = publish(apis, n).await;
        seqs.push(seq.expect("one router is up: every publish is answered 201"));
        assert_eq!(
            round.len(),
            USERS,
            "every recipient's message is answered 201"
        );
        ids.push(round);
    }
    (seqs, ids)
}

/// Every socket got every acknowledged publish once, channel messages in seq order and
/// each user's messages in send order.
async fn check_every_user(
    sockets: &mut [Socket],
    seqs: &[u64],
    ids_by_round: &[Vec<String>],
    deadline: Duration,
) {
    for (user, socket) in sockets.iter_mut().enumerate() {
        let mine: Vec<String> = ids_by_round
            .iter()
            .filter_map(|round| round.get(user).cloned())
            .collect();
        let got = receive(socket, seqs, &mine, deadline).await;
        assert_eq!(
            got.seqs, seqs,
            "user u{user}: channel seqs once each, in order"
        );
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &got.ids {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        assert!(
            counts.values().all(|n| *n == 1),
            "user u{user}: a message twice: {counts:?}"
        );
        assert_eq!(got.ids, mine, "user u{user}: messages in send order");
    }
}

#[tokio::test]
async fn every_stream_reaches_every_edge_once_in_order_through_two_apis_and_two_routers() {
    let cluster = Cluster::start(options()).await;
    let apis = apis(&cluster);
    let mut sockets = users(&cluster, &apis[0]).await;
    let mut seqs = Vec::new();
    let mut ids = Vec::new();
    for n in 0..40 {
        let (seq, round) = publish(&apis, n).await;
        seqs.push(seq.expect("the store is up: every publish is answered 201"));
        assert_eq!(round.len(), USERS);
        ids.push(round);
    }
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<u64>>(),
        "dense across both APIs"
    );
    check_every_user(&mut sockets, &seqs, &ids, DEADLINE).await;
}

#[tokio::test]
async fn a_router_killed_mid_stream_loses_and_repeats_nothing() {
    let mut cluster = Cluster::start(options()).await;
    let apis = apis(&cluster);
    let mut sockets = users(&cluster, &apis[0]).await;
    let (seqs, ids) = publish_killing_the_first_router(&mut cluster, &apis, 80, 30).await;
    check_every_user(&mut sockets, &seqs, &ids, Duration::from_secs(40)).await;
}

#[tokio::test]
async fn a_redis_restart_mid_stream_loses_no_acknowledged_message() {
    let mut cluster = Cluster::start(options()).await;
    let apis = apis(&cluster);
    let mut sockets = users(&cluster, &apis[0]).await;
    let mut seqs = Vec::new();
    let mut ids = Vec::new();
    let mut refused = 0;
    for n in 0..80 {
        let redis = cluster.redis.as_mut().expect("a Redis store");
        // Down (a clean SHUTDOWN) for three rounds of publishes, then back on its data.
        if n == 30 {
            redis.stop(false);
        }
        if n == 33 {
            redis.spawn();
        }
        let (seq, round) = publish(&apis, n).await;
        match seq {
            Some(seq) => seqs.push(seq),
            None => refused += 1,
        }
        ids.push(round);
    }
    // A restart of `appendfsync always` Redis keeps every acknowledged write, so the
    // acknowledged seqs are dense; publishes while it was down were refused (503), not lost.
    assert!(
        refused >= 3,
        "publishes while Redis was down were refused: {refused}"
    );
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "{refused} refused");
    // The processes were not restarted and are healthy again.
    cluster.wait_healthy().await;
    check_every_user(&mut sockets, &seqs, &ids, Duration::from_secs(40)).await;
}

/// Three hosts (SPEC §7): Redis and the monitor on the first; router 0, API 0 and edges 0
/// and 2 on the second; router 1, API 1 and edge 1 on the third. As root (CI) each host is
/// a network namespace of its own, where `127.0.0.1` is nobody else's; otherwise they are
/// `127.0.0.2`–`127.0.0.4`. Each host has its own directory, so nothing is shared through
/// files. Clients find edges only through what the APIs answer (`connectionUri`,
/// `/nodes/`); presence and force logout work across hosts; the monitor checks every edge;
/// a router killed mid-stream loses and repeats nothing.
#[tokio::test]
async fn three_hosts_share_one_redis_and_deliver_every_stream_once_in_order() {
    let mut cluster = Cluster::start(Options {
        hosts: 3,
        monitor: true,
        ..options()
    })
    .await;
    for host in cluster.ports.hosts.all() {
        assert!(!host.ip.is_unspecified() && host.ip.to_string() != "127.0.0.1");
    }
    let apis = apis(&cluster);
    create_news(&apis[1]).await;

    // Every edge registered its public URL on its own host; `/nodes/` lists all three.
    let mut expected: Vec<String> = (0..3).map(|i| cluster.edge_node(i)).collect();
    expected.sort();
    let nodes_url = format!("{}/nodes/", cluster.api_url());
    eventually("/nodes/ to list the three edges", DEADLINE, || {
        let (url, expected) = (nodes_url.clone(), expected.clone());
        async move {
            let body: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let mut nodes: Vec<String> = body["nodes"]
                .as_array()?
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect();
            nodes.sort();
            (nodes == expected).then_some(())
        }
    })
    .await;

    // Users connect where `connectionUri` sends them (the least loaded edge).
    let mut sockets = Vec::new();
    for i in 0..USERS {
        let api = &apis[i % 2];
        let request = json!({"user": format!("u{i}"), "channels": ["news"]});
        let (status, body) = api.call("POST", "tokens", Some(request)).await;
        assert_eq!(status, 201, "{body}");
        let uri = body["connectionUri"].as_str().expect("an edge is up");
        let mut socket = Socket::connect(uri).await;
        let welcome = socket.next_json(DEADLINE).await;
        assert_eq!(welcome["channels"], json!(["news"]), "{welcome}");
        sockets.push(socket);
    }

    // Presence is cluster-wide: either API sees every user, whichever edge holds them.
    let everyone: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    for api in &apis {
        eventually("every user in the channel's presence", DEADLINE, || async {
            let (status, body) = api.call("GET", "channels/news/users", None).await;
            (status == 200 && body["users"] == json!(everyone)).then_some(())
        })
        .await;
    }

    // The monitor (on the Redis host) reaches every edge by its public URL.
    let status_url = format!("{}/status", cluster.monitor_url());
    let edge_urls: Vec<String> = (0..3).map(|i| cluster.edge_url(i)).collect();
    eventually("the monitor to check every edge healthy", DEADLINE, || {
        let (url, edge_urls) = (status_url.clone(), edge_urls.clone());
        async move {
            let status: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let nodes = status["nodes"].as_array()?;
            edge_urls
                .iter()
                .all(|edge| {
                    nodes.iter().any(|n| {
                        n["url"] == edge.as_str()
                            && n["healthy"] == true
                            && n["last_check"]["ok"] == true
                    })
                })
                .then_some(())
        }
    })
    .await;

    // Publishes alternate between the APIs; router 0's host loses it mid-stream.
    let (seqs, ids) = publish_killing_the_first_router(&mut cluster, &apis, 60, 25).await;
    assert_eq!(seqs, (1..=60).collect::<Vec<u64>>(), "dense across hosts");
    check_every_user(&mut sockets, &seqs, &ids, Duration::from_secs(40)).await;

    // A force logout through one host's API closes the user's socket on whichever edge.
    let (status, _) = apis[0].call("DELETE", "users/u1/connections", None).await;
    assert_eq!(status, 204);
    let ending = sockets[1].ending(DEADLINE).await;
    assert_eq!(ending, Ending::Closed(Some(4003)));
}
