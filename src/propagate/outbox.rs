//! The outbox of one channel: the SKUs whose quantity the channel should be shown, latest
//! value wins. A SKU that changes 50 times while the channel is slow is pushed once, with
//! its latest target. No queue to lose: the shard keeps what each channel acknowledged,
//! and after a restart every SKU whose target differs is offered again.

use std::collections::BTreeSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use ahash::AHashMap;
use tokio::sync::Notify;

use crate::channels::PushItem;
use crate::clock::Micros;
use crate::core::{ByChannel, PushWanted};
use crate::engine::shard::PushSink;

/// A target waiting to be pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wanted {
    target: i64,
    /// What the channel should show before this push (the compare value).
    expected: Option<i64>,
    /// The oldest change this push settles: coalesced changes keep the first one's time,
    /// so propagation time measures how long the oldest waited.
    caused_at: Micros,
}

/// The SKUs waiting, by name and in push order (lowest target first: stock-outs, then
/// low stock), so `take` walks only the front instead of scanning every waiting SKU
/// under the lock the shards offer through.
#[derive(Default)]
struct Dirty {
    /// Each SKU's wanted value, keyed by the same shared name the order holds, so a
    /// change of target moves it in `order` without allocating (offers come from the
    /// shard threads after every commit).
    by_sku: AHashMap<Arc<str>, Wanted>,
    order: BTreeSet<(i64, Arc<str>)>,
}

impl Dirty {
    fn get(&self, sku: &str) -> Option<&Wanted> {
        self.by_sku.get(sku)
    }

    fn contains_key(&self, sku: &str) -> bool {
        self.by_sku.contains_key(sku)
    }

    fn len(&self) -> usize {
        self.by_sku.len()
    }

    /// Sets what `sku` should be shown, replacing (and re-ordering) what was waiting.
    fn insert(&mut self, sku: &str, wanted: Wanted) {
        match self.by_sku.get_key_value(sku) {
            Some((name, old)) => {
                let (name, before) = (name.clone(), old.target);
                if before != wanted.target {
                    self.order.remove(&(before, name.clone()));
                    self.order.insert((wanted.target, name.clone()));
                }
                self.by_sku.insert(name, wanted);
            }
            None => {
                let name: Arc<str> = Arc::from(sku);
                self.order.insert((wanted.target, name.clone()));
                self.by_sku.insert(name, wanted);
            }
        }
    }

    fn remove(&mut self, sku: &str) -> Option<Wanted> {
        let (name, wanted) = self.by_sku.remove_entry(sku)?;
        self.order.remove(&(wanted.target, name));
        Some(wanted)
    }
}

#[derive(Default)]
struct Inner {
    dirty: Dirty,
    /// SKUs in a request that has not been answered, with the quantity sent. A SKU is in
    /// at most one request at a time, so an older value never lands after a newer one.
    in_flight: AHashMap<String, i64>,
    /// SKUs held back until a time: a compare that went stale twice in a row (a hot SKU
    /// selling on the channel right now) waits a moment for the sales' webhooks rather
    /// than spend the channel's budget on another stale round; a push held by the
    /// channel's own budget waits for it. With the quantity that was held: a lower
    /// target (fewer units shown: the change that prevents overselling) ends that wait.
    deferred: AHashMap<String, (tokio::time::Instant, Option<i64>)>,
    /// SKUs in a bulk submission the channel took and has not processed yet (Walmart's
    /// feed), with the quantity sent and whether a direct push wrote the SKU since (the
    /// submission, processed later, may overwrite that write).
    submitted: AHashMap<String, (i64, bool)>,
}

/// A map of the outbox whose table has at least this many slots is shrunk once fewer
/// than a quarter of them hold an entry (`shrink`).
const SHRINK_FROM_SLOTS: usize = 4_096;

/// Shrinks a map that a burst left large: a hash table otherwise keeps its largest size
/// for good, and a burst of a million SKUs (a catalog loaded, a restock) leaves a table
/// of two million slots per channel (49 bytes each in `Dirty::by_sku`: 100 MB) when the
/// queue is empty again. Halved at most once per quartering, so a queue that stays long
/// is not rehashed over and over.
fn shrink<K: Eq + Hash, V>(map: &mut AHashMap<K, V>) {
    let slots = map.capacity();
    let len = map.len();
    if slots >= SHRINK_FROM_SLOTS && len < slots / 4 {
        map.shrink_to(len * 2);
    }
}

