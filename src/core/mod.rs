//! The pure core: `apply(state, batch, now) -> effects`. No I/O, no clock.
//!
//! Given a shard's SKU states and a batch of events (each with the first result of its
//! idempotency key, if the key was seen before), it updates the states and returns what
//! the shard thread must do: log records to append, state rows to write, idempotency
//! entries to keep, the answers to send, the pushes to offer the outboxes (through the
//! engine's sink: every push, reconciliation's repairs too), and when pending levels
//! settle. The shard thread performs them.
//!
//! The stock rules are DESIGN §2:
//! - `on_hand = latest count + Σ movements at or after the count's time` (a movement at
//!   exactly the count's time comes after it); counts compare by (ts, source, key).
//! - `committed = Σ over order lines whose placement was seen of max(0, placed - released
//!   - shipped)`: a release or shipment that comes first is *held* and netted later.
//! - Both are functions of the set of events, not of their arrival order, as long as no
//!   count is older than the horizon (such a count is stale and rejected).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use ahash::AHashMap;

pub mod channels;
pub mod compact;
pub mod event;
pub mod records;
pub mod skus;

pub use channels::{ByChannel, ChannelId, ChannelRule, ChannelRules, InventoryUpdates};
pub use compact::{LatestCount, View};
pub use skus::ShardState;

use crate::clock::Micros;
use event::{Event, EventKind, EventResult, FirstResult, Outcome};
use records::{
    ChannelMark, CountMark, DeltaRecord, HeadRecord, LineRecord, LogRecord, PendingLevel,
};

/// A SKU's on_hand movements by (source time, sequence number).
pub type Movements = BTreeMap<(Micros, u64), DeltaRecord>;

/// Tunables of the core, from the config.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Movements older than this are folded into the base, and counts older than this are
    /// stale. DESIGN §2: 72 h by default, longer than any channel's delivery delay.
    pub horizon_us: Micros,
    /// The channels, in config order: what each is shown of a SKU.
    pub channels: ChannelRules,
    /// Idempotency keys first seen before this may have been forgotten: the shard's
    /// key-expiry clock less the keys' retention, or where its sweep has forgotten keys
    /// to if that is later (a retention raised since), set before each batch (`Shard`).
    /// The default, `Micros::MIN` (replay, tools): none, so nothing is judged by it.
    pub forgotten_before: Micros,
    /// Per channel (by id), when its keys began to be kept: the first settings era that
    /// named it. Nothing of a channel can have been forgotten before its keys were kept
    /// for the whole retention, so until then none of its facts is judged. Missing: from
    /// the beginning.
    pub channels_since: Vec<Micros>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            horizon_us: 72 * crate::clock::MICROS_PER_HOUR,
            channels: ChannelRules::default(),
            forgotten_before: Micros::MIN,
            channels_since: Vec::new(),
        }
    }
}

/// How long a differing level waits in `delta` mode for late order webhooks (DESIGN §2).
pub const SETTLE_WINDOW_US: Micros = 10 * crate::clock::MICROS_PER_SECOND;

/// The settlement events due for a SKU at `now`: one per channel whose pending level's
/// window has closed. The shard applies them like any event.
pub fn settlements_due(
    sku_name: &str,
    sku: &SkuState,
    rules: &ChannelRules,
    now: Micros,
) -> Vec<Event> {
    rules
        .iter()
        .filter_map(|(id, rule)| {
            let view = sku.view(id)?;
            let pending = view.pending().filter(|p| p.settles_at <= now)?;
            // The part of the level no order explained. Carried in the event itself, so
            // the log alone (replay) applies the same adjustment.
            Some(Event {
                sku: sku_name.to_string(),
                kind: EventKind::LevelSettled,
                qty: pending.level - pending.expected_at,
                source: rule.name.clone(),
                source_ts: pending.at,
                received_at: now,
                key: format!("settle/{}/{}", rule.name, pending.seq),
                line: None,
                origin: None,
            })
        })
        .collect()
}

/// Whether applying `event` needs its SKU's movements in memory: a count sets on_hand
/// to its quantity plus the movements after it, and drops those before it. The shard
/// loads them before the batch (they are otherwise in storage only).
pub fn needs_movements(event: &Event, config: &CoreConfig) -> bool {
    match event.kind {
        EventKind::Counted | EventKind::CountedAvailable => true,
        EventKind::Level => config
            .channels
            .named(&event.source)
            .is_some_and(|r| r.inventory_updates == InventoryUpdates::Count),
        _ => false,
    }
}

/// Whether a SKU whose oldest kept movement is at `oldest` is due a fold at `now`: once
/// it is older than the horizon by an eighth more, so that loading a SKU's movements to
/// fold them happens about once per eighth of a horizon, not at every event.
pub fn fold_due(oldest: Micros, now: Micros, config: &CoreConfig) -> bool {
    oldest < now - config.horizon_us - config.horizon_us / 8
}

/// When the earliest pending level of a SKU settles, if it has one.
pub fn next_settlement(sku: &SkuState) -> Option<Micros> {
    sku.channels
        .iter()
        .filter_map(View::pending)
        .map(|p| p.settles_at)
        .min()
}

impl ChannelRule {
    /// What to push the channel as of `now`: its target, less the units it was read
    /// showing short that its own late orders have not explained yet (they are sales we
    /// will hear of; pushing them back would show units that are gone).
    pub fn push_target(&self, available: i64, view: Option<&View>, now: Micros) -> i64 {
        let shortfall = view.map_or((0, 0), |v| (v.unexplained(), v.unexplained_until()));
        self.push_target_less(available, shortfall, now)
    }

    /// `push_target` for a view as stored (reconciliation reads heads).
    pub fn push_target_stored(
        &self,
        available: i64,
        view: Option<&records::ChannelView>,
        now: Micros,
    ) -> i64 {
        let shortfall = view.map_or((0, 0), |v| (v.unexplained, v.unexplained_until));
        self.push_target_less(available, shortfall, now)
    }

    /// The target less an `(unexplained, until)` shortfall still open at `now`.
    fn push_target_less(
        &self,
        available: i64,
        (unexplained, until): (i64, Micros),
        now: Micros,
    ) -> i64 {
        // Only a shortfall lowers the push: an excess (a restock we have not heard of) is
        // never shown before its event arrives.
        let unexplained = if now < until { unexplained.max(0) } else { 0 };
        (self.target(available) - unexplained).max(0)
    }
}

/// What to push a channel that a compare-and-set found showing `level` where we expected
/// `expected`, instead of `target`: a shortfall is the channel's own sales whose webhooks
/// are on their way, most likely; they are gone, so they come off the push (the audit's
/// `StaleRead` makes the shard net those orders when they come, see `stale_read`). An
/// excess is never shown before its event arrives.
pub fn target_after_read(target: i64, expected: i64, level: i64) -> i64 {
    // Saturating: `level` is the channel's number, any i64.
    target
        .saturating_sub(expected.saturating_sub(level).max(0))
        .max(0)
}

