//! Propagation: stock leaves the engine and reaches every channel.
//!
//! - `outbox.rs`: per channel, the latest target per SKU, the riskiest first.
//! - `channels::pacing`: the token bucket (adaptive to throttles) and the retry backoff,
//!   below the adapters, which pace their own conversations with it.
//! - `bulk.rs`: submissions a channel processes later (Walmart's feed), and their watchers.
//! - `poll.rs`, `queue.rs`: orders that come by polling a channel or reading its queue;
//!   `poll_window.rs`: the windows a poll reads an unsorted order list in;
//!   `set_aside.rs`: the orders a poll read on past, their follow-up read failing.
//! - `reconcile.rs`: reads each channel's levels and hands drift to the shards as
//!   `Reconciled` events (the shards offer the repairs: the outbox has one writer).
//! - `timing.rs`: propagation times per channel, since start and over the last minutes;
//!   `health.rs`: what the console says of each channel (failing, reconciled, polled).
//! - `stale.rs`: what a push does when a compare-and-set finds the channel changed.
//! - here: the pusher task of each channel.
//!
//! After a shard commits a batch it offers each changed target to the channel's outbox.
//! The channel's pusher waits for a token, takes a batch (the riskiest first), sends one
//! call of it (the rest goes back to the outbox) and reads the reply; each acknowledged
//! item goes back to its shard as a `pushed` event, so the shard durably knows what the
//! channel shows (and whether it needs another push).

pub mod bulk;
pub mod health;
pub mod level_import;
pub mod outbox;
pub mod poll;
pub mod poll_window;
pub mod queue;
pub mod reconcile;
pub mod set_aside;
mod stale;
pub mod sync_state;
pub mod timing;
pub mod told;

pub use timing::Timing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::channels::pacing::{Backoff, TokenBucket};
use crate::channels::{Caller, ChannelAdapter, PushItem, PushReply, ShownAs};
use crate::clock::{now_micros, Micros};
use crate::config::{Config, RateLimit};
use crate::core::event::{Event, EventKind, QTY_MAX};
use crate::core::ByChannel;
use crate::engine::{Engine, EngineError};
use outbox::Outbox;

/// How long one push request may take before it counts as failed.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most tries to hand an acknowledgement to a busy shard before giving up on it (a lost
/// acknowledgement only means the next change, or a restart, pushes that SKU again).
const ACK_TRIES_MAX: u32 = 50;

/// One channel's outbound side.
pub struct ChannelLink {
    pub adapter: Arc<dyn ChannelAdapter>,
    pub outbox: Arc<Outbox>,
    pub timing: Arc<Timing>,
    /// The rate to plan by (`Pace::nominal`): the published limit, or where an adaptive
    /// pace starts.
    pub rate_limit: RateLimit,
    /// The channel's request budget, shared by everything that calls its API: pushes,
    /// reads, and the fetches a thin webhook needs.
    pub bucket: Arc<tokio::sync::Mutex<TokenBucket>>,
    /// SKUs to read again once late webhooks have had time to arrive, with when.
    checks: Mutex<Vec<(tokio::time::Instant, String)>>,
    /// Whether lockstep writes to the channel yet (`sync_state.rs`): the pusher and the
    /// reconciler wait while it is observing.
    pub sync: tokio::sync::watch::Sender<sync_state::SyncState>,
    /// Failing pushes, reconciliation and poll results, for the console.
    pub health: health::Health,
    /// The channel's writes compare (`ChannelConfig::compares`): one that took its
    /// compare value is acknowledged as the change from it (`stale::push_compared`).
    pub compares: bool,
}

/// How long an item whose compare went stale twice in a row waits before its next try.
pub const DEFER_STALE: Duration = Duration::from_millis(250);

