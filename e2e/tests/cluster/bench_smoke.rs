//! A tiny run of `make bench`'s load tool (`e2e::load`, the code `herald-load` runs against
//! Herald and Nchan) against real binaries, on both of Herald's sides: a few hundred
//! publishes fanned out and a short unpaced burst over many channels, each asserted to lose
//! and repeat nothing. It checks the harness and the delivery guarantee, never a speed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::load::{Client, Report, Target};
use e2e::{Cluster, DEV_SECRET, Options};

/// The limiter lifted, as `make bench` lifts it: a burst must not meet 429s.
const UNLIMITED: &[(&str, &str)] = &[
    ("API__RATE_LIMIT_PER_SECOND", "1000000"),
    ("API__RATE_LIMIT_BURST", "1000000"),
];

fn assert_whole(report: &Report) {
    let field = |name: &str| report[name].as_u64().unwrap_or(u64::MAX);
    assert!(field("published") > 0, "{report:?}");
    assert_eq!(
        (field("lost"), field("duplicates"), field("publish_failed")),
        (0, 0, 0),
        "{report:?}"
    );
}

async fn smoke(target: impl Fn(&Cluster) -> Target) {
    let cluster = Cluster::start(Options {
        env: UNLIMITED,
        ..Options::default()
    })
    .await;
    let client = Client::new(target(&cluster));
    let pids: Vec<i32> = cluster.edges.iter().map(|e| e.pid()).collect();
    let fanout = e2e::load::fanout(&client, &pids, 20, 100, 3).await.unwrap();
    assert_eq!(fanout["expected"], 20 * 300, "{fanout:?}");
    assert_whole(&fanout);
    assert!(fanout["p50_ms"].as_f64().unwrap() > 0.0, "{fanout:?}");
    let burst = e2e::load::throughput(&client, &pids, 50, 8, 2)
        .await
        .unwrap();
    assert_whole(&burst);
    let idle = e2e::load::connect(&client, &pids, 100).await.unwrap();
    assert_eq!(idle["sockets"], 100, "{idle:?}");
}

#[tokio::test]
async fn the_load_tool_loses_nothing_on_the_mozilla_path() {
    smoke(|cluster| Target::HeraldMozilla {
        api: cluster.api_url(),
        edge: cluster.edge_url(0),
    })
    .await;
}

#[tokio::test]
async fn the_load_tool_loses_nothing_on_native_channels() {
    smoke(|cluster| Target::HeraldChannel {
        api: cluster.api_url(),
        edge: cluster.edge_url(0),
        secret: DEV_SECRET.to_owned(),
    })
    .await;
}
