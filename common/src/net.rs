//! Listening addresses. A process either binds `host:port` itself or adopts a socket that
//! its supervisor already bound and passed down as an inherited file descriptor
//! (`fd:N`, what circus's `use_sockets` hands out), so several processes can accept on one
//! port. Both forms parse from the same string, in config files, env and `--listen`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a server listens: a TCP address to bind, or an inherited listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ListenAddr {
    /// Bind this address (port 0 picks a free port).
    Tcp(SocketAddr),
    /// Adopt this already-listening file descriptor (e.g. `$(circus.sockets.api)`).
    Fd(i32),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(fd) = s.strip_prefix("fd:") {
            let fd: i32 = fd
                .parse()
                .map_err(|_| format!("`{s}`: expected fd:<number>"))?;
            // 0, 1 and 2 are stdio: adopting them as a listener would close the logs.
            if fd < 3 {
                return Err(format!("`{s}`: file descriptors below 3 are stdio"));
            }
            return Ok(ListenAddr::Fd(fd));
        }
        s.parse::<SocketAddr>()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("`{s}`: expected host:port (e.g. 127.0.0.1:5001) or fd:<number>"))
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ListenAddr> for String {
    fn from(addr: ListenAddr) -> String {
        addr.to_string()
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Fd(fd) => write!(f, "fd:{fd}"),
        }
    }
}

impl ListenAddr {
    /// Binds (or adopts) the listener. Must run inside a tokio runtime.
    pub async fn bind(&self) -> std::io::Result<tokio::net::TcpListener> {
        match *self {
            ListenAddr::Tcp(addr) => tokio::net::TcpListener::bind(addr).await,
            ListenAddr::Fd(fd) => adopt_fd(fd),
        }
    }
}

impl ListenAddr {
    /// `bind`, naming the setting in the error: "cannot listen on api.listen 127.0.0.1:1: …".
    pub async fn bind_setting(&self, setting: &str) -> anyhow::Result<tokio::net::TcpListener> {
        self.bind()
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {setting} {self}: {e}"))
    }
}

/// Takes ownership of an inherited listening socket. circus passes it non-blocking, and
/// tokio requires non-blocking, so this sets it explicitly either way.
#[allow(unsafe_code)]
fn adopt_fd(fd: i32) -> std::io::Result<tokio::net::TcpListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: the fd comes from our supervisor on the command line and nothing else in
    // this process owns it; `from_str` refuses stdio. `local_addr` below proves it is a
    // socket before we hand it to tokio.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener.local_addr().map_err(|e| {
        std::io::Error::new(e.kind(), format!("fd:{fd} is not a listening socket: {e}"))
    })?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_round_trips() {
        let tcp: ListenAddr = "127.0.0.1:5001".parse().unwrap();
        assert_eq!(tcp, ListenAddr::Tcp("127.0.0.1:5001".parse().unwrap()));
        assert_eq!(tcp.to_string(), "127.0.0.1:5001");
        let fd: ListenAddr = "fd:10".parse().unwrap();
        assert_eq!(fd, ListenAddr::Fd(10));
        assert_eq!(fd.to_string(), "fd:10");
    }

    #[test]
    fn rejects_garbage_and_stdio() {
        assert!("fd:1".parse::<ListenAddr>().is_err());
        assert!("fd:x".parse::<ListenAddr>().is_err());
        assert!("localhost".parse::<ListenAddr>().is_err());
        assert!("127.0.0.1".parse::<ListenAddr>().is_err());
    }

    #[tokio::test]
    async fn adopts_an_inherited_listener() {
        use std::os::fd::IntoRawFd;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let fd = std_listener.into_raw_fd();
        let listener = ListenAddr::Fd(fd).bind().await.unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
        let client = tokio::net::TcpStream::connect(addr);
        let (accepted, _) = tokio::join!(listener.accept(), client);
        assert!(accepted.is_ok());
    }
}