/// How long after a stale compare its SKUs are read again: once the shard's window for
/// netting the shortfall against late orders has closed. What no order explained by then
/// was an edit on the channel (lockstep is the master: raised at once); a channel showing
/// more than its target is lowered at once.
pub const CHECK_AFTER_STALE: Duration =
    Duration::from_micros(crate::core::UNEXPLAINED_WINDOW_US as u64 + 1_000_000);

impl ChannelLink {
    /// Whether lockstep writes to the channel (it is not observing).
    pub fn pushing(&self) -> bool {
        *self.sync.borrow() == sync_state::SyncState::Pushing
    }

    /// The pause after each read of a reader beside the pusher (reconciliation, a plan,
    /// an import): one token interval, so that pushes keep at least half the budget.
    pub fn read_pause(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate_limit.requests_per_second.max(0.01))
    }

    /// A caller that spends this channel's budget.
    pub fn caller(&self, client: reqwest::Client) -> Caller {
        Caller::paced(client, self.bucket.clone())
    }

    /// A caller for a reader beside the pushes (reconciliation, a plan, an import): it
    /// spends the same budget and waits out a 429 instead of failing the read.
    pub fn reader(&self, client: reqwest::Client) -> Caller {
        self.caller(client)
            .waiting_out(crate::channels::throttles_of(self.adapter.clone()))
    }

    /// Asks the reconciler to compare these SKUs after `CHECK_AFTER_STALE`.
    fn check_later(&self, skus: impl IntoIterator<Item = String>) {
        let due = tokio::time::Instant::now() + CHECK_AFTER_STALE;
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        checks.extend(skus.into_iter().map(|sku| (due, sku)));
    }

    /// The SKUs whose check is due, each once.
    pub fn take_due_checks(&self) -> Vec<String> {
        let now = tokio::time::Instant::now();
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = std::collections::BTreeSet::new();
        checks.retain(|(at, sku)| {
            let ready = *at <= now;
            if ready {
                due.insert(sku.clone());
            }
            !ready
        });
        due.into_iter().collect()
    }
}

/// Builds the link of every channel, by its id.
pub fn links(
    config: &Config,
    adapters: &ByChannel<Arc<dyn ChannelAdapter>>,
) -> ByChannel<Arc<ChannelLink>> {
    config.registry().table(|id, _| {
        let config = config.channel(id);
        let adapter = adapters[id].clone();
        let carries = adapter.clone();
        let urgent = adapter.clone();
        let pace = adapter.pace().configured(config.rate_limit);
        Arc::new(ChannelLink {
            rate_limit: pace.nominal(),
            bucket: Arc::new(tokio::sync::Mutex::new(TokenBucket::for_pace(pace))),
            outbox: Arc::new(
                Outbox::with_filter(&config.name, Box::new(move |sku| carries.carries(sku)))
                    .with_urgent(Box::new(move |target, shown| {
                        urgent.bulk().is_some_and(|b| b.urgent(target, shown))
                    }))
                    .with_order(config.push_order),
            ),
            timing: Arc::new(Timing::new(&config.name)),
            checks: Mutex::new(Vec::new()),
            // Pushing until the sync book says otherwise: it is opened before any channel
            // task starts.
            sync: tokio::sync::watch::Sender::new(sync_state::SyncState::Pushing),
            health: health::Health::default(),
            compares: config.compares(),
            adapter,
        })
    })
}

/// The HTTP client for pushes: keep-alive per host, TCP_NODELAY, rustls for https, no
/// redirects.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        // No redirects: a redirect would carry the channel's credentials to another
        // host. A 3xx answer is a failed push, named in the log.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PUSH_TIMEOUT)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("the HTTP client builds")
}

