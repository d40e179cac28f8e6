//! The order poll: the safety net under channels whose webhooks can be lost (WooCommerce
//! never retries a failed delivery), and eBay's only order path. Every interval it lists the orders modified since
//! the watermark, less an overlap window, and submits them as events: orders already
//! taken are duplicates by their keys, so only what a lost delivery missed changes
//! anything. The watermark (the newest modification time seen on a list sorted by it, or
//! for a poll that reads windows the end of the last one read whole: `OrderPoll::windowed`,
//! `poll_window.rs`) is kept in the data directory, so a restart neither misses nor
//! re-reads a long history. An order whose follow-up read fails in a way another try may
//! mend is set aside (`set_aside.rs`) and read again at every pass, so the poll reads on
//! past it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::poll_window::{self, Reader, Turn, Window};
use super::set_aside::{self, AsideFile};
use super::ChannelLink;
use crate::channels::{Caller, ChannelAdapter, OrderPoll, PollPage};
use crate::clock::{now_micros, Micros, MICROS_PER_SECOND};
use crate::engine::{Engine, EngineError};

/// How far before the watermark each poll starts again: an order saved with a
/// modification time just before the newest one seen, but listed only later (clocks,
/// slow transactions), is still inside the window.
pub const OVERLAP_S: Micros = 300;
/// Most pages read in one pass (100 to 250 orders each): the next pass reads on from the
/// watermark, so a channel that pages without end cannot hold a poll for good.
const PAGES_MAX: u32 = 1_000;

/// What one pass read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    pub orders_pages: u32,
    pub events: usize,
    pub watermark: Micros,
    /// Stopped at `PAGES_MAX` with pages left: the next pass reads on from the watermark.
    pub cut_short: bool,
    /// What a windowed poll carries to its next pass.
    pub carried: Carried,
}

/// What a windowed poll carries from one pass to the next, in memory: after a restart a
/// pass starts as a first one would, only slower.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    /// The window a pass was cut short in: the next pass's windows fit to it
    /// (`Window::capped`), rather than halving their way down to it again.
    pub resume: Option<Window>,
    /// The latest watermark stored for a window whose end was at least the overlap
    /// (`OVERLAP_S`) old when it was read: the orders listed late that the overlap is for
    /// had that long to be listed, so the next pass starts no further back than this
    /// (less a window's overlap). Otherwise every pass cut short would read the five
    /// minutes before its watermark again, and a dense stretch in them would take each
    /// pass's pages for good.
    pub settled: Option<Micros>,
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
    let aside_path = set_aside::path(&data_dir, adapter.name());
    show_aside(&link, adapter.name(), &aside_path);
    let mut carried = Carried::default();
    // How far behind the last pass cut short left the watermark.
    let mut lag_before: Option<Micros> = None;
    loop {
        tokio::time::sleep(interval).await;
        if engine.is_stopped() {
            return;
        }
        let mut result = pass(adapter, &caller, &engine, &data_dir, carried).await;
        if let Ok(report) = &result {
            carried = report.carried;
            // Passes cut short one after another and the watermark no nearer now: said on
            // the console, not only in the log. A pass cut short that gains on now is
            // catching up, and says nothing.
            let lag = now_micros() - report.watermark;
            let stuck = not_catching_up(report.cut_short, lag, lag_before);
            lag_before = report.cut_short.then_some(lag);
            if stuck {
                result = Err(format!(
                    "the order poll is {} s behind and not catching up: each pass reads its {PAGES_MAX} pages and stops (more orders modified in a short time than a pass reads, or more than the channel's pace lets it read)",
                    lag / MICROS_PER_SECOND
                ));
            }
        }
        link.health.polled(&result);
        show_aside(&link, adapter.name(), &aside_path);
        if let Err(reason) = result {
            tracing::warn!(channel = %adapter.name(), %reason, "order poll failed");
        }
    }
}

/// Shows the orders set aside, as the file holds them, on the console and in
/// `lockstep_poll_orders_set_aside`: after every pass, failed ones too (a poll failing
/// every pass with orders aside is the state they most need showing in), and at start.
fn show_aside(link: &ChannelLink, channel: &str, path: &Path) {
    let Ok(aside) = AsideFile::load(path.to_path_buf()) else {
        // A file that cannot be read fails every pass, which says why.
        return;
    };
    let first = aside
        .kept()
        .first()
        .map(|k| (k.order.id.clone(), k.order.why.clone()));
    link.health.poll_set_aside(aside.kept().len(), first);
    metrics::gauge!("lockstep_poll_orders_set_aside", "channel" => channel.to_string())
        .set(aside.kept().len() as f64);
}

