//! Reads that tell a listing the channel refuses from a channel that is down, for the
//! readers that go through a whole catalog: reconciliation, a plan, a stock import.
//!
//! A read that fails (a 5xx, a throttle outlasting the reader's waits) says nothing of
//! why. So the reader's last read that worked (the canary) is read again: if the channel
//! answers it, the failed read is a listing it refuses (deleted, unmapped), which is
//! skipped so that one bad listing does not keep the rest of the catalog from being read;
//! if not, the channel is down, and the reader stops or waits for it (`OnFailure`). The
//! read that worked before the canary is kept too, and read when the canary fails: a
//! canary whose own listing was deleted since would otherwise look like a channel down,
//! and stop a pass, or hold a scheduled one for an hour.
//! Before any read has worked there is no canary: a failed read is read once more after
//! `UNSURE_RETRY_WAIT` (a channel's blip at a plan's first call left that call's listings
//! out of the plan, and out of an import, until it was run again), and only then counted
//! refused; `FAILED_READS_MAX` such failures in a row stop the reader.

use std::collections::HashMap;
use std::time::Duration;

use super::{read_group, ChannelLink, Reads};
use crate::channels::{Caller, ChannelAdapter, Levels};
use crate::engine::Engine;

/// Failed reads in a row that stop a reader before any read of it worked (no canary to
/// tell a channel down from listings it refuses).
const FAILED_READS_MAX: usize = 3;
/// The wait before a read that failed with no canary to tell why is read again.
const UNSURE_RETRY_WAIT: Duration = Duration::from_secs(1);
/// A waiting reader's wait for a channel that is down (`OnFailure::Wait`): a canary read
/// again after 1 s, doubling up to 5 min (a channel down for an hour costs about twenty
/// calls), for at most an hour, after which the reader stops.
const DOWN_WAIT_FIRST: Duration = Duration::from_secs(1);
const DOWN_WAIT_MAX: Duration = Duration::from_secs(300);
const DOWN_WAIT_TOTAL_MAX: Duration = Duration::from_secs(3_600);

/// What a reader does when a read fails. Every mode but `Fail` reads the canary: a channel
/// that answers it refuses the listing, which is skipped at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Fails at once: a check of a few SKUs, whose caller says why.
    Fail,
    /// Stops when the channel is down (the canaries fail too), or at `FAILED_READS_MAX`
    /// failed reads in a row with no canary yet.
    Stop,
    /// Waits while the channel is down (`DOWN_WAIT_FIRST` to `DOWN_WAIT_MAX`, a canary
    /// read again each time, `DOWN_WAIT_TOTAL_MAX` at most, for as long as the channel is
    /// pushed to and the engine runs), then reads the failed group again; with no canary
    /// yet, stops at `FAILED_READS_MAX` in a row.
    Wait,
}

/// Reads that worked a reader keeps to read again (`Canary`).
const CANARIES: usize = 2;

/// What a reader knows from its reads so far: the last ones that worked (the latest
/// first, at most `CANARIES`), and how many failed in a row while it had none.
#[derive(Debug, Default)]
pub struct Canary {
    known: Vec<Vec<String>>,
    failed_in_a_row: usize,
    /// The last failure while no read had worked.
    unsure_reason: Option<String>,
    /// How long the reader has waited for the channel over the read that is failing.
    waited: Duration,
}

impl Canary {
    fn worked(&mut self, skus: &[String]) {
        self.failed_in_a_row = 0;
        self.waited = Duration::ZERO;
        self.known.retain(|known| known != skus);
        self.known.insert(0, skus.to_vec());
        self.known.truncate(CANARIES);
    }

    /// Whether the reads are failing with no canary to tell why: a refusal counted now
    /// may be the channel down.
    pub fn unsure(&self) -> bool {
        self.failed_in_a_row > 0
    }

    /// A reader's end: an error when no read of it worked and some failed, fewer than
    /// `FAILED_READS_MAX` (a catalog of one or two reads): nothing told a refused listing
    /// from a channel that is down or refuses every read (a wrong token), so a plan or an
    /// import must not pass for one that read a store with nothing to say.
    pub fn end(&self) -> Result<(), String> {
        match (&self.unsure_reason, self.known.is_empty()) {
            (Some(reason), true) => Err(format!(
                "{} reads failed, none having worked: {reason}",
                self.failed_in_a_row
            )),
            _ => Ok(()),
        }
    }
}

/// What one read came to.
pub enum Told {
    /// What the channel showed.
    Found(Levels),
    /// The channel refuses this listing (it answered a canary), with the failure's
    /// reason.
    Refused(String),
    /// The channel was down and answers again after a wait (`OnFailure::Wait` only):
    /// whatever the reader took before the read may be out of date. Take it again, and
    /// read again.
    Again,
}

/// A reader through a whole catalog: its channel and caller, the engine it works for,
/// whose budget its reads are, and what a failed read does.
pub struct Reader<'a> {
    pub link: &'a ChannelLink,
    pub caller: &'a Caller,
    pub engine: &'a Engine,
    pub reads: Reads,
    pub on_failure: OnFailure,
}

