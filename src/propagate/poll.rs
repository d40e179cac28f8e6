//! The order poll: the safety net under channels whose webhooks can be lost (WooCommerce
//! never retries a failed delivery), and eBay's only order path. Every interval it lists the orders modified since
//! the watermark, less an overlap window, and submits them as events: orders already
//! taken are duplicates by their keys, so only what a lost delivery missed changes
//! anything. The watermark (the newest modification time seen, or for a poll that reads
//! windows the end of the last one read whole: `OrderPoll::settles`) is kept in the data
//! directory, so a restart neither misses nor re-reads a long history.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::ChannelLink;
use crate::channels::{Caller, ChannelAdapter};
use crate::clock::{now_micros, Micros, MICROS_PER_SECOND};
use crate::engine::{Engine, EngineError};

/// How far before the watermark each poll starts again: an order saved with a
/// modification time just before the newest one seen, but listed only later (clocks,
/// slow transactions), is still inside the window.
pub const OVERLAP_S: Micros = 300;
/// Most pages read in one pass (100 orders each).
const PAGES_MAX: u32 = 1_000;

/// What one pass read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    pub orders_pages: u32,
    pub events: usize,
    pub watermark: Micros,
}

/// The file that keeps a channel's watermark.
pub fn watermark_path(data_dir: &Path, channel: &str) -> PathBuf {
    data_dir.join(format!("poll-{channel}.watermark"))
}

/// The stored watermark: `None` before the first pass stored one. A file that is there
/// but cannot be read is an error, never a silent restart at "now", which would skip
/// every order of an outage.
fn load_watermark(path: &Path) -> Result<Option<Micros>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.trim()
        .parse::<Micros>()
        .ok()
        .filter(|w| (0..=crate::core::event::TS_MAX).contains(w))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "{} does not hold a watermark ({:?}): the poll stops here rather than skip orders; \
                 write the time to resume from (Unix microseconds) into it, or delete it to resume from now",
                path.display(),
                text.chars().take(40).collect::<String>()
            )
        })
}

/// Writes the watermark durably (synced, renamed, directory synced), like the log.
fn store_watermark(path: &Path, watermark: Micros) -> std::io::Result<()> {
    crate::store::small_file::write_durably(path, watermark.to_string().as_bytes(), false)
}

/// Polls `adapter`'s orders every interval for as long as the engine runs.
pub async fn run(
    link: Arc<ChannelLink>,
    engine: Arc<Engine>,
    client: reqwest::Client,
    data_dir: PathBuf,
) {
    let adapter = link.adapter.as_ref();
    let Some(poll) = adapter.order_poll() else {
        return;
    };
    if let Ok(Some(watermark)) = load_watermark(&watermark_path(&data_dir, adapter.name())) {
        link.health.poll_watermark(watermark);
    }
    let interval = poll.interval();
    // The poll spends the channel's budget, as a reader beside the pushes: a busy store's
    // pass (BigCommerce fetches every listed order's lines) sent at once would meet the
    // channel's limit, fail on the 429 and, its watermark unmoved, fail the same way at
    // every interval. An adapter whose order API has a limit of its own spends its own
    // bucket (Shopify's REST requests, Amazon's getOrderItems), waits out that API's 429
    // (Walmart's orders list) or calls with `call_now` (eBay's Fulfillment API).
    let caller = link.reader(client);
    loop {
        tokio::time::sleep(interval).await;
        if engine.is_stopped() {
            return;
        }
        let result = pass(adapter, &caller, &engine, &data_dir).await;
        link.health.polled(&result);
        if let Err(reason) = result {
            tracing::warn!(channel = %adapter.name(), %reason, "order poll failed");
        }
    }
}

/// One poll pass, its calls through `caller`.
pub async fn pass(
    adapter: &dyn ChannelAdapter,
    caller: &Caller,
    engine: &Engine,
    data_dir: &Path,
) -> Result<PollReport, String> {
    let poll = adapter
        .order_poll()
        .ok_or("the channel has no order poll")?;
    let path = watermark_path(data_dir, adapter.name());
    let now = now_micros();
    // The first pass starts one overlap back: there is no history to catch up on.
    let watermark = load_watermark(&path)?.unwrap_or(now);
    let since = watermark - OVERLAP_S * MICROS_PER_SECOND;
    let mut report = PollReport {
        watermark,
        ..PollReport::default()
    };
    let store = |watermark| {
        store_watermark(&path, watermark).map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut cursor = None;
    // The newest `settled` time a page gave, stored at once.
    let mut settled: Option<Micros> = None;
    let mut finished = false;
    for page in 1..=PAGES_MAX {
        let result = poll
            .page(caller, since, cursor.take(), now_micros())
            .await?;
        report.orders_pages = page;
        report.events += result.events.len();
        submit_waiting(engine, result.events).await?;
        // Never past this pass's start: one order dated in the far future (a channel's
        // clock, or a hostile reply) would otherwise move every later pass past all
        // real orders.
        let newest = result.newest.unwrap_or(watermark).min(now);
        report.watermark = report.watermark.max(newest);
        if let Some(done) = result.settled.map(|t| t.min(now)) {
            if done > settled.unwrap_or(watermark) {
                store(done)?;
                settled = Some(done);
            }
        }
        match result.next {
            Some(next) => cursor = Some(next),
            None => {
                finished = true;
                break;
            }
        }
    }
    if !finished {
        tracing::warn!(channel = %adapter.name(), pages = PAGES_MAX, "order poll pass cut short at its page cap");
    }
    // A poll whose pages settle the watermark stored it as they did; a pass cut short by
    // its page cap keeps the last window it read whole. (Stored once more at the end: a
    // first pass starts from now, which its windows do not pass.)
    if poll.settles() {
        report.watermark = settled.unwrap_or(watermark).max(watermark);
        store(report.watermark)?;
        return Ok(report);
    }
    // Otherwise the watermark moves once every page is durably taken, to the newest time
    // seen. A pass cut short by its page cap moves it too: right for a list sorted by
    // modification time; for a list that may not be (Shopify's, Amazon's, eBay's and
    // TikTok's polls ask no such order) it skips what the pass did not reach, where
    // keeping the watermark would read the same pages at every pass for good.
    store(report.watermark)?;
    Ok(report)
}

/// Submits, waiting while the engine is busy (a poll is never in a hurry).
pub(crate) async fn submit_waiting(
    engine: &Engine,
    events: Vec<crate::core::event::Event>,
) -> Result<(), String> {
    // A channel's order that no shard may apply (a quantity beyond range) is logged and
    // left out: refusing the page would hold the watermark on it for good.
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| match crate::core::event::problem(e) {
            None => true,
            Some(problem) => {
                tracing::warn!(source = %e.source, sku = %e.sku, key = %e.key, %problem, "channel event refused");
                metrics::counter!("lockstep_channel_events_refused_total", "channel" => e.source.clone()).increment(1);
                false
            }
        })
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    loop {
        match engine.submit(events.clone()).await {
            Ok(_) => return Ok(()),
            Err(EngineError::Busy { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(e.to_string()),
        }
    }
}
