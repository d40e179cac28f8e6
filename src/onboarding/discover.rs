//! `lockstep catalog discover`: each configured channel's listings through its own API
//! (`ChannelAdapter::listings`), linked to SKUs by the channel's SKU field, merged into
//! the catalog CSV.
//!
//! - **Paced and resumable.** Pages are read at the channel's pace (its token bucket,
//!   and the pause its answer asks for: Shopify's cost bucket), a throttled page is asked
//!   again after the wait the channel names, and after every page the listings so far
//!   and the next cursor are saved beside the output (`FILE.discover`). A run that
//!   stops (a failure, Ctrl-C) continues from there when run again; a finished run
//!   removes the file.
//! - **Never linked silently.** A listing without a SKU, a SKU on two listings of the
//!   same channel, a SKU the catalog cannot take (too long, control characters) and a
//!   listing lockstep cannot write (the kind's `problem`) are reported, not written.
//! - **Merged, not overwritten.** The rows of an existing catalog are kept, and a row
//!   there wins over what discovery finds for the same SKU and channel; discovery adds
//!   the SKUs the catalog does not map yet. It reports catalog rows whose item the
//!   channel no longer lists, and catalog SKUs no channel lists.
//!
//! It runs without the server, holding the data directory's lock (some channels rotate
//! the refresh token kept there on every use): the catalog it writes is read when
//! `lockstep serve` starts. A `webhook` channel takes lockstep's SKUs as they are and is
//! skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::channels::listing::{Listing, ListingError};
use crate::channels::pacing::TokenBucket;
use crate::channels::{Caller, ChannelAdapter};
use crate::config::{CatalogRow, Config};
use crate::core::event::SKU_BYTES_MAX;

/// Most waits on one throttled page before discovery stops (resumable) and says so.
const THROTTLED_MAX: u32 = 20;

/// A listing as the progress file keeps it.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Found {
    sku: Option<String>,
    item_id: String,
    location_id: Option<String>,
    problem: Option<String>,
}

impl From<Listing> for Found {
    fn from(l: Listing) -> Found {
        Found {
            sku: l.sku,
            item_id: l.item_id,
            location_id: l.location_id,
            problem: l.problem,
        }
    }
}

/// One channel's progress.
#[derive(Serialize, Deserialize, Default, Debug)]
struct Progress {
    cursor: Option<String>,
    done: bool,
    pages: usize,
    found: Vec<Found>,
}

/// Every channel's progress: the `FILE.discover` beside the output.
#[derive(Serialize, Deserialize, Default, Debug)]
struct Saved {
    channels: BTreeMap<String, Progress>,
}

/// What discovery found on one channel and what it did with it.
#[derive(Debug, Default)]
pub struct ChannelReport {
    pub listings: usize,
    /// New catalog rows.
    pub linked: usize,
    /// Rows of the catalog for this channel, kept as they were.
    pub kept: usize,
    /// SKUs the catalog maps on this channel to another item than the one found: the
    /// catalog's row wins.
    pub overridden: Vec<(String, String, String)>,
    pub without_sku: Vec<String>,
    /// SKU → the items carrying it.
    pub duplicates: BTreeMap<String, Vec<String>>,
    /// (item, SKU, why) of listings that cannot be linked.
    pub problems: Vec<(String, Option<String>, String)>,
    /// Catalog rows of this channel whose item it does not list.
    pub not_listed: Vec<(String, String)>,
}

/// What to discover, and where to write.
pub struct Options {
    pub channels: Vec<String>,
    pub out: Option<PathBuf>,
}

