//! Helpers for the crates' in-process tests: a configuration whose every listener is on
//! 127.0.0.1 port 0 and whose store is a SQLite file in a directory the test owns, free
//! loopback ports, reading one sample out of a `/metrics` page, and a real `redis-server`
//! of the test's own (`RedisServer`).

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

/// A real `redis-server` for one test: on a free loopback port, its data (append-only file,
/// `appendfsync always`) in its own temporary directory, stopped and removed when dropped.
/// Needs `redis-server` on `PATH` (`.ci/run` installs Debian's).
pub struct RedisServer {
    ip: std::net::IpAddr,
    port: u16,
    /// The network namespace it runs in (`ip netns exec`), if any.
    netns: Option<String>,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    ///
    /// # Panics
    /// `redis-server` is missing or does not answer within 20 s.
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    /// Like `start`, on `port` (one `free_port` gave).
    pub fn start_on(port: u16) -> RedisServer {
        RedisServer::start_at(std::net::Ipv4Addr::LOCALHOST.into(), port, None)
    }

    /// Like `start`, listening on `ip:port`, inside network namespace `netns` if given
    /// (multi-host tests; `ip` must be that namespace's address).
    pub fn start_at(ip: std::net::IpAddr, port: u16, netns: Option<&str>) -> RedisServer {
        let mut server = RedisServer {
            ip,
            netns: netns.map(str::to_owned),
            port,
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
        };
        server.spawn();
        server
    }

    /// `redis://<ip>:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", std::net::SocketAddr::new(self.ip, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL when `kill`, else a clean SHUTDOWN by SIGTERM) and waits
    /// for it to exit; its data stays for `spawn`.
    pub fn stop(&mut self, kill: bool) {
        if let Some(mut child) = self.child.take() {
            if kill {
                let _ = child.kill();
            } else {
                let pid = i32::try_from(child.id()).expect("a pid");
                #[allow(unsafe_code)]
                // SAFETY: kill(2) has no memory-safety preconditions; pid is our own child.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let _ = child.wait();
        }
    }

    /// Stops the server cleanly and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop(false);
        self.spawn();
    }

    /// Starts `redis-server` (after `stop`) and waits until it answers `PING`.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("a log file");
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = std::process::Command::new("ip");
                command.args(["netns", "exec", netns, "redis-server"]);
                command
            }
            None => std::process::Command::new("redis-server"),
        };
        let child = command
            .args([
                "--bind",
                &self.ip.to_string(),
                "--port",
                &self.port.to_string(),
            ])
            // The test's own server on the test's own network: clients from other hosts
            // (namespaces) need no password.
            .args(["--protected-mode", "no"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.answers() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not answer on port {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Whether the server answers `PING` with `+PONG` (a loading server answers an error).
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect((self.ip, self.port)) else {
            return false;
        };
        let timeout = Some(std::time::Duration::from_secs(1));
        let _ = stream.set_read_timeout(timeout);
        let mut answer = [0u8; 5];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop(true);
    }
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
