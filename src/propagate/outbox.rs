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
use crate::clock::{now_micros, Micros, MICROS_PER_SECOND};
use crate::config::PushOrder;
use crate::core::{ByChannel, ChannelId, PushWanted};
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
    /// Its place in the push order, as of its latest offer.
    rank: Rank,
    /// A repair: compared with what reconciliation read (`PushWanted::repair`).
    repair: bool,
}

/// The longest a change that shows too many units is given before it is due, however
/// slowly its SKU sells: past it, older changes go before newer riskier ones, so under a
/// budget that never catches up no SKU waits for ever.
const OVERSHOW_WAIT_MAX: Micros = 10 * MICROS_PER_SECOND;
/// What a change that shows fewer units than there are (a lost sale at worst, never an
/// oversell) is given.
const INCREASE_WAIT: Micros = 30 * MICROS_PER_SECOND;

/// Where a waiting SKU stands in its channel's push order: stock-outs first, then by
/// when it is due (earliest first), then the larger overshow, then the older change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    class: u8,
    due: Micros,
    overshow: std::cmp::Reverse<i64>,
    since: Micros,
}

impl Rank {
    /// The rank of a push of `target` to a channel that should show `shown`, for a change
    /// at `caused_at`, offered at `now()` (read only when the rank needs it).
    ///
    /// `Risk`: a stock-out the channel still shows goes before everything. Every other
    /// change is due when the units the channel shows beyond stock would be sold there
    /// at the rate the SKU sells: `(target + 1) / rate` after the change, at most
    /// `OVERSHOW_WAIT_MAX` (earliest deadline first; a slow SKU's change ages into its
    /// turn). The rate is the overshow over the time since the change began waiting (at
    /// least a second): the units sold elsewhere while the channel still showed them,
    /// which needs no history beyond the outbox entry. A level not acknowledged yet is
    /// due after `target + 1` seconds (at most the same cap: low stock first as a
    /// start-up fills the channel); an increase after `INCREASE_WAIT`.
    /// `FirstCome`: the oldest change first.
    fn of(
        order: PushOrder,
        target: i64,
        shown: Option<i64>,
        caused_at: Micros,
        now: impl FnOnce() -> Micros,
    ) -> Rank {
        let overshow = shown.map_or(0, |s| (s - target).max(0));
        let rank = |class, after: Micros| Rank {
            class,
            due: caused_at.saturating_add(after),
            overshow: std::cmp::Reverse(overshow),
            since: caused_at,
        };
        if order == PushOrder::FirstCome {
            return rank(1, 0);
        }
        let left = target.max(0).saturating_add(1);
        match shown {
            _ if target <= 0 && shown.is_none_or(|s| s > 0) => rank(0, 0),
            Some(_) if overshow > 0 => {
                // The clock is read only here: offers come from the shards after every commit.
                let waited = (now() - caused_at).max(MICROS_PER_SECOND);
                // (target + 1) / (overshow / waited), in whole microseconds.
                let sells_out = (left as i128 * waited as i128 / overshow as i128)
                    .min(OVERSHOW_WAIT_MAX as i128) as Micros;
                rank(1, sells_out)
            }
            None => rank(
                1,
                left.min(OVERSHOW_WAIT_MAX / MICROS_PER_SECOND) * MICROS_PER_SECOND,
            ),
            Some(_) => rank(1, INCREASE_WAIT),
        }
    }
}

