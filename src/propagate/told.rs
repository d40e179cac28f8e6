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
//! Before any read has worked there is no canary: `FAILED_READS_MAX` failures in a row
//! stop the reader, the ones before counted refused.

use std::time::Duration;

use super::{read_group, ChannelLink, Reads};
use crate::channels::{Caller, Levels};
use crate::engine::Engine;

/// Failed reads in a row that stop a reader before any read of it worked (no canary to
/// tell a channel down from listings it refuses).
pub const FAILED_READS_MAX: usize = 3;
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
}

impl Canary {
    fn worked(&mut self, skus: &[String]) {
        self.failed_in_a_row = 0;
        self.known.retain(|known| known != skus);
        self.known.insert(0, skus.to_vec());
        self.known.truncate(CANARIES);
    }

    /// Whether the reads are failing with no canary to tell why: a refusal counted now
    /// may be the channel down.
    pub fn unsure(&self) -> bool {
        self.failed_in_a_row > 0
    }
}

/// What one read came to.
pub enum Told {
    /// What the channel showed; `waited`: only after a wait for the channel, which was
    /// down (anything taken before the read may be out of date).
    Found { levels: Levels, waited: bool },
    /// The channel refuses this listing (it answered a canary), with the failure's
    /// reason.
    Refused(String),
}

/// What the canary says of a failed read.
enum Verdict {
    Refused,
    Stop(String),
    /// The channel answers again after a wait: read the failed group once more.
    Again,
}

/// One read of the read group `skus` through the channel's budget (with the pause that
/// leaves pushes their share), a failure told apart by `canary`. `Err`: the reader stops
/// (the channel down, or a daily quota kept for pushes and orders), with why.
pub async fn read_told(
    link: &ChannelLink,
    caller: &Caller,
    engine: &Engine,
    skus: &[String],
    reads: Reads,
    on_failure: OnFailure,
    canary: &mut Canary,
) -> Result<Told, String> {
    let mut waited = Duration::ZERO;
    loop {
        let reason = match read_group(link, caller, skus, link.read_pause(), reads).await? {
            Ok(levels) => {
                canary.worked(skus);
                let waited = !waited.is_zero();
                return Ok(Told::Found { levels, waited });
            }
            Err(reason) => reason,
        };
        let verdict = verdict(
            link,
            caller,
            engine,
            (reads, on_failure),
            canary,
            &mut waited,
            &reason,
        )
        .await?;
        match verdict {
            Verdict::Refused => return Ok(Told::Refused(reason)),
            Verdict::Stop(why) => return Err(why),
            Verdict::Again => {}
        }
    }
}

/// What to do about a read that failed with `reason`: the canaries read again tell a
/// refused listing from a channel that is down.
async fn verdict(
    link: &ChannelLink,
    caller: &Caller,
    engine: &Engine,
    (reads, on_failure): (Reads, OnFailure),
    canary: &mut Canary,
    waited: &mut Duration,
    reason: &str,
) -> Result<Verdict, String> {
    if on_failure == OnFailure::Fail {
        return Ok(Verdict::Stop(reason.to_string()));
    }
    if canary.known.is_empty() {
        canary.failed_in_a_row += 1;
        return Ok(if canary.failed_in_a_row >= FAILED_READS_MAX {
            Verdict::Stop(format!(
                "{FAILED_READS_MAX} reads failed in a row, none having worked: {reason}"
            ))
        } else {
            Verdict::Refused
        });
    }
    // Each canary in turn, the latest first: one that fails while an older one answers is
    // refused itself now, and forgotten.
    for tried in 0..canary.known.len() {
        if answers(link, caller, &canary.known[tried], reads).await? {
            canary.known.drain(..tried);
            return Ok(Verdict::Refused);
        }
    }
    if on_failure == OnFailure::Stop {
        return Ok(Verdict::Stop(format!("the channel is down: {reason}")));
    }
    // Down: each wait ends with one read, of each canary in turn.
    let mut wait = DOWN_WAIT_FIRST;
    for probe in 0.. {
        if *waited >= DOWN_WAIT_TOTAL_MAX {
            break;
        }
        tokio::time::sleep(wait).await;
        *waited += wait;
        wait = (wait * 2).min(DOWN_WAIT_MAX);
        if engine.is_stopped() || !link.pushing() {
            return Ok(Verdict::Stop(format!(
                "stopped while the channel was down: {reason}"
            )));
        }
        let known = &canary.known[probe % canary.known.len()];
        if answers(link, caller, known, reads).await? {
            return Ok(Verdict::Again);
        }
    }
    Ok(Verdict::Stop(format!(
        "the channel has been down for {} minutes: {reason}",
        waited.as_secs() / 60
    )))
}

/// Whether the channel answers a read of `skus` (one through its budget, paused after).
async fn answers(
    link: &ChannelLink,
    caller: &Caller,
    skus: &[String],
    reads: Reads,
) -> Result<bool, String> {
    Ok(read_group(link, caller, skus, link.read_pause(), reads)
        .await?
        .is_ok())
}
