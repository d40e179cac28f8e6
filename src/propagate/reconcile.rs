//! Reconciliation: read what a channel shows, compare with each SKU's target, repair drift.
//!
//! It is asymmetric (DESIGN §2). A channel showing *more* than its target can oversell: it
//! is lowered at once. A channel showing *less* may reflect an order lockstep has not
//! ingested yet: it is raised only when the shortfall is still there after the grace
//! period. Each repair is an event (`Reconciled`, outcome `drift` in the audit), counted
//! in `lockstep_reconcile_drift_total`: the shard offers the push that repairs it
//! (compared with what was read), as it offers every push. The reconciler never writes
//! the outbox itself.
//!
//! A read that fails is told apart by reading again the pass's last read that worked (the
//! canary, `told`): if the channel answers that, the listing is what it refuses, and the
//! pass skips it (its SKUs counted unread) and goes on at once; if not, the channel is
//! down, and a scheduled pass waits for it while an operator's stops (`OnFailure`). A
//! pass that stops leaves the next scheduled pass to resume after the last SKU it passed
//! for good, before a restart too (`resume_path`). A plan reads as an operator's pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::told::{read_batches, shown_by, Canary, OnFailure, Reader, Told};
use super::{ChannelLink, Reads};
use crate::channels::Levels;
use crate::clock::now_micros;
use crate::core::event::EventKind;
use crate::core::records::HeadRecord;
use crate::core::ChannelRule;
use crate::engine::Engine;

/// How often the reconciler looks for due checks (and for its next pass).
const CHECK_TICK: Duration = Duration::from_millis(500);
/// SKUs a pass holds at a time.
const PASS_PAGE: usize = 1_000;
/// The reconciler of one channel.
pub struct Reconciler {
    pub link: Arc<ChannelLink>,
    rule: ChannelRule,
    grace: Duration,
    interval: Duration,
    /// SKUs seen short, with when they were first seen short.
    shortfalls: Mutex<HashMap<String, Instant>>,
    /// Where the next pass of the schedule starts: after this SKU, the furthest one a
    /// stopped pass passed (`None`: at the first SKU). A pass through a big catalog on a
    /// slow budget takes hours or days (Walmart reads one SKU a call; Etsy's reads stop
    /// at half its daily quota): starting each over at the first SKU, the SKUs late in
    /// the order would never be compared. Kept in `resume_file` too, so that a restart
    /// does not start it over either.
    resume: std::sync::Mutex<Option<String>>,
    resume_file: PathBuf,
}

/// The file in the data directory that keeps where a channel's next scheduled pass
/// resumes: the SKU as a JSON string, absent when the next pass starts at the first SKU.
pub fn resume_path(data_dir: &Path, channel: &str) -> PathBuf {
    data_dir.join(format!("reconcile-{channel}.resume"))
}

/// The stored resume point. A file that cannot be read is logged and the pass starts at
/// the first SKU: that only compares some SKUs sooner than they would have been, where a
/// poll's unreadable watermark would skip orders.
fn load_resume(path: &Path) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "reconciliation's resume point unreadable; the next pass starts at the first SKU");
            return None;
        }
    };
    match serde_json::from_str::<String>(&text) {
        Ok(sku) => Some(sku),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "reconciliation's resume point is not a SKU; the next pass starts at the first SKU");
            None
        }
    }
}

/// Stores the resume point (`None`: removes the file). A failure is logged and the point
/// kept in memory: losing it costs a pass that starts at the first SKU, no data.
fn store_resume(path: &Path, resume: Option<&str>) {
    let stored = match resume {
        Some(sku) => crate::store::small_file::write_durably(
            path,
            serde_json::Value::from(sku).to_string().as_bytes(),
            false,
        ),
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    };
    if let Err(e) = stored {
        tracing::warn!(file = %path.display(), error = %e, "reconciliation's resume point not stored; kept in memory");
    }
}