/// Whether a pass cut short leaves the poll `lag` behind now, no nearer than the pass
/// before it left it (`before`, when that one was cut short too): falling behind, or
/// stuck. A first pass cut short (a long outage) is not.
fn not_catching_up(cut_short: bool, lag: Micros, before: Option<Micros>) -> bool {
    cut_short && before.is_some_and(|before| lag >= before)
}

/// One poll pass, its calls through `caller`; a windowed poll's with what the pass
/// before carried (`PollReport::carried`).
pub async fn pass(
    adapter: &dyn ChannelAdapter,
    caller: &Caller,
    engine: &Engine,
    data_dir: &Path,
    carried: Carried,
) -> Result<PollReport, String> {
    let poll = adapter
        .order_poll()
        .ok_or("the channel has no order poll")?;
    let path = watermark_path(data_dir, adapter.name());
    let now = now_micros();
    let store_now = || store_watermark(&path, now).map_err(|e| format!("{}: {e}", path.display()));
    let watermark = match load_watermark(&path)? {
        // Never later than now, and stored so: a clock stepped back (or a time written by
        // hand) would otherwise have the poll read from a time still to come, and store
        // nothing until the clock got there.
        Some(watermark) if watermark > now => {
            tracing::warn!(channel = %adapter.name(), watermark, now, "order poll watermark later than now: read from now");
            store_now()?;
            now
        }
        Some(watermark) => watermark,
        // The first pass starts one overlap back (there is no history to catch up on),
        // from a watermark stored at once: one that failed or was cut short leaves the
        // next to start there, not at its own start.
        None => {
            store_now()?;
            now
        }
    };
    let overlap = OVERLAP_S * MICROS_PER_SECOND;
    let since = match poll.windowed() {
        true => poll_window::pass_start(watermark, overlap, carried.settled),
        false => watermark - overlap,
    };
    let mut aside = AsideFile::load(set_aside::path(data_dir, adapter.name()))?;
    read_again(poll, caller, engine, &mut aside).await?;
    let pass = Pass {
        poll,
        channel: adapter.name(),
        caller,
        engine,
        path: &path,
        aside: &mut aside,
        since,
        now,
        report: PollReport {
            watermark,
            carried: Carried {
                resume: None,
                ..carried
            },
            ..PollReport::default()
        },
        resume: carried.resume,
    };
    let report = if poll.windowed() {
        pass.windows().await?
    } else {
        pass.newest_seen().await?
    };
    if report.cut_short {
        tracing::warn!(channel = %adapter.name(), pages = PAGES_MAX, watermark = report.watermark, "order poll pass cut short at its page cap: the next pass reads on from the watermark");
    }
    Ok(report)
}

/// Most orders set aside that one pass reads again, before it lists: after an outage of
/// the follow-up call left many aside, their reads would otherwise spend the budget the
/// new orders' reads wait for (100 of Amazon's getOrderItems at 0.5/s after its burst of
/// 30 is over two minutes); the rest are read at the passes after.
const READ_AGAIN_PER_PASS: usize = 10;

/// Reads again the orders set aside, in turn, until one still cannot be read, which goes
/// to the back (`AsideFile::still`): an order that never mends does not keep the others
/// from their tries, and the follow-up call failing for every order costs one call here.
async fn read_again(
    poll: &dyn OrderPoll,
    caller: &Caller,
    engine: &Engine,
    aside: &mut AsideFile,
) -> Result<(), String> {
    let kept: Vec<_> = aside
        .kept()
        .iter()
        .take(READ_AGAIN_PER_PASS)
        .map(|k| k.order.clone())
        .collect();
    for order in kept {
        match poll.read_again(caller, &order.listed, now_micros()).await {
            Ok(events) => {
                submit_waiting(engine, events).await?;
                aside.remove(&order.id)?;
            }
            Err(why) => {
                aside.still(&order.id, why)?;
                break;
            }
        }
    }
    Ok(())
}