/// The pusher of one channel: runs until the engine stops.
pub async fn run_pusher(link: Arc<ChannelLink>, engine: Arc<Engine>, client: reqwest::Client) {
    let mut pacer = Pacer {
        caller: link.caller(client),
        bucket: link.bucket.clone(),
        backoff: Backoff::default(),
        took_nothing: 0,
        cap: usize::MAX,
    };
    let mut submissions = link.adapter.bulk().map(bulk::Submissions::new);
    let batch_max = link
        .adapter
        .bulk()
        .map_or(0, |b| b.max_items())
        .max(link.adapter.batch_max());
    let mut sync = link.sync.subscribe();
    loop {
        // An observing channel is written nothing: its changes wait in the outbox until
        // it is approved, and then go out as any backlog does.
        if sync
            .wait_for(|s| *s == sync_state::SyncState::Pushing)
            .await
            .is_err()
        {
            return;
        }
        // The adapter keeps what is left of its budget for other calls: this pusher waits
        // (the budget itself is not paused).
        if let Some(wait) = link.adapter.pushes_held() {
            tokio::time::sleep(wait).await;
            continue;
        }
        // The token first, then the batch: whatever changed while the pusher waited for
        // its channel's budget goes in this call, so propagation under a rate limit is
        // bounded by about one token interval, not a queue of calls each carrying what
        // was there before its wait.
        pacer.caller.ready().await;
        let mut batch = link.outbox.take(batch_max.min(pacer.cap));
        // However this round ends (a panic while a reply is read), what it took and did
        // not settle goes back to the outbox instead of staying in flight for good.
        let _unsettled = Unsettled {
            outbox: &link.outbox,
            items: batch.clone(),
        };
        if batch.is_empty() {
            if link.outbox.has_deferred() {
                let _ = tokio::time::timeout(DEFER_STALE, link.outbox.notify.notified()).await;
            } else {
                link.outbox.notify.notified().await;
            }
            continue;
        }
        let mut later = Vec::new();
        if let Some(bulk) = link.adapter.bulk() {
            // The urgent part goes directly, now, as much as the direct path carries in
            // about a second (the rest of it waits in the outbox for the next round); the
            // rest by a submission.
            let (urgent, rest): (Vec<PushItem>, Vec<PushItem>) = batch
                .into_iter()
                .partition(|item| bulk.urgent(item.quantity, item.expected));
            let direct_max = link
                .adapter
                .batch_max()
                .max(link.rate_limit.requests_per_second.ceil() as usize);
            batch = urgent;
            if batch.len() > direct_max {
                let over = batch.split_off(direct_max);
                link.outbox.finish(&over, &vec![false; over.len()]);
            }
            later = rest;
        }
        let mut groups = if batch.is_empty() {
            Vec::new()
        } else {
            link.adapter.push_groups(&batch)
        };
        // One call per token: the groups after the first (a per-SKU channel's other
        // SKUs) go back to the outbox and are chosen again after the next token, with
        // whatever came meanwhile, instead of waiting out this batch's calls in the
        // order they were taken.
        if groups.len() > 1 {
            let rest: Vec<PushItem> = groups
                .drain(1..)
                .flatten()
                .map(|i| batch[i].clone())
                .collect();
            link.outbox.finish(&rest, &vec![false; rest.len()]);
        }
        for group in groups {
            let mut items: Vec<PushItem> = group.iter().map(|i| batch[*i].clone()).collect();
            let answer = stale::push_compared(&link, &engine, &mut pacer, &mut items).await;
            settle(&link, &engine, &mut pacer, &items, answer).await;
        }
        if let (false, Some(state)) = (later.is_empty(), submissions.as_mut()) {
            bulk::submit(&link, &engine, &pacer.caller, state, later).await;
        }
        if engine.is_stopped() {
            return;
        }
    }
}

/// A round's items, released when the round ends (`Outbox::release_unsettled`).
struct Unsettled<'a> {
    outbox: &'a outbox::Outbox,
    items: Vec<PushItem>,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        self.outbox.release_unsettled(&self.items);
    }
}

