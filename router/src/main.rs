//! `herald-router` entry point: parses flags and hands over to `router::run`.

use std::process::ExitCode;

use clap::Parser;

/// ZeroMQ broker between herald-api (PULL) and herald-websockets (PUB); --listen moves
/// its /health and /metrics.
#[derive(Debug, Parser)]
#[command(name = "herald-router", version, after_help = common::cli::ENV_HELP)]
struct Args {
    #[command(flatten)]
    common: common::cli::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::cli::run_process("router", args.common, |c| &mut c.router.listen, router::run)
}