/// A quantity a channel should be shown, for the outbox of channel `channel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushWanted {
    /// Which of `CoreConfig::channels`.
    pub channel: ChannelId,
    pub sku: String,
    pub target: i64,
    /// What the channel should be showing now (its last acknowledged value less its own
    /// sales since); `None` before its first acknowledgement. Compare-and-set channels
    /// send it as the compare value.
    pub expected: Option<i64>,
    /// When the change behind it was received.
    pub caused_at: Micros,
    /// A repair: `expected` is the level reconciliation read, not what the channel is
    /// expected to show, so its acknowledgement is that level, never a change from the
    /// expectation, and no acknowledgement drops it from the queue.
    pub repair: bool,
}

/// The pushes a SKU needs: every channel whose expected quantity differs from its target.
pub fn pushes_for(sku_name: &str, sku: &SkuState, rules: &ChannelRules) -> Vec<PushWanted> {
    rules
        .iter()
        .filter_map(|(id, rule)| {
            let view = sku.view(id);
            let target = rule.push_target(sku.available(), view, sku.updated_at);
            // A repair compares with what reconciliation read, and is timed from it: the
            // change behind it may be long past, and was propagated then.
            let repair = sku.repaired().iter().find(|r| r.channel == id);
            let expected = repair.map_or(view.and_then(View::expected), |r| r.shown);
            (expected != Some(target) || sku.recheck().contains(&id)).then(|| PushWanted {
                channel: id,
                sku: sku_name.to_string(),
                target,
                expected,
                caused_at: repair.map_or(sku.changed_at, |r| r.found_at),
                repair: repair.is_some(),
            })
        })
        .collect()
}

/// Everything the engine knows about one SKU.
///
/// The shard holds one per SKU, a million and more, so it is kept small (112 bytes, and
/// 32 per channel view; `tests::what_a_sku_holds_stays_small`): the parts few SKUs hold,
/// or hold only during a batch, are boxed apart (`Rest`), and the latest count and the
/// views are in their compact forms (`compact.rs`).
#[derive(Clone, Debug, Default)]
pub struct SkuState {
    /// on_hand before the kept deltas: the latest count plus folded movements.
    pub base: i64,
    pub count: Option<LatestCount>,
    /// Σ deltas, kept so that on_hand is O(1) on the hot path.
    pub delta_sum: i64,
    /// Σ lines' committed, kept so that available is O(1) on the hot path.
    pub committed: i64,
    /// Sequence number of this SKU's newest log record, duplicates included.
    pub last_seq: u64,
    /// `now` of the last batch that changed the SKU.
    pub updated_at: Micros,
    /// When the event behind the current quantities was received.
    pub changed_at: Micros,
    /// What each channel shows, at its `ChannelId::index`; grown on a channel's first
    /// view (`view`, `channel_mut`), so a SKU no channel has touched keeps none. A boxed
    /// slice, not a vector: no spare capacity, 8 bytes less.
    pub channels: Box<[View]>,
    /// Movements in memory, open lines and this batch's rechecks: `None` exactly while
    /// all of them are empty (`tidy` keeps it so), which is most SKUs between batches.
    rest: Option<Box<Rest>>,
    /// What the shard knows of the SKU's oldest stored movement (`engine::movements`):
    /// a cache of what storage holds, not state, so never stored nor compared.
    stored_oldest: StoredOldest,
}

/// The parts of a SKU's state that most SKUs hold only during a batch, or never.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rest {
    /// Movements newer than the count and the horizon, ordered by (ts, seq), when they are
    /// in memory: `None` while they are in storage only. A shipment is a movement, so a
    /// busy SKU has thousands within the horizon; the shard keeps them in storage and
    /// loads a SKU's before a batch that needs them (a count, a fold: `needs_movements`),
    /// and drops them after it. Only a count and a fold read them; everything else needs
    /// `delta_sum` alone.
    deltas: Option<Movements>,
    /// Open order lines by identity (`Event::line_identity`), and lines a running total
    /// closed (see `retained`).
    lines: AHashMap<String, LineRecord>,
    /// Closed lines kept, by (close time, identity), until the close is older than the
    /// horizon: a channel's running totals can arrive out of order (an older snapshot's
    /// webhook after a newer one, or after the poll), and a line forgotten at its close
    /// would take an older total as new units. Rebuilt from `lines` at load (by their
    /// first time, which is all a stored line keeps: pruned sooner, never later); never
    /// stored.
    retained: BTreeSet<(Micros, String)>,
    /// Channels whose expectation this batch made uncertain (see `OVERWRITE_WINDOW_US`):
    /// they are pushed their target even where it equals the expectation. Cleared once
    /// the batch's pushes are computed; never stored.
    recheck: Vec<ChannelId>,
    /// Channels reconciliation found showing something else in this batch (`Repair`).
    /// Cleared with `recheck`; never stored.
    repaired: Vec<Repair>,
}

/// An empty `Rest`: what a SKU without one has.
static NO_REST: LazyLock<Rest> = LazyLock::new(Rest::default);

/// The oldest stored movement of a SKU as the shard knows it, in 8 bytes: not known yet
/// (look in storage), known to be none, or its time. The two markers are no real time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StoredOldest(Micros);

impl StoredOldest {
    const UNKNOWN: Micros = Micros::MIN;
    const NONE: Micros = Micros::MAX;
}

impl Default for StoredOldest {
    fn default() -> StoredOldest {
        StoredOldest(StoredOldest::UNKNOWN)
    }
}

impl PartialEq for SkuState {
    /// Every part of the state; not the cache of the oldest stored movement. A SKU
    /// without its `Rest` equals one whose `Rest` is empty.
    fn eq(&self, other: &SkuState) -> bool {
        self.base == other.base
            && self.count == other.count
            && self.delta_sum == other.delta_sum
            && self.committed == other.committed
            && self.last_seq == other.last_seq
            && self.updated_at == other.updated_at
            && self.changed_at == other.changed_at
            && self.channels == other.channels
            && self.rest() == other.rest()
    }
}

impl Eq for SkuState {}

/// A channel reconciliation found showing something other than its target: it is pushed
/// its target once more, compared with what was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repair {
    pub channel: ChannelId,
    /// What the channel was read showing (`None`: it does not list the SKU).
    pub shown: Option<i64>,
    /// When the drift was found (`PushWanted::caused_at`).
    pub found_at: Micros,
}

/// Channel `id`'s place in a SKU's views, grown to hold it.
fn view_slot(views: &mut Box<[View]>, id: ChannelId) -> &mut View {
    let i = id.index();
    if views.len() <= i {
        let mut grown = std::mem::take(views).into_vec();
        grown.resize(i + 1, View::default());
        *views = grown.into_boxed_slice();
    }
    &mut views[i]
}

/// A channel's own sale (or restocked return) from less than this after our last
/// acknowledged push, or from before it, may have happened before our absolute write
/// landed and been overwritten by it; subtracting it from the expectation could then
/// leave the channel showing more than its target with no push to fix it. Such a sale
/// makes the channel be pushed its target once more. Covers clock skew between the
/// channel and us, and WooCommerce's whole-second times.
pub const OVERWRITE_WINDOW_US: Micros = 2 * crate::clock::MICROS_PER_SECOND;

