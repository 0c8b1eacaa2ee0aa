//! What every binary's `main` shares: `--config` and `--listen`, the help text about environment
//! overrides, tracing setup, the tokio runtime, the signal token, and turning a startup
//! error into a one-line message and a non-zero exit code.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::net::ListenAddr;

/// Flags common to every Herald binary.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Configuration file (TOML), e.g. etc/herald.toml. Without it, built-in defaults.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen here instead of this process's configured address: host:port, or fd:N for a
    /// socket inherited from a supervisor (circus: --listen fd:$(circus.sockets.NAME)).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<ListenAddr>,
}

/// Appended to every binary's `--help`.
pub const ENV_HELP: &str = "\
Every setting can be overridden by an environment variable HERALD__SECTION__KEY,
e.g. HERALD__API__LISTEN=127.0.0.1:5001 or HERALD__STORE__SQLITE_PATH=/tmp/h.db;
lists are written as [\"a\", \"b\"]. RUST_LOG sets the log filter (default: info).
SIGTERM or SIGINT drains gracefully; a second signal exits at once.";

/// Loads the configuration, applies `--listen` to the setting `listen_setting` selects,
/// then runs `serve` on a multi-threaded runtime until it returns. Errors are printed, not
/// panicked.
pub fn run_process<L, F, Fut>(
    process: &str,
    args: CommonArgs,
    listen_setting: L,
    serve: F,
) -> ExitCode
where
    L: FnOnce(&mut Config) -> &mut ListenAddr,
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    init_tracing();
    let outcome = Config::load(args.config.as_deref())
        .and_then(|mut config| {
            if let Some(listen) = args.listen {
                *listen_setting(&mut config) = listen;
            }
            config.validate()?;
            Ok(config)
        })
        .and_then(|config| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let shutdown = crate::shutdown::on_signals()?;
                serve(config, shutdown).await
            })
        });
    match outcome {
        Ok(()) => {
            tracing::info!(process, "stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(process, "{e:#}");
            eprintln!("herald-{process}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by RUST_LOG (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
