//! A push whose compare-and-set finds the channel changed behind lockstep (a stale
//! compare: most often a hot SKU the channel sold while our write was on its way): the
//! decreases go again as deltas where the channel has a write that commutes with its own
//! sales (Shopify's adjustment), and the other items are read and set once more,
//! compared with what was read. Either way the difference is in the audit, the shortfall the
//! channel's own sales explain stays off what it shows, and there is never a loop.

use std::time::Duration;

use super::{
    acknowledge, acknowledge_as, exchange, read_levels, record_drift, Answer, ChannelLink, Pacer,
    Shows, DEFER_STALE,
};
use crate::channels::{PushItem, PushReply};
use crate::core::event::EventKind;
use crate::core::target_after_read;
use crate::engine::Engine;

/// Pushes `items`; when a compare-and-set finds the channel changed behind us, sends the
/// decreases as deltas where the channel has such a write (`adjust_stale`), else reads
/// those items, records the difference in the audit, and pushes once more comparing
/// with what was read (`read_and_push_again`). Items stale a second time go back to the
/// outbox and the rest is pushed without them: never a loop of reads and pushes. The
/// flag says the reply is partial because of that contention (no backoff: nothing is
/// wrong with the channel).
pub(super) async fn push_compared(
    link: &ChannelLink,
    engine: &Engine,
    pacer: &mut Pacer,
    items: &mut [PushItem],
) -> Answer {
    let stale = match exchange(link, pacer, items).await {
        PushReply::Stale { stale } => stale,
        PushReply::Accepted { acked, wait } if link.compares => {
            return acknowledge_compared(link, engine, items, acked, wait).await
        }
        other => return Answer::of(other, false),
    };
    let name = link.adapter.name().to_string();
    metrics::counter!("lockstep_push_requests_total", "channel" => name, "outcome" => "stale")
        .increment(1);
    match adjust_stale(link, engine, pacer, items, &stale).await {
        Adjusted::Done(answer) => answer,
        Adjusted::NotOffered => {
            let (reply, contended) = read_and_push_again(link, engine, pacer, items, stale).await;
            Answer::of(reply, contended)
        }
        // Each item may or may not show its delta: every one is read and set, compared
        // with what it shows, in this round (none keeps a compare value that the delta
        // may have made stale, which would bring another delta).
        Adjusted::Unknown => {
            let all = (0..items.len()).collect();
            let (reply, contended) = read_and_push_again(link, engine, pacer, items, all).await;
            Answer::of(reply, contended)
        }
    }
}

/// A compare-and-set write that took `acked`: the items compared with what the channel
/// was expected to show are acknowledged at once as the change from it
/// (`ChannelLink::compares`, `PushItem::change`), so the channel's sales after the
/// write landed whose orders came before its answer stay counted; the others (never
/// acknowledged and written blind, or repairs compared with a level read) as what they
/// were sent, with the rest of the call.
async fn acknowledge_compared(
    link: &ChannelLink,
    engine: &Engine,
    items: &[PushItem],
    acked: Vec<usize>,
    wait: Option<Duration>,
) -> Answer {
    let changes: Vec<(usize, Shows)> = acked
        .iter()
        .filter_map(|i| Some((*i, Shows::Moved(items.get(*i)?.change()?))))
        .collect();
    acknowledge_as(link, engine, items, &changes).await;
    Answer {
        reply: PushReply::Accepted { acked, wait },
        contended: false,
        delivered: changes.iter().map(|(i, _)| *i).collect(),
    }
}

/// What became of an adjustment after a stale compare.
enum Adjusted {
    /// Answered: the reply for the call's items, whether it is partial by contention, and
    /// which acknowledgements went to the shards already.
    Done(Answer),
    /// The channel has no such write, or the call is not one for it.
    NotOffered,
    /// Sent without a definitive answer: applied or not, no one knows.
    Unknown,
}

