//! `herald-websockets` entry point: parses flags and hands over to `websockets::run`.

use std::process::ExitCode;

use clap::Parser;

/// Herald's WebSocket edge: holds client sockets and delivers what the routers publish.
#[derive(Debug, Parser)]
#[command(name = "herald-websockets", version, after_help = common::cli::ENV_HELP)]
struct Args {
    #[command(flatten)]
    common: common::cli::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::cli::run_process(
        "websockets",
        args.common,
        |c| &mut c.websockets.listen,
        websockets::run,
    )
}
