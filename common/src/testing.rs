//! Helpers for the crates' in-process tests: a configuration whose every listener is on
//! 127.0.0.1 port 0 and whose store is a SQLite file in a directory the test owns.

use std::path::Path;

use crate::config::Config;

/// Loopback, port-0 configuration with its SQLite file under `dir`.
pub fn loopback_config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.store.sqlite_path = dir.join("herald.db");
    config.monitor.token_file = dir.join("monitor.token");
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