/// The SKUs waiting, by name and in push order (`Rank`), so `take` walks only the front
/// instead of scanning every waiting SKU under the lock the shards offer through.
#[derive(Default)]
struct Dirty {
    /// Each SKU's wanted value, keyed by the same shared name the order holds, so a
    /// change of target moves it in `order` without allocating (offers come from the
    /// shard threads after every commit).
    by_sku: AHashMap<Arc<str>, Wanted>,
    order: BTreeSet<(Rank, Arc<str>)>,
    /// The same SKUs by the time of the oldest change each waits with, so the console
    /// reads the oldest pending change without a scan under the shards' lock.
    by_age: BTreeSet<(Micros, Arc<str>)>,
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
                let (name, before, since) = (name.clone(), old.rank, old.caused_at);
                if before != wanted.rank {
                    self.order.remove(&(before, name.clone()));
                    self.order.insert((wanted.rank, name.clone()));
                }
                if since != wanted.caused_at {
                    self.by_age.remove(&(since, name.clone()));
                    self.by_age.insert((wanted.caused_at, name.clone()));
                }
                self.by_sku.insert(name, wanted);
            }
            None => {
                let name: Arc<str> = Arc::from(sku);
                self.order.insert((wanted.rank, name.clone()));
                self.by_age.insert((wanted.caused_at, name.clone()));
                self.by_sku.insert(name, wanted);
            }
        }
    }

    fn remove(&mut self, sku: &str) -> Option<Wanted> {
        let (name, wanted) = self.by_sku.remove_entry(sku)?;
        self.order.remove(&(wanted.rank, name.clone()));
        self.by_age.remove(&(wanted.caused_at, name));
        Some(wanted)
    }
}

#[derive(Default)]
struct Inner {
    order: PushOrder,
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
    /// SKUs the channel refused while it took others, with how many times in a row
    /// (`refused`); forgotten when the channel takes the SKU.
    refusals: AHashMap<String, u32>,
}

