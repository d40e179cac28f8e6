//! Bulk submissions: a channel's write that it processes after taking it (Walmart's
//! inventory feed, `channels::BulkWrite`).
//!
//! The pusher sends the urgent part of a batch (a stock-out, a low level) by the
//! channel's direct path at once and gives the rest to `submit` here: changes gather for
//! a moment (`BulkWrite::gather`), then go as one submission when the submissions' own
//! budget has a token (meanwhile they wait in the outbox, or until a lower target makes
//! them urgent). A submitted item stays out of
//! later batches until its submission is settled, except an urgent target, which goes
//! directly. A watcher task per submission reads its status until the channel has
//! processed it, then acknowledges what it applied to the shards (a SKU written
//! directly meanwhile is thereby pushed again: the submission may have overwritten it)
//! and offers the rest again: an item the channel refused is held back and named as a
//! direct push's refusal is (`Outbox::settle_submission`). Nothing of this is durable:
//! after a restart the shards offer every SKU whose acknowledged value differs from its
//! target, as for any push.

use std::sync::Arc;
use std::time::Duration;

use crate::channels::pacing::{Backoff, TokenBucket};
use crate::channels::{BulkWrite, Caller, PushItem, PushReply, Submission};
use crate::engine::Engine;

use super::{acknowledge, log_refusals, ChannelLink, TAKING_RECENTLY};

/// How often a watcher looks whether it should read its submission's status.
const WATCH_TICK: Duration = Duration::from_secs(1);

/// A pusher's state for its channel's submissions.
pub struct Submissions {
    bucket: TokenBucket,
    backoff: Backoff,
    /// When the changes gathering now go (`BulkWrite::gather` after the first).
    gathered_at: Option<tokio::time::Instant>,
}

impl Submissions {
    pub fn new(bulk: &dyn BulkWrite) -> Submissions {
        Submissions {
            bucket: TokenBucket::new(bulk.rate_limit()),
            backoff: Backoff::default(),
            gathered_at: None,
        }
    }
}

fn count(channel: &str, outcome: &'static str) {
    metrics::counter!("lockstep_push_requests_total", "channel" => channel.to_string(), "outcome" => outcome).increment(1);
}

/// Items that cannot be submitted now go back to the outbox, held until `wait` is over
/// (or a lower target comes, which may be urgent).
fn hold(link: &ChannelLink, items: &[PushItem], wait: Duration) {
    link.outbox.finish(items, &vec![false; items.len()]);
    for item in items {
        link.outbox.defer(&item.sku, wait, Some(item.quantity));
    }
}

/// Submits `items` (taken from the outbox, none urgent) when the budget allows, and
/// starts the watcher of the submission.
pub async fn submit(
    link: &Arc<ChannelLink>,
    engine: &Arc<Engine>,
    caller: &Caller,
    state: &mut Submissions,
    items: Vec<PushItem>,
) {
    let Some(bulk) = link.adapter.bulk() else {
        return hold(link, &items, Duration::from_secs(1));
    };
    let name = link.adapter.name();
    let now = tokio::time::Instant::now();
    let due = *state.gathered_at.get_or_insert(now + bulk.gather());
    if now < due {
        return hold(link, &items, due - now);
    }
    if let Err(wait) = state.bucket.try_acquire() {
        return hold(link, &items, wait);
    }
    state.gathered_at = None;
    match bulk.submit(caller, &items).await {
        Ok(id) => {
            state.backoff.reset();
            // Taken for processing is not taken: what the processed submission applies
            // says whether the channel takes items (`settle`). Marked taken here, a
            // submission whose every item the channel then refused cleared "failing"
            // for a moment each time, and counted as the channel taking items. It does
            // end a failure to answer (an upload that failed before).
            link.health.call_accepted();
            count(name, "submitted");
            tracing::info!(channel = %name, submission = %id, items = items.len(), "bulk submission taken");
            link.outbox.submitted(&items);
            tokio::spawn(watch(
                link.clone(),
                engine.clone(),
                caller.clone(),
                id,
                items,
            ));
        }
        Err(PushReply::Throttled { retry_after }) => {
            count(name, "throttled");
            state.bucket.throttled(retry_after);
            link.health.bulk_throttled(retry_after);
            hold(link, &items, retry_after);
        }
        Err(other) => {
            count(name, "error");
            let (reason, retryable) = match other {
                PushReply::Failed { reason, retryable } => (reason, retryable),
                other => (format!("{other:?}"), true),
            };
            // The direct path keeps going meanwhile: the items wait, the pusher does not.
            let delay = state.backoff.next_delay(retryable);
            tracing::warn!(channel = %name, %reason, retry_in_ms = delay.as_millis() as u64, "bulk submission failed");
            link.health
                .push_failed(&format!("bulk submission: {reason}"));
            hold(link, &items, delay);
        }
    }
}