impl Inner {
    /// An item the channel did not take waits again with the value it carried.
    fn offer_again(&mut self, item: &PushItem) {
        self.dirty.insert(
            &item.sku,
            Wanted {
                target: item.quantity,
                expected: item.expected,
                caused_at: item.caused_at,
            },
        );
    }
}

/// Which SKUs a channel lists (catalog channels list only the SKUs they map).
pub type Carries = Box<dyn Fn(&str) -> bool + Send + Sync>;
/// Which targets cannot wait for a bulk submission to be processed: `(target, shown)`.
pub type Urgent = Box<dyn Fn(i64, Option<i64>) -> bool + Send + Sync>;

/// Every channel's outbox, by the core's channel ids (`None` for a channel without an
/// adapter): where the shards hand what their commits call for.
pub struct Outboxes(pub ByChannel<Arc<Outbox>>);

impl PushSink for Outboxes {
    fn offer(&self, pushes: &[PushWanted]) {
        for push in pushes {
            self.0[push.channel].offer(&push.sku, push.target, push.expected, push.caused_at);
        }
    }
}

/// One channel's pending pushes.
pub struct Outbox {
    pub channel: String,
    inner: Mutex<Inner>,
    /// SKUs the channel does not list are never queued.
    carries: Option<Carries>,
    /// A target that `urgent` accepts is taken even while its SKU is in a submission.
    urgent: Option<Urgent>,
    /// Wakes the channel's pusher; a notification with no waiter is kept for the next wait.
    pub notify: Notify,
}

impl Outbox {
    pub fn new(channel: &str) -> Outbox {
        Outbox {
            channel: channel.to_string(),
            inner: Mutex::new(Inner::default()),
            carries: None,
            urgent: None,
            notify: Notify::new(),
        }
    }

    /// An outbox that queues only the SKUs `carries` accepts.
    pub fn with_filter(channel: &str, carries: Carries) -> Outbox {
        Outbox {
            carries: Some(carries),
            ..Outbox::new(channel)
        }
    }

    /// This outbox, taking the targets `urgent` accepts even while their SKU is in a
    /// bulk submission.
    pub fn with_urgent(mut self, urgent: Urgent) -> Outbox {
        self.urgent = Some(urgent);
        self
    }

