//! The `lockstep` binary: argument parsing and the allocator. The log is set up, and a
//! command's closing error escaped, by `lockstep::logging`; the commands live in
//! `lockstep::cli` and `lockstep::demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lockstep::config::Config;

/// jemalloc, because resident memory must stay flat under steady load. glibc's allocator
/// keeps what the program frees in per-thread arenas and hands little of it back: at
/// 10,000 orders/min with a reconciliation pass a minute, resident memory climbed from
/// 37 to 145 MiB in 17 minutes, with the heap trimmed every 10 s (`malloc_trim`), while
/// the live heap stayed between 40 and 50 MB (heaptrack). jemalloc's background
/// threads purge pages left unused for ten seconds (its decay), so after each pass
/// resident memory falls back: the same load levelled off at 80 to 90 MiB, and the
/// hour's soak passes. The ceiling and ingest figures held (README, "Performance").
/// Linux with glibc only: elsewhere the system's, and with `--no-default-features` (for
/// heap profilers that see only the system allocator, such as heaptrack).
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "lockstep",
    version,
    about = "Keeps product stock in lockstep across every sales channel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine (defaults without a config: 127.0.0.1:7700, ./lockstep-data, one shard per core).
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The engine with four simulated stores (Shopify, WooCommerce, Amazon, eBay) and
    /// shoppers on each, in one process on a temporary data directory; a status line per
    /// second.
    Demo {
        /// How long the shoppers shop, in seconds.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Steady orders per second (bursts come on top).
        #[arg(long, default_value_t = 40.0)]
        orders_per_second: f64,
        /// Orders in the burst that comes every 15 s.
        #[arg(long, default_value_t = 500)]
        burst: u32,
        /// Instead: a seller's first day with two stores that are live already, the
        /// commands typed as a seller types them (discover, import, plan, approve).
        #[arg(long, conflicts_with_all = ["duration", "orders_per_second", "burst"])]
        walk: bool,
    },
    /// Check a config file; names the bad field and why.
    CheckConfig { file: PathBuf },
    /// Show a SKU's audit trail, newest first (from the running server, or the data directory).
    Audit {
        sku: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Read this data directory instead of the config's.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What approving an observing channel would write: per channel, the listings that
    /// would change, the largest decreases and increases, every one that would go to 0
    /// (asks the running server, which reads the channel).
    Plan {
        /// A channel to plan (repeatable); by default every observing channel.
        #[arg(long)]
        channel: Vec<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the plans as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let lockstep write to an observing channel (its first sync); recorded in the audit.
    Approve(ChannelAction),
    /// Stop writing to a channel (its orders are still taken) until resumed; recorded.
    Pause(ChannelAction),
    /// Write to a paused channel again, starting with what waited; recorded.
    Resume(ChannelAction),
    /// The catalog: `catalog discover` lists each channel's listings through its API and
    /// links them to SKUs by the channel's SKU field, merged into the catalog CSV.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Initial stock: `stock import FILE.csv` (columns sku,on_hand) or `stock import
    /// --from CHANNEL` (that channel's current levels), through the running server.
    Stock {
        #[command(subcommand)]
        command: StockCommand,
    },
    /// Rebuild state from the log alone and compare it with the stored state (server stopped).
    Replay {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// The arguments of `approve`, `pause` and `resume`.
#[derive(clap::Args)]
struct ChannelAction {
    channel: String,
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Who did it, for the audit (default: $USER).
    #[arg(long)]
    by: Option<String>,
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Paged at each channel's pace, resumable (run it again after a stop); reports
    /// listings without a SKU and SKUs on two listings instead of linking them. An
    /// existing catalog is merged, its rows winning. Runs without the server.
    Discover {
        /// A channel to discover (repeatable); by default every configured channel.
        #[arg(long)]
        channel: Vec<String>,
        /// The catalog to write (default: the config's [catalog] path, else catalog.csv).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StockCommand {
    /// Take counts as events, with idempotency keys: importing the same again changes
    /// nothing.
    Import {
        /// A CSV with the header sku,on_hand: one count per SKU.
        #[arg(required_unless_present = "from", conflicts_with = "from")]
        file: Option<PathBuf>,
        /// Take this channel's current levels as counts of what is available.
        #[arg(long)]
        from: Option<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(config: Option<&PathBuf>) -> Result<Config, String> {
    match config {
        Some(path) => {
            lockstep::cli::load_config(path).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Ok(Config::default()),
    }
}

/// `approve`, `pause` or `resume` (`verb`) through the running server.
fn channel_action(action: ChannelAction, verb: &str) -> anyhow::Result<bool> {
    let config = load(action.config.as_ref()).map_err(anyhow::Error::msg)?;
    let by = action
        .by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".to_string());
    lockstep::onboarding::act(&config, &action.channel, verb, &by)?;
    Ok(true)
}

fn main() -> ExitCode {
    lockstep::logging::init();
    let cli = Cli::parse();
    let outcome: anyhow::Result<bool> = (|| match cli.command {
        Command::Serve { config } => {
            let config = load(config.as_ref()).map_err(anyhow::Error::msg)?;
            lockstep::cli::serve(config)?;
            Ok(true)
        }
        Command::Demo { walk: true, .. } => lockstep::walk::walk(),
        Command::Demo {
            duration,
            orders_per_second,
            burst,
            walk: false,
        } => lockstep::demo::demo(lockstep::demo::DemoOptions {
            duration: std::time::Duration::from_secs(duration),
            orders_per_second,
            burst,
        }),
        Command::CheckConfig { file } => match lockstep::cli::check_config(&file) {
            Ok(summary) => {
                println!("{summary}");
                Ok(true)
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                Ok(false)
            }
        },
        Command::Audit {
            sku,
            limit,
            config,
            data_dir,
            json,
        } => {
            let mut config = load(config.as_ref()).map_err(anyhow::Error::msg)?;
            if let Some(dir) = data_dir {
                config.server.data_dir = dir;
            }
            lockstep::cli::audit(&config, &sku, limit.clamp(1, 1000), json)?;
            Ok(true)
        }
        Command::Plan {
            channel,
            config,
            json,
        } => {
            let config = load(config.as_ref()).map_err(anyhow::Error::msg)?;
            lockstep::onboarding::plan(&config, &channel, json)?;
            Ok(true)
        }
        Command::Approve(action) => channel_action(action, "approve"),
        Command::Pause(action) => channel_action(action, "pause"),
        Command::Resume(action) => channel_action(action, "resume"),
        Command::Catalog {
            command:
                CatalogCommand::Discover {
                    channel,
                    out,
                    config,
                },
        } => {
            // The catalog it writes may not exist yet.
            let config = match &config {
                Some(path) => lockstep::config::Config::load_before_catalog(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                None => Config::default(),
            };
            let options = lockstep::onboarding::discover::Options {
                channels: channel,
                out,
            };
            lockstep::onboarding::discover::discover(&config, &options)?;
            Ok(true)
        }
        Command::Stock {
            command: StockCommand::Import { file, from, config },
        } => {
            let config = load(config.as_ref()).map_err(anyhow::Error::msg)?;
            match (file, from) {
                (Some(file), _) => lockstep::onboarding::stock::import_file(&config, &file)?,
                (None, Some(channel)) => {
                    lockstep::onboarding::stock::import_from(&config, &channel)?
                }
                (None, None) => unreachable!("clap requires one"),
            }
            Ok(true)
        }
        Command::Replay { data_dir, config } => {
            let config = load(config.as_ref()).map_err(anyhow::Error::msg)?;
            let dir = data_dir.unwrap_or(config.server.data_dir.clone());
            lockstep::cli::replay(&dir, &config.core_config())
        }
    })();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!(
                "error: {}",
                lockstep::logging::for_terminal(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}
