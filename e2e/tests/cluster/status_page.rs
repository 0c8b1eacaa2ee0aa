//! The monitor's status page (`GET /` on `monitor.listen`) as an operator's browser shows
//! it: loaded in a real headless Chromium (`--dump-dom`, the DOM after parsing), with the
//! edges, their sockets and canary latency, the store, and the routers with their epochs —
//! then again after the router is stopped, which the page must show as down.
//! Chromium comes from `.ci/run` (Debian's `chromium`); set `HERALD_E2E_CHROMIUM` to use
//! another binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::{Cluster, DEADLINE, Options, eventually};
use serde_json::Value;

/// The longest one Chromium run may take (it is killed after).
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);

/// The Chromium binary: `HERALD_E2E_CHROMIUM`, or the first of the usual names on `PATH`.
fn chromium() -> String {
    if let Ok(path) = std::env::var("HERALD_E2E_CHROMIUM") {
        return path;
    }
    ["chromium", "chromium-browser", "google-chrome", "chromium-headless-shell"]
        .into_iter()
        .find(|name| {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| dir.join(name).is_file())
            })
        })
        .expect("no Chromium on PATH: `apt-get install chromium` (as .ci/run does), or set HERALD_E2E_CHROMIUM")
        .to_owned()
}

/// The page at `url` as headless Chromium parsed it.
async fn rendered(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--timeout=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BROWSER_DEADLINE, command.output())
        .await
        .expect("Chromium finished within its deadline")
        .expect("Chromium runs");
    assert!(output.status.success(), "Chromium: {}", output.status);
    String::from_utf8(output.stdout).unwrap()
}

/// The `<tr>` of `table_id` whose cells mention `needle`.
fn row<'a>(dom: &'a str, table_id: &str, needle: &str) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"{table_id}\""))?;
    let table = &dom[start..];
    let table = &table[..table.find("</table>")?];
    table.split("<tr").find(|r| r.contains(needle))
}

#[tokio::test]
async fn the_status_page_shows_edges_canaries_store_and_routers_in_a_real_browser() {
    let mut cluster = Cluster::start(Options {
        edges: 2,
        monitor: true,
        ..Options::default()
    })
    .await;
    let page = format!("{}/", cluster.monitor_url());
    let status_url = format!("{}/status", cluster.monitor_url());
    let edges = [cluster.edge_url(0), cluster.edge_url(1)];
    let router = format!("http://{}", cluster.ports.router_addresses()[0].2);
    let status = eventually(
        "a round with both canaries and the router",
        DEADLINE,
        || async {
            let s: Value = reqwest::get(&status_url).await.ok()?.json().await.ok()?;
            let canaries = edges.iter().all(|url| {
                s["nodes"].as_array().is_some_and(|nodes| {
                    nodes
                        .iter()
                        .any(|n| n["url"] == url.as_str() && n["last_check"]["canary"] == "ok")
                })
            });
            (canaries && s["routers"][0]["healthy"] == true).then_some(s)
        },
    )
    .await;
    let epoch = status["routers"][0]["epoch"].as_u64().unwrap();

    let dom = rendered(&page).await;
    assert!(dom.contains("<title>Herald status</title>"), "{dom}");
    assert!(dom.contains("<span id=\"store\">ok</span>"), "{dom}");
    assert!(dom.contains("Last round at 20"), "an RFC 3339 time: {dom}");
    for url in &edges {
        let edge = row(&dom, "nodes", url).unwrap_or_else(|| panic!("no row for {url}: {dom}"));
        assert!(edge.contains("class=\"up\""), "{edge}");
        assert!(edge.contains("<td>healthy</td>"), "{edge}");
        assert!(edge.contains("ok, "), "the handshake check: {edge}");
        // The canary cell is the last: "<n.n> ms".
        let canary = edge.rsplit("<td>").next().unwrap();
        assert!(
            canary.starts_with(char::is_numeric) && canary.contains(" ms"),
            "{edge}"
        );
    }
    let up = row(&dom, "routers", &router).unwrap_or_else(|| panic!("no router row: {dom}"));
    assert!(up.contains("class=\"up\""), "{up}");
    assert!(
        up.contains(&format!("<td>{epoch}</td>")),
        "epoch {epoch}: {up}"
    );

    // The router stops: the next round's page shows it down, with why.
    cluster.router.kill();
    eventually("a round without the router", DEADLINE, || async {
        let s: Value = reqwest::get(&status_url).await.ok()?.json().await.ok()?;
        (s["routers"][0]["healthy"] == false).then_some(())
    })
    .await;
    let dom = rendered(&page).await;
    let down = row(&dom, "routers", &router).unwrap_or_else(|| panic!("no router row: {dom}"));
    assert!(down.contains("class=\"down\""), "{down}");
    assert!(down.contains("no answer"), "{down}");
}
