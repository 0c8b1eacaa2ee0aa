//! `herald-monitor` entry point: parses flags and hands over to `monitor::run`.

use std::process::ExitCode;

use clap::Parser;

/// Herald's cluster monitor: checks every edge with a WebSocket handshake, marks dead
/// ones down, serves /status.
#[derive(Debug, Parser)]
#[command(name = "herald-monitor", version, after_help = common::cli::ENV_HELP)]
struct Args {
    #[command(flatten)]
    common: common::cli::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::cli::run_process(
        "monitor",
        args.common,
        |c| &mut c.monitor.listen,
        monitor::run,
    )
}