impl Reader<'_> {
    /// One read of the read group `skus` through the channel's budget (with the pause
    /// that leaves pushes their share), a failure told apart by `canary`. `Err`: the
    /// reader stops (the channel down, or a daily quota kept for pushes and orders), with
    /// why.
    pub async fn read(&self, skus: &[String], canary: &mut Canary) -> Result<Told, String> {
        match self.read_group(skus).await? {
            Ok(levels) => {
                canary.worked(skus);
                Ok(Told::Found(levels))
            }
            Err(reason) => self.verdict(skus, canary, reason).await,
        }
    }

    /// `read` for a reader that takes nothing before its reads: what the channel showed,
    /// or (inside) a listing it refuses, with why.
    pub async fn read_or_refused(
        &self,
        skus: &[String],
        canary: &mut Canary,
    ) -> Result<Result<Levels, String>, String> {
        loop {
            match self.read(skus, canary).await? {
                Told::Found(levels) => return Ok(Ok(levels)),
                Told::Refused(reason) => return Ok(Err(reason)),
                Told::Again => {}
            }
        }
    }

    /// What a read of `skus` that failed with `reason` comes to: the canaries read again
    /// tell a refused listing from a channel that is down (`Err`: the reader stops, with
    /// why). With no canary yet, the read itself is tried once more first.
    async fn verdict(
        &self,
        skus: &[String],
        canary: &mut Canary,
        reason: String,
    ) -> Result<Told, String> {
        if self.on_failure == OnFailure::Fail {
            return Err(reason);
        }
        if canary.known.is_empty() {
            tokio::time::sleep(UNSURE_RETRY_WAIT).await;
            let reason = match self.read_group(skus).await? {
                Ok(levels) => {
                    canary.worked(skus);
                    return Ok(Told::Found(levels));
                }
                Err(again) => again,
            };
            canary.failed_in_a_row += 1;
            canary.unsure_reason = Some(reason.clone());
            return if canary.failed_in_a_row >= FAILED_READS_MAX {
                Err(format!(
                    "{FAILED_READS_MAX} reads failed in a row, none having worked: {reason}"
                ))
            } else {
                Ok(Told::Refused(reason))
            };
        }
        // Each canary in turn, the latest first: one that fails while an older one answers
        // is refused itself now, and forgotten.
        for tried in 0..canary.known.len() {
            if self.read_group(&canary.known[tried]).await?.is_ok() {
                canary.known.drain(..tried);
                canary.waited = Duration::ZERO;
                return Ok(Told::Refused(reason));
            }
        }
        if self.on_failure == OnFailure::Stop {
            return Err(format!("the channel is down: {reason}"));
        }
        // Down: each wait ends with one read, of each canary in turn.
        let mut wait = DOWN_WAIT_FIRST;
        for probe in 0.. {
            if canary.waited >= DOWN_WAIT_TOTAL_MAX {
                break;
            }
            tokio::time::sleep(wait).await;
            canary.waited += wait;
            wait = (wait * 2).min(DOWN_WAIT_MAX);
            if self.engine.is_stopped() || !self.link.pushing() {
                return Err(format!("stopped while the channel was down: {reason}"));
            }
            let known = &canary.known[probe % canary.known.len()];
            if self.read_group(known).await?.is_ok() {
                return Ok(Told::Again);
            }
        }
        Err(format!(
            "the channel has been down for {} minutes: {reason}",
            canary.waited.as_secs() / 60
        ))
    }

    async fn read_group(&self, skus: &[String]) -> Result<Result<Levels, String>, String> {
        read_group(
            self.link,
            self.caller,
            skus,
            self.link.read_pause(),
            self.reads,
        )
        .await
    }
}

/// The reads a whole-catalog reader makes of `skus`: a batch (`batch_max`) at a time, each
/// in the adapter's read groups, as indices into `skus`. Never more than a batch in one
/// read: an adapter's read is one call, which a channel answers for so many listings at
/// most (a WooCommerce page holds 100; Shopify refuses an input array of more than 250,
/// https://shopify.dev/docs/api/usage/limits).
pub fn read_batches(adapter: &dyn ChannelAdapter, skus: &[&str]) -> Vec<Vec<usize>> {
    let batch = adapter.batch_max().max(1);
    let mut reads = Vec::new();
    for (n, chunk) in skus.chunks(batch).enumerate() {
        let start = n * batch;
        reads.extend(
            adapter
                .read_groups(chunk)
                .into_iter()
                .map(|group| group.into_iter().map(|i| start + i).collect::<Vec<_>>()),
        );
    }
    reads
}

/// What a read shows, by SKU: the last it names a SKU is what it shows.
pub fn shown_by(levels: &Levels) -> HashMap<&str, Option<i64>> {
    levels
        .iter()
        .map(|(sku, level)| (sku.as_str(), *level))
        .collect()
}
