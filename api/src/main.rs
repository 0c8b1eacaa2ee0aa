//! `herald-api` entry point: parses flags and hands over to `api::run`.

use std::process::ExitCode;

use clap::Parser;

/// Herald's HTTP API: the Mozilla-compatible push API, health and metrics.
#[derive(Debug, Parser)]
#[command(name = "herald-api", version, after_help = common::cli::ENV_HELP)]
struct Args {
    #[command(flatten)]
    common: common::cli::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::cli::run_process("api", args.common, |c| &mut c.api.listen, api::run)
}
