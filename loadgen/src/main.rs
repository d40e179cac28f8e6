//! `loadgen`: the load generator for lockstep (see README.md): named scenarios against a
//! lockstep it starts on a temp data directory (`--spawn PATH`) or one already running
//! (`--engine URL`, configured with the channels `--print-config` prints).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadgen::run::{
    audit, burst, ceiling, contention, duplicates, latency, outage, soak, table, Plan,
};

/// jemalloc: see loadgen/Cargo.toml (the generator's own CPU per order).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Open-loop load and channel simulators for lockstep"
)]
struct Args {
    /// The scenario: `latency`, `burst` (5,000 orders in 1 s), `contention` (150 orders
    /// for 100 units of one SKU from every channel at once), `outage` (a channel down
    /// 10 s), `audit` (each order in the audit when acknowledged), `duplicates` (every
    /// order delivered three times) or `ceiling` (`latency` steps from
    /// `--orders-per-minute`, each 1.5 times the last and `--duration` long, until p99
    /// propagation passes 5 s, an order is lost or the orders are answered at less than
    /// 95% of the rate due; reports the rate held and what the failed step ran out of) or
    /// `soak`
    /// (`latency` for `--duration`, an hour for the real thing, with lockstep's memory
    /// sampled every 10 s: it must stay flat) or `mixed` (every channel kind at once,
    /// each order placed on one channel its own way; try `--skus 100`) or `memory`
    /// (`--skus` SKUs, 1,000,000 for issue #18's figure, counted through the native API
    /// and pushed to and acknowledged by `--channels` channels: lockstep's resident bytes
    /// per SKU, then the time it takes to be ready again after `kill -9`) or `discover`
    /// (`lockstep catalog discover` of a simulated Shopify store of `--skus` listings at
    /// the Standard plan's limits: the time it takes).
    #[arg(long, default_value = "latency")]
    scenario: String,
    /// The lockstep binary to start on a temp data directory.
    #[arg(long, required_unless_present_any = ["engine", "print_config"], conflicts_with = "engine")]
    spawn: Option<String>,
    /// A lockstep already running (e.g. `http://127.0.0.1:8080`), configured with the
    /// channels `--print-config` prints; its simulators listen from `--sim-port` on.
    #[arg(long, requires = "sim_port")]
    engine: Option<String>,
    /// The first simulator's port (channel `chN` on this + N): for `--engine`.
    #[arg(long)]
    sim_port: Option<u16>,
    /// Print the `[[channels]]` blocks a running lockstep needs for `--engine` (with
    /// `--channels` and `--sim-port`, default 9100), and exit.
    #[arg(long)]
    print_config: bool,
    /// Orders per minute, sent on a fixed schedule whatever the replies do.
    #[arg(long, default_value_t = 10_000)]
    orders_per_minute: u64,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// SKUs (default 1,000; `memory`: 1,000,000).
    #[arg(long)]
    skus: Option<usize>,
    /// Simulated channels (each order comes from one and propagates to the others).
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// `latency`: arrivals `constant` (evenly spaced) or `poisson` (exponential gaps).
    #[arg(long, default_value = "constant")]
    arrivals: loadgen::traffic::Arrivals,
    /// `latency`: Zipf exponent of SKU popularity (0: uniform; 1: a few hot SKUs).
    #[arg(long, default_value_t = 0.0)]
    skew: f64,
    /// `latency`: each order has 1 to this many lines (distinct SKUs).
    #[arg(long, default_value_t = 1)]
    lines: usize,
    /// `latency`: share of orders delivered twice (the duplicate must change nothing).
    #[arg(long, default_value_t = 0.0)]
    duplicate_rate: f64,
    /// `latency`: share of orders delivered up to 500 ms late, after later orders.
    #[arg(long, default_value_t = 0.0)]
    reorder_rate: f64,
    /// `latency`, `mixed`: relative share of orders per channel, e.g. `8,1,1` (default:
    /// alike; `mixed` orders its channels as `--print-config` lists them: shop, woo, bc,
    /// amazon, ebay, walmart, etsy, tiktok, erp).
    #[arg(long, value_delimiter = ',')]
    mix: Vec<f64>,
    /// `mixed`: a line for one channel's config block, `NAME=TOML`, repeatable: e.g.
    /// `--channel-extra 'woo=rate_limit = { requests_per_second = 5.0, burst = 10 }'`.
    #[arg(long, value_parser = parse_channel_extra)]
    channel_extra: Vec<(String, String)>,
    /// `mixed`: run two engines side by side on the same orders, one pushing
    /// `push_order = "first_come"`, the other `"risk"`; customers buy only what their
    /// channel shows; reports each channel's overshow × seconds and oversells per side.
    #[arg(long)]
    compare_push_order: bool,
    /// `latency`: a channel fault during the run, `KIND:CHANNEL:START+LENGTH` in seconds
    /// with KIND `outage` (503), `429` or `slow-MS`; repeatable (`--fault outage:1:5+10`).
    #[arg(long)]
    fault: Vec<loadgen::traffic::FaultWindow>,
    /// `latency` and `soak`: each order ships this many seconds after it was placed, so
    /// open order lines stay bounded (default: orders stay open).
    #[arg(long)]
    ship_after: Option<f64>,
    /// Most deliveries in flight at once (order webhooks and shipments, all channels):
    /// one due while all are busy waits, and the wait counts in its latency.
    #[arg(long, default_value_t = loadgen::traffic::CONNECTIONS)]
    connections: usize,
    /// Fail (exit 1) when p99 propagation exceeds this many seconds.
    #[arg(long)]
    slo_p99: Option<f64>,
    /// Also write the JSON report here.
    #[arg(long)]
    json: Option<String>,
    /// `latency` and `burst`: also write a self-contained HTML report (SVG plots of
    /// propagation over the run and by percentile) here.
    #[arg(long)]
    html: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_config {
        let port = args.sim_port.unwrap_or(9100);
        print!(
            "# loadgen's simulators for --engine, on ports {port}..\n{}",
            loadgen::run::engine_config(args.channels, port)
        );
        return ExitCode::SUCCESS;
    }
    if args.engine.is_some()
        && matches!(
            args.scenario.as_str(),
            "soak" | "mixed" | "ceiling" | "memory" | "discover"
        )
    {
        eprintln!("loadgen: {} starts its own lockstep (it samples its memory, configures every channel kind, or restarts it): use --spawn", args.scenario);
        return ExitCode::from(2);
    }
    let plan = Plan {
        spawn: args.spawn.unwrap_or_default(),
        engine: args.engine,
        sim_port: args.sim_port,
        orders_per_minute: args.orders_per_minute.max(1),
        duration: Duration::from_secs(args.duration.max(1)),
        skus: args
            .skus
            .unwrap_or(if args.scenario == "memory" {
                1_000_000
            } else {
                1_000
            })
            .max(1),
        channels: args.channels,
        slo_p99: args.slo_p99.map(Duration::from_secs_f64),
        channel_extra: args.channel_extra,
        traffic: loadgen::traffic::Traffic {
            arrivals: args.arrivals,
            skew: args.skew.max(0.0),
            lines: args.lines.max(1),
            duplicate_rate: args.duplicate_rate.clamp(0.0, 1.0),
            reorder_rate: args.reorder_rate.clamp(0.0, 1.0),
            mix: args.mix,
            faults: args.fault,
            ship_after: args
                .ship_after
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
            connections: args.connections.max(1),
        },
    };
    let outcome = match args.scenario.as_str() {
        "latency" => latency(&plan),
        "outage" => outage(&plan, Duration::from_secs(10), false),
        "duplicates" => duplicates(&plan, 500, false),
        "burst" => burst(&plan, 5_000),
        "contention" => contention(&plan, 100, 150),
        "audit" => audit(&plan, 500),
        "ceiling" => ceiling(&plan, 20),
        "soak" => soak(&plan, Duration::from_secs(10)),
        "mixed" if args.compare_push_order => {
            loadgen::push_order::compare(&plan, Duration::from_secs(120))
        }
        "mixed" => loadgen::mixed::mixed(&plan),
        "memory" => loadgen::memory::memory(&plan),
        "discover" => loadgen::discovery::discover(&plan),
        other => {
            eprintln!("loadgen: no scenario {other:?}; there are latency, burst, contention, outage, audit, duplicates, ceiling, soak, mixed, memory and discover");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok((report, passed)) => {
            if matches!(
                args.scenario.as_str(),
                "latency" | "burst" | "soak" | "mixed"
            ) && !args.compare_push_order
            {
                print!("{}", table(&report));
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            }
            if let Some(path) = &args.html {
                if let Err(e) = std::fs::write(path, loadgen::report::html(&report)) {
                    eprintln!("loadgen: cannot write {path}: {e}");
                }
            }
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

/// `NAME=TOML`: a channel's name and a line for its config block.
fn parse_channel_extra(text: &str) -> Result<(String, String), String> {
    let (name, line) = text
        .split_once('=')
        .ok_or("expected NAME=TOML, e.g. woo=batch_max = 50")?;
    let name = name.trim();
    if name.is_empty() || line.trim().is_empty() {
        return Err("expected NAME=TOML, both non-empty".into());
    }
    Ok((name.to_string(), line.trim().to_string()))
}