/// How long a channel's unexplained shortfall may net its own late orders: longer than
/// its webhooks normally take, short enough that a shortfall that was an edit, not sales,
/// does not linger (propagation checks the SKU again when it closes).
pub const UNEXPLAINED_WINDOW_US: Micros = 15 * crate::clock::MICROS_PER_SECOND;

impl SkuState {
    /// A SKU seen for the first time: no movements anywhere, so they are all in memory.
    pub fn new() -> SkuState {
        let mut sku = SkuState::default();
        sku.rest_mut().deltas = Some(BTreeMap::new());
        sku
    }

    pub fn on_hand(&self) -> i64 {
        self.base + self.delta_sum
    }

    pub fn available(&self) -> i64 {
        self.on_hand() - self.committed
    }

    pub fn head(&self, rules: &ChannelRules) -> HeadRecord {
        HeadRecord {
            base: self.base,
            on_hand: self.on_hand(),
            committed: self.committed,
            count: self.count.as_ref().map(LatestCount::mark),
            last_seq: self.last_seq,
            updated_at: self.updated_at,
            changed_at: self.changed_at,
            channels: rules
                .iter()
                .filter_map(|(id, rule)| Some((rule, self.view(id)?)))
                .filter(|(_, view)| !view.is_default())
                .map(|(rule, view)| ChannelMark {
                    channel: rule.name.clone(),
                    view: view.record(),
                })
                .collect(),
        }
    }

    /// What channel `id` shows, if it has a view yet.
    pub fn view(&self, id: ChannelId) -> Option<&View> {
        self.channels.get(id.index())
    }

    /// The view of channel `id`, created on first use.
    fn channel_mut(&mut self, id: ChannelId) -> &mut View {
        view_slot(&mut self.channels, id)
    }

    fn rest(&self) -> &Rest {
        self.rest.as_deref().unwrap_or(&NO_REST)
    }

    /// The rest, allocated on first use; `tidy` frees it once empty again.
    fn rest_mut(&mut self) -> &mut Rest {
        self.rest.get_or_insert_with(Box::default)
    }

    /// Frees the rest once it holds nothing.
    fn tidy(&mut self) {
        if self.rest.as_deref().is_some_and(|r| *r == *NO_REST) {
            self.rest = None;
        }
    }

    /// The movements, when they are in memory.
    pub fn deltas(&self) -> Option<&Movements> {
        self.rest().deltas.as_ref()
    }

    fn deltas_mut(&mut self) -> Option<&mut Movements> {
        self.rest.as_mut().and_then(|r| r.deltas.as_mut())
    }

    /// Open order lines, and closed ones kept for running totals (see `Rest`).
    pub fn lines(&self) -> &AHashMap<String, LineRecord> {
        &self.rest().lines
    }

    /// Channels this batch made uncertain (see `Rest`).
    pub fn recheck(&self) -> &[ChannelId] {
        &self.rest().recheck
    }

    /// Channels reconciliation found showing something else in this batch.
    pub fn repaired(&self) -> &[Repair] {
        &self.rest().repaired
    }

    /// What the shard knows of the oldest stored movement: `None` when not known yet.
    pub fn stored_oldest(&self) -> Option<Option<Micros>> {
        match self.stored_oldest.0 {
            StoredOldest::UNKNOWN => None,
            StoredOldest::NONE => Some(None),
            ts => Some(Some(ts)),
        }
    }

    /// Notes the oldest stored movement (`None`: there is none).
    pub fn set_stored_oldest(&mut self, oldest: Option<Micros>) {
        self.stored_oldest = StoredOldest(oldest.unwrap_or(StoredOldest::NONE));
    }

    /// Takes a SKU's stored movements into memory (before a batch that needs them),
    /// checking them against the cached sum.
    pub fn load_movements(&mut self, deltas: Movements) -> Result<(), String> {
        let sum = deltas.values().map(|d| d.qty).sum::<i64>();
        if sum != self.delta_sum {
            return Err(format!(
                "stored movements sum to {sum}, the head says {}",
                self.delta_sum
            ));
        }
        self.rest_mut().deltas = Some(deltas);
        Ok(())
    }

    /// Drops the movements from memory (they are in storage); returns the oldest one's
    /// time, which says when the SKU is next due a fold.
    pub fn unload_movements(&mut self) -> Option<Micros> {
        let oldest = self.oldest_movement();
        if let Some(rest) = self.rest.as_mut() {
            rest.deltas = None;
        }
        self.tidy();
        oldest
    }

    /// The time of the oldest movement in memory.
    pub fn oldest_movement(&self) -> Option<Micros> {
        self.deltas()
            .and_then(|d| d.keys().next().map(|(ts, _)| *ts))
    }

    /// Rebuilds a state from its stored parts, checking the cached sums against their
    /// sources (the read side of the pair of assertions around every write). Movements
    /// stay in storage: their sum is on_hand less the base.
    pub fn from_parts(
        head: HeadRecord,
        lines: AHashMap<String, LineRecord>,
        rules: &ChannelRules,
    ) -> Result<SkuState, String> {
        let delta_sum = head.on_hand - head.base;
        let committed = lines.values().map(LineRecord::committed).sum::<i64>();
        if committed != head.committed {
            return Err(format!(
                "stored head says committed {}, its open lines sum to {committed}",
                head.committed
            ));
        }
        // Views of channels no longer configured are dropped.
        let mut channels = Box::default();
        for mark in head.channels {
            if let Some(id) = rules.id_of(&mark.channel) {
                *view_slot(&mut channels, id) = View::of(mark.view)?;
            }
        }
        let retained = lines
            .iter()
            .filter(|(_, line)| line.is_closed())
            .map(|(id, line)| (line.first_ts, id.clone()))
            .collect();
        let mut sku = SkuState {
            base: head.base,
            count: head.count.as_ref().map(LatestCount::of),
            delta_sum,
            committed,
            last_seq: head.last_seq,
            updated_at: head.updated_at,
            changed_at: head.changed_at,
            channels,
            rest: Some(Box::new(Rest {
                deltas: None,
                lines,
                retained,
                recheck: Vec::new(),
                repaired: Vec::new(),
            })),
            stored_oldest: StoredOldest::default(),
        };
        sku.tidy();
        Ok(sku)
    }

    /// The invariants every state must hold; checked after each event in tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let committed = self
            .lines()
            .values()
            .map(LineRecord::committed)
            .sum::<i64>();
        let deltas = self.deltas();
        let delta_sum = deltas.map_or(self.delta_sum, |d| d.values().map(|d| d.qty).sum());
        if delta_sum != self.delta_sum {
            return Err(format!(
                "delta_sum {} != Σ deltas {delta_sum}",
                self.delta_sum
            ));
        }
        if committed != self.committed {
            return Err(format!(
                "committed {} != Σ lines {committed}",
                self.committed
            ));
        }
        if self.committed < 0 {
            return Err(format!("committed is negative: {}", self.committed));
        }
        if let Some(count) = &self.count {
            if let Some(ts) = self.oldest_movement() {
                if ts < count.ts {
                    return Err("a delta older than the latest count is kept".into());
                }
            }
        }
        Ok(())
    }
}