/// A pusher's pacing state: the token bucket (every call through `caller` spends one)
/// and the retry backoff.
struct Pacer {
    caller: Caller,
    bucket: Arc<tokio::sync::Mutex<TokenBucket>>,
    backoff: Backoff,
    /// Answers in a row that took nothing of their call (`after_refusals`).
    took_nothing: u32,
    /// The most items the next batch takes: halved by each request of several SKUs the
    /// channel refused whole (`settle`), doubled back by each answer that took all.
    cap: usize,
}

/// Answers in a row that took nothing the pusher follows at once while the channel takes
/// other SKUs: the SKUs refused in them are held on their own, and the held SKUs of a
/// store with a few listings it will not take come back one by one. More in a row (a
/// channel that has started refusing everything) back off.
const TOOK_NOTHING_BEFORE_PAUSE: u32 = 3;

/// How recently the channel must have taken an item for a refusal of one SKU written
/// alone to count against the SKU (`Outbox::refused`) rather than the channel.
pub(super) const TAKING_RECENTLY: Duration = Duration::from_secs(60);

/// Whether the channel took an item within `TAKING_RECENTLY`, by any path (a direct
/// push, a processed bulk submission): one clock, `Health::took_within`.
fn taking_recently(link: &ChannelLink) -> bool {
    link.health.took_within(TAKING_RECENTLY)
}

/// One push of a group, as the adapter makes it (one call for most channels).
async fn exchange(link: &ChannelLink, pacer: &Pacer, items: &[PushItem]) -> PushReply {
    link.adapter.push(&pacer.caller, items).await
}

/// A push's answer, as `stale::push_compared` resolved it.
struct Answer {
    reply: PushReply,
    /// The reply is partial because of contention (nothing is wrong with the channel:
    /// no backoff).
    contended: bool,
    /// Items (indices) whose acknowledgements were already sent to the shards, at once
    /// after the write that took them (`stale::adjust_stale`): settled with the rest,
    /// never acknowledged twice.
    delivered: Vec<usize>,
}

impl Answer {
    fn of(reply: PushReply, contended: bool) -> Answer {
        Answer {
            reply,
            contended,
            delivered: Vec::new(),
        }
    }
}

