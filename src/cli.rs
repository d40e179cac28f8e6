//! The commands behind the `lockstep` binary: `serve`, `audit`, `replay`, `check-config`.
//! `main.rs` parses arguments; the work is here so tests and tools can call it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail};

use crate::config::Config;
use crate::core::{CoreConfig, ShardState};
use crate::engine::recovery::{rebuild, recover};
use crate::engine::settings::History;
use crate::engine::{
    audit_across, lock_data_dir, open_data_dir, recovery_refused, shard_dir, DirLock, Engine,
    EngineConfig,
};
use crate::ingest::api::App;
use crate::ingest::server::{bind, serve as serve_http};
use crate::propagate::sync_state::SyncBook;
use crate::store::{DiskStore, ShardStore};
use crate::tasks::supervise;

/// Runs the engine until Ctrl-C or SIGTERM. Prints `lockstep listening on http://ADDR`
/// on stdout once it accepts connections (tests read the port from it).
pub fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shutdown = {
        let _runtime = runtime.enter();
        shutdown_signal()?
    };
    runtime.block_on(run(config, shutdown, |addr| {
        println!("lockstep listening on http://{addr}");
    }))
}

/// The engine on the current runtime until `shutdown` completes; `ready` is called with
/// the listening address once connections are accepted. `serve` and `demo` share it.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    {
        let metrics = crate::metrics::install();
        let upkeep = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::metrics::UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        let catalog = config.catalog_rows()?;
        let adapters = crate::channels::build(&config, &catalog, &config.server.data_dir)?;
        let links = crate::propagate::links(&config, &adapters);
        let outboxes = crate::propagate::outbox::Outboxes(links.map(|l| l.outbox.clone()));
        // The channels the settings history names, read before the engine adds this
        // config's: those were pushing before first syncs were recorded.
        let seen: std::collections::BTreeSet<String> = History::read(&config.server.data_dir)?
            .eras
            .iter()
            .flat_map(|era| era.channel_names())
            .collect();
        let engine = Arc::new(Engine::start(
            &EngineConfig::of(&config),
            Arc::new(outboxes),
        )?);
        // Before any channel task starts: an observing channel's pusher never takes.
        let (sync, changes) = SyncBook::open(&config, &seen, links.clone())?;
        for change in &changes {
            tracing::info!(channel = %change.channel, state = change.state.as_str(), why = %change.why, "first sync");
        }
        let sync = Arc::new(sync);
        let names: Vec<String> = links
            .values()
            .map(|l| l.adapter.name().to_string())
            .collect();
        crate::metrics::register(&names, engine.shards());
        let client = crate::propagate::http_client();
        // Every channel task is supervised: one that panics is started again.
        for link in links.values() {
            let name = link.adapter.name().to_string();
            let (l, e, c) = (link.clone(), engine.clone(), client.clone());
            supervise(format!("pusher/{name}"), move || {
                crate::propagate::run_pusher(l.clone(), e.clone(), c.clone())
            });
            if link.adapter.order_queue().is_some() {
                let (a, e) = (link.adapter.clone(), engine.clone());
                supervise(format!("queue/{name}"), move || {
                    crate::propagate::queue::run(a.clone(), e.clone())
                });
            }
            if link.adapter.order_poll().is_some() {
                let (l, e, c) = (link.clone(), engine.clone(), client.clone());
                let dir = config.server.data_dir.clone();
                supervise(format!("poll/{name}"), move || {
                    crate::propagate::poll::run(l.clone(), e.clone(), c.clone(), dir.clone())
                });
            }
        }
        let listener = bind(config.server.listen).await?;
        let addr = listener.local_addr()?;
        let metrics_listener = match config.server.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let app = App::new(engine.clone(), config, metrics, links, client.clone(), sync);
        for reconciler in app.reconcilers.values() {
            let (r, e, c) = (reconciler.clone(), engine.clone(), client.clone());
            supervise(format!("reconcile/{}", r.link.adapter.name()), move || {
                r.clone().run(e.clone(), c.clone())
            });
        }
        if let Some(listener) = metrics_listener {
            tracing::info!(addr = %listener.local_addr()?, "metrics listener");
            tokio::spawn(serve_http(
                listener,
                app.clone(),
                true,
                std::future::pending(),
            ));
        }
        tracing::info!(%addr, shards = app.engine.shards(), "lockstep serving");
        ready(addr);
        serve_http(listener, app.clone(), false, shutdown).await;
        tracing::info!("shutting down: finishing queued batches");
        app.engine.shutdown();
        Ok(())
    }
}

/// Ctrl-C or SIGTERM, listened for from this call on, not from the future's first poll.
/// That poll came after the "listening" line (in the accept loop): a SIGTERM sent on
/// reading the line found either no handler (the process killed, not shut down) or, with
/// tokio's handler just installed and its listener not yet there, was lost, and the
/// server ran on after being told to stop (seen under a loaded CPU).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