/// Re-aligns every SKU's channel views from the rules `from` to the rules `to`, by
/// channel name (as `SkuState::from_parts` does): a view of a channel `to` lacks is
/// dropped, a channel new in `to` starts with no view. For `replay`, across a change of
/// settings.
pub fn realign_channels(state: &mut ShardState, from: &ChannelRules, to: &ChannelRules) {
    for sku in state.values_mut() {
        let mut old = std::mem::take(&mut sku.channels).into_vec().into_iter();
        for (_, rule) in from.iter() {
            let Some(view) = old.next() else { break };
            if let Some(id) = to.id_of(&rule.name) {
                *sku.channel_mut(id) = view;
            }
        }
    }
}

/// One event of a batch, with what the idempotency store knows of its key.
#[derive(Clone, Debug)]
pub struct Input {
    pub event: Event,
    /// The first result of this key, if it was seen in an earlier batch.
    pub prior: Option<FirstResult>,
}

/// A row of SKU state to write (`None` removes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateWrite {
    Head {
        sku: String,
        head: HeadRecord,
    },
    Line {
        sku: String,
        id: String,
        line: Option<LineRecord>,
    },
    Delta {
        sku: String,
        ts: Micros,
        seq: u64,
        delta: Option<DeltaRecord>,
    },
}

/// An idempotency key's first use: whose key it is (the SKU and the event's source, see
/// `store::keys::key_hash`), the key, and what its event answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstUse {
    pub sku: String,
    pub source: String,
    pub key: String,
    pub first: FirstResult,
}

impl FirstUse {
    fn of(event: &Event, first: FirstResult) -> FirstUse {
        FirstUse {
            sku: event.sku.clone(),
            source: event.source.clone(),
            key: event.key.clone(),
            first,
        }
    }
}

/// Keys first seen in a batch, by (SKU, source, key), so that duplicates inside one batch
/// are caught too.
type SeenKeys<'a> = AHashMap<(&'a str, &'a str, &'a str), FirstResult>;

/// The identity of an event's key within a batch (`SeenKeys`).
fn seen_key(event: &Event) -> (&str, &str, &str) {
    (&event.sku, &event.source, &event.key)
}

/// What the shard thread must do after `apply`, in this order: write `records`,
/// `first_results` and `writes` in one atomic batch, make it durable, then answer with
/// `results` (one per input, in input order).
#[derive(Debug, Default)]
pub struct Effects {
    /// One per input, in input order, with consecutive sequence numbers.
    pub records: Vec<LogRecord>,
    pub results: Vec<EventResult>,
    /// New idempotency entries, one per key first seen in the batch.
    pub first_results: Vec<FirstUse>,
    pub writes: Vec<StateWrite>,
    /// How many placements found less available than they asked for.
    pub oversells: u64,
    /// Quantities channels should now be shown; handed to the outboxes after the commit.
    pub pushes: Vec<PushWanted>,
    /// (channel, SKU): an acknowledged change (`PushedChange`) left the channel expected
    /// to show its target. A push still queued for it from before is out of date (its
    /// target and compare value both): the outbox drops it, unless it is a repair.
    pub caught_up: Vec<(ChannelId, String)>,
    /// SKUs with a pending level, and when it settles.
    pub settlements: Vec<(Micros, String)>,
}

/// Applies a batch. `first_seq` is the sequence number of the batch's first record; each
/// input gets the next one, so records and inputs correspond one to one.
pub fn apply(
    state: &mut ShardState,
    batch: &[Input],
    now: Micros,
    first_seq: u64,
    config: &CoreConfig,
) -> Effects {
    let mut effects = Effects::default();
    let mut seen = SeenKeys::new();
    // SKU → line ids touched in this batch; their final rows (and the SKU's head) are
    // written once at the end.
    let mut touched: AHashMap<&str, Vec<String>> = AHashMap::new();
    // SKU → channels that acknowledged a change in this batch.
    let mut acknowledged: AHashMap<&str, Vec<ChannelId>> = AHashMap::new();
    let horizon_cut = now - config.horizon_us;

    for (i, input) in batch.iter().enumerate() {
        let event = &input.event;
        let seq = first_seq + i as u64;
        let prior = input.prior.or_else(|| seen.get(&seen_key(event)).copied());
        if event.kind == EventKind::Unmapped {
            // Names no SKU of ours: a record, and no state (it must not become a SKU that
            // channels are pushed).
            record_unmapped(event, seq, prior, now, &mut seen, &mut effects);
            continue;
        }
        let sku = state.get_or_insert_with(&event.sku, SkuState::new);
        let before = sku.available();
        let prev_seq = sku.last_seq;
        let lines_touched = touched.entry(event.sku.as_str()).or_default();
        // Only an acknowledged change: a level (`Pushed`) forgets the channel's own events
        // after the write landed that were taken before it, which the queued push repairs.
        if event.kind == EventKind::PushedChange && prior.is_none() {
            if let Some(channel) = config.channels.id_of(&event.source) {
                acknowledged
                    .entry(event.sku.as_str())
                    .or_default()
                    .push(channel);
            }
        }

        let (outcome, first_outcome, oversell, reported) = match prior {
            Some(first) => (
                Outcome::Duplicate,
                Some(first.outcome),
                first.oversell,
                (first.on_hand, first.committed, first.available),
            ),
            None => {
                let (outcome, oversell) = apply_event(
                    sku,
                    event,
                    seq,
                    horizon_cut,
                    config,
                    &mut effects.writes,
                    lines_touched,
                );
                sku.updated_at = now;
                // The start of the propagation time of whatever this makes us push.
                let moved = match outcome {
                    Outcome::Applied => event.kind.changes_stock(),
                    Outcome::Held => event.kind.is_order_line(),
                    _ => false,
                };
                if moved {
                    sku.changed_at = event.received_at;
                }
                effects.oversells += u64::from(oversell);
                let first = FirstResult {
                    outcome,
                    oversell,
                    on_hand: sku.on_hand(),
                    committed: sku.committed,
                    available: sku.available(),
                    seq,
                };
                // Acknowledgements are internal: they need no idempotency key.
                if !event.kind.is_acknowledgement() {
                    seen.insert(seen_key(event), first);
                    effects.first_results.push(FirstUse::of(event, first));
                }
                (
                    outcome,
                    None,
                    oversell,
                    (sku.on_hand(), sku.committed, sku.available()),
                )
            }
        };
        // Every record of a SKU, duplicates included, links to the one before it: the
        // audit walks this chain instead of keeping an index.
        sku.last_seq = seq;
        debug_assert!(sku.committed >= 0, "committed went negative");

        effects.records.push(log_record(
            event,
            (seq, prev_seq, now),
            Taken {
                outcome,
                oversell: oversell && outcome != Outcome::Duplicate,
                available_before: before,
                on_hand_after: sku.on_hand(),
                committed_after: sku.committed,
            },
        ));
        effects.results.push(EventResult {
            key: event.key.clone(),
            sku: event.sku.clone(),
            outcome,
            first_outcome,
            oversell,
            on_hand: reported.0,
            committed: reported.1,
            available: reported.2,
            seq: prior.map_or(seq, |p| p.seq),
        });
    }

    for (sku_name, line_ids) in touched {
        let Some(sku) = state.get_mut(sku_name) else {
            continue;
        };
        // Only when the oldest is due, the same rule the shard loads movements by: so the
        // state is the same whether its movements were in memory (replay) or not.
        if sku
            .oldest_movement()
            .is_some_and(|ts| fold_due(ts, now, config))
        {
            fold_before(sku, horizon_cut, sku_name, &mut effects.writes);
        }
        // Closed lines a running total kept, once older than the horizon: no delivery is
        // that late (DESIGN §2), and the key store still catches redeliveries.
        while let Some(oldest) = sku
            .rest()
            .retained
            .first()
            .filter(|(ts, _)| *ts < horizon_cut)
        {
            let (_, id) = oldest.clone();
            let rest = sku.rest_mut();
            rest.retained.pop_first();
            if rest.lines.get(&id).is_some_and(LineRecord::is_closed) {
                rest.lines.remove(&id);
                effects.writes.push(StateWrite::Line {
                    sku: sku_name.to_string(),
                    id,
                    line: None,
                });
            }
        }
        for id in line_ids {
            // Held lines whose placement never came within the horizon are dropped: they
            // hold nothing in `committed`, and the key store still catches redeliveries.
            let expired = sku
                .lines()
                .get(&id)
                .is_some_and(|l| l.placed.is_none() && l.first_ts < horizon_cut);
            if expired {
                sku.rest_mut().lines.remove(&id);
            }
            let line = sku.lines().get(&id).cloned();
            effects.writes.push(StateWrite::Line {
                sku: sku_name.to_string(),
                id,
                line,
            });
        }
        effects.writes.push(StateWrite::Head {
            sku: sku_name.to_string(),
            head: sku.head(&config.channels),
        });
        let pushes = pushes_for(sku_name, sku, &config.channels);
        // Most batches acknowledge no change: no lookup per SKU then.
        if let Some(mut acked_by) = (!acknowledged.is_empty())
            .then(|| acknowledged.remove(sku_name))
            .flatten()
        {
            acked_by.sort_unstable();
            acked_by.dedup();
            for channel in acked_by {
                if !pushes.iter().any(|p| p.channel == channel) {
                    effects.caught_up.push((channel, sku_name.to_string()));
                }
            }
        }
        effects.pushes.extend(pushes);
        if let Some(rest) = sku.rest.as_mut() {
            rest.recheck.clear();
            rest.repaired.clear();
        }
        sku.tidy();
        if let Some(due) = next_settlement(sku) {
            effects.settlements.push((due, sku_name.to_string()));
        }
    }
    effects
}