/// What one pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub checked: usize,
    pub lowered: usize,
    pub raised: usize,
    /// Short SKUs still inside their grace period.
    pub waiting: usize,
    /// The SKU a pass resumed after, where a failed pass had stopped (`None`: it started
    /// at the first SKU).
    pub resumed_after: Option<String>,
    /// SKUs whose read failed and that the pass went on past, and the last such
    /// failure's reason.
    pub unread: usize,
    pub unread_reason: Option<String>,
}

impl Report {
    pub fn json(&self) -> Value {
        json!({"checked": self.checked, "lowered": self.lowered, "raised": self.raised,
               "waiting": self.waiting, "resumed_after": self.resumed_after,
               "unread": self.unread, "unread_reason": self.unread_reason})
    }
}

/// How far a comparison got: what it found; what its reads know (`canary`:
/// `told::Canary`); and the furthest SKU up to which every SKU it holds was read, well or
/// not (`passed`), and passed for good (`confirmed`): compared (its repairs submitted),
/// or skipped as unread for good. A stopped pass's next one resumes after `confirmed`.
/// A pass's `OnFailure` also says where it starts: `Stop` (the operator's) at the first
/// SKU, `Wait` (the schedule's) where the last stopped pass stopped.
#[derive(Debug, Default)]
struct Progress {
    report: Report,
    canary: Canary,
    passed: Option<String>,
    confirmed: Option<String>,
}

/// How a comparison reads: the grace of a shortfall, whose budget the reads are, and
/// what a failed read does.
#[derive(Clone, Copy, Debug)]
struct Read {
    grace: Duration,
    reads: Reads,
    on_failure: OnFailure,
}

/// What a comparison does with each read: repair what differs (`judge`: repairs
/// recorded), or add it to a plan (nothing recorded or pushed).
enum Use<'a> {
    Repair,
    Plan(&'a mut Plan),
}

/// What approving a channel would write (`Reconciler::plan`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// SKUs the channel carries that lockstep holds stock for.
    pub checked: usize,
    /// Of those, the ones whose listing would be written.
    pub changes: usize,
    /// Listings the channel does not have (read as not listed): written as any other.
    pub unlisted: usize,
    /// The largest decreases and increases, largest first (`PLAN_LARGEST` each).
    pub decreases: Vec<PlanLine>,
    pub increases: Vec<PlanLine>,
    /// Every listing showing more than 0 that would go to 0, in SKU order.
    pub to_zero: Vec<PlanLine>,
    /// Listings whose read the channel refused (it answered others): not in the plan,
    /// the first `PLAN_LARGEST` of them named (in the order read), with the last refusal's
    /// reason.
    pub unread: usize,
    pub unread_skus: Vec<String>,
    pub unread_reason: Option<String>,
}

/// One listing's change in a plan: what the channel shows (`None`: not listed) and
/// what lockstep would write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLine {
    pub sku: String,
    pub shown: Option<i64>,
    pub target: i64,
}

/// Decreases and increases a plan lists, each, and unread listings it names.
pub const PLAN_LARGEST: usize = 10;