/// Acts on a push's outcome: acknowledgements to the shards, failures back to the
/// outbox, pacing adjusted.
async fn settle(
    link: &ChannelLink,
    engine: &Engine,
    pacer: &mut Pacer,
    items: &[PushItem],
    answer: Answer,
) {
    let Answer {
        reply,
        contended,
        delivered,
    } = answer;
    let name = link.adapter.name().to_string();
    let count = |outcome: &'static str| {
        metrics::counter!("lockstep_push_requests_total", "channel" => name.clone(), "outcome" => outcome).increment(1);
    };
    match reply {
        PushReply::Accepted { acked, wait } => {
            let all = accept(
                link, engine, pacer, items, &acked, &delivered, wait, contended,
            )
            .await;
            count(if all { "ok" } else { "partial" });
        }
        PushReply::Replaced {
            acked,
            written,
            shown_as,
        } => {
            let all = accept(
                link, engine, pacer, items, &acked, &delivered, None, contended,
            )
            .await;
            count(if all { "ok" } else { "partial" });
            for (kind, which) in [
                (EventKind::OfferingDisabled, ShownAs::OfferingDisabled),
                (EventKind::ListingDeactivated, ShownAs::ListingDeactivated),
                (EventKind::ListingActivated, ShownAs::ListingActivated),
            ] {
                let marked: Vec<(String, i64)> = shown_as
                    .iter()
                    .filter(|(_, s)| *s == which)
                    .map(|(sku, _)| {
                        let shown = items
                            .iter()
                            .find(|i| i.sku == *sku)
                            .map_or(0, |i| i.quantity);
                        (sku.clone(), shown)
                    })
                    .collect();
                record_drift(engine, &name, kind, &marked).await;
            }
            // A sale on the channel between our read and our write of the group is
            // overwritten by it: recording what we wrote lets the shard see that sale's
            // webhook land just after a write of ours, and push the SKU once more.
            let at = now_micros();
            let rewritten: Vec<PushItem> = written
                .into_iter()
                .map(|(sku, quantity)| PushItem {
                    sku,
                    quantity,
                    expected: None,
                    caused_at: at,
                    repair: false,
                })
                .collect();
            let rewritten: Vec<(&PushItem, Shows)> =
                rewritten.iter().map(|item| (item, Shows::Sent)).collect();
            deliver_acks(engine, &name, &rewritten, at).await;
        }
        PushReply::Held {
            acked,
            held,
            retry_in,
        } => {
            count("held");
            let withheld: Vec<(String, i64)> = held
                .iter()
                .filter_map(|i| items.get(*i))
                .map(|item| (item.sku.clone(), item.quantity))
                .collect();
            record_drift(engine, &name, EventKind::Withheld, &withheld).await;
            for (sku, quantity) in &withheld {
                link.outbox.defer(sku, retry_in, Some(*quantity));
            }
            accept(link, engine, pacer, items, &acked, &delivered, None, true).await;
            // What was sent and not taken was refused (an eBay item or offer answered
            // other than 200): held back on its own like any refusal. Left to the
            // contended answer's rule it went again at once, each time spending one of
            // its listing's revisions, which its listing's other SKUs need.
            let sent: Vec<(PushItem, bool)> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| !held.contains(i))
                .map(|(i, item)| (item.clone(), acked.contains(&i)))
                .collect();
            if sent.iter().any(|(_, taken)| !taken) {
                let (sent, taken): (Vec<PushItem>, Vec<bool>) = sent.into_iter().unzip();
                hold_refused(link, taking_recently(link), &sent, &taken, None);
            }
        }
        PushReply::Throttled { retry_after } => {
            count("throttled");
            link.outbox.finish(items, &vec![false; items.len()]);
            pacer.bucket.lock().await.throttled(retry_after);
        }
        PushReply::Failed { reason, retryable } => {
            count("error");
            let none = vec![false; items.len()];
            link.outbox.finish(items, &none);
            // A refusal a retry cannot fix, of a listing written alone, holds its SKU back
            // on its own, so the next round writes others: counted against the SKU while
            // the channel takes others, else (a wrong token refuses every SKU) only for a
            // moment, so that each SKU is tried in turn and none builds up a long wait. A
            // refusal of several (a channel that refuses a whole request for one item it
            // will not take: BigCommerce's adjustments are one transaction) does not say
            // which: the next batches are halved until the refused SKU, at the head of the
            // queue, goes alone. Held together, the request's SKUs came back together and
            // were refused together, for good.
            let one_refused = !retryable && items.len() == 1;
            let taking = one_refused && taking_recently(link);
            // While the channel takes others, one SKU's refusal is that SKU's: named under
            // `refused`, not the channel failing (as an answer refusing some SKUs is not).
            if !taking {
                link.health.push_failed(&reason);
            }
            if one_refused {
                hold_refused(link, taking, items, &none, Some(&reason));
                // Counted against its SKU, the refusal was logged with its reason by
                // name (`log_refusals`): one line for one refusal.
                if !taking {
                    tracing::warn!(channel = %name, %reason, "push refused");
                }
                after_refusals(link, pacer, taking, false).await;
                return;
            }
            if !retryable {
                pacer.cap = (items.len() / 2).max(1);
            }
            let delay = pacer.backoff.next_delay(retryable);
            tracing::warn!(channel = %name, %reason, retry_in_ms = delay.as_millis() as u64, "push failed");
            pause(link, delay).await;
        }
        PushReply::Stale { .. } => unreachable!("push_compared resolves stale compares"),
    }
}