/// Nets a change of what a channel shows by itself (`change` > 0: it shows fewer, a sale;
/// < 0: more, a release or return) against the same-signed unexplained difference it was
/// read with: the change is explained now. Returns the part that must not change
/// `expected` again: all of it once a write of ours since the read has overwritten those
/// units on the channel, none before (the channel still shows the change, as after any
/// sale, and `expected` follows it; netting it then would leave `expected` above what
/// the channel shows for good, and the next read would take the same units as
/// unexplained again, with no order left to explain them).
fn net_unexplained(view: &mut View, change: i64, received_at: Micros) -> i64 {
    if received_at >= view.unexplained_until() {
        return 0;
    }
    let netted = if change > 0 {
        change.min(view.unexplained().max(0))
    } else {
        change.max(view.unexplained().min(0))
    };
    let written_since_read = written_since_read(view);
    view.net(netted);
    if written_since_read {
        netted
    } else {
        0
    }
}

/// Whether a write of ours was acknowledged after the channel's last read that found an
/// unexplained difference (the read's time is its window's start).
fn written_since_read(view: &View) -> bool {
    view.acked_at() > view.unexplained_until() - UNEXPLAINED_WINDOW_US
}

/// Whether a channel's own sale (or return) at `ts` may have been overwritten by our last
/// acknowledged write (see `OVERWRITE_WINDOW_US`). A compare-and-set write cannot have
/// overwritten it: the sale would have made the compare stale.
fn overwritable(rule: &ChannelRule, view: &View, ts: Micros) -> bool {
    !rule.compare_and_set && view.acked().is_some() && ts < view.acked_at() + OVERWRITE_WINDOW_US
}

/// How an event was taken, for its log record.
struct Taken {
    outcome: Outcome,
    oversell: bool,
    available_before: i64,
    on_hand_after: i64,
    committed_after: i64,
}

/// The log record of `event`, at (seq, the SKU's previous seq, now).
fn log_record(event: &Event, (seq, prev_seq, now): (u64, u64, Micros), taken: Taken) -> LogRecord {
    LogRecord {
        seq,
        prev_seq,
        sku: event.sku.clone(),
        kind: event.kind,
        qty: event.qty,
        source: event.source.clone(),
        source_ts: event.source_ts,
        received_at: event.received_at,
        applied_at: now,
        key: event.key.clone(),
        order_id: event.line.as_ref().map(|l| l.order_id.clone()),
        line_id: event.line.as_ref().map(|l| l.line_id.clone()),
        available_before: taken.available_before,
        available_after: taken.on_hand_after - taken.committed_after,
        on_hand_after: taken.on_hand_after,
        committed_after: taken.committed_after,
        outcome: taken.outcome,
        oversell: taken.oversell,
    }
}

/// Records an `Unmapped` event: outcome `drift` (or `duplicate`), no SKU state touched.
fn record_unmapped<'a>(
    event: &'a Event,
    seq: u64,
    prior: Option<FirstResult>,
    now: Micros,
    seen: &mut SeenKeys<'a>,
    effects: &mut Effects,
) {
    let outcome = if prior.is_some() {
        Outcome::Duplicate
    } else {
        Outcome::Drift
    };
    if prior.is_none() {
        let first = FirstResult {
            outcome,
            oversell: false,
            on_hand: 0,
            committed: 0,
            available: 0,
            seq,
        };
        seen.insert(seen_key(event), first);
        effects.first_results.push(FirstUse::of(event, first));
    }
    let taken = Taken {
        outcome,
        oversell: false,
        available_before: 0,
        on_hand_after: 0,
        committed_after: 0,
    };
    effects
        .records
        .push(log_record(event, (seq, 0, now), taken));
    effects.results.push(EventResult {
        key: event.key.clone(),
        sku: event.sku.clone(),
        outcome,
        first_outcome: prior.map(|p| p.outcome),
        oversell: false,
        on_hand: 0,
        committed: 0,
        available: 0,
        seq: prior.map_or(seq, |p| p.seq),
    });
}