impl Plan {
    fn unread<'a>(&mut self, skus: impl ExactSizeIterator<Item = &'a String>) {
        self.unread += skus.len();
        let room = PLAN_LARGEST.saturating_sub(self.unread_skus.len());
        self.unread_skus.extend(skus.take(room).cloned());
    }

    fn add(&mut self, sku: &str, shown: Option<i64>, target: i64) {
        self.checked += 1;
        if shown == Some(target) {
            return;
        }
        self.changes += 1;
        let line = PlanLine {
            sku: sku.to_string(),
            shown,
            target,
        };
        let Some(level) = shown else {
            self.unlisted += 1;
            return;
        };
        if level > 0 && target == 0 {
            self.to_zero.push(line.clone());
        }
        // Kept sorted by size, largest first, at most PLAN_LARGEST.
        // Saturating: `level` is the channel's number, any i64.
        let (list, size) = if target < level {
            (&mut self.decreases, level.saturating_sub(target))
        } else {
            (&mut self.increases, target.saturating_sub(level))
        };
        let at = list
            .partition_point(|l| l.shown.unwrap_or(0).abs_diff(l.target) >= size.unsigned_abs());
        if at < PLAN_LARGEST {
            list.insert(at, line);
            list.truncate(PLAN_LARGEST);
        }
    }

    pub fn json(&self) -> Value {
        let lines = |lines: &[PlanLine]| -> Vec<Value> {
            lines
                .iter()
                .map(|l| json!({"sku": l.sku, "shown": l.shown, "target": l.target}))
                .collect()
        };
        json!({
            "checked": self.checked,
            "changes": self.changes,
            "unchanged": self.checked - self.changes,
            "unlisted": self.unlisted,
            "largest_decreases": lines(&self.decreases),
            "largest_increases": lines(&self.increases),
            "to_zero": lines(&self.to_zero),
            "unread": self.unread,
            "unread_skus": self.unread_skus,
            "unread_reason": self.unread_reason,
        })
    }
}

impl Reconciler {
    /// A channel's reconciler, resuming where the last stopped pass stopped, before a
    /// restart too (`resume_path` in `data_dir`).
    pub fn new(
        link: Arc<ChannelLink>,
        rule: ChannelRule,
        interval: Duration,
        grace: Duration,
        data_dir: &Path,
    ) -> Reconciler {
        let resume_file = resume_path(data_dir, &rule.name);
        Reconciler {
            link,
            rule,
            grace,
            interval,
            shortfalls: Mutex::new(HashMap::new()),
            resume: std::sync::Mutex::new(load_resume(&resume_file)),
            resume_file,
        }
    }

    /// Runs a pass every interval, and the checks the pusher asked for when they are due,
    /// for as long as the engine runs.
    pub async fn run(self: Arc<Self>, engine: Arc<Engine>, client: reqwest::Client) {
        let mut next_pass = Instant::now() + self.interval;
        loop {
            tokio::time::sleep(CHECK_TICK).await;
            if engine.is_stopped() {
                return;
            }
            // An observing channel is only read when a plan asks: its repairs would be
            // pushes, and nothing is written to it before it is approved.
            if !self.link.pushing() {
                next_pass = Instant::now() + self.interval;
                continue;
            }
            let due = self.link.take_due_checks();
            if !due.is_empty() {
                if let Err(reason) = self.check(&engine, &client, &due).await {
                    tracing::warn!(channel = %self.rule.name, %reason, "check after a stale compare failed");
                }
            }
            if Instant::now() >= next_pass {
                next_pass = Instant::now() + self.interval;
                match self.pass_from(OnFailure::Wait, &engine, &client).await {
                    Err(reason) => {
                        tracing::warn!(channel = %self.rule.name, %reason, "reconciliation stopped");
                    }
                    Ok(Report {
                        unread,
                        unread_reason: Some(reason),
                        ..
                    }) => {
                        tracing::warn!(channel = %self.rule.name, unread, %reason, "reconciliation left SKUs unread");
                    }
                    Ok(_) => {}
                }
            }
        }
    }

    /// One pass over every SKU from the first, `PASS_PAGE` SKUs at a time: memory for
    /// one page, not for the whole catalog (held once per channel, for as long as the
    /// channel's reads take, that was most of a pass's heap: 26 MB at 10,000 SKUs and
    /// three channels).
    pub async fn pass(&self, engine: &Engine, client: &reqwest::Client) -> Result<Report, String> {
        self.pass_from(OnFailure::Stop, engine, client).await
    }