/// Holds back each of `items` the channel refused (`acked` false) on its own, so the
/// rest of the queue is written meanwhile. While the channel takes others (`taking`: it
/// took an item within `TAKING_RECENTLY`), the refusal counts against the SKU
/// (`Outbox::refused`: a growing wait), logged and counted by SKU: a listing the channel
/// will not take is named. While it takes nothing, the SKU waits a moment only
/// (`REFUSED_WAIT_FIRST`), uncounted: a channel refusing everything (a wrong token) must
/// not leave its SKUs minutes of wait each once it is mended. `why`: the channel's
/// answer, when it refused a call that wrote the SKU alone.
fn hold_refused(
    link: &ChannelLink,
    taking: bool,
    items: &[PushItem],
    acked: &[bool],
    why: Option<&str>,
) {
    if !taking {
        for (item, _) in items.iter().zip(acked).filter(|(_, ok)| !**ok) {
            link.outbox
                .defer(&item.sku, outbox::REFUSED_WAIT_FIRST, Some(item.quantity));
        }
        return;
    }
    log_refusals(link, &link.outbox.refused(items, acked), why);
}

/// Logs and counts each refusal counted against its SKU: (SKU, in a row, wait), with
/// the channel's answer (`why`) when there is one for it alone.
pub(super) fn log_refusals(
    link: &ChannelLink,
    counted: &[(String, u32, Duration)],
    why: Option<&str>,
) {
    let channel = link.adapter.name();
    for (sku, times, wait) in counted {
        metrics::counter!("lockstep_push_items_refused_total", "channel" => channel.to_string())
            .increment(1);
        tracing::warn!(%channel, %sku, refusals_in_a_row = times, wait_ms = wait.as_millis() as u64,
            reason = %why.unwrap_or("the answer did not take it"),
            "the channel refused this SKU's push; it waits before it is pushed again");
    }
}

/// The pusher's backoff: nothing of the channel is pushed for `delay`. Counted, so that a
/// channel slowed by its failures shows why (`lockstep_push_backoffs_total`).
async fn pause(link: &ChannelLink, delay: Duration) {
    metrics::counter!("lockstep_push_backoffs_total", "channel" => link.adapter.name().to_string())
        .increment(1);
    tokio::time::sleep(delay).await;
}

/// After an answer that took nothing of its call, each SKU of it refused and held on its
/// own (`hold_refused`): while the channel takes other SKUs (`taking`), the refusals are
/// those SKUs', and the pusher goes on at once, up to `TOOK_NOTHING_BEFORE_PAUSE` such
/// answers in a row (a pause here, doubling while they followed one another, slowed every
/// SKU of a store with a few listings it will not take to one call in 2 s, or 30 s after
/// 4xx answers). Beyond, it backs off, at most 2 s while the channel takes others; while
/// it takes nothing (a wrong token), as after any failure.
async fn after_refusals(link: &ChannelLink, pacer: &mut Pacer, taking: bool, retryable: bool) {
    pacer.took_nothing = pacer.took_nothing.saturating_add(1);
    if taking && pacer.took_nothing <= TOOK_NOTHING_BEFORE_PAUSE {
        return;
    }
    pause(link, pacer.backoff.next_delay(retryable || taking)).await;
}

