//! `herald-load`: drives one scenario of `e2e::load` against one running server — Herald
//! (by its Mozilla or native API) or Nchan — by its loopback URLs, prints the result as
//! one JSON line and appends it to `--out`. `bench/run.sh` (`make bench`) runs it against
//! Herald under circus and against Nchan, then writes BENCHMARKS.md from those lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use e2e::load::{Client, Target};

#[derive(Debug, Parser)]
#[command(
    name = "herald-load",
    about = "One load scenario against Herald or Nchan on loopback."
)]
struct Args {
    /// Which server and API.
    #[arg(long, value_enum)]
    target: Kind,
    /// Herald's API base URL.
    #[arg(long, default_value = "http://127.0.0.1:5001")]
    api: String,
    /// Herald's edge base URL.
    #[arg(long, default_value = "ws://127.0.0.1:8888")]
    edge: String,
    /// Herald's API key (native channels).
    #[arg(long, default_value = "dev-secret-change-me")]
    secret: String,
    /// Nchan's base URL (`/pub` and `/sub` locations).
    #[arg(long, default_value = "http://127.0.0.1:8890")]
    nchan: String,
    /// Server processes whose CPU and RSS are measured, with their descendants.
    #[arg(long = "server-pid")]
    server_pids: Vec<i32>,
    /// Labels added to the JSON line, `key=value`.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Append the JSON line here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    HeraldMozilla,
    HeraldChannel,
    Nchan,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// One channel × N sockets at a paced publish rate.
    Fanout {
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 20)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// C channels × 1 socket, unpaced publishes with K in flight.
    Throughput {
        #[arg(long, default_value_t = 1_000)]
        channels: usize,
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// N idle sockets: connect time and RSS per socket.
    Connect {
        #[arg(long, default_value_t = 10_000)]
        sockets: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = match args.target {
        Kind::HeraldMozilla => Target::HeraldMozilla {
            api: args.api,
            edge: args.edge,
        },
        Kind::HeraldChannel => Target::HeraldChannel {
            api: args.api,
            edge: args.edge,
            secret: args.secret,
        },
        Kind::Nchan => Target::Nchan { base: args.nchan },
    };
    let client = Client::new(target);
    let pids = &args.server_pids;
    let mut report = match args.scenario {
        Scenario::Fanout {
            subscribers,
            rate,
            seconds,
        } => e2e::load::fanout(&client, pids, subscribers, rate, seconds).await?,
        Scenario::Throughput {
            channels,
            in_flight,
            seconds,
        } => e2e::load::throughput(&client, pids, channels, in_flight, seconds).await?,
        Scenario::Connect { sockets } => e2e::load::connect(&client, pids, sockets).await?,
    };
    for label in args.labels {
        if let Some((key, value)) = label.split_once('=') {
            report.insert(key.to_owned(), value.into());
        }
    }
    let line = serde_json::Value::Object(report).to_string();
    println!("{line}");
    if let Some(out) = args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)?;
        writeln!(file, "{line}")?;
    }
    Ok(())
}