    /// A pass in mode `on_failure` (`Stop`: from the first SKU; `Wait`: from the resume
    /// point). A stopped one says how far it got and leaves the next scheduled pass to
    /// resume there; one that reaches the last SKU clears that.
    async fn pass_from(
        &self,
        on_failure: OnFailure,
        engine: &Engine,
        client: &reqwest::Client,
    ) -> Result<Report, String> {
        let from = match on_failure {
            OnFailure::Wait => self.resume_point().clone(),
            OnFailure::Stop | OnFailure::Fail => None,
        };
        let mut progress = Progress {
            passed: from.clone(),
            confirmed: from.clone(),
            ..Progress::default()
        };
        progress.report.resumed_after.clone_from(&from);
        let read = Read {
            grace: self.grace,
            reads: Reads::Routine,
            on_failure,
        };
        let result = self
            .pass_pages(engine, client, from, read, &mut progress, &mut Use::Repair)
            .await;
        let Progress {
            report, confirmed, ..
        } = progress;
        let result = match result {
            Ok(()) => {
                // Removed even when memory held no point: a file that could not be read
                // would warn at every start.
                let mut resume = self.resume_point();
                *resume = None;
                store_resume(&self.resume_file, None);
                Ok(report.clone())
            }
            Err(reason) => {
                // Said first: the console clips a long reason (a channel's error body).
                let next = match self.advance_resume(&confirmed) {
                    Some(sku) => format!("; the next scheduled pass resumes after {sku:?}"),
                    None => String::new(),
                };
                Err(format!(
                    "stopped after {} SKUs checked{next}: {reason}",
                    report.checked
                ))
            }
        };
        self.link.health.reconciled(&report, result.as_ref().err());
        result
    }

