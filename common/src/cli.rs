//! What every binary's `main` shares: the `--config` flag, the help text about environment
//! overrides, tracing setup, the tokio runtime, the signal token, and turning a startup
//! error into a one-line message and a non-zero exit code.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Flags common to every Herald binary.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Configuration file (TOML), e.g. etc/herald.toml. Without it, built-in defaults.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Appended to every binary's `--help`.
pub const ENV_HELP: &str = "\
Every setting can be overridden by an environment variable HERALD__SECTION__KEY,
e.g. HERALD__API__LISTEN=127.0.0.1:5001 or HERALD__STORE__SQLITE_PATH=/tmp/h.db;
lists are written as [\"a\", \"b\"]. RUST_LOG sets the log filter (default: info).
SIGTERM or SIGINT drains gracefully; a second signal exits at once.";

/// Loads the configuration, lets the binary apply its flags, then runs `serve` on a
/// multi-threaded runtime until it returns. Errors are printed, not panicked.
pub fn run_process<A, F, Fut>(
    process: &str,
    config_path: Option<&Path>,
    apply_flags: A,
    serve: F,
) -> ExitCode
where
    A: FnOnce(&mut Config),
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    init_tracing();
    let outcome = Config::load(config_path)
        .and_then(|mut config| {
            apply_flags(&mut config);
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
