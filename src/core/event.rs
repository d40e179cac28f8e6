//! The engine's vocabulary: what happened to a SKU (`Event`), how the engine took it
//! (`Outcome`), and what it answers (`EventResult`). Ingest, polls, queues, propagation
//! (acknowledgements, repairs) and the shard (settled levels) build events; the core
//! consumes them; the log stores them.

use crate::clock::Micros;

/// Largest quantity any event may carry. Far beyond any real stock level, small enough
/// that sums of millions of events stay far from `i64` overflow.
pub const QTY_MAX: i64 = 1_000_000_000;
/// Longest SKU, in bytes. Channels allow 64 to 255; 128 covers every one we integrate.
pub const SKU_BYTES_MAX: usize = 128;

/// What happened. The effect of each on `on_hand` and `committed` is DESIGN §2's table.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub enum EventKind {
    /// An order line was placed: committed += q.
    OrderPlaced,
    /// An order line was cancelled before shipping: committed -= q.
    OrderCancelled,
    /// An order line shipped: committed -= q, on_hand -= q.
    OrderShipped,
    /// A return or refund with restock: on_hand += q.
    Returned,
    /// A receipt or adjustment: on_hand += q (q signed).
    Adjusted,
    /// An absolute count: on_hand := q as of the event's source time.
    Counted,
    /// An absolute count given as sellable units: on_hand := q + committed, where
    /// committed is taken when the event is applied (`PUT /v1/skus/{sku}` with `available`).
    CountedAvailable,
    /// A channel (the source) acknowledged showing q: no stock change; the SKU now knows
    /// what that channel shows.
    Pushed,
    /// A channel (the source) reports that it now shows q (its inventory webhook). An
    /// echo of our push or of its own sale changes nothing; a difference is handled by
    /// the channel's `inventory_updates` mode.
    Level,
    /// The settle window of a `Level` difference in `delta` mode closed: on_hand += q,
    /// the part no order explained. Written by the shard, never sent by clients.
    LevelSettled,
    /// Reconciliation read q on the channel (the source) where it should show something
    /// else (-1: the channel does not list the SKU): recorded for the audit, and the SKU
    /// is pushed its target once more, compared with q. The only way a repair reaches
    /// the outbox: the shard offers it, as it offers every push. What the channel is
    /// expected to show is not changed: q may already include the channel's own sales
    /// whose events are still on their way, which will lower the expectation themselves.
    Reconciled,
    /// A compare-and-set push found the channel showing q instead of what it was expected
    /// to show: recorded; the difference (most likely the channel's own orders whose
    /// webhooks are on their way) nets those orders when they arrive.
    StaleRead,
    /// A channel named an item or order line that no catalog row maps to a SKU (the
    /// event's `sku` names what the channel sent): recorded for the audit, applied to
    /// nothing, so it can never land on a wrong SKU.
    Unmapped,
    /// A push to the channel (the source) was held back by the channel's own budget
    /// (eBay's revisions per listing per day), `qty` being the value not sent: recorded
    /// for the audit, so an operator sees why the channel lags.
    Withheld,
    /// The channel (the source) shows the SKU sold out by its offering being disabled
    /// (Etsy: a listing cannot be written with every offering at 0, so an exhausted one
    /// is disabled while another stays above 0). Recorded; no stock change.
    OfferingDisabled,
    /// The channel (the source) shows the SKU sold out by its whole listing being set
    /// inactive (Etsy: every offering of the listing at 0). Recorded; no stock change.
    ListingDeactivated,
    /// The SKU's listing, inactive while sold out, was set active again because stock
    /// returned; `qty` is what it shows. Recorded; no stock change.
    ListingActivated,
    /// An order line has had `qty` units released in all, as the channel reports the
    /// line's running total (units cancelled, edited out or refunded before shipping): the
    /// line's released count rises to `qty` if it is below. A running total read twice, or
    /// an older one read after a newer, changes nothing, so a webhook and a poll that each
    /// see the line at some point of its life agree without knowing of each other.
    OrderReleasedTotal,
    /// An order line has had `qty` units shipped in all (the channel's running total): the
    /// units above what the line had shipped leave on_hand and committed.
    OrderShippedTotal,
    /// A channel (the source) acknowledged a change of `qty` units that it applied to what
    /// it showed (Shopify's set that took its compare value, or its adjustment after a
    /// stale compare): no stock change;
    /// what it is expected to show moves by `qty` from what it was expected to show when
    /// the acknowledgement is applied, so the channel's own sales after the change landed,
    /// taken before the acknowledgement, stay counted (`core::acknowledged_change`).
    PushedChange,
    /// An open order line now orders `qty` units, as the channel reports the line's
    /// quantity after an edit raised it (WooCommerce and BigCommerce let a seller change
    /// an order's quantities before it ships): the line's placed units rise to `qty` if
    /// below, holding the units added. It never lowers a line, and never places one: a
    /// line the SKU does not hold open (closed, or not seen placed) is left as it is, so
    /// a snapshot of a finished order read again places nothing. Vendor adapters only,
    /// whose every snapshot carries the line's placement before it: not a kind the API
    /// takes (sent before its placement, it would be recorded stale under its key, and
    /// lost).
    OrderPlacedTotal,
}

