//! `common` is the contract between Herald's processes: the configuration every binary
//! reads, the message model, stream positions, the versioned ZeroMQ envelope, the `Store`
//! trait with its SQLite implementation, Prometheus helpers, the HTTP serving loop and
//! graceful shutdown.
//! Nothing here knows which process it runs in; each binary crate composes these pieces.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod ids;
pub mod jwt;
pub mod message;
pub mod metrics;
pub mod net;
pub mod shutdown;
pub mod store;
pub mod stream;
pub mod testing;
pub mod token;
pub mod wire;

/// The version every binary reports on `--version` and `GET /version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