/// One pass under way.
struct Pass<'a> {
    poll: &'a dyn OrderPoll,
    channel: &'a str,
    caller: &'a Caller,
    engine: &'a Engine,
    path: &'a Path,
    /// The orders set aside: a page's are kept durably before the watermark moves past
    /// them.
    aside: &'a mut AsideFile,
    /// Where it starts: the watermark less the overlap, or for a windowed poll later
    /// (`poll_window::pass_start`).
    since: Micros,
    /// When the pass started.
    now: Micros,
    /// The window the pass before was cut short in (`Carried::resume`).
    resume: Option<Window>,
    report: PollReport,
}

impl Pass<'_> {
    /// Reads one page and submits its events.
    async fn page(
        &mut self,
        since: Micros,
        until: Option<Micros>,
        cursor: Option<String>,
    ) -> Result<PollPage, String> {
        let mut page = self
            .poll
            .page(self.caller, since, until, cursor, now_micros())
            .await?;
        self.report.orders_pages += 1;
        self.report.events += page.events.len();
        submit_waiting(self.engine, std::mem::take(&mut page.events)).await?;
        let found = std::mem::take(&mut page.set_aside);
        let said: Vec<_> = found
            .iter()
            .map(|o| (o.id.clone(), o.why.clone()))
            .collect();
        self.aside.add(found, now_micros())?;
        for (order, why) in said {
            tracing::warn!(channel = %self.channel, %order, %why,
                "order set aside, its follow-up read failing: read again at every pass while the poll reads on");
        }
        Ok(page)
    }

    /// Whether the pass has read its `PAGES_MAX` (with more to read: the caller asks).
    fn cut_short(&mut self) -> bool {
        self.report.cut_short = self.report.orders_pages >= PAGES_MAX;
        self.report.cut_short
    }

    fn store(&mut self, watermark: Micros) -> Result<(), String> {
        store_watermark(self.path, watermark)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.report.watermark = watermark;
        Ok(())
    }

    /// A list sorted oldest modification first: every order up to the newest time seen
    /// has been read, so the watermark moves there once every page is durably taken, a
    /// pass cut short by its page cap included (the next one reads on from it).
    async fn newest_seen(mut self) -> Result<PollReport, String> {
        let mut newest = self.report.watermark;
        let mut cursor = None;
        loop {
            let page = self.page(self.since, None, cursor.take()).await?;
            // Never past this pass's start: one order dated in the far future (a
            // channel's clock, or a hostile reply) would otherwise move every later pass
            // past all real orders.
            newest = newest.max(page.newest.unwrap_or(newest).min(self.now));
            match page.next {
                Some(_) if self.cut_short() => break,
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        self.store(newest)?;
        Ok(self.report)
    }

    /// A list in no such order, read in windows (`poll_window.rs`): each one's end is
    /// stored once it is read whole, and nothing else is.
    async fn windows(mut self) -> Result<PollReport, String> {
        let mut reader = Reader::new(self.since, self.now, self.resume);
        let mut cursor = None;
        loop {
            if self.cut_short() {
                self.report.carried.resume = Some(reader.window());
                break;
            }
            let window = reader.window();
            let page = self
                .page(window.start, Some(window.end), cursor.take())
                .await?;
            match reader.turn(page.pages, page.too_wide, page.next.is_some())? {
                Turn::NextPage => cursor = page.next,
                Turn::Narrower => {}
                Turn::ReadWhole { end, finished } => {
                    let done = end.min(self.now);
                    if done > self.report.watermark {
                        self.store(done)?;
                        if done <= self.now - OVERLAP_S * MICROS_PER_SECOND {
                            self.report.carried.settled = Some(done);
                        }
                    }
                    if finished {
                        break;
                    }
                }
            }
        }
        Ok(self.report)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_cut_short_that_do_not_gain_on_now_are_not_catching_up() {
        let s = MICROS_PER_SECOND;
        // The first pass cut short, one that read everything, one that gained: fine.
        assert!(!not_catching_up(true, 900 * s, None));
        assert!(!not_catching_up(false, 900 * s, Some(100 * s)));
        assert!(!not_catching_up(true, 800 * s, Some(900 * s)));
        // Stuck, or falling behind.
        assert!(not_catching_up(true, 900 * s, Some(900 * s)));
        assert!(not_catching_up(true, 950 * s, Some(900 * s)));
    }
}