/// `lockstep catalog discover`.
pub fn discover(config: &Config, options: &Options) -> anyhow::Result<()> {
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| match &config.catalog {
            Some(catalog) => config.base_dir.join(&catalog.path),
            None => PathBuf::from("catalog.csv"),
        });
    // Absolute, so that its directory can be synced after each write.
    let out =
        std::path::absolute(&out).with_context(|| format!("cannot resolve {}", out.display()))?;
    for name in &options.channels {
        if !config.channels.iter().any(|c| &c.name == name) {
            bail!("no channel named {name:?} is configured");
        }
    }
    let wanted = |n: &String| options.channels.is_empty() || options.channels.contains(n);
    // A `webhook` channel names items by lockstep's own SKUs: no catalog, nothing to list.
    for c in config.channels.iter().filter(|c| wanted(&c.name)) {
        if !c.kind.names_items_by_own_ids() {
            println!(
                "{}: takes lockstep's SKUs as they are: nothing to discover",
                c.name
            );
        }
    }
    let names: Vec<String> = config
        .channels
        .iter()
        .filter(|c| c.kind.names_items_by_own_ids())
        .map(|c| c.name.clone())
        .filter(wanted)
        .collect();
    if names.is_empty() {
        bail!("the config names no channel with listings of its own to discover");
    }
    // The channels' credentials include what the data directory keeps (a refresh token
    // some channels rotate on every use): one process at a time uses them.
    let _lock = crate::engine::lock_data_dir(&config.server.data_dir).map_err(|e| {
        anyhow::anyhow!("{e}; discovery uses the channel credentials the data directory keeps")
    })?;
    let adapters = crate::channels::build(config, &[], &config.server.data_dir)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let state_path = progress_path(&out);
    let mut saved = read_saved(&state_path)?;
    saved.channels.retain(|name, _| names.contains(name));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = crate::propagate::http_client();
    for name in &names {
        let adapter = adapters
            .values()
            .find(|a| a.name() == name)
            .expect("every configured channel has an adapter")
            .clone();
        let progress = saved.channels.entry(name.clone()).or_default();
        if progress.done {
            println!("{name}: {} listings, read before", progress.found.len());
            continue;
        }
        if progress.pages > 0 {
            println!(
                "{name}: resuming after {} pages ({} listings)",
                progress.pages,
                progress.found.len()
            );
        }
        let result = runtime.block_on(read_channel(
            adapter,
            &client,
            name,
            &state_path,
            &mut saved,
        ));
        if let Err(e) = result {
            bail!("{e:#}\nthe listings read so far are kept in {}: run the same command again to continue", state_path.display());
        }
    }
    let existing = read_catalog(&out)?;
    let (rows, reports) = merge(&names, &saved, &existing);
    write_catalog(&out, &rows)?;
    let _ = std::fs::remove_file(&state_path);
    print_reports(&names, &reports, &rows, &existing, &out);
    Ok(())
}

fn progress_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".discover");
    PathBuf::from(name)
}

fn read_saved(path: &Path) -> anyhow::Result<Saved> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} (discovery's saved progress) is unreadable: remove it to start over",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn save(path: &Path, saved: &Saved) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(saved)?;
    crate::store::small_file::write_durably(path, &bytes, false)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads one channel's pages from its saved cursor, saving after each.
async fn read_channel(
    adapter: Arc<dyn ChannelAdapter>,
    client: &reqwest::Client,
    name: &str,
    state_path: &Path,
    saved: &mut Saved,
) -> anyhow::Result<()> {
    let bucket = Arc::new(tokio::sync::Mutex::new(TokenBucket::for_pace(
        adapter.pace(),
    )));
    // A throttle the channel's adapter recognises in an answer (a 429; TikTok Shop's
    // code on a 200) is waited out by the call itself (`waiting_out`); one it answers
    // otherwise (Shopify's `THROTTLED`, found in the query's reply) comes back as
    // `Throttled`.
    let caller = Caller::paced(client.clone(), bucket)
        .waiting_out(crate::channels::throttles_of(adapter.clone()));
    let show = Show::new(name);
    let started = Instant::now();
    let mut read_now = 0usize;
    let mut throttled = 0;
    // Every next-page cursor of this run: paging never names a page twice, so one that
    // comes back is a channel whose paging loops (it was read for good).
    let mut cursors = std::collections::HashSet::new();
    loop {
        let progress = saved.channels.get_mut(name).expect("entry made");
        let cursor = progress.cursor.clone();
        match adapter.listings(&caller, cursor.as_deref()).await {
            Ok(page) => {
                throttled = 0;
                if let Some(next) = page
                    .next
                    .as_ref()
                    .filter(|n| !cursors.insert(n.to_string()))
                {
                    bail!("{name}: the next page, {next:?}, is one already read: the channel's paging loops, so discovery stops here");
                }
                read_now += page.listings.len();
                progress
                    .found
                    .extend(page.listings.into_iter().map(Found::from));
                progress.pages += 1;
                progress.cursor = page.next.clone();
                progress.done = page.next.is_none();
                let (total, pages, done) = (progress.found.len(), progress.pages, progress.done);
                save(state_path, saved)?;
                show.page(total, pages, read_now, started.elapsed());
                if done {
                    show.finish(total, pages, started.elapsed());
                    return Ok(());
                }
                // An adapter's pause is the channel's word: never longer than any wait.
                tokio::time::sleep(page.pause.min(crate::channels::pacing::WAIT_MAX)).await;
            }
            Err(ListingError::Throttled { wait }) if throttled < THROTTLED_MAX => {
                throttled += 1;
                show.throttled(wait);
                tokio::time::sleep(wait).await;
            }
            Err(ListingError::Throttled { wait }) => bail!(
                "{name}: throttled {THROTTLED_MAX} times in a row on one page (last wait {} ms)",
                wait.as_millis()
            ),
            Err(ListingError::Failed(reason)) => bail!("{name}: {reason}"),
        }
    }
}

/// The progress display: a line that counts and rates on a terminal, plain lines
/// otherwise (a log, a pipe).
struct Show {
    bar: Option<indicatif::ProgressBar>,
    name: String,
}

impl Show {
    fn new(name: &str) -> Show {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix}: {pos} listings, {msg} ({elapsed})",
                )
                .expect("a valid template"),
            );
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Show {
            bar,
            name: name.to_string(),
        }
    }

    fn page(&self, total: usize, pages: usize, read_now: usize, took: Duration) {
        let rate = read_now as f64 / took.as_secs_f64().max(0.001);
        match &self.bar {
            Some(bar) => {
                bar.set_position(total as u64);
                bar.set_message(format!("{pages} pages, {rate:.0} listings/s"));
            }
            None => println!(
                "{}: page {pages}: {total} listings ({rate:.0} listings/s)",
                self.name
            ),
        }
    }

    fn throttled(&self, wait: Duration) {
        let text = format!("throttled by the channel: waiting {} ms", wait.as_millis());
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None => println!("{}: {text}", self.name),
        }
    }

    fn finish(&self, total: usize, pages: usize, took: Duration) {
        let text = format!(
            "{}: {total} listings in {pages} pages, {:.1} s",
            self.name,
            took.as_secs_f64()
        );
        match &self.bar {
            Some(bar) => bar.finish_with_message(format!("done in {:.1} s", took.as_secs_f64())),
            None => println!("{text}"),
        }
    }
}