/// A shard's store, opened by a command while no server runs, and its recovered state.
type OpenShard = (Arc<dyn ShardStore>, ShardState);

/// A data directory opened by a command: its lock (held while the command reads), its
/// router, its settings history and shards.
type Opened = (
    DirLock,
    crate::engine::router::Router,
    History,
    Vec<OpenShard>,
);

/// Opens every shard store of a data directory that no server is using, read-only, and
/// recovers it as a start would, under the settings stored with the data (`core` only
/// for a directory that has none, which then has no events either): state rows past the
/// last checkpoint are replayed from the log into memory, so what is read afterwards
/// includes every logged event, and nothing is written.
fn open_stores(data_dir: &Path, core: &CoreConfig) -> anyhow::Result<Opened> {
    if !data_dir.join("lockstep.meta").exists() {
        bail!(
            "{} holds no lockstep data (no lockstep.meta)",
            data_dir.display()
        );
    }
    // A running server holds the lock: this command refuses instead of writing under it.
    let lock = lock_data_dir(data_dir)?;
    let router = open_data_dir(data_dir, 0)?;
    let history = History::read(data_dir)?;
    let stored = history.current().map(|era| era.core());
    let mut stores: Vec<OpenShard> = Vec::new();
    for i in 0..router.shards() {
        let dir = shard_dir(data_dir, i);
        let store = DiskStore::open_read_only(&dir)
            .map_err(|e| anyhow!("cannot open {}: {e}", dir.display()))?;
        if stored.is_none() && store.last_seq()? > 0 {
            return Err(crate::engine::settings::missing(data_dir).into());
        }
        let (state, _) = recover(&store, stored.as_ref().unwrap_or(core))
            .map_err(|e| recovery_refused(i, &dir, e))?;
        stores.push((Arc::new(store), state));
    }
    Ok((lock, router, history, stores))
}

/// `lockstep audit SKU`: asks the running server when there is one, else reads the
/// data directory directly.
pub fn audit(config: &Config, sku: &str, limit: usize, json: bool) -> anyhow::Result<()> {
    let (records, settings, sync) = match audit_over_http(config, sku, limit)? {
        Some(answer) => answer,
        None => {
            let (_lock, router, history, shards) =
                open_stores(&config.server.data_dir, &config.core_config())?;
            let stores: Vec<_> = shards.into_iter().map(|(store, _)| store).collect();
            let records = audit_across(&stores, &router, Some(sku), 0, limit)?;
            let records = records.iter().map(crate::ingest::api::audit_json).collect();
            let sync = crate::propagate::sync_state::changes_in(&config.server.data_dir)?;
            (records, history.changes_json(0), sync)
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "records": records, "settings_changes": settings,
                                     "sync_changes": sync })
            )?
        );
        return Ok(());
    }
    if records.is_empty() {
        println!("no audit records for SKU {sku:?}");
        return Ok(());
    }
    println!(
        "{:>10}  {:<32}  {:<17}  {:>7}  {:<12}  {:<9}  {:>15}  key",
        "seq", "applied_at", "kind", "qty", "source", "outcome", "available"
    );
    // Records come newest first; a change of settings is printed between the last record
    // before it and the first after it.
    let first_seq = |era: &serde_json::Value| {
        era["from_seq"]
            .as_array()
            .and_then(|seqs| seqs.iter().filter_map(|s| s.as_u64()).max())
            .unwrap_or(0)
    };
    let mut changes: Vec<&serde_json::Value> = settings.iter().rev().collect();
    let print_change = |era: &serde_json::Value| {
        let what: Vec<&str> = era["changes"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c.as_str()).collect())
            .unwrap_or_default();
        println!(
            "{:>10}  {:<32}  settings: {}",
            format!("{}..", first_seq(era)),
            era["since"].as_str().unwrap_or(""),
            what.join("; ")
        );
    };
    // A channel's first-sync change (an approval) has a time, not a sequence number: it
    // is printed before the first record applied before it.
    let mut syncs: Vec<&serde_json::Value> = sync.iter().rev().collect();
    let print_sync = |change: &serde_json::Value| {
        let text = |name: &str| change[name].as_str().unwrap_or("").to_string();
        println!(
            "{:>10}  {:<32}  channel {}: {} ({}, by {})",
            "",
            text("at"),
            text("channel"),
            text("state"),
            text("why"),
            text("by")
        );
    };
    for r in &records {
        let seq = r["seq"].as_u64().unwrap_or(0);
        while changes.first().is_some_and(|era| first_seq(era) > seq) {
            print_change(changes.remove(0));
        }
        // As times: the text drops a fraction's trailing zeros, so it does not sort.
        let time = |v: &serde_json::Value| v.as_str().and_then(crate::clock::parse_rfc3339);
        let applied = time(&r["applied_at"]);
        while syncs.first().is_some_and(|c| time(&c["at"]) > applied) {
            print_sync(syncs.remove(0));
        }
        let text = |name: &str| r[name].as_str().unwrap_or("").to_string();
        println!(
            "{:>10}  {:<32}  {:<17}  {:>7}  {:<12}  {:<9}  {:>15}  {}{}",
            r["seq"].to_string(),
            text("applied_at"),
            text("kind"),
            r["qty"].to_string(),
            text("source"),
            text("outcome"),
            format!("{} -> {}", r["available_before"], r["available_after"]),
            text("idempotency_key"),
            if r["oversell"].as_bool() == Some(true) {
                "  OVERSELL"
            } else {
                ""
            },
        );
    }
    Ok(())
}

