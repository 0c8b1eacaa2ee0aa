//! `herald-api` entry point: parses flags and hands over to `api::run`.

use std::process::ExitCode;

use clap::Parser;
use common::net::ListenAddr;

/// Herald's HTTP API: the Mozilla-compatible push API, health and metrics.
#[derive(Debug, Parser)]
#[command(name = "herald-api", version, after_help = common::cli::ENV_HELP)]
struct Args {
    #[command(flatten)]
    common: common::cli::CommonArgs,
    /// Listen here instead of api.listen: host:port, or fd:N for a socket inherited from
    /// a supervisor (circus: --listen fd:$(circus.sockets.api)).
    #[arg(long, value_name = "ADDR")]
    listen: Option<ListenAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::cli::run_process(
        "api",
        args.common.config.as_deref(),
        |config| {
            if let Some(listen) = args.listen {
                config.api.listen = listen;
            }
        },
        api::run,
    )
}