/// Unicode's format characters that hide or reorder text: zero-width spaces and joiners,
/// the byte-order mark, soft hyphen, and the bidirectional marks, embeddings, overrides
/// and isolates.
pub fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}')
}

/// Why an event cannot be applied, or `None`: the checks every event passes, native or
/// from a channel's adapter or our own propagation, before a shard sees it. A quantity
/// beyond `QTY_MAX` (a channel's level of `i64::MIN`, say) would overflow the shard's
/// arithmetic; the kind decides the rest: positive for order lines and returns,
/// non-zero for adjustments, zero or more for counts and levels.
pub fn problem(event: &Event) -> Option<String> {
    // An unmapped record names what the channel sent, which may be longer than a SKU.
    let sku_max = if event.kind == EventKind::Unmapped {
        1_024
    } else {
        SKU_BYTES_MAX
    };
    if event.sku.is_empty() || event.sku.len() > sku_max {
        return Some(format!("sku must be 1 to {sku_max} bytes"));
    }
    let qty = event.qty;
    // What a quantity must be, made into text only for an event that is not: every event
    // of every request is checked here.
    let (ok, want): (bool, fn() -> String) = match event.kind {
        EventKind::Adjusted | EventKind::LevelSettled => {
            (qty != 0 && (-QTY_MAX..=QTY_MAX).contains(&qty), || {
                format!("non-zero and within ±{QTY_MAX}")
            })
        }
        // A channel may show less than nothing (Shopify's and WooCommerce's oversold
        // items); what we read of it is recorded as it is, within range.
        EventKind::Level
        | EventKind::Reconciled
        | EventKind::StaleRead
        | EventKind::PushedChange => ((-QTY_MAX..=QTY_MAX).contains(&qty), || {
            format!("within ±{QTY_MAX}")
        }),
        EventKind::Counted
        | EventKind::CountedAvailable
        | EventKind::Pushed
        | EventKind::OfferingDisabled
        | EventKind::ListingDeactivated
        | EventKind::ListingActivated
        | EventKind::Unmapped
        | EventKind::OrderReleasedTotal
        | EventKind::OrderShippedTotal => {
            ((0..=QTY_MAX).contains(&qty), || format!("0 to {QTY_MAX}"))
        }
        EventKind::OrderPlacedTotal => ((1..=QTY_MAX).contains(&qty), || format!("1 to {QTY_MAX}")),
        EventKind::Withheld => ((0..=QTY_MAX).contains(&qty), || format!("0 to {QTY_MAX}")),
        EventKind::OrderPlaced
        | EventKind::OrderCancelled
        | EventKind::OrderShipped
        | EventKind::Returned => ((1..=QTY_MAX).contains(&qty), || format!("1 to {QTY_MAX}")),
    };
    if !ok {
        return Some(format!(
            "qty {qty} of a {} event must be {}",
            event.kind.as_str(),
            want()
        ));
    }
    // Times far outside any calendar would overflow the horizon's arithmetic.
    let sane = 0..=TS_MAX;
    if !sane.contains(&event.source_ts) || !sane.contains(&event.received_at) {
        return Some(format!(
            "source time {} is outside 1970 to 9999",
            event.source_ts
        ));
    }
    None
}