/// The catalog at `path` (none: empty). Read as rows, unchecked: its rows are the
/// seller's and are kept as they are.
fn read_catalog(path: &Path) -> anyhow::Result<Vec<CatalogRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.with_context(|| format!("{} line {}", path.display(), i + 2)))
        .collect()
}

/// Why a discovered SKU cannot be a catalog SKU, if it cannot.
fn unusable_sku(sku: &str) -> Option<String> {
    if sku.len() > SKU_BYTES_MAX {
        return Some(format!(
            "its SKU is {} bytes; at most {SKU_BYTES_MAX}",
            sku.len()
        ));
    }
    sku.chars()
        .any(|c| c.is_control() || c == ',' || c == '"')
        .then(|| "its SKU holds a control character, a comma or a quote".to_string())
}

/// The merged catalog, and what happened per channel.
fn merge(
    names: &[String],
    saved: &Saved,
    existing: &[CatalogRow],
) -> (Vec<CatalogRow>, BTreeMap<String, ChannelReport>) {
    let mut rows: Vec<CatalogRow> = existing.to_vec();
    let mut reports = BTreeMap::new();
    for name in names {
        let mut report = ChannelReport::default();
        let found = saved
            .channels
            .get(name)
            .map_or(&[][..], |p| p.found.as_slice());
        // The same item twice (a page read again on resume, two variants of one
        // Shopify inventory item) is one listing.
        let mut items = BTreeSet::new();
        let found: Vec<&Found> = found
            .iter()
            .filter(|f| items.insert((f.item_id.clone(), f.location_id.clone())))
            .collect();
        report.listings = found.len();
        let mut by_sku: BTreeMap<&str, Vec<&Found>> = BTreeMap::new();
        for f in &found {
            match (&f.sku, &f.problem) {
                (_, Some(problem)) => {
                    report
                        .problems
                        .push((f.item_id.clone(), f.sku.clone(), problem.clone()))
                }
                (None, None) => report.without_sku.push(f.item_id.clone()),
                (Some(sku), None) => match unusable_sku(sku) {
                    Some(why) => report
                        .problems
                        .push((f.item_id.clone(), Some(sku.clone()), why)),
                    None => by_sku.entry(sku).or_default().push(f),
                },
            }
        }
        let mapped: BTreeMap<&str, &CatalogRow> = existing
            .iter()
            .filter(|r| &r.channel == name)
            .map(|r| (r.sku.as_str(), r))
            .collect();
        report.kept = mapped.len();
        for (sku, listings) in by_sku {
            if listings.len() > 1 {
                report.duplicates.insert(
                    sku.to_string(),
                    listings.iter().map(|l| l.item_id.clone()).collect(),
                );
                continue;
            }
            let listing = listings[0];
            match mapped.get(sku) {
                Some(row) if row.item_id != listing.item_id => report.overridden.push((
                    sku.to_string(),
                    row.item_id.clone(),
                    listing.item_id.clone(),
                )),
                Some(_) => {}
                None => {
                    report.linked += 1;
                    rows.push(CatalogRow {
                        sku: sku.to_string(),
                        channel: name.clone(),
                        item_id: listing.item_id.clone(),
                        location_id: listing.location_id.clone(),
                    });
                }
            }
        }
        let listed: BTreeSet<&str> = found.iter().map(|f| f.item_id.as_str()).collect();
        report.not_listed = mapped
            .values()
            .filter(|r| !listed.contains(r.item_id.as_str()))
            .map(|r| (r.sku.clone(), r.item_id.clone()))
            .collect();
        reports.insert(name.clone(), report);
    }
    rows.sort_by(|a, b| (&a.sku, &a.channel).cmp(&(&b.sku, &b.channel)));
    (rows, reports)
}

