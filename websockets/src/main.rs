//! `herald-websockets` entry point: parses flags and hands over to `websockets::run`.

use std::process::ExitCode;

use clap::Parser;
use common::net::ListenAddr;

/// Herald's WebSocket edge: holds client sockets and delivers what the routers publish.
#[derive(Debug, Parser)]
#[command(name = "herald-websockets", version, after_help = common::cli::ENV_HELP)]
struct Args {
    #[command(flatten)]
    common: common::cli::CommonArgs,
    /// Listen here instead of websockets.listen: host:port, or fd:N for a socket inherited
    /// from a supervisor (circus: --listen fd:$(circus.sockets.websockets)).
    #[arg(long, value_name = "ADDR")]
    listen: Option<ListenAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::cli::run_process(
        "websockets",
        args.common.config.as_deref(),
        |config| {
            if let Some(listen) = args.listen {
                config.websockets.listen = listen;
            }
        },
        websockets::run,
    )
}