/// One event on its way through `apply_event`: what every event family reads.
#[derive(Clone, Copy)]
struct At<'a> {
    event: &'a Event,
    seq: u64,
    horizon_cut: Micros,
    /// What `forgotten` judges by (`CoreConfig::forgotten_before`, `channels_since`).
    forgetting: (Micros, &'a [Micros]),
    rules: &'a ChannelRules,
    /// The channel the event came from, when it is one of ours.
    own_channel: Option<ChannelId>,
}

/// Applies one event that is not a duplicate, by its family. Returns its outcome and
/// whether it oversold.
fn apply_event(
    sku: &mut SkuState,
    event: &Event,
    seq: u64,
    horizon_cut: Micros,
    config: &CoreConfig,
    writes: &mut Vec<StateWrite>,
    touched_lines: &mut Vec<String>,
) -> (Outcome, bool) {
    let rules = &config.channels;
    let at = At {
        event,
        seq,
        horizon_cut,
        forgetting: (config.forgotten_before, &config.channels_since),
        rules,
        own_channel: rules.id_of(&event.source),
    };
    match event.kind {
        EventKind::Pushed => acknowledged(sku, at),
        EventKind::PushedChange => acknowledged_change(sku, at),
        EventKind::Reconciled => reconciled(sku, at),
        EventKind::Withheld => (Outcome::Drift, false),
        // How a channel shows a SKU sold out: what it was told, for the audit.
        EventKind::OfferingDisabled
        | EventKind::ListingDeactivated
        | EventKind::ListingActivated => (Outcome::Pushed, false),
        EventKind::StaleRead => stale_read(sku, at),
        EventKind::Unmapped => (Outcome::Drift, false),
        EventKind::Level => level(sku, at, writes),
        EventKind::LevelSettled => level_settled(sku, at, writes),
        EventKind::Adjusted | EventKind::Returned => movement(sku, at, writes),
        EventKind::Counted | EventKind::CountedAvailable => count(sku, at, writes),
        EventKind::OrderPlaced
        | EventKind::OrderCancelled
        | EventKind::OrderShipped
        | EventKind::OrderReleasedTotal
        | EventKind::OrderShippedTotal
        | EventKind::OrderPlacedTotal => order_line(sku, at, writes, touched_lines),
    }
}

/// Reconciliation read the channel showing `qty` (-1: not listing the SKU) where it
/// should show its target: pushed once more, compared with what was read. The view's
/// expectation stays: the read may include the channel's own sales whose events are on
/// their way, and those lower the expectation when they come (setting it to the read
/// would count them twice).
fn reconciled(sku: &mut SkuState, at: At<'_>) -> (Outcome, bool) {
    let At {
        event, own_channel, ..
    } = at;
    if let Some(channel) = own_channel {
        let rest = sku.rest_mut();
        rest.recheck.push(channel);
        rest.repaired.push(Repair {
            channel,
            shown: (event.qty >= 0).then_some(event.qty),
            found_at: event.received_at,
        });
    }
    (Outcome::Drift, false)
}

/// A channel acknowledged a push: it shows what it was sent.
fn acknowledged(sku: &mut SkuState, at: At<'_>) -> (Outcome, bool) {
    let At {
        event, own_channel, ..
    } = at;
    if let Some(i) = own_channel {
        sku.channel_mut(i).acknowledge(event.qty, event.source_ts);
    }
    (Outcome::Pushed, false)
}

/// A channel acknowledged a change of `qty` it applied to what it showed (a delta that
/// landed): what it is expected to show moves by `qty`. Set instead to the level the
/// answer gave, the expectation would forget the channel's own sales made after the delta
/// landed whose orders came before its answer (their units would be taken again by the
/// next write); moved, it keeps every order taken so far, before the delta landed or after.
/// One correction: units a read since our last write found missing (`unexplained` > 0, the
/// stale compare's, most likely sales before the delta landed whose orders are still on
/// their way) were not on the channel when the delta landed, and their orders are netted
/// when they come: they come off now. A read that found more than expected (< 0) is
/// forgotten: it counted sales after the delta landed that `expected` already has, or a
/// return still on its way, whose event raises `expected` itself when it comes.
fn acknowledged_change(sku: &mut SkuState, at: At<'_>) -> (Outcome, bool) {
    let At {
        event, own_channel, ..
    } = at;
    let Some(i) = own_channel else {
        return (Outcome::Pushed, false);
    };
    let view = sku.channel_mut(i);
    // A delta is only ever sent from an expectation; without one there is nothing to move
    // (the channel's next read or push finds what it shows).
    let Some(expected) = view.expected() else {
        return (Outcome::Drift, false);
    };
    let read_since_write =
        event.received_at < view.unexplained_until() && !written_since_read(view);
    let missing = if read_since_write {
        view.unexplained().max(0)
    } else {
        0
    };
    if read_since_write && view.unexplained() < 0 {
        view.set_unexplained(0, view.unexplained_until());
    }
    view.acknowledge(expected + event.qty - missing, event.source_ts);
    (Outcome::Pushed, false)
}

/// A read found the channel showing other than we expected (`unexplained`).
fn stale_read(sku: &mut SkuState, at: At<'_>) -> (Outcome, bool) {
    let At {
        event, own_channel, ..
    } = at;
    // The channel was read showing `qty` where we expected something else: its own
    // sales (less) or cancellations and returns (more), most likely, whose
    // webhooks have not come yet (see `unexplained`).
    if let Some(i) = own_channel {
        let view = sku.channel_mut(i);
        // Units an earlier read found, that our write since then already left
        // out, are still to be netted when their orders come; without a write
        // in between, this read's difference includes them.
        let active = event.received_at < view.unexplained_until();
        let kept = if active && written_since_read(view) {
            view.unexplained()
        } else {
            0
        };
        let unexplained = match (view.expected(), event.qty >= 0) {
            (Some(expected), true) => kept + expected - event.qty,
            _ => 0,
        };
        view.set_unexplained(unexplained, event.received_at + UNEXPLAINED_WINDOW_US);
    }
    (Outcome::Drift, false)
}

