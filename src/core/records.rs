//! What lockstep writes to disk: the rkyv record types. Every record is wrapped in the
//! envelope of `envelope.rs` before it reaches the backend. Changing a field here changes
//! the on-disk format: bump `envelope::SCHEMA_VERSION` with it.

use crate::clock::Micros;
use crate::core::event::{EventKind, Outcome};

/// One event as the log keeps it: the fact, how it was taken, and the stock around it.
/// The log alone is enough to rebuild every SKU's state (`lockstep replay`).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LogRecord {
    /// Global sequence number: unique across shards, increasing within a shard.
    pub seq: u64,
    /// The sequence number of the previous record of the same SKU (0: none). The audit
    /// by SKU follows this chain backwards, so no per-event index is written.
    pub prev_seq: u64,
    pub sku: String,
    pub kind: EventKind,
    pub qty: i64,
    pub source: String,
    pub source_ts: Micros,
    pub received_at: Micros,
    /// The `now` of the batch that applied it; replay feeds it back to the core.
    pub applied_at: Micros,
    pub key: String,
    pub order_id: Option<String>,
    pub line_id: Option<String>,
    pub available_before: i64,
    pub available_after: i64,
    pub on_hand_after: i64,
    pub committed_after: i64,
    pub outcome: Outcome,
    pub oversell: bool,
}

/// The log records of one batch, stored as one value: one write per batch instead of one
/// per event. Records are in sequence order with consecutive numbers, so the record with
/// sequence number `s` is `chunk[s - chunk[0].seq]`. A plain vector, so the shard's
/// records serialize where they stand, without a copy.
pub type LogChunk = Vec<LogRecord>;

/// The latest count of a SKU: the point its on_hand is measured from. Counts compare by
/// (ts, source, key), which breaks ties between counts with the same timestamp.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CountMark {
    pub ts: Micros,
    pub source: String,
    pub key: String,
}

impl CountMark {
    pub fn order_key(&self) -> (Micros, &str, &str) {
        (self.ts, &self.source, &self.key)
    }
}

/// The small, always-present part of a SKU's state. `on_hand` and `committed` are derived
/// (from base + deltas, and from the open lines) but kept here so that readers answer
/// from one record; recovery checks them against their sources.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct HeadRecord {
    /// on_hand before the deltas still kept: the latest count plus folded movements.
    pub base: i64,
    pub on_hand: i64,
    pub committed: i64,
    pub count: Option<CountMark>,
    /// Sequence number of this SKU's newest log record, duplicates included.
    pub last_seq: u64,
    pub updated_at: Micros,
    /// When the change behind the current quantities was received: the start of the
    /// propagation time of whatever is pushed for it.
    pub changed_at: Micros,
    /// What each channel shows, by channel name.
    pub channels: Vec<ChannelMark>,
}

/// What the engine knows a channel shows for a SKU.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct ChannelView {
    /// The last quantity the channel acknowledged from us (for an acknowledged change,
    /// `EventKind::PushedChange`, what the change left it showing as far as we knew then).
    pub acked: Option<i64>,
    pub acked_at: Micros,
    /// What the channel should show now: the acked quantity minus the channel's own
    /// orders since (plus its own releases). `None` until the first acknowledgement.
    pub expected: Option<i64>,
    /// In `delta` mode, a reported level that differed from `expected`, waiting out its
    /// settle window for late order webhooks to explain it.
    pub pending: Option<PendingLevel>,
    /// Units the channel was read showing fewer than `expected` (a stale compare, a
    /// reconciliation): most likely its own sales whose webhooks are still on their way.
    /// Our next write overwrites them on the channel, so when those orders arrive they
    /// are netted here instead of lowering `expected` again.
    pub unexplained: i64,
    /// Until when `unexplained` may net orders (longer than webhooks take to arrive).
    pub unexplained_until: Micros,
}

/// A channel level waiting to settle (`inventory_updates = "delta"`).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PendingLevel {
    /// What the channel reported.
    pub level: i64,
    /// The report's source time; orders up to it can explain the level.
    pub at: Micros,
    /// The expectation as of `at`: starts as `expected` when the report came, and follows
    /// the channel's own orders stamped up to `at` that arrive during the window.
    pub expected_at: i64,
    /// When the window closes (the receipt of the report plus the settle window).
    pub settles_at: Micros,
    /// The sequence number of the report, to key the settlement.
    pub seq: u64,
}

/// A channel's view, stored by name so that reordering channels in the config is harmless.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ChannelMark {
    pub channel: String,
    pub view: ChannelView,
}

/// An order line that is still open: placed and not fully released or shipped, or a
/// release/shipment waiting for its placement.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LineRecord {
    pub placed: Option<i64>,
    pub released: i64,
    pub shipped: i64,
    /// Source time of the first transition seen; held lines older than the horizon go.
    /// For a line a running total closed, when it closed: it is kept a horizon from then.
    pub first_ts: Micros,
}

impl LineRecord {
    /// Units this line holds in `committed`: nothing until its placement is seen.
    pub fn committed(&self) -> i64 {
        match self.placed {
            Some(placed) => (placed - self.released - self.shipped).max(0),
            None => 0,
        }
    }

    /// A placed line with nothing left to release or ship carries no more information.
    pub fn is_closed(&self) -> bool {
        matches!(self.placed, Some(placed) if self.released + self.shipped >= placed)
    }
}

/// An on_hand movement newer than both the latest count and the horizon. Kept so that a
/// count arriving late can exclude the movements before it.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DeltaRecord {
    pub qty: i64,
}