    fn resume_point(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.resume.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves where the next scheduled pass resumes up to `confirmed`, in memory and in its
    /// file, and answers where that is now. Never back: a pass from the first SKU that
    /// stops before where the schedule's stopped leaves the SKUs after it as unread as
    /// they were.
    fn advance_resume(&self, confirmed: &Option<String>) -> Option<String> {
        let mut resume = self.resume_point();
        if *confirmed > *resume {
            resume.clone_from(confirmed);
            store_resume(&self.resume_file, resume.as_deref());
        }
        resume.clone()
    }

    /// Compares every page after `from`, adding to `progress`, each read put to `used`.
    async fn pass_pages(
        &self,
        engine: &Engine,
        client: &reqwest::Client,
        from: Option<String>,
        read: Read,
        progress: &mut Progress,
        used: &mut Use<'_>,
    ) -> Result<(), String> {
        let mut after = from;
        loop {
            let heads = engine
                .heads_after(after.as_deref(), PASS_PAGE)
                .map_err(|e| e.to_string())?;
            let Some((last, _)) = heads.last() else {
                break;
            };
            after = Some(last.clone());
            let full = heads.len() == PASS_PAGE;
            self.compare(engine, client, heads, read, progress, used)
                .await?;
            // A scheduled pass keeps where it got to, page by page: a restart in the
            // middle of a pass of hours does not start it over. (A page short of full
            // is the last: the pass ends with it, and its end says where the next
            // starts.)
            if read.on_failure == OnFailure::Wait && full {
                self.advance_resume(&progress.confirmed);
            }
        }
        progress.canary.end()
    }

    /// The same comparison for a few SKUs, after a stale compare's window has passed:
    /// that window was their grace, so a shortfall is raised at once too.
    pub async fn check(
        &self,
        engine: &Engine,
        client: &reqwest::Client,
        skus: &[String],
    ) -> Result<Report, String> {
        let heads = self.heads_of(engine, skus)?;
        let read = Read {
            grace: Duration::ZERO,
            reads: Reads::Asked,
            on_failure: OnFailure::Fail,
        };
        let mut progress = Progress::default();
        self.compare(engine, client, heads, read, &mut progress, &mut Use::Repair)
            .await?;
        Ok(progress.report)
    }

    /// What the channel should show for a SKU now.
    fn target(&self, head: &HeadRecord) -> i64 {
        let view = head
            .channels
            .iter()
            .find(|m| m.channel == self.rule.name)
            .map(|m| &m.view);
        self.rule
            .push_target_stored(head.on_hand - head.committed, view, now_micros())
    }

    /// What approving the channel would write: every SKU it carries read as a pass reads
    /// it, compared with its target, and nothing recorded or pushed. A listing the channel
    /// refuses (told by the canary, as an operator's pass tells it) is left out and named,
    /// so that one deleted or unmapped listing does not hide the plan of the rest; a
    /// channel that is down fails the plan.
    pub async fn plan(&self, engine: &Engine, client: &reqwest::Client) -> Result<Plan, String> {
        let mut plan = Plan::default();
        let mut progress = Progress::default();
        let read = Read {
            grace: Duration::ZERO,
            reads: Reads::Asked,
            on_failure: OnFailure::Stop,
        };
        let mut used = Use::Plan(&mut plan);
        self.pass_pages(engine, client, None, read, &mut progress, &mut used)
            .await?;
        plan.unread_reason = progress.report.unread_reason;
        Ok(plan)
    }

    /// Reads what the channel shows for these SKUs (in SKU order) and repairs what
    /// differs, or plans it (`used`), read by read, adding to `progress`; a shortfall is
    /// raised once it has lasted `read.grace`.
    async fn compare(
        &self,
        engine: &Engine,
        client: &reqwest::Client,
        mut heads: Vec<(String, HeadRecord)>,
        read: Read,
        progress: &mut Progress,
        used: &mut Use<'_>,
    ) -> Result<(), String> {
        heads.retain(|(sku, _)| self.link.adapter.carries(sku));
        let caller = self.link.reader(client.clone());
        let names: Vec<&str> = heads.iter().map(|(sku, _)| sku.as_str()).collect();
        let mut passed = vec![false; heads.len()];
        for group in read_batches(self.link.adapter.as_ref(), &names) {
            // The targets as the page listed them, before its reads, as passes always took
            // them: a change since may still be on its way to the channel.
            let targets: Vec<(String, HeadRecord)> =
                group.iter().map(|i| heads[*i].clone()).collect();
            let told = self
                .read_told(engine, &caller, targets, read, progress)
                .await?;
            match (told, &mut *used) {
                (Some((targets, found)), Use::Repair) => {
                    self.judge(engine, &targets, &found, read.grace, &mut progress.report)
                        .await;
                }
                (Some((targets, found)), Use::Plan(plan)) => {
                    let shown = shown_by(&found);
                    for (sku, head) in &targets {
                        let level = shown.get(sku.as_str()).copied().flatten();
                        plan.add(sku, level, self.target(head));
                    }
                }
                (None, Use::Plan(plan)) => plan.unread(group.iter().map(|i| &heads[*i].0)),
                (None, Use::Repair) => {}
            }
            for i in &group {
                passed[*i] = true;
            }
            // Read groups need not follow SKU order: passed up to the first SKU not yet
            // read.
            let upto = passed.iter().position(|p| !p).unwrap_or(heads.len());
            if let Some(i) = upto.checked_sub(1) {
                progress.passed = Some(heads[i].0.clone());
            }
            // A read skipped with no canary to say why is passed for good, when the pass
            // stops at failures, only once a later read works: the stopped pass's next
            // one reads it again.
            if !progress.canary.unsure() || read.on_failure == OnFailure::Wait {
                progress.confirmed.clone_from(&progress.passed);
            }
        }
        Ok(())
    }

    /// One read of the SKUs of `targets` (one read group), a failure told apart by the
    /// canary (`told`): what it found and the heads to judge it by (those given; after a
    /// wait for a channel that was down, the heads then), or `None` for a listing the
    /// channel refuses, its SKUs counted unread in `progress` and the comparison going on.
    async fn read_told(
        &self,
        engine: &Engine,
        caller: &crate::channels::Caller,
        mut targets: Vec<(String, HeadRecord)>,
        read: Read,
        progress: &mut Progress,
    ) -> Result<Option<(Vec<(String, HeadRecord)>, Levels)>, String> {
        let skus: Vec<String> = targets.iter().map(|(sku, _)| sku.clone()).collect();
        let reader = Reader {
            link: &self.link,
            caller,
            engine,
            reads: read.reads,
            on_failure: read.on_failure,
        };
        loop {
            let told = reader.read(&skus, &mut progress.canary).await?;
            match told {
                Told::Found(levels) => return Ok(Some((targets, levels))),
                Told::Refused(reason) => {
                    progress.report.unread += skus.len();
                    progress.report.unread_reason = Some(reason);
                    return Ok(None);
                }
                // After a wait for the channel, the targets of then, taken before the
                // read again, as the page's were before its reads.
                Told::Again => targets = self.heads_of(engine, &skus)?,
            }
        }
    }

    /// The heads of `skus` now, those the engine still holds.
    fn heads_of(
        &self,
        engine: &Engine,
        skus: &[String],
    ) -> Result<Vec<(String, HeadRecord)>, String> {
        let mut heads = Vec::with_capacity(skus.len());
        for sku in skus {
            if let Some(head) = engine.head(sku).map_err(|e| e.to_string())? {
                heads.push((sku.clone(), head));
            }
        }
        Ok(heads)
    }

    /// Compares what one read found (`levels`) with the targets of `heads` (taken before
    /// the read), counting in `report`, and records the repairs: each SKU with the level
    /// it showed (-1: not listed).
    async fn judge(
        &self,
        engine: &Engine,
        heads: &[(String, HeadRecord)],
        levels: &Levels,
        grace: Duration,
        report: &mut Report,
    ) {
        let levels = shown_by(levels);
        let mut drifts = Vec::new();
        {
            // Held for one read's SKUs: passes the operator asks for and the schedule's
            // take turns, read by read.
            let mut shortfalls = self.shortfalls.lock().await;
            for (sku, head) in heads {
                report.checked += 1;
                let target = self.target(head);
                let shown = levels.get(sku.as_str()).copied().flatten();
                let now = Instant::now();
                let repair = match shown {
                    Some(level) if level == target => {
                        shortfalls.remove(sku);
                        false
                    }
                    Some(level) if level < target => {
                        let since = *shortfalls.entry(sku.clone()).or_insert(now);
                        let persisted = now.duration_since(since) >= grace;
                        if persisted {
                            shortfalls.remove(sku);
                            report.raised += 1;
                        } else {
                            report.waiting += 1;
                        }
                        persisted
                    }
                    // More than the target, or not listed at all: repair now.
                    _ => {
                        shortfalls.remove(sku);
                        report.lowered += 1;
                        true
                    }
                };
                if repair {
                    drifts.push((sku.clone(), shown.unwrap_or(-1)));
                }
            }
        }
        metrics::counter!("lockstep_reconcile_drift_total", "channel" => self.rule.name.clone())
            .increment(drifts.len() as u64);
        // The repairs are events: the shard offers their pushes (compared with what was
        // read) once they are durable, as it offers every push. The outbox has that one
        // writer.
        super::record_drift(engine, &self.rule.name, EventKind::Reconciled, &drifts).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_point_is_stored_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = resume_path(dir.path(), "shop");
        assert_eq!(load_resume(&path), None);
        // Any SKU the engine takes comes back as it was.
        let sku = "SKU \"7\" / größe 42";
        store_resume(&path, Some(sku));
        assert_eq!(load_resume(&path).as_deref(), Some(sku));
        store_resume(&path, None);
        assert!(!path.exists());
        // Removing what is not there is no error.
        store_resume(&path, None);
    }

    #[test]
    fn a_resume_file_that_is_not_a_sku_starts_the_pass_at_the_first_sku() {
        let dir = tempfile::tempdir().unwrap();
        let path = resume_path(dir.path(), "shop");
        for text in ["", "SKU-1", "42", "[\"a\"]"] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(load_resume(&path), None, "{text:?}");
        }
    }
}