    /// Whether the channel lists `sku`.
    pub fn carries(&self, sku: &str) -> bool {
        self.carries.as_ref().is_none_or(|f| f(sku))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for `sku` to be shown `target` (the channel should be showing `expected`).
    /// Called by shard threads after a commit, and by reconciliation.
    pub fn offer(&self, sku: &str, target: i64, expected: Option<i64>, caused_at: Micros) {
        if !self.carries(sku) {
            return;
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner
            .deferred
            .get(sku)
            .is_some_and(|(_, held)| held.is_some_and(|h| target < h))
        {
            inner.deferred.remove(sku);
        }
        match inner.dirty.get(sku) {
            Some(wanted) => {
                let caused_at = wanted.caused_at.min(caused_at);
                inner.dirty.insert(
                    sku,
                    Wanted {
                        target,
                        expected,
                        caused_at,
                    },
                );
            }
            // Already on its way with this very value.
            None if inner.in_flight.get(sku) == Some(&target) => return,
            None if inner.submitted.get(sku) == Some(&(target, false)) => return,
            None => {
                inner.dirty.insert(
                    sku,
                    Wanted {
                        target,
                        expected,
                        caused_at,
                    },
                );
            }
        }
        let depth = inner.dirty.len();
        drop(guard);
        metrics::gauge!("lockstep_outbox_skus", "channel" => self.channel.clone())
            .set(depth as f64);
        self.notify.notify_one();
    }

    /// Takes up to `max` SKUs to push, stock-outs and low stock first.
    pub fn take(&self, max: usize) -> Vec<PushItem> {
        let mut inner = self.lock();
        let Inner {
            dirty,
            in_flight,
            deferred,
            submitted,
        } = &mut *inner;
        if !deferred.is_empty() {
            let now = tokio::time::Instant::now();
            deferred.retain(|_, (until, _)| *until > now);
            shrink(deferred);
        }
        let urgent = |w: &Wanted| {
            self.urgent
                .as_ref()
                .is_some_and(|u| u(w.target, w.expected))
        };
        // In push order; what waits for an answer, a deferral or a submission is passed
        // over (a few per channel), never the whole queue.
        let skus: Vec<String> = dirty
            .order
            .iter()
            .filter(|(_, sku)| {
                let sku: &str = sku;
                !in_flight.contains_key(sku)
                    && !deferred.contains_key(sku)
                    && (!submitted.contains_key(sku) || dirty.get(sku).is_some_and(&urgent))
            })
            .take(max)
            .map(|(_, sku)| sku.to_string())
            .collect();
        let mut items = Vec::with_capacity(skus.len());
        for sku in skus {
            let wanted = dirty.remove(&sku).expect("chosen from dirty");
            if let Some((_, written_since)) = submitted.get_mut(&sku) {
                *written_since = true;
            }
            in_flight.insert(sku.clone(), wanted.target);
            items.push(PushItem {
                sku,
                quantity: wanted.target,
                expected: wanted.expected,
                caused_at: wanted.caused_at,
            });
        }
        shrink(&mut dirty.by_sku);
        items
    }

    /// Settles a request: `acked[i]` says whether `items[i]` reached the channel. Items
    /// that did not are offered again, unless a newer target came meanwhile.
    pub fn finish(&self, items: &[PushItem], acked: &[bool]) {
        let mut inner = self.lock();
        for (item, ok) in items.iter().zip(acked) {
            inner.in_flight.remove(&item.sku);
            if !ok && !inner.dirty.contains_key(&item.sku) {
                inner.offer_again(item);
            }
        }
        shrink(&mut inner.in_flight);
        self.depth_gauge(inner);
    }

    fn depth_gauge(&self, inner: std::sync::MutexGuard<'_, Inner>) {
        let depth = inner.dirty.len();
        drop(inner);
        metrics::gauge!("lockstep_outbox_skus", "channel" => self.channel.clone())
            .set(depth as f64);
    }

    /// These items (taken, in flight) went into a bulk submission the channel processes
    /// later: they stay out of `take` until `settle_submission`, except for an urgent
    /// target.
    pub fn submitted(&self, items: &[PushItem]) {
        let mut inner = self.lock();
        for item in items {
            inner.in_flight.remove(&item.sku);
            inner
                .submitted
                .insert(item.sku.clone(), (item.quantity, false));
        }
    }

    /// Whether a direct push wrote one of these submitted items since it was submitted.
    pub fn written_since(&self, items: &[PushItem]) -> bool {
        let inner = self.lock();
        items
            .iter()
            .any(|i| inner.submitted.get(&i.sku).is_some_and(|(_, w)| *w))
    }

    /// Settles a bulk submission: `acked[i]` says whether it applied `items[i]`; those
    /// it did not are offered again, unless a newer target came meanwhile.
    pub fn settle_submission(&self, items: &[PushItem], acked: &[bool]) {
        let mut inner = self.lock();
        for (item, ok) in items.iter().zip(acked) {
            // A SKU written directly meanwhile (urgent) was sent a newer value, and one
            // with a newer target waits with it: neither gets the submission's older one.
            let written = inner.submitted.remove(&item.sku).is_some_and(|(_, w)| w);
            let newer = written
                || inner.in_flight.contains_key(&item.sku)
                || inner.dirty.contains_key(&item.sku);
            if !ok && !newer {
                inner.offer_again(item);
            }
        }
        shrink(&mut inner.submitted);
        self.depth_gauge(inner);
        self.notify.notify_one();
    }

    /// The quantity of an item in flight changed before it was sent again (a stale
    /// compare's resend): an offer of that quantity meanwhile is already on its way.
    pub fn retarget(&self, sku: &str, quantity: i64) {
        let mut inner = self.lock();
        if let Some(in_flight) = inner.in_flight.get_mut(sku) {
            *in_flight = quantity;
        }
        if inner.dirty.get(sku).is_some_and(|w| w.target == quantity) {
            inner.dirty.remove(sku);
        }
    }

    /// Holds `sku` back from `take` for `delay` (it stays queued); with `held` (the value
    /// a channel's budget held back), a target below it ends the wait.
    pub fn defer(&self, sku: &str, delay: std::time::Duration, held: Option<i64>) {
        self.lock()
            .deferred
            .insert(sku.to_string(), (tokio::time::Instant::now() + delay, held));
    }

    /// Whether some queued SKU is held back (its pusher must look again later).
    pub fn has_deferred(&self) -> bool {
        !self.lock().deferred.is_empty()
    }

    /// SKUs waiting (not counting those in flight).
    pub fn len(&self) -> usize {
        self.lock().dirty.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_drained_gives_its_tables_back() {
        let outbox = Outbox::new("c");
        for i in 0..20_000 {
            outbox.offer(&format!("S{i}"), 1, None, 0);
        }
        let slots = |outbox: &Outbox| {
            let inner = outbox.lock();
            (inner.dirty.by_sku.capacity(), inner.in_flight.capacity())
        };
        assert!(slots(&outbox).0 >= 20_000);
        loop {
            let batch = outbox.take(500);
            if batch.is_empty() {
                break;
            }
            outbox.finish(&batch, &vec![true; batch.len()]);
        }
        let (dirty, in_flight) = slots(&outbox);
        assert!(
            dirty < SHRINK_FROM_SLOTS,
            "{dirty} slots kept for an empty queue"
        );
        assert!(in_flight < SHRINK_FROM_SLOTS, "{in_flight}");
    }

    #[test]
    fn latest_wins_low_stock_first_and_one_request_per_sku() {
        let outbox = Outbox::new("c");
        for v in 0..50 {
            outbox.offer("HOT", 100 - v, None, 10 + v as Micros);
        }
        outbox.offer("GONE", 0, None, 5);
        outbox.offer("PLENTY", 500, None, 5);
        assert_eq!(outbox.len(), 3, "50 changes of one SKU are one entry");
        let batch = outbox.take(2);
        let got: Vec<(&str, i64)> = batch.iter().map(|i| (i.sku.as_str(), i.quantity)).collect();
        assert_eq!(
            got,
            vec![("GONE", 0), ("HOT", 51)],
            "stock-outs and low stock first"
        );
        assert_eq!(
            batch[1].caused_at, 10,
            "the oldest coalesced change is timed"
        );

        // While HOT is in flight it is not taken again, even with a newer value.
        outbox.offer("HOT", 40, None, 99);
        let next = outbox.take(10);
        assert_eq!(
            next.iter().map(|i| i.sku.as_str()).collect::<Vec<_>>(),
            vec!["PLENTY"]
        );
        // The request failed: HOT keeps its newer value, GONE is offered again.
        outbox.finish(&batch, &[false, false]);
        let retry = outbox.take(10);
        let got: Vec<(&str, i64)> = retry.iter().map(|i| (i.sku.as_str(), i.quantity)).collect();
        assert_eq!(got, vec![("GONE", 0), ("HOT", 40)]);
        // An offer of the value already in flight is not queued twice.
        outbox.offer("GONE", 0, None, 200);
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_submitted_sku_waits_for_its_submission_unless_its_change_is_urgent() {
        // Urgent: down to 5 units or fewer.
        let outbox = Outbox::new("c").with_urgent(Box::new(|target, _| target <= 5));
        outbox.offer("A", 50, None, 1);
        outbox.offer("B", 40, None, 1);
        let batch = outbox.take(10);
        outbox.submitted(&batch);
        // A non-urgent change waits for the submission; an urgent one goes at once.
        outbox.offer("A", 45, Some(50), 2);
        outbox.offer("B", 0, Some(40), 2);
        assert_eq!(taken(&outbox), vec![("B".to_string(), 0)]);
        assert!(
            outbox.written_since(&batch),
            "B was written during the submission"
        );
        outbox.finish(&[item_of("B", 0)], &[true]);
        // The submission fails for both: A's newer 45 waits already, B's older 40 must
        // not come back over the 0 written since.
        outbox.settle_submission(&batch, &[false, false]);
        assert_eq!(taken(&outbox), vec![("A".to_string(), 45)]);
    }

    fn taken(outbox: &Outbox) -> Vec<(String, i64)> {
        outbox
            .take(10)
            .into_iter()
            .map(|i| (i.sku, i.quantity))
            .collect()
    }

    fn item_of(sku: &str, quantity: i64) -> PushItem {
        PushItem {
            sku: sku.into(),
            quantity,
            expected: None,
            caused_at: 0,
        }
    }
}