/// The `origin` replay gives a record that was logged `stale` by its origin: whatever
/// made it stale (its origin, the clock, which line the SKU held) is not all in the
/// log, so it is taken as stale again (`recovery::input_of`).
pub const ORIGIN_LOGGED_STALE: Micros = Micros::MIN;

/// 9999-12-31T23:59:59Z in microseconds: no real event is later.
pub const TS_MAX: Micros = 253_402_300_799_000_000;

impl EventKind {
    /// Every kind, for those who name one (an audit filter).
    pub const ALL: [EventKind; 21] = [
        EventKind::OrderPlaced,
        EventKind::OrderCancelled,
        EventKind::OrderShipped,
        EventKind::Returned,
        EventKind::Adjusted,
        EventKind::Counted,
        EventKind::CountedAvailable,
        EventKind::Pushed,
        EventKind::Level,
        EventKind::LevelSettled,
        EventKind::Reconciled,
        EventKind::Unmapped,
        EventKind::StaleRead,
        EventKind::Withheld,
        EventKind::OfferingDisabled,
        EventKind::ListingDeactivated,
        EventKind::ListingActivated,
        EventKind::OrderReleasedTotal,
        EventKind::OrderShippedTotal,
        EventKind::PushedChange,
        EventKind::OrderPlacedTotal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OrderPlaced => "order_placed",
            EventKind::OrderCancelled => "order_cancelled",
            EventKind::OrderShipped => "order_shipped",
            EventKind::Returned => "returned",
            EventKind::Adjusted => "adjusted",
            EventKind::Counted => "counted",
            EventKind::CountedAvailable => "counted_available",
            EventKind::Pushed => "pushed",
            EventKind::Level => "level",
            EventKind::LevelSettled => "level_settled",
            EventKind::Reconciled => "reconciled",
            EventKind::Unmapped => "unmapped",
            EventKind::StaleRead => "stale_read",
            EventKind::Withheld => "withheld",
            EventKind::OfferingDisabled => "offering_disabled",
            EventKind::ListingDeactivated => "listing_deactivated",
            EventKind::ListingActivated => "listing_activated",
            EventKind::OrderReleasedTotal => "order_released_total",
            EventKind::OrderShippedTotal => "order_shipped_total",
            EventKind::PushedChange => "pushed_change",
            EventKind::OrderPlacedTotal => "order_placed_total",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        Some(match text {
            "order_placed" => EventKind::OrderPlaced,
            "order_cancelled" => EventKind::OrderCancelled,
            "order_shipped" => EventKind::OrderShipped,
            "order_shipped_total" => EventKind::OrderShippedTotal,
            "order_released_total" => EventKind::OrderReleasedTotal,
            "returned" => EventKind::Returned,
            "adjusted" => EventKind::Adjusted,
            "counted" => EventKind::Counted,
            "level" => EventKind::Level,
            _ => return None,
        })
    }