/// A SKU's audit records, newest first, the settings changes of the data directory, and
/// the channels' first-sync changes.
type AuditAnswer = (
    Vec<serde_json::Value>,
    Vec<serde_json::Value>,
    Vec<serde_json::Value>,
);

/// The audit from a running server; `None` when nothing listens at the configured address.
fn audit_over_http(
    config: &Config,
    sku: &str,
    limit: usize,
) -> anyhow::Result<Option<AuditAnswer>> {
    let sku_q: String =
        percent_encoding::utf8_percent_encode(sku, percent_encoding::NON_ALPHANUMERIC).to_string();
    let path = format!("/v1/audit?sku={sku_q}&limit={limit}");
    let Some(value) = crate::remote::call(config, hyper::Method::GET, &path, None)? else {
        return Ok(None);
    };
    let list = |name: &str| value[name].as_array().cloned().unwrap_or_default();
    Ok(Some((
        list("records"),
        list("settings_changes"),
        list("sync_changes"),
    )))
}

/// `lockstep replay`: rebuilds every shard's state from its log alone and compares it
/// with the stored state. Returns whether they are equal.
pub fn replay(data_dir: &Path, core: &CoreConfig) -> anyhow::Result<bool> {
    let (_lock, _, history, mut shards) = open_stores(data_dir, core)?;
    let mut all_equal = true;
    for (i, (store, live)) in shards.iter_mut().enumerate() {
        let rebuilt = rebuild(store.as_ref(), i, &history, core)?;
        // The live state keeps movements on disk; the rebuilt one has them in memory.
        // Comparing them whole also checks the stored movement rows against the log.
        for (sku, state) in live.iter_mut() {
            let stored = store.movements(sku)?;
            if let Err(detail) = state.load_movements(stored) {
                bail!("shard {i}: SKU {sku:?}: {detail}");
            }
        }
        let records: usize = store.log_after(0).map(|c| c.map_or(0, |c| c.len())).sum();
        let mut differences = Vec::new();
        for (sku, state) in live.iter() {
            match rebuilt.get(sku) {
                Some(other) if other == state => {}
                Some(other) => differences.push(format!(
                    "{sku:?}: live on_hand {} committed {}, replayed on_hand {} committed {}",
                    state.on_hand(),
                    state.committed,
                    other.on_hand(),
                    other.committed
                )),
                None => differences.push(format!("{sku:?}: in the live state, not in the log")),
            }
        }
        for sku in rebuilt.keys().filter(|sku| !live.contains_key(sku)) {
            differences.push(format!("{sku:?}: in the log, not in the live state"));
        }
        if differences.is_empty() {
            println!(
                "shard {i}: {} SKUs, {records} log records: replay equals the live state",
                live.len()
            );
        } else {
            all_equal = false;
            println!(
                "shard {i}: {} of {} SKUs differ:",
                differences.len(),
                live.len()
            );
            for d in differences.iter().take(20) {
                println!("  {d}");
            }
        }
    }
    Ok(all_equal)
}

/// Reads, parses and checks a config file whole: `Config::load`'s checks, then each
/// channel's own keys and catalog ids by its kind (`channels::check`). Every command that
/// takes a config reads it here.
pub fn load_config(path: &Path) -> Result<Config, crate::config::ConfigError> {
    let config = Config::load(path)?;
    crate::channels::check(&config)?;
    Ok(config)
}

/// `lockstep check-config FILE`: prints what was found, or the bad field and why.
pub fn check_config(path: &Path) -> Result<String, crate::config::ConfigError> {
    let config = load_config(path)?;
    let rows = config.catalog_rows()?;
    let mut summary = format!(
        "{}: ok: listen {}, data_dir {}, {} channel(s), {} catalog row(s)",
        path.display(),
        config.server.listen,
        config.server.data_dir.display(),
        config.channels.len(),
        rows.len()
    );
    for channel in &config.channels {
        let mapped = rows.iter().filter(|r| r.channel == channel.name).count();
        let note = match (channel.kind.names_items_by_own_ids(), mapped) {
            (true, 0) => " (no SKU mapped: nothing will be pushed to it)",
            (false, _) => " (names items by our SKUs)",
            _ => "",
        };
        summary.push_str(&format!(
            "\n  {} ({:?}): {mapped} SKU(s) mapped{note}",
            channel.name, channel.kind
        ));
    }
    Ok(summary)
}
