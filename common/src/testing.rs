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

/// A loopback port that was free a moment ago, never one handed out before in this process,
/// and outside the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
///
/// Ports from `bind(…:0)` come from the ephemeral range, which every outgoing connection of
/// every concurrent test also draws from: between this call and the server's own bind, a
/// client socket may take the port ("Address already in use"). Below (or above) that range
/// only another explicit bind can collide, and within one test binary this function never
/// returns the same port twice.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let (low, high) = outside_ephemeral_range();
    let span = u32::from(high - low) + 1;
    let mut seed = [0u8; 4];
    getrandom::fill(&mut seed).expect("random bytes");
    let start = u32::from_le_bytes(seed) % span;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for step in 0..span {
        let port = (u32::from(low) + (start + step) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {low}..={high}");
}

/// The larger of the port ranges below and above the ephemeral range (ports 10000 and up).
fn outside_ephemeral_range() -> (u16, u16) {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let below = (10000, lo.saturating_sub(1));
    let above = (hi.saturating_add(1), u16::MAX);
    let size = |(a, b): (u16, u16)| b.saturating_sub(a);
    if size(below) >= size(above) && size(below) > 0 {
        below
    } else if size(above) > 0 {
        above
    } else {
        (10000, u16::MAX)
    }
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