/// After a stale compare, on a channel that has a write that commutes with its own
/// sales (`ChannelAdapter::adjust`): the call's decreases (`target < expected`) go as
/// deltas (`target - expected`) in one call, which cannot go stale, instead of a read and
/// another compare that a hot SKU selling on the channel meanwhile makes stale again. It
/// lands where the read and set would have: the channel's own sales still on their way
/// stay off what it shows (`target_after_read` of the level before, which the reply's
/// level after gives), and the audit records the stale read as before. Only decreases: a
/// delta that raises could add to an excess the channel shows (a return lockstep has not
/// heard of) and show units before their event arrives. The call's other items (raises,
/// never acknowledged, nothing to change) are read where stale and set, compared, as on a
/// channel without the write. An item a decrease leaves above what it should show (the
/// channel showed more than expected) is set down at once, compared with what the
/// adjustment left.
async fn adjust_stale(
    link: &ChannelLink,
    engine: &Engine,
    pacer: &mut Pacer,
    items: &mut [PushItem],
    stale: &[usize],
) -> Adjusted {
    let (decreases, others): (Vec<usize>, Vec<usize>) =
        (0..items.len()).partition(|i| items[*i].expected.is_some_and(|e| items[*i].quantity < e));
    if decreases.is_empty() {
        return Adjusted::NotOffered;
    }
    let sent: Vec<PushItem> = decreases.iter().map(|i| items[*i].clone()).collect();
    let Some(adjustment) = link.adapter.adjust(&pacer.caller, &sent) else {
        return Adjusted::NotOffered;
    };
    let afters = match adjustment.await {
        Ok(afters) => afters,
        // Definitive: nothing was applied. The call waits for the channel as any push.
        Err(throttled @ PushReply::Throttled { .. }) => {
            return Adjusted::Done(Answer::of(throttled, false))
        }
        Err(PushReply::Failed {
            reason,
            retryable: false,
        }) => {
            let failed = PushReply::Failed {
                reason: format!("after a stale compare, the adjustment was refused: {reason}"),
                retryable: false,
            };
            return Adjusted::Done(Answer::of(failed, false));
        }
        Err(_) => return Adjusted::Unknown,
    };
    let name = link.adapter.name();
    metrics::counter!("lockstep_push_requests_total", "channel" => name.to_string(), "outcome" => "adjusted").increment(1);
    let mut acked = Vec::new();
    // How each item the adjustment took is acknowledged: as the delta that landed, or a
    // repair's (compared with a level read) as the level it left.
    let mut shown = Vec::new();
    let mut rest = Vec::new();
    let mut drifts = Vec::new();
    for (i, after) in decreases.into_iter().zip(afters) {
        let item = &mut items[i];
        let expected = item.expected.unwrap_or(item.quantity);
        let landed = item.change();
        // Saturating: `after` is the channel's number.
        let before = after.saturating_sub(item.quantity - expected);
        if before != expected {
            drifts.push((item.sku.clone(), before));
        }
        let wanted = target_after_read(item.quantity, expected, before);
        if after > wanted {
            // Shows more than it should (it showed more than expected before our
            // decrease): set it down, compared with what it shows now.
            item.expected = Some(after);
            item.quantity = wanted;
            rest.push(i);
            continue;
        }
        if after != item.quantity {
            link.outbox.retarget(&item.sku, after);
        }
        item.quantity = after;
        acked.push(i);
        shown.push((i, landed.map_or(Shows::Sent, Shows::Moved)));
    }
    record_drift(engine, name, EventKind::StaleRead, &drifts).await;
    // Every item found showing other than expected is looked at again once its window
    // has closed (what no order explained was an edit on the channel).
    link.check_later(drifts.into_iter().map(|(sku, _)| sku));
    // What the adjustment left is acknowledged now, not after the calls that may follow
    // (each waits for a token), and as the change that landed, not the level its answer
    // gave: a sale the store makes after the delta landed, whose order lockstep applies
    // before the acknowledgement, is already in what the store is expected to show, and
    // setting that to the answer's level (from before the sale) would forget it: its
    // units taken again by the next write, shown short until the window's check
    // (`core::acknowledged_change`).
    acknowledge_as(link, engine, items, &shown).await;
    if !rest.is_empty() {
        let subset: Vec<PushItem> = rest.iter().map(|i| items[*i].clone()).collect();
        let reply = exchange(link, pacer, &subset).await;
        let set_down = acked.len();
        follow_up(link, pacer, reply, &rest, items, &mut acked).await;
        // (The same for what the set-down took, before the call's other items go.)
        acknowledge(link, engine, items, &acked[set_down..], &[]).await;
    }
    let delivered = acked.clone();
    // The call's other items were refused with it: read where stale, set, compared.
    if !others.is_empty() {
        let mut subset: Vec<PushItem> = others.iter().map(|i| items[*i].clone()).collect();
        let stale_of_others: Vec<usize> = others
            .iter()
            .enumerate()
            .filter(|(_, i)| stale.contains(i))
            .map(|(k, _)| k)
            .collect();
        let (reply, _) =
            read_and_push_again(link, engine, pacer, &mut subset, stale_of_others).await;
        for (k, i) in others.iter().enumerate() {
            items[*i] = subset[k].clone();
        }
        follow_up(link, pacer, reply, &others, items, &mut acked).await;
    }
    Adjusted::Done(Answer {
        reply: PushReply::Accepted { acked, wait: None },
        contended: true,
        delivered,
    })
}