/// A channel reports its level: an echo, or an edit handled by `inventory_updates`.
fn level(sku: &mut SkuState, at: At<'_>, writes: &mut Vec<StateWrite>) -> (Outcome, bool) {
    let At {
        event,
        seq,
        horizon_cut,
        rules,
        own_channel,
        ..
    } = at;
    let ts = event.source_ts;
    let Some(i) = own_channel else {
        return (Outcome::Drift, false);
    };
    let rule = rules.get(i);
    let committed = sku.committed;
    // What we are pushing it: a channel can echo our write before the pusher has
    // recorded the acknowledgement, and showing its target needs no repair.
    let target = rule.push_target(sku.available(), sku.view(i), event.received_at);
    let view = sku.channel_mut(i);
    if view.expected() == Some(event.qty) || event.qty == target {
        // Our own push coming back, or the channel's own sale we already counted.
        return (Outcome::Echo, false);
    }
    match (rule.inventory_updates, view.expected()) {
        // lockstep is the master: the next push or reconciliation overwrites it.
        (InventoryUpdates::Ignore, _) | (InventoryUpdates::Delta, None) => (Outcome::Drift, false),
        (InventoryUpdates::Delta, Some(expected)) => {
            view.set_pending(Some(PendingLevel {
                level: event.qty,
                at: ts,
                expected_at: expected,
                settles_at: event.received_at + SETTLE_WINDOW_US,
                seq,
            }));
            (Outcome::Held, false)
        }
        (InventoryUpdates::Count, _) => {
            // The channel shows available less its buffer.
            let mark = CountMark {
                ts,
                source: event.source.clone(),
                key: event.key.clone(),
            };
            if ts < horizon_cut
                || sku
                    .count
                    .as_ref()
                    .is_some_and(|c| mark.order_key() <= c.order_key())
            {
                return (Outcome::Stale, false);
            }
            sku.channel_mut(i).set_expected(Some(event.qty));
            set_count(
                sku,
                &event.sku,
                mark,
                event.qty + rule.buffer + committed,
                writes,
            );
            (Outcome::Applied, false)
        }
    }
}

/// A `delta`-mode level whose window closed: its unexplained part becomes a movement.
fn level_settled(sku: &mut SkuState, at: At<'_>, writes: &mut Vec<StateWrite>) -> (Outcome, bool) {
    let At {
        event,
        seq,
        horizon_cut,
        own_channel,
        ..
    } = at;
    let ts = event.source_ts;
    if let Some(i) = own_channel {
        let view = sku.channel_mut(i);
        view.set_pending(None);
        view.shift_expected(event.qty);
    }
    if event.qty == 0 {
        return (Outcome::Echo, false);
    }
    add_movement(sku, &event.sku, ts, seq, event.qty, horizon_cut, writes);
    (Outcome::Applied, false)
}

/// An on_hand movement (an adjustment, a return).
fn movement(sku: &mut SkuState, at: At<'_>, writes: &mut Vec<StateWrite>) -> (Outcome, bool) {
    let At {
        event,
        seq,
        horizon_cut,
        rules,
        own_channel,
        ..
    } = at;
    if forgotten(at) {
        // A channel's return from before the keys kept: it may have come back already.
        return (Outcome::Stale, false);
    }
    let ts = event.source_ts;
    add_movement(sku, &event.sku, ts, seq, event.qty, horizon_cut, writes);
    if let (Some(i), EventKind::Returned) = (own_channel, event.kind) {
        // A channel restocks its own returns: it shows the units already.
        let view = sku.channel_mut(i);
        let netted = net_unexplained(view, -event.qty, event.received_at);
        view.shift_expected(event.qty + netted);
        if overwritable(rules.get(i), view, ts) {
            sku.rest_mut().recheck.push(i);
        }
    }
    (Outcome::Applied, false)
}

/// A count: on_hand (or available) as of its time, unless a later count supersedes it.
fn count(sku: &mut SkuState, at: At<'_>, writes: &mut Vec<StateWrite>) -> (Outcome, bool) {
    let At {
        event, horizon_cut, ..
    } = at;
    let ts = event.source_ts;
    let on_hand = match event.kind {
        EventKind::CountedAvailable => event.qty + sku.committed,
        _ => event.qty,
    };
    let mark = CountMark {
        ts,
        source: event.source.clone(),
        key: event.key.clone(),
    };
    let superseded = sku
        .count
        .as_ref()
        .is_some_and(|c| mark.order_key() <= c.order_key());
    if ts < horizon_cut || superseded {
        return (Outcome::Stale, false);
    }
    set_count(sku, &event.sku, mark, on_hand, writes);
    (Outcome::Applied, false)
}

/// An order line's placement, release or shipment (or their running totals).
fn order_line(
    sku: &mut SkuState,
    at: At<'_>,
    writes: &mut Vec<StateWrite>,
    touched_lines: &mut Vec<String>,
) -> (Outcome, bool) {
    let At {
        event,
        seq,
        horizon_cut,
        rules,
        own_channel,
        ..
    } = at;
    let ts = event.source_ts;
    let id = event
        .line_identity()
        .expect("order-line kinds always have a line identity");
    let known = sku.lines().get(&id);
    if known.is_none() && forgotten(at) {
        // A line from before the keys kept that the SKU does not hold: most likely one
        // that closed and was forgotten, its order sent again by a later change of it
        // (a marketplace completing it days after delivery). Applied again, its
        // shipment would take its units off a second time.
        return (Outcome::Stale, false);
    }
    if event.kind == EventKind::OrderPlacedTotal {
        // An edit's new quantity raises only a line the SKU holds open, placed: a line
        // that closed took its last quantity with it (a finished order's snapshot read
        // again must not place it anew), and one not seen placed waits for its placement,
        // which every snapshot carries before this total.
        match known {
            Some(line) if line.placed.is_some() && !line.is_closed() => {
                if line.placed >= Some(event.qty) {
                    return (Outcome::Duplicate, false);
                }
            }
            _ => return (Outcome::Stale, false),
        }
    }
    // A running total adds only what the line has not counted yet.
    let units = match event.kind {
        EventKind::OrderReleasedTotal => (event.qty - known.map_or(0, |l| l.released)).max(0),
        EventKind::OrderShippedTotal => (event.qty - known.map_or(0, |l| l.shipped)).max(0),
        _ => event.qty,
    };
    if event.kind.is_shipment() && units > 0 {
        // The units left the building whatever we know of the order.
        add_movement(sku, &event.sku, ts, seq, -units, horizon_cut, writes);
    }
    let available = sku.available();
    let line = sku
        .rest_mut()
        .lines
        .entry(id.clone())
        .or_insert(LineRecord {
            placed: None,
            released: 0,
            shipped: 0,
            first_ts: ts,
        });
    let committed_before = line.committed();
    let was_closed = line.is_closed();
    let mut oversell = false;
    match event.kind {
        EventKind::OrderPlaced if line.placed.is_some() => {
            // A second placement of one line under another key: the line's life
            // allows one. Keep the first; answer like a duplicate would.
            return (Outcome::Duplicate, false);
        }
        EventKind::OrderPlaced => {
            oversell = available < event.qty;
            line.placed = Some(event.qty);
        }
        EventKind::OrderPlacedTotal => {
            // Raises only (checked above): the units the edit added are held.
            oversell = available < event.qty - line.placed.unwrap_or(0);
            line.placed = Some(event.qty);
        }
        EventKind::OrderCancelled | EventKind::OrderReleasedTotal => line.released += units,
        _ => line.shipped += units,
    }
    if !was_closed {
        line.first_ts = line.first_ts.min(ts);
    }
    let held = line.placed.is_none();
    let committed_change = line.committed() - committed_before;
    let closed = line.is_closed();
    // A line closed by its own additive units is done. One closed by a running
    // total, or by a placement arriving after its totals, is kept (`retained`) for a
    // horizon from its close (the later of its first time and this event's), not from
    // its placement. Its record keeps that time as its first from then on: a start
    // rebuilds `retained` from the stored lines (`SkuState::from_parts`), and must
    // keep it as long.
    let additive_close = matches!(
        event.kind,
        EventKind::OrderCancelled | EventKind::OrderShipped
    );
    let newly_retained = closed && !was_closed && !additive_close;
    if newly_retained {
        line.first_ts = line.first_ts.max(ts);
    }
    let close_ts = line.first_ts;
    sku.committed += committed_change;
    if closed && additive_close {
        sku.rest_mut().lines.remove(&id);
    } else if newly_retained {
        sku.rest_mut().retained.insert((close_ts, id.clone()));
    }
    // A channel's own sale (or release) changes what it shows by itself: its
    // expectation follows, so it is not pushed the value it already shows. A
    // shipment changes nothing a channel shows.
    if let (Some(i), false) = (own_channel, event.kind.is_shipment()) {
        let view = sku.channel_mut(i);
        // A sale (or release) the channel was already read showing, and that our
        // write then overwrote there, does not change what it shows a second time.
        // An edit's raise is not known to have moved what the channel shows
        // (WooCommerce's admin takes the units from the product's stock, its REST API
        // and BigCommerce's Update an Order say nothing of it): its expectation stays,
        // so the lower target is pushed to it, at worst a write of what it shows.
        if event.kind != EventKind::OrderPlacedTotal {
            let netted = net_unexplained(view, committed_change, event.received_at);
            view.shift_expected(-(committed_change - netted));
        }
        let near_our_write = overwritable(rules.get(i), view, ts);
        // An order from before a pending level explains part of it.
        if let Some(pending) = view.pending_mut().filter(|p| ts <= p.at) {
            pending.expected_at -= committed_change;
        }
        if near_our_write && committed_change != 0 {
            sku.rest_mut().recheck.push(i);
        }
    }
    touched_lines.push(id);
    let outcome = if held {
        Outcome::Held
    } else {
        Outcome::Applied
    };
    (outcome, oversell)
}