    /// The transition name used in business-fact idempotency keys.
    pub fn transition(self) -> &'static str {
        match self {
            EventKind::OrderPlaced => "placed",
            EventKind::OrderCancelled => "released",
            EventKind::OrderShipped => "shipped",
            // Keyed with the total (`line_key`): each total the line reaches is one fact.
            EventKind::OrderReleasedTotal => "released_to",
            EventKind::OrderShippedTotal => "shipped_to",
            EventKind::OrderPlacedTotal => "placed_to",
            EventKind::Returned => "returned",
            EventKind::Adjusted => "adjusted",
            EventKind::Counted | EventKind::CountedAvailable => "counted",
            EventKind::Pushed | EventKind::PushedChange => "pushed",
            EventKind::Level
            | EventKind::LevelSettled
            | EventKind::Reconciled
            | EventKind::StaleRead => "level",
            EventKind::Unmapped => "unmapped",
            EventKind::Withheld => "withheld",
            EventKind::OfferingDisabled
            | EventKind::ListingDeactivated
            | EventKind::ListingActivated => "listing",
        }
    }

    /// Whether the kind is a channel's acknowledgement of our push: internal, written by
    /// the pushers only, with no idempotency key worth keeping or looking up.
    pub fn is_acknowledgement(self) -> bool {
        matches!(self, EventKind::Pushed | EventKind::PushedChange)
    }

    /// Whether the kind can change on_hand or committed (not acknowledgements, echoes
    /// or reconciliation records).
    pub fn changes_stock(self) -> bool {
        !matches!(
            self,
            EventKind::Pushed
                | EventKind::PushedChange
                | EventKind::Reconciled
                | EventKind::StaleRead
                | EventKind::Unmapped
                | EventKind::Withheld
                | EventKind::OfferingDisabled
                | EventKind::ListingDeactivated
                | EventKind::ListingActivated
        )
    }

    /// Whether the kind belongs to the life of an order line.
    pub fn is_order_line(self) -> bool {
        matches!(
            self,
            EventKind::OrderPlaced
                | EventKind::OrderCancelled
                | EventKind::OrderShipped
                | EventKind::OrderReleasedTotal
                | EventKind::OrderShippedTotal
                | EventKind::OrderPlacedTotal
        )
    }

    /// Whether `qty` is the line's running total rather than a number of units to add.
    pub fn is_running_total(self) -> bool {
        matches!(
            self,
            EventKind::OrderReleasedTotal
                | EventKind::OrderShippedTotal
                | EventKind::OrderPlacedTotal
        )
    }

    /// Whether units of this kind leave the building (a shipment, by units or by total).
    pub fn is_shipment(self) -> bool {
        matches!(self, EventKind::OrderShipped | EventKind::OrderShippedTotal)
    }
}

/// How the engine took an event.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub enum Outcome {
    /// It changed the state (or was absorbed by a newer count, which already includes it).
    Applied,
    /// Its idempotency key was seen before: answered with the first result, not applied.
    Duplicate,
    /// A count older than the horizon or older than the latest count, or a channel's
    /// order fact whose keys may have been forgotten (`Event::origin`): recorded, not
    /// applied.
    Stale,
    /// A release or shipment whose placement has not arrived: its effect on `committed`
    /// waits for the placement, so available never rises for an order we have not seen.
    Held,
    /// A channel acknowledged a push: recorded so the audit shows what each channel was
    /// told and when.
    Pushed,
    /// A channel reported what we expected it to show (our own push, or its own sale):
    /// nothing changes.
    Echo,
    /// A channel shows something no event explains: recorded; handled by its mode.
    Drift,
}

impl Outcome {
    /// Every outcome, for those who name one (an audit filter).
    pub const ALL: [Outcome; 7] = [
        Outcome::Applied,
        Outcome::Duplicate,
        Outcome::Stale,
        Outcome::Held,
        Outcome::Pushed,
        Outcome::Echo,
        Outcome::Drift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::Held => "held",
            Outcome::Pushed => "pushed",
            Outcome::Echo => "echo",
            Outcome::Drift => "drift",
        }
    }
}

/// The order line an event belongs to, when it belongs to one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LineRef {
    pub order_id: String,
    /// The line within the order; the SKU when the source names none.
    pub line_id: String,
}