/// The wait after a SKU's first refusal in a row, doubled after each refusal after it,
/// up to `REFUSED_WAIT_MAX`: a listing the channel will not take costs a call every five
/// minutes, not one of every round.
pub const REFUSED_WAIT_FIRST: std::time::Duration = std::time::Duration::from_secs(2);
const REFUSED_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(300);

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
    /// What `sku` should be shown, ranked in this channel's push order as of now.
    fn wanted(
        &self,
        target: i64,
        expected: Option<i64>,
        caused_at: Micros,
        repair: bool,
    ) -> Wanted {
        Wanted {
            target,
            expected,
            caused_at,
            rank: Rank::of(self.order, target, expected, caused_at, now_micros),
            repair,
        }
    }

    /// Counts a refusal of `item` against its SKU and holds the SKU back for the wait
    /// that count earns (`REFUSED_WAIT_FIRST` doubling to `REFUSED_WAIT_MAX`); returns
    /// (refusals in a row, wait).
    fn count_refusal(
        &mut self,
        item: &PushItem,
        now: tokio::time::Instant,
    ) -> (u32, std::time::Duration) {
        let times = self.refusals.entry(item.sku.clone()).or_insert(0);
        *times = times.saturating_add(1);
        let times = *times;
        let wait = REFUSED_WAIT_FIRST
            .saturating_mul(1 << (times - 1).min(16))
            .min(REFUSED_WAIT_MAX);
        // A lower target offered while the refused push was in flight (fewer units
        // shown: what prevents overselling) is not held back: it goes at once.
        let lower_since = self
            .dirty
            .get(&item.sku)
            .is_some_and(|wanted| wanted.target < item.quantity);
        if !lower_since {
            self.deferred
                .insert(item.sku.clone(), (now + wait, Some(item.quantity)));
        }
        (times, wait)
    }

    /// An item the channel did not take waits again with the value it carried.
    fn offer_again(&mut self, item: &PushItem) {
        let wanted = self.wanted(item.quantity, item.expected, item.caused_at, item.repair);
        self.dirty.insert(&item.sku, wanted);
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
            self.0[push.channel].offer_wanted(push);
        }
    }

    fn caught_up(&self, shown: &[(ChannelId, String)]) {
        for (channel, sku) in shown {
            self.0[*channel].caught_up(sku);
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
        // Served from the start: 0 here, then the depth at every change, the backlog
        // a start offers included (`metrics::register` runs after it, and must not
        // hide that backlog behind a 0 until the outbox next changes).
        metrics::gauge!("lockstep_outbox_skus", "channel" => channel.to_string()).set(0.0);
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

    /// This outbox, ordering what waits by `order`.
    pub fn with_order(self, order: PushOrder) -> Outbox {
        self.lock().order = order;
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
    pub fn offer(&self, sku: &str, target: i64, expected: Option<i64>, caused_at: Micros) {
        self.offer_as(sku, target, expected, caused_at, false);
    }

    /// What a shard's commit asks of this channel (a repair compares with what was read).
    pub fn offer_wanted(&self, push: &PushWanted) {
        let PushWanted {
            sku,
            target,
            expected,
            caused_at,
            repair,
            ..
        } = push;
        self.offer_as(sku, *target, *expected, *caused_at, *repair);
    }

    fn offer_as(
        &self,
        sku: &str,
        target: i64,
        expected: Option<i64>,
        caused_at: Micros,
        repair: bool,
    ) {
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
        let caused_at = match inner.dirty.get(sku) {
            Some(wanted) => wanted.caused_at.min(caused_at),
            // Already on its way with this very value.
            None if inner.in_flight.get(sku) == Some(&target) => return,
            None if inner.submitted.get(sku) == Some(&(target, false)) => return,
            None => caused_at,
        };
        let wanted = inner.wanted(target, expected, caused_at, repair);
        inner.dirty.insert(sku, wanted);
        let depth = inner.dirty.len();
        drop(guard);
        metrics::gauge!("lockstep_outbox_skus", "channel" => self.channel.clone())
            .set(depth as f64);
        self.notify.notify_one();
    }

    /// The channel acknowledged a change that left it showing `sku`'s target (the shard's
    /// state after the acknowledgement): a push still queued for it was offered before
    /// and is out of date, its target and its compare value both (pushed, it would go
    /// stale on its compare and take the channel's sales twice). A repair stays: it
    /// compares with what reconciliation read, which the acknowledgement says nothing
    /// of. In flight and submitted items are the pusher's; only the queue is touched.
    pub fn caught_up(&self, sku: &str) {
        let mut inner = self.lock();
        if inner.dirty.get(sku).is_some_and(|w| !w.repair) {
            inner.dirty.remove(sku);
            self.depth_gauge(inner);
        }
    }

    /// Takes up to `max` SKUs to push, first in the channel's push order (`Rank`).
    pub fn take(&self, max: usize) -> Vec<PushItem> {
        let mut inner = self.lock();
        let Inner {
            order: _,
            dirty,
            in_flight,
            deferred,
            submitted,
            refusals: _,
        } = &mut *inner;
        if !deferred.is_empty() {
            // A hold ends when its time is over, or when what is queued for its SKU is
            // lower than the value it held back (fewer units shown is what prevents an
            // oversell), however that lower value came back to the queue (a new target,
            // or a write of it that failed).
            let now = tokio::time::Instant::now();
            deferred.retain(|sku, (until, held)| {
                let lower = held.is_some_and(|h| dirty.get(sku).is_some_and(|w| w.target < h));
                *until > now && !lower
            });
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
                repair: wanted.repair,
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
            if *ok {
                // Taken, by whatever answer: no longer refused (`refused_waiting`).
                inner.refusals.remove(&item.sku);
            } else if !inner.dirty.contains_key(&item.sku) {
                inner.offer_again(item);
            }
        }
        shrink(&mut inner.in_flight);
        shrink(&mut inner.refusals);
        self.depth_gauge(inner);
    }

    fn depth_gauge(&self, inner: std::sync::MutexGuard<'_, Inner>) {
        let depth = inner.dirty.len();
        drop(inner);
        metrics::gauge!("lockstep_outbox_skus", "channel" => self.channel.clone())
            .set(depth as f64);
    }

    /// Offers again whatever of `items` is still in flight, at the quantity in flight: a
    /// pusher's round that ended without settling them (a panic while answering) would
    /// otherwise hold their SKUs out of every later batch. What the round settled is no
    /// longer in flight and is left as it is.
    pub fn release_unsettled(&self, items: &[PushItem]) {
        let mut inner = self.lock();
        let mut released = false;
        for item in items {
            let Some(quantity) = inner.in_flight.remove(&item.sku) else {
                continue;
            };
            released = true;
            if !inner.dirty.contains_key(&item.sku) {
                let again = PushItem {
                    quantity,
                    ..item.clone()
                };
                inner.offer_again(&again);
            }
        }
        if released {
            self.depth_gauge(inner);
            self.notify.notify_one();
        }
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
    /// it did not are offered again, unless a newer target came meanwhile. `refused[i]`
    /// says the channel processed `items[i]` and refused it: offered again, it is held
    /// back as `refused` holds a direct push's refusal (while the channel takes others,
    /// `taking`; else only for `REFUSED_WAIT_FIRST`), under the same lock, so the pusher
    /// never takes it between its offer and its hold. One with a newer target is not
    /// held: its refusal said nothing of that value. Returns the refusals counted: (SKU,
    /// in a row, wait).
    pub fn settle_submission(
        &self,
        items: &[PushItem],
        acked: &[bool],
        refused: &[bool],
        taking: bool,
    ) -> Vec<(String, u32, std::time::Duration)> {
        // One flag of each per item: a short slice would leave items "submitted" for good.
        assert!(
            acked.len() == items.len() && refused.len() == items.len(),
            "settle_submission: {} items, {} acked flags, {} refused flags",
            items.len(),
            acked.len(),
            refused.len()
        );
        let mut inner = self.lock();
        let now = tokio::time::Instant::now();
        let mut held = Vec::new();
        for ((item, ok), refused) in items.iter().zip(acked).zip(refused) {
            // A SKU written directly meanwhile (urgent) was sent a newer value, and one
            // with a newer target waits with it: neither gets the submission's older one.
            let written = inner.submitted.remove(&item.sku).is_some_and(|(_, w)| w);
            let newer = written
                || inner.in_flight.contains_key(&item.sku)
                || inner.dirty.contains_key(&item.sku);
            if *ok {
                inner.refusals.remove(&item.sku);
            }
            if !ok && !newer {
                match (refused, taking) {
                    (true, true) => {
                        let (times, wait) = inner.count_refusal(item, now);
                        held.push((item.sku.clone(), times, wait));
                    }
                    (true, false) => {
                        inner.deferred.insert(
                            item.sku.clone(),
                            (now + REFUSED_WAIT_FIRST, Some(item.quantity)),
                        );
                    }
                    (false, _) => {}
                }
                inner.offer_again(item);
            }
        }
        shrink(&mut inner.submitted);
        shrink(&mut inner.refusals);
        self.depth_gauge(inner);
        self.notify.notify_one();
        held
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

    /// The items of an answer while the channel takes others (the pusher's
    /// `hold_refused` says when): each one it did not take (`acked` false: a listing the
    /// channel refuses) is held back from `take`, twice as long as after its refusal
    /// before (`REFUSED_WAIT_FIRST` to `REFUSED_WAIT_MAX`), or until its target falls
    /// below the refused quantity; each one it took is forgotten. A refused SKU kept its
    /// place at the head of the queue, so on a channel written one listing per call it
    /// was the only one pushed, round after round. Returns the SKUs refused, with their
    /// refusals in a row and the wait.
    pub fn refused(
        &self,
        items: &[PushItem],
        acked: &[bool],
    ) -> Vec<(String, u32, std::time::Duration)> {
        let mut inner = self.lock();
        let now = tokio::time::Instant::now();
        let mut held = Vec::new();
        for (item, ok) in items.iter().zip(acked) {
            if *ok {
                inner.refusals.remove(&item.sku);
                continue;
            }
            let (times, wait) = inner.count_refusal(item, now);
            held.push((item.sku.clone(), times, wait));
        }
        shrink(&mut inner.refusals);
        held
    }

    /// The queued SKUs the channel refused the last time they were pushed (`refused`), how
    /// many, and the first `names_max` by name: what an operator must look at on the
    /// channel (a deleted or unmapped listing), since lockstep only waits and tries again.
    /// (In flight, a SKU is not counted: its answer decides.) The first names in
    /// alphabetical order, chosen without sorting them all: the console asks every second.
    pub fn refused_waiting(&self, names_max: usize) -> (usize, Vec<String>) {
        let inner = self.lock();
        let mut names: Vec<&String> = inner
            .refusals
            .keys()
            .filter(|sku| inner.dirty.get(sku.as_str()).is_some())
            .collect();
        let count = names.len();
        if names.len() > names_max && names_max > 0 {
            names.select_nth_unstable(names_max - 1);
        }
        names.truncate(names_max);
        names.sort_unstable();
        (count, names.into_iter().cloned().collect())
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

    /// When the oldest change still waiting here happened.
    pub fn oldest_waiting(&self) -> Option<Micros> {
        self.lock().dirty.by_age.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused SKU waits twice as long after each refusal in a row, from the first
    /// wait again once the channel took it; a lower target offered while the refused
    /// push was in flight goes at once.
    #[test]
    fn a_refused_sku_waits_longer_each_time_but_not_over_a_lower_target() {
        let outbox = Outbox::new("c");
        outbox.offer("A", 5, None, 1);
        let batch = outbox.take(10);
        outbox.finish(&batch, &[false]);
        let waits = |acked: bool| -> Vec<(String, u32, u64)> {
            outbox
                .refused(&batch, &[acked])
                .into_iter()
                .map(|(sku, times, wait)| (sku, times, wait.as_secs()))
                .collect()
        };
        assert_eq!(waits(false), [("A".to_string(), 1, 2)]);
        assert!(outbox.take(10).is_empty(), "held back");
        assert_eq!(waits(false), [("A".to_string(), 2, 4)]);
        assert_eq!(waits(true), []);
        assert_eq!(waits(false), [("A".to_string(), 1, 2)]);

        outbox.offer("B", 5, None, 1);
        let batch = outbox.take(10);
        assert_eq!(batch[0].sku, "B");
        outbox.offer("B", 0, None, 2);
        outbox.finish(&batch, &[false]);
        assert_eq!(outbox.refused(&batch, &[false]).len(), 1, "counted");
        let again = outbox.take(10);
        assert_eq!(
            again
                .iter()
                .map(|i| (i.sku.as_str(), i.quantity))
                .collect::<Vec<_>>(),
            [("B", 0)],
            "the lower target is not held back"
        );
    }

    #[test]
    fn refused_skus_are_the_queued_ones_not_taken_since_first_names_in_order() {
        let outbox = Outbox::new("c");
        for i in 0..15 {
            outbox.offer(&format!("S{i}"), 5, None, 1);
        }
        let batch = outbox.take(20);
        let none = vec![false; batch.len()];
        outbox.finish(&batch, &none);
        outbox.refused(&batch, &none);
        let (count, names) = outbox.refused_waiting(10);
        assert_eq!(count, 15);
        assert_eq!(
            names,
            ["S0", "S1", "S10", "S11", "S12", "S13", "S14", "S2", "S3", "S4"]
        );
        // S0 taken by a later answer (a contended one, say: not through `refused`).
        let s0 = batch.iter().find(|i| i.sku == "S0").unwrap().clone();
        outbox.finish(&[s0], &[true]);
        let (count, names) = outbox.refused_waiting(3);
        assert_eq!(
            (count, names),
            (14, vec!["S1".into(), "S10".into(), "S11".into()])
        );
    }

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
    fn what_a_round_took_and_did_not_settle_is_offered_again_at_its_quantity_in_flight() {
        let outbox = Outbox::new("c");
        for (sku, target) in [("A", 1), ("B", 2), ("C", 3)] {
            outbox.offer(sku, target, None, 1);
        }
        let batch = outbox.take(10);
        assert_eq!(batch.len(), 3);
        // A was settled; B's resend was retargeted; then the round ended (a panic).
        outbox.finish(&batch[..1], &[true]);
        outbox.retarget("B", 5);
        outbox.release_unsettled(&batch);
        let retaken = outbox.take(10);
        let mut again: Vec<(String, i64)> = retaken
            .iter()
            .map(|i| (i.sku.clone(), i.quantity))
            .collect();
        again.sort();
        assert_eq!(again, [("B".to_string(), 5), ("C".to_string(), 3)]);
        // Once settled, a release of the same items offers nothing.
        outbox.finish(&retaken, &vec![true; retaken.len()]);
        outbox.release_unsettled(&batch);
        assert!(outbox.take(10).is_empty());
    }

    #[test]
    fn an_acknowledged_change_drops_what_is_queued_but_never_a_repair() {
        let outbox = Outbox::new("c");
        outbox.offer("A", 7, Some(8), 1);
        let rules = crate::core::ChannelRules::new(vec![crate::core::ChannelRule {
            name: "c".into(),
            buffer: 0,
            max: None,
            inventory_updates: Default::default(),
            compare_and_set: true,
        }]);
        let repair = PushWanted {
            channel: rules.id_of("c").expect("configured"),
            sku: "B".into(),
            target: 8,
            expected: Some(12),
            caused_at: 1,
            repair: true,
        };
        outbox.offer_wanted(&repair);
        outbox.caught_up("A");
        outbox.caught_up("B");
        outbox.caught_up("C");
        let batch = outbox.take(10);
        let skus: Vec<&str> = batch.iter().map(|i| i.sku.as_str()).collect();
        assert_eq!(skus, ["B"]);
        assert!(batch[0].repair);
        assert_eq!(batch[0].change(), None, "compared with a level read");
    }

    #[test]
    fn the_oldest_waiting_change_is_known_as_entries_come_and_go() {
        let outbox = Outbox::new("c");
        assert_eq!(outbox.oldest_waiting(), None);
        outbox.offer("A", 5, None, 300);
        outbox.offer("B", 0, None, 200);
        // A later change of B keeps its first time: B still waits since 200.
        outbox.offer("B", 1, None, 400);
        assert_eq!(outbox.oldest_waiting(), Some(200));
        // One is taken (whichever the push order puts first); the other still waits.
        let batch = outbox.take(1);
        let left = if batch[0].sku == "B" { 300 } else { 200 };
        assert_eq!(outbox.oldest_waiting(), Some(left));
        // The other taken too: nothing waits.
        outbox.take(10);
        assert_eq!(outbox.oldest_waiting(), None);
    }

    #[test]
    fn latest_wins_low_stock_first_and_one_request_per_sku() {
        let outbox = Outbox::new("c");
        for v in 0..45 {
            outbox.offer("HOT", 50 - v, None, 10 + v as Micros);
        }
        outbox.offer("GONE", 0, None, 5);
        outbox.offer("PLENTY", 500, None, 5);
        assert_eq!(outbox.len(), 3, "45 changes of one SKU are one entry");
        let batch = outbox.take(2);
        let got: Vec<(&str, i64)> = batch.iter().map(|i| (i.sku.as_str(), i.quantity)).collect();
        assert_eq!(
            got,
            vec![("GONE", 0), ("HOT", 6)],
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
        outbox.settle_submission(&batch, &[false, false], &[false, false], false);
        assert_eq!(taken(&outbox), vec![("A".to_string(), 45)]);
    }

    #[test]
    fn a_processed_submission_holds_what_it_refused_not_a_sku_written_since() {
        let outbox = Outbox::new("c").with_urgent(Box::new(|target, _| target <= 5));
        outbox.offer("A", 20, None, 1);
        outbox.offer("B", 30, None, 1);
        let batch = outbox.take(10);
        outbox.submitted(&batch);
        // A's stock-out goes directly while the submission is processed.
        outbox.offer("A", 3, Some(20), 2);
        let direct = outbox.take(10);
        assert_eq!(direct.len(), 1);
        // Processed, applying neither: B's refusal is counted and B held; A's said
        // nothing of the 3 on its way, so A is neither.
        let counted = outbox.settle_submission(&batch, &[false, false], &[true, true], true);
        let skus: Vec<&str> = counted.iter().map(|(sku, _, _)| sku.as_str()).collect();
        assert_eq!(skus, ["B"]);
        // The direct write fails: A's 3 comes back and goes at once; B waits.
        outbox.finish(&direct, &[false]);
        assert_eq!(taken(&outbox), vec![("A".to_string(), 3)]);
        assert_eq!(outbox.refused_waiting(10), (1, vec!["B".to_string()]));
    }

    #[test]
    fn under_risk_stock_outs_go_first_then_what_sells_out_soonest() {
        let now = now_micros();
        let ago = |s: i64| now - s * MICROS_PER_SECOND;
        let offer_all = |outbox: &Outbox| {
            // Oldest first; all but the last two began waiting 3 s ago.
            outbox.offer("MORE", 30, Some(20), ago(4));
            outbox.offer("SLOW", 495, Some(500), ago(3));
            outbox.offer("HOT-FEW", 3, Some(9), ago(3) + 1);
            outbox.offer("HOT-MANY", 40, Some(46), ago(3) + 2);
            outbox.offer("GONE", 0, Some(2), ago(1));
            outbox.offer("NEW", 3, None, ago(1));
        };
        let names = |outbox: &Outbox| {
            outbox
                .take(10)
                .into_iter()
                .map(|i| i.sku)
                .collect::<Vec<_>>()
        };
        let risk = Outbox::new("c");
        offer_all(&risk);
        assert_eq!(
            names(&risk),
            vec!["GONE", "HOT-FEW", "NEW", "SLOW", "HOT-MANY", "MORE"],
            "a stock-out; 4 left selling 2/s (due 1 s ago); unknown, 4 left (due in 3 s); \
             then two at the 10 s cap, in the order they came; an increase last"
        );
        let first_come = Outbox::new("c").with_order(PushOrder::FirstCome);
        offer_all(&first_come);
        assert_eq!(
            names(&first_come),
            vec!["MORE", "SLOW", "HOT-FEW", "HOT-MANY", "GONE", "NEW"]
        );
    }

    #[test]
    fn a_slow_change_ages_into_its_turn_before_newer_riskier_ones() {
        let now = now_micros();
        let outbox = Outbox::new("c");
        // Waiting 12 s, selling slowly: past the cap, so due 2 s ago.
        outbox.offer("OLD", 500, Some(501), now - 12 * MICROS_PER_SECOND);
        // Hot and low, just now: due within a second.
        outbox.offer("HOT", 2, Some(4), now);
        let order: Vec<String> = outbox.take(2).into_iter().map(|i| i.sku).collect();
        assert_eq!(order, vec!["OLD", "HOT"]);
    }

    #[test]
    fn a_sku_that_sells_on_while_it_waits_moves_up() {
        let now = now_micros();
        let outbox = Outbox::new("c");
        // Both 5 left and waiting 2 s: A shows 2 beyond (due in 4 s), B 3 (due in 2 s).
        outbox.offer("A", 5, Some(7), now - 2 * MICROS_PER_SECOND);
        outbox.offer("B", 5, Some(8), now - 2 * MICROS_PER_SECOND);
        // A sells 4 more while it waits: 1 left, 6 shown beyond it, due a second ago.
        outbox.offer("A", 1, Some(7), now);
        let order: Vec<String> = outbox.take(2).into_iter().map(|i| i.sku).collect();
        assert_eq!(order, vec!["A", "B"]);
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
            repair: false,
        }
    }
}
