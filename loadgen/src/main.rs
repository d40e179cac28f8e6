//! `loadgen`: the load generator for lockstep (see README.md). Today it runs the
//! `latency` scenario against a lockstep it starts itself (`--spawn PATH`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadgen::run::{latency, table, Plan};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Open-loop load and channel simulators for lockstep"
)]
struct Args {
    /// The scenario to run (only `latency` exists yet).
    #[arg(long, default_value = "latency")]
    scenario: String,
    /// The lockstep binary to start on a temp data directory.
    #[arg(long)]
    spawn: String,
    /// Orders per minute, sent on a fixed schedule whatever the replies do.
    #[arg(long, default_value_t = 10_000)]
    orders_per_minute: u64,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    #[arg(long, default_value_t = 1_000)]
    skus: usize,
    /// Simulated channels (each order comes from one and propagates to the others).
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Fail (exit 1) when p99 propagation exceeds this many seconds.
    #[arg(long)]
    slo_p99: Option<f64>,
    /// Also write the JSON report here.
    #[arg(long)]
    json: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.scenario != "latency" {
        eprintln!(
            "loadgen: scenario {:?} does not exist yet; only `latency` does",
            args.scenario
        );
        return ExitCode::from(2);
    }
    let plan = Plan {
        spawn: args.spawn,
        orders_per_minute: args.orders_per_minute.max(1),
        duration: Duration::from_secs(args.duration.max(1)),
        skus: args.skus.max(1),
        channels: args.channels,
        slo_p99: args.slo_p99.map(Duration::from_secs_f64),
    };
    match latency(&plan) {
        Ok((report, passed)) => {
            print!("{}", table(&report));
            if let Some(path) = args.json {
                if let Err(e) = std::fs::write(
                    &path,
                    serde_json::to_string_pretty(&report).unwrap_or_default(),
                ) {
                    eprintln!("loadgen: cannot write {path}: {e}");
                }
            }
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