/// Takes the reply to a call that followed an adjustment, of the items `sent` (indices
/// into `items`): what it took joins `acked`; stale ones wait a moment for the next round
/// (the outbox still holds their targets), without a backoff; a throttle paces the
/// channel and a failure is recorded. Whatever was not taken goes back to the outbox
/// unacknowledged when the call is settled.
async fn follow_up(
    link: &ChannelLink,
    pacer: &mut Pacer,
    reply: PushReply,
    sent: &[usize],
    items: &[PushItem],
    acked: &mut Vec<usize>,
) {
    let name = link.adapter.name();
    match reply {
        PushReply::Accepted { acked: took, .. } => {
            acked.extend(took.into_iter().filter_map(|k| sent.get(k).copied()));
        }
        PushReply::Stale { .. } => {
            for i in sent {
                link.outbox.defer(&items[*i].sku, DEFER_STALE, None);
            }
        }
        PushReply::Throttled { retry_after } => {
            pacer.bucket.lock().await.throttled(retry_after);
        }
        PushReply::Failed { reason, .. } => {
            link.health.push_failed(&reason);
            tracing::warn!(channel = %name, %reason, "a call after an adjustment failed");
        }
        other => {
            tracing::warn!(channel = %name, reply = ?other, "unexpected reply to a call after an adjustment")
        }
    }
}

/// After a stale compare, on a channel without `adjust`: reads the stale items, records
/// the difference in the audit, and pushes once more comparing with what was read.
async fn read_and_push_again(
    link: &ChannelLink,
    engine: &Engine,
    pacer: &mut Pacer,
    items: &mut [PushItem],
    stale: Vec<usize>,
) -> (PushReply, bool) {
    let name = link.adapter.name().to_string();
    let skus: Vec<String> = stale.iter().map(|i| items[*i].sku.clone()).collect();
    let shown = match read_levels(link, &pacer.caller, &skus).await {
        Ok(shown) => shown,
        Err(reason) => {
            let failed = PushReply::Failed {
                reason: format!("compare stale, and reading the items failed: {reason}"),
                retryable: true,
            };
            return (failed, false);
        }
    };
    let mut drifts = Vec::new();
    for i in stale {
        let item = &mut items[i];
        let level = shown.get(&item.sku).copied().flatten();
        drifts.push((item.sku.clone(), level.unwrap_or(-1)));
        if let (Some(level), Some(expected)) = (level, item.expected) {
            item.quantity = target_after_read(item.quantity, expected, level);
            link.outbox.retarget(&item.sku, item.quantity);
        }
        item.expected = level;
    }
    record_drift(engine, &name, EventKind::StaleRead, &drifts).await;
    link.check_later(skus);
    let again = match exchange(link, pacer, items).await {
        PushReply::Stale { stale } => stale,
        other => return (other, false),
    };
    // Still changing (a hot SKU selling on the channel right now): those items go back to
    // the outbox for the next round, with no backoff, and the rest of the call, whose
    // compares held, goes out without them. Never more than three calls.
    for i in &again {
        link.outbox.defer(&items[*i].sku, DEFER_STALE, None);
    }
    let rest: Vec<usize> = (0..items.len()).filter(|i| !again.contains(i)).collect();
    let none = PushReply::Accepted {
        acked: Vec::new(),
        wait: None,
    };
    if rest.is_empty() {
        return (none, true);
    }
    let subset: Vec<PushItem> = rest.iter().map(|i| items[*i].clone()).collect();
    let reply = match exchange(link, pacer, &subset).await {
        PushReply::Accepted { acked, wait } => PushReply::Accepted {
            acked: acked
                .into_iter()
                .filter_map(|i| rest.get(i).copied())
                .collect(),
            wait,
        },
        PushReply::Stale { .. } => none,
        other => other,
    };
    (reply, true)
}