/// Takes the acknowledged items (indices into `items`): their acks to the shards, the
/// rest back to the outbox, pacing adjusted. Returns whether every item was taken.
#[allow(clippy::too_many_arguments)]
async fn accept(
    link: &ChannelLink,
    engine: &Engine,
    pacer: &mut Pacer,
    items: &[PushItem],
    acked: &[usize],
    delivered: &[usize],
    wait: Option<Duration>,
    contended: bool,
) -> bool {
    let mask = acknowledge(link, engine, items, acked, delivered).await;
    let all = mask.iter().all(|ok| *ok);
    let took = mask.iter().any(|ok| *ok);
    if took {
        // An answer that took the call, even in part: the channel is writing.
        link.health.push_taken();
    } else if contended {
        // It left out only what it was shown selling meanwhile, or what its budget held
        // back: it answers, but took nothing of this call.
        link.health.call_accepted();
    } else if !taking_recently(link) {
        // Answers that refuse every item (a 200 whose every entry is an error) while the
        // channel has taken nothing for a while are no sign it writes: they must not
        // show it healthy. (One refused SKU pushed again alone, while the channel takes
        // others, is that SKU's: it is named, `Outbox::refused_waiting`.)
        link.health.took_none(&format!(
            "the channel answers, but took none of the SKUs sent to it in the last {} s",
            TAKING_RECENTLY.as_secs()
        ));
    }
    link.outbox.finish(items, &mask);
    if all {
        pacer.cap = pacer.cap.saturating_mul(2);
    }
    let taking = taking_recently(link);
    // What a contended answer left out is stale, and `stale` holds it back already.
    if !contended {
        hold_refused(link, taking, items, &mask, None);
    }
    if took || contended {
        // The channel answered and took what it could: what it refused waits on its own
        // (`hold_refused`), so the rest of the queue goes on at once. (It paused here
        // after every partial answer, longer while they followed one another.)
        pacer.bucket.lock().await.succeeded();
        pacer.backoff.reset();
        pacer.took_nothing = 0;
    } else {
        after_refusals(link, pacer, taking, true).await;
    }
    if let Some(wait) = wait {
        // The channel's own budget is nearly spent: let it refill (never for longer than
        // a channel may make us wait).
        tokio::time::sleep(wait.min(crate::channels::pacing::WAIT_MAX)).await;
    }
    all
}

/// What the channel took (`acked`: indices into `items`) is timed and acknowledged to
/// the shards, except what was already (`delivered`); returns which items it took.
async fn acknowledge(
    link: &ChannelLink,
    engine: &Engine,
    items: &[PushItem],
    acked: &[usize],
    delivered: &[usize],
) -> Vec<bool> {
    let mut mask = vec![false; items.len()];
    for i in acked.iter().copied().filter(|i| *i < items.len()) {
        mask[i] = true;
    }
    let taken: Vec<(usize, Shows)> = (0..items.len())
        .filter(|i| mask[*i] && !delivered.contains(i))
        .map(|i| (i, Shows::Sent))
        .collect();
    acknowledge_as(link, engine, items, &taken).await;
    mask
}

/// Times the items (indices into `items`) the channel took and hands their
/// acknowledgements, each as it says, to the shards in one submission.
async fn acknowledge_as(
    link: &ChannelLink,
    engine: &Engine,
    items: &[PushItem],
    taken: &[(usize, Shows)],
) {
    let taken: Vec<(&PushItem, Shows)> = taken
        .iter()
        .filter_map(|(i, shows)| Some((items.get(*i)?, *shows)))
        .collect();
    let acked_at = now_micros();
    for (item, _) in &taken {
        link.timing.record(item.caused_at, acked_at);
    }
    deliver_acks(engine, link.adapter.name(), &taken, acked_at).await;
}

/// Why levels are read: whether the read may wait for another day's quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Reconciliation's passes, which come again: held while a daily quota is kept for
    /// pushes and orders.
    Routine,
    /// A read a push or an operator waits on (a stale compare, an import, a plan).
    Asked,
}

/// What an acknowledgement says the channel shows.
#[derive(Clone, Copy, Debug)]
enum Shows {
    /// The item's quantity: an absolute write (`EventKind::Pushed`).
    Sent,
    /// What it was expected to show, moved by this change: a compared set or a delta
    /// that landed (`EventKind::PushedChange`).
    Moved(i64),
}