/// One stock fact about one SKU, as ingest hands it to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub sku: String,
    pub kind: EventKind,
    /// Units; positive except for `Adjusted`, where the sign is the direction.
    pub qty: i64,
    /// Who said it: a channel name, `api`, or the `source` field of the native API.
    pub source: String,
    /// When it happened at the source; orders the event against counts.
    pub source_ts: Micros,
    /// When lockstep received it; the start of its propagation time.
    pub received_at: Micros,
    /// The effective idempotency key (business fact, else event id, else client key).
    pub key: String,
    /// The order line, for order-line kinds (and returns that name their order).
    pub line: Option<LineRef>,
    /// When the fact's history began, for facts a channel sends again with every later
    /// change of their order (a vendor channel's order snapshot carries each line's
    /// placement and shipments every time): for the events of a line the snapshot shows
    /// closed, the order's creation time (`payload::stamp_origins`); for a return, the
    /// refund's own time. Idempotency keys are kept for `idempotency_days` from when
    /// they are first seen, which is never before this time (less the hour a channel's
    /// clock may run ahead), so a fact older than that on a line the SKU no longer holds
    /// may have been applied and its keys forgotten: it is recorded `stale`, not applied
    /// a second time (`core::forgotten`). `None`: not judged (native events, acknowledgements, counts,
    /// and channel facts with no stable time of their own). In memory only: replay takes
    /// a record's logged `stale` as it was (`ORIGIN_LOGGED_STALE`).
    pub origin: Option<Micros>,
}

impl Event {
    /// The identity of this event's order line inside its SKU, if it has one. Order-line
    /// kinds without an order id are their own line (keyed by their idempotency key).
    pub fn line_identity(&self) -> Option<String> {
        match (&self.line, self.kind.is_order_line()) {
            (Some(line), true) => Some(format!(
                "{}\u{1f}{}\u{1f}{}",
                self.source, line.order_id, line.line_id
            )),
            (None, true) => Some(format!("{}\u{1f}\u{1f}{}", self.source, self.key)),
            _ => None,
        }
    }
}

/// The first answer given to an idempotency key; a duplicate is answered with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FirstResult {
    pub outcome: Outcome,
    pub oversell: bool,
    pub on_hand: i64,
    pub committed: i64,
    pub available: i64,
    /// The log sequence number of the first delivery.
    pub seq: u64,
}

/// The engine's answer for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventResult {
    pub key: String,
    pub sku: String,
    pub outcome: Outcome,
    /// For a duplicate: the outcome of the first delivery.
    pub first_outcome: Option<Outcome>,
    pub oversell: bool,
    pub on_hand: i64,
    pub committed: i64,
    pub available: i64,
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_holds_every_kind_and_outcome_once() {
        // Exhaustive matches: a new kind or outcome does not compile here until `ALL`
        // names it.
        let kind_at = |k: EventKind| match k {
            EventKind::OrderPlaced => 0,
            EventKind::OrderCancelled => 1,
            EventKind::OrderShipped => 2,
            EventKind::Returned => 3,
            EventKind::Adjusted => 4,
            EventKind::Counted => 5,
            EventKind::CountedAvailable => 6,
            EventKind::Pushed => 7,
            EventKind::Level => 8,
            EventKind::LevelSettled => 9,
            EventKind::Reconciled => 10,
            EventKind::Unmapped => 11,
            EventKind::StaleRead => 12,
            EventKind::Withheld => 13,
            EventKind::OfferingDisabled => 14,
            EventKind::ListingDeactivated => 15,
            EventKind::ListingActivated => 16,
            EventKind::OrderReleasedTotal => 17,
            EventKind::OrderShippedTotal => 18,
            EventKind::PushedChange => 19,
            EventKind::OrderPlacedTotal => 20,
        };
        let mut seen = [false; EventKind::ALL.len()];
        for k in EventKind::ALL {
            seen[kind_at(k)] = true;
        }
        assert!(seen.iter().all(|s| *s));
        let outcome_at = |o: Outcome| match o {
            Outcome::Applied => 0,
            Outcome::Duplicate => 1,
            Outcome::Stale => 2,
            Outcome::Held => 3,
            Outcome::Pushed => 4,
            Outcome::Echo => 5,
            Outcome::Drift => 6,
        };
        let mut seen = [false; Outcome::ALL.len()];
        for o in Outcome::ALL {
            seen[outcome_at(o)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