fn write_catalog(path: &Path, rows: &[CatalogRow]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["sku", "channel", "item_id", "location_id"])?;
    for row in rows {
        writer.write_record([
            row.sku.as_str(),
            row.channel.as_str(),
            row.item_id.as_str(),
            row.location_id.as_deref().unwrap_or(""),
        ])?;
    }
    let bytes = writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::store::small_file::write_durably(path, &bytes, false)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Lists at most this many names of each kind in the report; the count says the rest.
const SHOWN_MAX: usize = 10;

fn print_reports(
    names: &[String],
    reports: &BTreeMap<String, ChannelReport>,
    rows: &[CatalogRow],
    existing: &[CatalogRow],
    out: &Path,
) {
    let some = |items: Vec<String>| -> String {
        let more = items.len().saturating_sub(SHOWN_MAX);
        let mut text = items
            .into_iter()
            .take(SHOWN_MAX)
            .collect::<Vec<_>>()
            .join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    };
    for name in names {
        let r = &reports[name];
        println!(
            "{name}: {} listings: {} linked, {} already in the catalog, {} without a SKU, {} SKUs on two or more listings, {} that cannot be linked",
            r.listings,
            r.linked,
            r.kept,
            r.without_sku.len(),
            r.duplicates.len(),
            r.problems.len()
        );
        if !r.without_sku.is_empty() {
            println!("  without a SKU (items): {}", some(r.without_sku.clone()));
        }
        for (sku, items) in &r.duplicates {
            println!(
                "  SKU {sku:?} is on {} listings ({}): not linked; add the row for the right one to the catalog",
                items.len(),
                items.join(", ")
            );
        }
        for (item, sku, why) in r.problems.iter().take(SHOWN_MAX) {
            let sku = sku
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            println!("  item {item}{sku} not linked: {why}");
        }
        if r.problems.len() > SHOWN_MAX {
            println!("  and {} more not linked", r.problems.len() - SHOWN_MAX);
        }
        for (sku, ours, found) in &r.overridden {
            println!("  SKU {sku:?}: the catalog maps item {ours}, the channel lists it on {found}: the catalog's row is kept");
        }
        if !r.not_listed.is_empty() {
            let rows: Vec<String> = r
                .not_listed
                .iter()
                .map(|(sku, item)| format!("{sku} (item {item})"))
                .collect();
            println!(
                "  catalog rows whose item the channel does not list: {}",
                some(rows)
            );
        }
    }
    // The catalog's SKUs no discovered channel lists (by the rows discovery made or kept).
    let listed: BTreeSet<&str> = names
        .iter()
        .flat_map(|name| {
            let r = &reports[name];
            let missing: BTreeSet<&str> = r.not_listed.iter().map(|(s, _)| s.as_str()).collect();
            rows.iter()
                .filter(move |row| &row.channel == name && !missing.contains(row.sku.as_str()))
                .map(|row| row.sku.as_str())
        })
        .collect();
    let unlisted: BTreeSet<&str> = existing
        .iter()
        .map(|r| r.sku.as_str())
        .filter(|s| !listed.contains(s))
        .collect();
    if !unlisted.is_empty() {
        println!(
            "catalog SKUs no discovered channel lists: {}",
            some(unlisted.iter().map(|s| s.to_string()).collect())
        );
    }
    let skus: BTreeSet<&str> = rows.iter().map(|r| r.sku.as_str()).collect();
    println!(
        "wrote {}: {} rows, {} SKUs (restart lockstep serve to load it)",
        out.display(),
        rows.len(),
        skus.len()
    );
}