/// Reads what the channel shows for `skus` (`None`: not listed), one read per read
/// group, at once (`Reads::Asked`, no pause): a pusher's items after a stale compare,
/// a push batch's worth.
pub async fn read_levels(
    link: &ChannelLink,
    caller: &Caller,
    skus: &[String],
) -> Result<HashMap<String, Option<i64>>, String> {
    let names: Vec<&str> = skus.iter().map(String::as_str).collect();
    let mut levels = HashMap::new();
    for group in link.adapter.read_groups(&names) {
        let group: Vec<String> = group.iter().map(|i| skus[*i].clone()).collect();
        levels.extend(read_group(link, caller, &group, Duration::ZERO, Reads::Asked).await??);
    }
    Ok(levels)
}

/// One read of a read group `skus`, with `pause` after it (a reader that leaves pushes
/// part of the budget): the read's own result inside. Outside, `Err` when
/// `Reads::Routine` (reconciliation) is held, before any call, because the adapter keeps
/// what is left of a daily quota for pushes and orders (`ChannelAdapter::reads_held`).
pub async fn read_group(
    link: &ChannelLink,
    caller: &Caller,
    skus: &[String],
    pause: Duration,
    reads: Reads,
) -> Result<Result<crate::channels::Levels, String>, String> {
    if let (Reads::Routine, Some(reason)) = (reads, link.adapter.reads_held()) {
        return Err(reason);
    }
    let levels = link.adapter.read(caller, skus).await;
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    Ok(levels)
}

/// Records in the audit that `channel` showed something other than expected: one event
/// of `kind` (`Reconciled` from reconciliation, `StaleRead` from a stale compare; outcome
/// `drift`) per SKU, the level read as `qty` (-1: not listed). `Withheld` records use
/// it too, `qty` being the value held back.
pub async fn record_drift(
    engine: &Engine,
    channel: &str,
    kind: EventKind,
    drifts: &[(String, i64)],
) {
    if drifts.is_empty() {
        return;
    }
    let now = now_micros();
    let events: Vec<Event> = drifts
        .iter()
        .enumerate()
        .map(|(i, (sku, level))| Event {
            sku: sku.clone(),
            kind,
            // A level read beyond what an event may record (a seller's typo of billions)
            // is recorded at the bound: out of range, it failed the whole batch, and
            // every other SKU's repair with it. Its push compares, reads the real level
            // again on a mismatch and lowers it all the same.
            qty: (*level).clamp(-QTY_MAX, QTY_MAX),
            source: channel.to_string(),
            source_ts: now,
            received_at: now,
            key: format!("{}/{channel}/{now}/{i}", kind.as_str()),
            line: None,
            origin: None,
        })
        .collect();
    if let Err(e) = engine.submit(events).await {
        tracing::warn!(%channel, error = %e, "could not record drift in the audit");
    }
}

/// Hands acknowledgements to their shards as `pushed` (or `pushed_change`) events.
async fn deliver_acks(
    engine: &Engine,
    channel: &str,
    items: &[(&PushItem, Shows)],
    acked_at: Micros,
) {
    if items.is_empty() {
        return;
    }
    let events: Vec<Event> = items
        .iter()
        .enumerate()
        .map(|(i, (item, shows))| {
            let (kind, qty) = match shows {
                Shows::Sent => (EventKind::Pushed, item.quantity),
                Shows::Moved(change) => (EventKind::PushedChange, *change),
            };
            Event {
                sku: item.sku.clone(),
                kind,
                qty,
                source: channel.to_string(),
                source_ts: acked_at,
                received_at: acked_at,
                key: format!("pushed/{channel}/{acked_at}/{i}"),
                line: None,
                origin: None,
            }
        })
        .collect();
    // Sent again only when no shard took the batch (`Busy` refuses it whole): a change
    // carries no idempotency key that would catch it applied twice.
    for _ in 0..ACK_TRIES_MAX {
        match engine.submit(events.clone()).await {
            Ok(_) => return,
            Err(EngineError::Busy { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "could not record acknowledgements");
                return;
            }
        }
    }
    tracing::warn!(%channel, "shards stayed busy; acknowledgements not recorded");
}
