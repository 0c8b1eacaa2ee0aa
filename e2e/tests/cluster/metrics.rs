//! Every process's `/metrics` against the list in docs/metrics.md, on a running cluster
//! with traffic (a Mozilla message delivered, the monitor's canary through every edge):
//! each exposed metric is documented with its type and carries only documented labels,
//! and each documented unlabelled metric is exposed — so the page stays the one place the
//! names are listed, and no label can carry an unbounded value the page does not name.
//! The Grafana dashboard (etc/grafana/herald.json) may use only documented metrics, and
//! etc/prometheus.yml must scrape every process of circus.ini.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use e2e::{Cluster, DEADLINE, Options, Socket, eventually};
use serde_json::Value;

const PAGE: &str = include_str!("../../../docs/metrics.md");
const DASHBOARD: &str = include_str!("../../../etc/grafana/herald.json");
const SCRAPE: &str = include_str!("../../../etc/prometheus.yml");

/// `name → (type, labels)` from the page's table rows.
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    PAGE.lines()
        .filter(|l| l.starts_with("| `herald_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let labels = cells[3]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            (
                cells[1].trim_matches('`').to_owned(),
                (cells[2].to_owned(), labels),
            )
        })
        .collect()
}

/// The `# TYPE` lines of an exposition (`name → type`), and the label names each family's
/// samples carry (`le` of histogram buckets left out).
fn scraped(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, BTreeSet<String>>) {
    let mut types = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let keys = labels.entry(family.to_owned()).or_default();
        if let Some(inner) = line[name_end..].strip_prefix('{') {
            let inner = &inner[..inner.rfind('}').unwrap()];
            for pair in inner.split("\",") {
                let key = pair.split('=').next().unwrap().trim_matches(',');
                if key != "le" && !key.is_empty() {
                    keys.insert(key.to_owned());
                }
            }
        }
    }
    (types, labels)
}

#[tokio::test]
async fn every_process_exposes_the_documented_metrics_and_labels_only() {
    let cluster = Cluster::start(Options {
        monitor: true,
        ..Options::default()
    })
    .await;
    // Traffic: a message through API → router → edge → socket, and a canary.
    let moz = cluster.moz();
    let (token, queue) = moz.token().await;
    let mut socket = Socket::mozilla(&cluster.edge_url(0), &token).await;
    moz.post(&queue, "metrics").await;
    socket.next_json(DEADLINE).await;
    let status = format!("{}/status", cluster.monitor_url());
    eventually("a canary through the edge", DEADLINE, || async {
        let s: Value = reqwest::get(&status).await.ok()?.json().await.ok()?;
        (s["nodes"][0]["last_check"]["canary"] == "ok").then_some(())
    })
    .await;

    let docs = documented();
    assert!(
        docs.len() > 30,
        "the page lists the metrics: {}",
        docs.len()
    );
    let router_http = cluster.ports.router_addresses()[0].2.clone();
    let processes = [
        ("api", format!("{}/metrics", cluster.api_url())),
        (
            "websockets",
            format!("http://{}/metrics", cluster.ports.edge_address(0)),
        ),
        ("router", format!("http://{router_http}/metrics")),
        ("monitor", format!("{}/metrics", cluster.monitor_url())),
    ];
    for (process, url) in processes {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let (types, labels) = scraped(&text);
        let prefix = format!("herald_{process}_");
        for (name, kind) in &types {
            assert!(name.starts_with(&prefix), "{name} on {process}");
            let (documented_kind, _) = docs
                .get(name)
                .unwrap_or_else(|| panic!("{name} ({process}) is not in docs/metrics.md"));
            assert_eq!(kind, documented_kind, "{name}'s type");
        }
        for (family, keys) in &labels {
            let (_, allowed) = &docs[family];
            assert!(
                keys.is_subset(allowed),
                "{family} carries labels {keys:?}, the page names {allowed:?}"
            );
        }
        for (name, (_, allowed)) in docs.iter().filter(|(n, _)| n.starts_with(&prefix)) {
            if allowed.is_empty() {
                assert!(
                    types.contains_key(name),
                    "{name} is not exposed by {process}"
                );
            }
        }
        // What the traffic above must have recorded (a labelled series, or a histogram
        // with a count above 0).
        let exercised: &[&str] = match process {
            "api" => &[
                "herald_api_requests_total{",
                "herald_api_store_seconds_count{op=\"write\"}",
            ],
            "websockets" => &[
                "herald_websockets_deliveries_total{",
                "herald_websockets_store_seconds_count{",
            ],
            "router" => &[
                "herald_router_forwarded_total{",
                "herald_router_forward_latency_seconds_count ",
            ],
            _ => &[
                "herald_monitor_canary_seconds_count{",
                "herald_monitor_store_seconds_count{op=\"read\"}",
            ],
        };
        for series in exercised {
            let recorded = text
                .lines()
                .find(|l| l.starts_with(series))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok());
            assert!(
                recorded.is_some_and(|v| v > 0.0),
                "{series} after traffic on {process}: {recorded:?}"
            );
        }
    }
}

#[test]
fn the_dashboard_uses_documented_metrics_and_the_scrape_config_covers_every_process() {
    let docs = documented();
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for target in panels.iter().flat_map(|p| p["targets"].as_array().unwrap()) {
        let expr = target["expr"].as_str().unwrap();
        for (at, _) in expr.match_indices("herald_") {
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| docs.contains_key(*f)))
                .unwrap_or(&name)
                .to_owned();
            assert!(
                docs.contains_key(&family),
                "{name} in the dashboard is not documented"
            );
            used.insert(family);
        }
    }
    for process in ["api", "websockets", "router", "monitor"] {
        assert!(
            used.iter()
                .any(|n| n.starts_with(&format!("herald_{process}_"))),
            "the dashboard shows nothing of {process}"
        );
    }
    // The circus layout's ports (circus.ini, etc/herald.toml), each scraped.
    for port in ["5001", "8888", "5004", "5003"] {
        assert!(SCRAPE.contains(&format!("127.0.0.1:{port}")), "port {port}");
    }
}