/// Whether an event that is not a duplicate states a fact its keys may have been
/// forgotten for (`Event::origin`), so that it may have been applied already: one whose
/// origin is before `forgotten_before` (plus an hour, as a channel's times may run up
/// to an hour ahead of ours, `payload::held_ahead`, and a key is never first seen before
/// its fact happened), from a channel whose keys have been kept longer than the
/// retention. A fact of a line the SKU still holds is judged by the line, never by this.
fn forgotten(at: At<'_>) -> bool {
    let Some(origin) = at.event.origin else {
        return false;
    };
    if origin == event::ORIGIN_LOGGED_STALE {
        return true;
    }
    let (before, channels_since) = at.forgetting;
    let since = at
        .own_channel
        .and_then(|i| channels_since.get(i.index()))
        .copied()
        .unwrap_or(Micros::MIN);
    since < before && origin < before.saturating_add(crate::clock::MICROS_PER_HOUR)
}

/// Records an on_hand movement at `ts`.
fn add_movement(
    sku: &mut SkuState,
    sku_name: &str,
    ts: Micros,
    seq: u64,
    qty: i64,
    horizon_cut: Micros,
    writes: &mut Vec<StateWrite>,
) {
    if sku.count.as_ref().is_some_and(|c| ts < c.ts) {
        // The latest count was taken after this movement and already includes it.
        return;
    }
    if ts < horizon_cut {
        // No count we would still accept can be older than this movement: fold it now.
        sku.base += qty;
        return;
    }
    if let Some(deltas) = sku.deltas_mut() {
        deltas.insert((ts, seq), DeltaRecord { qty });
    }
    sku.delta_sum += qty;
    writes.push(StateWrite::Delta {
        sku: sku_name.to_string(),
        ts,
        seq,
        delta: Some(DeltaRecord { qty }),
    });
}

/// Makes `mark` the latest count: on_hand := `on_hand` plus the movements at or after it.
/// The caller has loaded the SKU's movements (`needs_movements` said so).
fn set_count(
    sku: &mut SkuState,
    sku_name: &str,
    mark: CountMark,
    on_hand: i64,
    writes: &mut Vec<StateWrite>,
) {
    let deltas = sku
        .deltas_mut()
        .expect("a count's SKU has its movements loaded (needs_movements)");
    let kept = deltas.split_off(&(mark.ts, 0));
    for ((ts, seq), _) in std::mem::replace(deltas, kept) {
        writes.push(StateWrite::Delta {
            sku: sku_name.to_string(),
            ts,
            seq,
            delta: None,
        });
    }
    sku.delta_sum = deltas.values().map(|d| d.qty).sum();
    sku.base = on_hand;
    sku.count = Some(LatestCount::of(&mark));
}

/// Folds deltas older than the horizon into the base; on_hand does not change. Only
/// movements in memory are folded: the shard loads a SKU's when its oldest is due.
fn fold_before(
    sku: &mut SkuState,
    horizon_cut: Micros,
    sku_name: &str,
    writes: &mut Vec<StateWrite>,
) {
    let Some(deltas) = sku.deltas_mut() else {
        return;
    };
    let kept = deltas.split_off(&(horizon_cut, 0));
    for ((ts, seq), delta) in std::mem::replace(deltas, kept) {
        sku.base += delta.qty;
        sku.delta_sum -= delta.qty;
        writes.push(StateWrite::Delta {
            sku: sku_name.to_string(),
            ts,
            seq,
            delta: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_read_back_of_any_i64_gives_a_target_in_range() {
        // The channel's number: once an overflow (a panic in the pusher).
        assert_eq!(target_after_read(5, 5, i64::MIN), 0);
        assert_eq!(target_after_read(5, 5, i64::MAX), 5);
        assert_eq!(target_after_read(5, 7, 6), 4);
    }

    /// What every SKU pays, a million times over at a million SKUs (issue #18; the
    /// README's "Performance"): its state (with its name, 136 bytes in the shard's
    /// chunks: `skus.rs`), and 32 bytes per channel view (`compact.rs`).
    #[test]
    fn what_a_sku_holds_stays_small() {
        use std::mem::size_of;
        assert_eq!(size_of::<SkuState>(), 112);
        assert_eq!(size_of::<View>(), 32);
        // Between batches a SKU with no open lines holds no `Rest`.
        let mut sku = SkuState::new();
        assert!(sku.rest.is_some(), "a new SKU's movements are in memory");
        sku.unload_movements();
        assert!(sku.rest.is_none());
    }

    #[test]
    fn a_channel_is_shown_available_less_its_buffer_within_zero_and_its_cap() {
        let rule = |buffer, max| ChannelRule {
            name: "c".into(),
            buffer,
            max,
            inventory_updates: InventoryUpdates::Ignore,
            compare_and_set: false,
        };
        assert_eq!(rule(0, None).target(7), 7);
        assert_eq!(rule(2, None).target(7), 5);
        assert_eq!(rule(2, None).target(1), 0, "never below zero");
        assert_eq!(rule(0, None).target(-3), 0, "an oversold SKU shows zero");
        assert_eq!(rule(1, Some(4)).target(100), 4, "capped");
    }
}