/// Reads a submission's status until it is processed (or given up), then settles it.
async fn watch(
    link: Arc<ChannelLink>,
    engine: Arc<Engine>,
    caller: Caller,
    id: String,
    items: Vec<PushItem>,
) {
    // However this task ends (a panic, the runtime stopping) its items must not stay
    // "submitted" for good, which would hold their SKUs out of every later batch.
    let mut unsettled = Unsettled {
        link: link.clone(),
        items: Some(items.clone()),
    };
    let Some(bulk) = link.adapter.bulk() else {
        return;
    };
    let name = link.adapter.name().to_string();
    let started = tokio::time::Instant::now();
    let mut last_read = started;
    let outcome = loop {
        tokio::time::sleep(WATCH_TICK).await;
        if engine.is_stopped() {
            return;
        }
        // Sooner when a direct write of one of its SKUs may be overwritten by it.
        let every = bulk.status_every(started.elapsed(), link.outbox.written_since(&items));
        if last_read.elapsed() < every {
            continue;
        }
        last_read = tokio::time::Instant::now();
        let given_up = started.elapsed() >= bulk.wait_max();
        match bulk.status(&caller, &id, &items).await {
            Ok(Submission::Pending) if !given_up => {}
            Err(reason) if !given_up => {
                tracing::warn!(channel = %name, submission = %id, %reason, "reading a bulk submission's status failed");
            }
            Ok(Submission::Pending) | Err(_) => {
                break Submission::Failed(format!(
                    "submission {id} not processed after {} s",
                    bulk.wait_max().as_secs()
                ))
            }
            Ok(done) => break done,
        }
    };
    let every = Duration::from_secs_f64(1.0 / bulk.rate_limit().requests_per_second.max(1e-6));
    settle(&link, &engine, &id, &items, outcome, every).await;
    unsettled.items = None;
}

/// A submission's items, offered again if its watcher ends before settling them.
struct Unsettled {
    link: Arc<ChannelLink>,
    items: Option<Vec<PushItem>>,
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if let Some(items) = self.items.take() {
            let none = vec![false; items.len()];
            self.link
                .outbox
                .settle_submission(&items, &none, &none, false);
        }
    }
}

/// Acts on a processed submission: what it applied is acknowledged, the rest offered
/// again. `every`: the submissions' budget (the time between two), which sets how long
/// "recently" is when judging whether the channel takes items.
async fn settle(
    link: &ChannelLink,
    engine: &Engine,
    id: &str,
    items: &[PushItem],
    outcome: Submission,
    every: Duration,
) {
    let name = link.adapter.name();
    let (acked, failed, processed) = match outcome {
        Submission::Processed { applied, failed } => (applied, failed, true),
        not_processed => {
            // (`watch` gives a submission still pending at its last read up as `Failed`.)
            let reason = match not_processed {
                Submission::Failed(reason) => reason,
                _ => "not processed".to_string(),
            };
            tracing::warn!(channel = %name, submission = %id, %reason, "bulk submission failed");
            link.health
                .push_failed(&format!("bulk submission {id}: {reason}"));
            (Vec::new(), Vec::new(), false)
        }
    };
    let mask = acknowledge(link, engine, items, &acked, &[]).await;
    // Submissions go a few an hour: a refused SKU submitted alone comes minutes after
    // the last one that took anything, so "recently" spans two of them.
    let recently = TAKING_RECENTLY.max(every.saturating_mul(2));
    if processed && mask.iter().any(|ok| *ok) {
        link.health.push_taken();
    } else if processed && !link.health.took_within(recently) {
        // A processed submission that took none of its items is no sign the channel
        // writes (every item refused: unknown SKUs); it used to clear "failing" all the
        // same, while the direct path set it again. One that took nothing while the
        // channel takes others (a refused SKU submitted alone) is that SKU's.
        link.health.took_none(&format!(
            "bulk submission {id} was processed but applied none of the items it carried \
             ({}), and the channel took none in the last {} s",
            items.len(),
            recently.as_secs()
        ));
    }
    count(
        name,
        if mask.iter().all(|ok| *ok) {
            "ok"
        } else {
            "partial"
        },
    );
    // The items a processed submission did not apply were refused (Walmart's
    // `DATA_ERROR`): held back and named as the direct path's refusals are, so the SKU
    // the channel will not take is listed for the operator and waits on its own. Those
    // its own systems failed (`failed`) are offered again at once, unnamed and counted
    // apart: the SKU is not at fault, and the next submission is minutes away anyway.
    let mut refused: Vec<bool> = mask.iter().map(|ok| processed && !ok).collect();
    for i in failed.iter().copied().filter(|i| *i < items.len()) {
        refused[i] = false;
    }
    if !failed.is_empty() {
        metrics::counter!("lockstep_push_items_failed_total", "channel" => name.to_string())
            .increment(failed.len() as u64);
    }
    let counted =
        link.outbox
            .settle_submission(items, &mask, &refused, link.health.took_within(recently));
    log_refusals(link, &counted, None);
}
