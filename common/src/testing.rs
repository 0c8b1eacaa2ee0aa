//! Helpers for the crates' in-process tests: a configuration whose every listener is on
//! 127.0.0.1 port 0 and whose store is a SQLite file in a directory the test owns, free
//! loopback ports, and reading one sample out of a `/metrics` page.

use std::path::Path;

use crate::config::Config;

/// Loopback, port-0 configuration with its SQLite file under `dir`.
pub fn loopback_config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.store.sqlite_path = dir.join("herald.db");
    config.store.sqlite_live_path = dir.join("herald-live.db");
    config.monitor.token_file = dir.join("monitor.token");
    // The processes' router addresses: free ports nobody binds unless the test does, so an
    // in-process test never talks to a development cluster's router on the default ports.
    config.cluster.router_pull = vec![free_endpoint()];
    config.cluster.router_pub = vec![free_endpoint()];
    config.router.pull = "tcp://127.0.0.1:0".into();
    config.router.publish = "tcp://127.0.0.1:0".into();
    let any_port = crate::net::ListenAddr::Tcp(([127, 0, 0, 1], 0).into());
    config.router.listen = any_port;
    config.api.listen = any_port;
    config.websockets.listen = any_port;
    config.monitor.listen = any_port;
    config
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `tcp://127.0.0.1:<port>` endpoint on a port that was free a moment ago.
pub fn free_endpoint() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}

/// The value of the sample `name` — exactly, labels included, e.g.
/// `herald_x_total{reason="gap"}` — in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn metric_value_matches_the_whole_sample_name() {
        let text = "# HELP x_total X.\nx_total_more 9\nx_total{reason=\"gap\"} 2\nx_total 3\n";
        assert_eq!(metric_value(text, "x_total"), Some(3.0));
        assert_eq!(metric_value(text, "x_total{reason=\"gap\"}"), Some(2.0));
        assert_eq!(metric_value(text, "x_tot"), None);
    }
}
