//! Small readers shared by the vendor kinds' adapters: channel payloads give ids as numbers or
//! strings, times as RFC 3339 or as WooCommerce's offset-less GMT
//! (`date_created_gmt`: https://woocommerce.github.io/woocommerce-rest-api-docs/#order-properties),
//! and quantities as integers that must stay inside the engine's bounds; and the keys of
//! order-line facts, running totals among them (the per-line shipped and refunded counts
//! channels report, e.g. Shopify's `current_quantity`:
//! https://shopify.dev/docs/api/admin-rest/2024-10/resources/order).

use hyper::StatusCode;
use serde_json::Value;

use crate::clock::{parse_rfc3339, Micros, MICROS_PER_HOUR};
use crate::core::event::{Event, EventKind, LineRef, QTY_MAX, SKU_BYTES_MAX};
use crate::refusal::ApiError;

/// Parses a JSON body; 400 `invalid_json` otherwise.
pub fn json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not JSON: {e}"),
        )
    })
}

/// An id given as a number or a non-empty string.
pub fn id(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        Value::String(s) if !s.is_empty() && s.len() <= 128 => Some(s.clone()),
        _ => None,
    }
}

/// An id that must be there; 400 naming the field otherwise.
pub fn required_id(value: &Value, field: &str) -> Result<String, ApiError> {
    id(value).ok_or_else(|| {
        ApiError::field(
            "invalid_payload",
            field,
            "is missing or not an id (a number or a string)",
        )
    })
}

/// A time in RFC 3339, or WooCommerce's `..._gmt` form without an offset (UTC).
pub fn time(value: &Value) -> Option<Micros> {
    let text = value.as_str()?;
    parse_rfc3339(text).or_else(|| parse_rfc3339(&format!("{text}Z")))
}

/// A time given in whole seconds happened somewhere in that second, so it is placed at
/// the second's end: a shipment in the same second as a count is then taken as after it
/// (counted again: under-reports, never oversells) rather than before it (absorbed by the
/// count: over-reports). Times with a fraction are taken as they are.
pub fn time_end(value: &Value) -> Option<Micros> {
    let whole_seconds = value.as_str().is_some_and(|t| !t.contains('.'));
    time(value).map(|t| if whole_seconds { t + 999_999 } else { t })
}

/// Unix seconds, placed at the second's end (see `time_end`); `None` for a number no
/// time can be (it would overflow microseconds: a channel's number is never trusted).
pub fn unix_end(value: &Value) -> Option<Micros> {
    value
        .as_i64()?
        .checked_mul(crate::clock::MICROS_PER_SECOND)?
        .checked_add(999_999)
}

/// A source time, never more than an hour ahead of our clock (as the native API allows).
pub fn source_time(candidates: &[Option<Micros>], now: Micros) -> Micros {
    candidates
        .iter()
        .flatten()
        .next()
        .map_or(now, |t| held_ahead(*t, now))
}

/// A channel's time held to an hour ahead of our clock: a date in year 9999 (a shop's
/// clock, or a hostile payload) is taken as an hour from now.
pub fn held_ahead(t: Micros, now: Micros) -> Micros {
    t.min(now + MICROS_PER_HOUR)
}

/// A positive quantity within the engine's bounds.
pub fn quantity(value: &Value) -> Option<i64> {
    value.as_i64().filter(|q| (1..=QTY_MAX).contains(q))
}

/// A SKU the engine accepts (non-empty, short enough, no control or invisible format
/// characters).
pub fn sku(value: &Value) -> Option<String> {
    let sku = value.as_str()?.trim();
    let ok = !sku.is_empty()
        && sku.len() <= SKU_BYTES_MAX
        && !sku
            .chars()
            .any(|c| c.is_control() || crate::core::event::is_format_char(c));
    ok.then(|| sku.to_string())
}

/// The events of one order line going through `transitions` (each with its source
/// time), keyed `{channel}/{order}/{line}/{transition}`: a webhook and a poll that see
/// the same line produce the same keys, so either may come first, or both.
pub fn line_events(
    channel: &str,
    line: &LineRef,
    sku: &str,
    qty: i64,
    transitions: &[(EventKind, Micros)],
    now: Micros,
) -> Vec<Event> {
    transitions
        .iter()
        .map(|(kind, source_ts)| line_event(channel, line, sku, (*kind, *source_ts, qty), now))
        .collect()
}

/// One transition of an order line, `(kind, source time, units)`, as an event.
fn line_event(
    channel: &str,
    line: &LineRef,
    sku: &str,
    (kind, source_ts, qty): (EventKind, Micros, i64),
    now: Micros,
) -> Event {
    Event {
        sku: sku.to_string(),
        kind,
        qty,
        source: channel.to_string(),
        source_ts,
        received_at: now,
        key: line_key(channel, &line.order_id, &line.line_id, kind, qty),
        line: Some(line.clone()),
        origin: None,
    }
}

/// Gives the events of each order line that `events` (one or more order snapshots) show
/// closed their `origin`: the time of the line's placement among them (the order's
/// creation time). A closed line is the one the engine forgets (its record goes at its
/// close, its keys after `idempotency_days`), and vendor channels send it again, whole,
/// with every later change of its order (`Event::origin`). A line still open is left
/// unjudged: the engine never forgets an open line, so an open line it does not hold is
/// new to it, however old its order (paid days after it was made, a line added to an old
/// order by an edit, an order open when its channel was connected).
pub fn stamp_origins(events: &mut [Event]) {
    // Per line: its placement (time, units) and the units it shipped and released, as
    // additive units or as running totals (the largest total read).
    #[derive(Default)]
    struct Seen {
        placed: Option<(Micros, i64)>,
        shipped: i64,
        released: i64,
        shipped_total: i64,
        released_total: i64,
    }
    let mut lines: ahash::AHashMap<(&str, &str), Seen> = ahash::AHashMap::new();
    for event in events.iter().filter(|e| e.kind.is_order_line()) {
        let Some(line) = &event.line else { continue };
        let seen = lines
            .entry((line.order_id.as_str(), line.line_id.as_str()))
            .or_default();
        match event.kind {
            EventKind::OrderPlaced => {
                let edited = seen.placed.map_or(0, |p| p.1);
                seen.placed = Some((event.source_ts, event.qty.max(edited)));
            }
            // An edit's quantity: the line's units, as of its placement.
            EventKind::OrderPlacedTotal => match &mut seen.placed {
                Some((_, units)) => *units = (*units).max(event.qty),
                None => seen.placed = Some((event.source_ts, event.qty)),
            },
            EventKind::OrderShipped => seen.shipped += event.qty,
            EventKind::OrderCancelled => seen.released += event.qty,
            EventKind::OrderShippedTotal => seen.shipped_total = seen.shipped_total.max(event.qty),
            EventKind::OrderReleasedTotal => {
                seen.released_total = seen.released_total.max(event.qty)
            }
            _ => {}
        }
    }
    // Each event's origin, read while `lines` borrows the events' ids, then written.
    let origins: Vec<Option<Micros>> = events
        .iter()
        .map(|event| {
            let line = event.line.as_ref().filter(|_| event.kind.is_order_line())?;
            let seen = &lines[&(line.order_id.as_str(), line.line_id.as_str())];
            let (at, units) = seen.placed?;
            let ended =
                seen.shipped.max(seen.shipped_total) + seen.released.max(seen.released_total);
            (ended >= units).then_some(at)
        })
        .collect();
    // Other events (a return, with its refund's own time) keep theirs.
    for (event, origin) in events.iter_mut().zip(origins) {
        if event.kind.is_order_line() {
            event.origin = origin;
        }
    }
}

/// The business-fact key of an order line's transition,
/// `{channel}/{order}/{line}/{transition}`; a running total is one fact per total reached
/// (`.../shipped_to/3`), so the same total read twice is a duplicate and a new one is not.
pub fn line_key(channel: &str, order: &str, line: &str, kind: EventKind, qty: i64) -> String {
    let transition = kind.transition();
    // The parts are the channel's ids: a `/` in one (`1/2` + `3` against `1` + `2/3`)
    // must not let two lines share a key.
    let (order, line) = (key_part(order), key_part(line));
    if kind.is_running_total() {
        format!("{channel}/{order}/{line}/{transition}/{qty}")
    } else {
        format!("{channel}/{order}/{line}/{transition}")
    }
}

/// An id as one part of a key: `%` and `/` percent-encoded, everything else as is (the
/// ids channels use, digits and letters, are unchanged).
pub fn key_part(id: &str) -> std::borrow::Cow<'_, str> {
    if id.contains(['/', '%']) {
        std::borrow::Cow::Owned(id.replace('%', "%25").replace('/', "%2F"))
    } else {
        std::borrow::Cow::Borrowed(id)
    }
}

/// One order line as events: its `transitions` when the catalog maps it (`sku`), else one
/// `unmapped` record saying `what` the channel named, keyed like the line so that a
/// redelivery is a duplicate.
pub fn order_line(
    channel: &str,
    line: LineRef,
    sku: Option<&str>,
    qty: i64,
    transitions: &[(EventKind, Micros)],
    what: &str,
    now: Micros,
) -> Vec<Event> {
    let with_units: Vec<(EventKind, Micros, i64)> = transitions
        .iter()
        .map(|(kind, at)| (*kind, *at, qty))
        .collect();
    order_line_units(channel, line, sku, &with_units, what, now)
}

/// `order_line` for transitions that each carry their own units `(kind, time, units)`: a
/// placement of the line's quantity beside running totals of its shipped and released
/// units. An unmapped line is one record, whatever its transitions.
pub fn order_line_units(
    channel: &str,
    line: LineRef,
    sku: Option<&str>,
    transitions: &[(EventKind, Micros, i64)],
    what: &str,
    now: Micros,
) -> Vec<Event> {
    match sku {
        Some(sku) => transitions
            .iter()
            .map(|t| line_event(channel, &line, sku, *t, now))
            .collect(),
        None => vec![super::unmapped(
            channel,
            &format!("order {} line {} ({what})", line.order_id, line.line_id),
            format!("{channel}/{}/{}/unmapped", line.order_id, line.line_id),
            transitions.first().map_or(now, |t| t.1),
            now,
        )],
    }
}

/// Where a line sits in its order, for a line that gives no id: `#` and its place from 1.
pub fn line_place(index: usize) -> String {
    format!("#{}", index + 1)
}

/// A line's quantity, or what is wrong with it (for `OrderLines::unreadable`; said the
/// same whichever field a reader took it from, so that a webhook's record and a poll's of
/// one line are one record). 0 is a line of no units, nothing to apply: an edit that
/// removed them (BigCommerce keeps such a line at 0), not a line that cannot be read.
pub fn line_quantity(value: &Value) -> Result<i64, String> {
    if value.as_i64() == Some(0) {
        return Ok(0);
    }
    quantity(value).ok_or_else(|| {
        format!(
            "has quantity {}, not a whole number from 0 to {QTY_MAX}",
            shown(value)
        )
    })
}

/// Why a line without an id (`field`) cannot be applied.
pub fn no_line_id(line: &Value, field: &str) -> String {
    format!(
        "has no `{field}` (a number or a string): {}",
        shown(&line[field])
    )
}

/// An order line's id and quantity (`fields`: their names; 0: nothing to apply), or where
/// the line is and why it cannot be applied, for `OrderLines::unreadable`: a line without
/// an id is told by its place (`line_place`).
pub fn line_id_and_quantity(
    line: &Value,
    (id_field, qty_field): (&str, &str),
    index: usize,
) -> Result<(String, i64), (String, String)> {
    let Some(line_id) = id(&line[id_field]) else {
        return Err((line_place(index), no_line_id(line, id_field)));
    };
    match line_quantity(&line[qty_field]) {
        Ok(qty) => Ok((line_id, qty)),
        Err(why) => Err((line_id, why)),
    }
}

/// A value a channel sent, for a message: its JSON (so control characters come escaped),
/// cut to 40 bytes.
pub fn shown(value: &Value) -> String {
    let text = if value.is_null() {
        "(none)".to_string()
    } else {
        value.to_string()
    };
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The order whose lines are being read, for the records of those that cannot be: a line
/// lockstep cannot apply (no id of its own, a quantity that is no whole number of units
/// within bounds) is its `unmapped` record, naming the order, the line (its id, else its
/// place: `line_place`) and why (the audit stream's `outcome=refused` shows them), keyed
/// `{prefix}/{order}/{line}/unreadable` so that a redelivery is a duplicate. The order's
/// other lines are applied: leaving the whole order out for one line would leave its
/// other units unheld (an oversell), and leaving the line out without a word would hide
/// it.
pub struct OrderLines<'a> {
    pub channel: &'a str,
    /// The keys' start: the channel's name (and WooCommerce's site).
    pub prefix: &'a str,
    pub order_id: &'a str,
    /// The records' source time: the order's placement.
    pub at: Micros,
    pub now: Micros,
}

impl<'a> OrderLines<'a> {
    /// The lines of `order_id` on `channel`, keyed under the channel's name; their
    /// records at `at`, the order's placement.
    pub fn of(channel: &'a str, order_id: &'a str, at: Micros, now: Micros) -> OrderLines<'a> {
        OrderLines {
            channel,
            prefix: channel,
            order_id,
            at,
            now,
        }
    }

    /// A line's id and quantity (`fields`: their names; `index`: its place); `None` for a
    /// line of no units, and for one that cannot be read, its record pushed to `events`.
    pub fn read(
        &self,
        line: &Value,
        fields: (&str, &str),
        index: usize,
        events: &mut Vec<Event>,
    ) -> Option<(String, i64)> {
        match line_id_and_quantity(line, fields, index) {
            Ok((_, 0)) => None,
            Ok(read) => Some(read),
            Err((place, why)) => {
                events.push(self.unreadable(&place, &why));
                None
            }
        }
    }

    /// The record of the line at `place` (its id, else `line_place`) and why it cannot be
    /// applied.
    pub fn unreadable(&self, place: &str, why: &str) -> Event {
        super::unmapped(
            self.channel,
            &format!("order {} line {place} {why}", self.order_id),
            format!(
                "{}/{}/{}/unreadable",
                self.prefix,
                key_part(self.order_id),
                key_part(place)
            ),
            self.at,
            self.now,
        )
    }
}

/// A `first/second` catalog id from two id fields (`listing_id/product_id`).
pub fn pair_id(first: &Value, second: &Value) -> String {
    format!(
        "{}/{}",
        id(first).unwrap_or_default(),
        id(second).unwrap_or_default()
    )
}

/// An array field of a payload (empty when absent).
pub fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A 400 `invalid_payload` naming the field.
pub fn invalid(field: &str, problem: &str) -> ApiError {
    ApiError::field("invalid_payload", field, problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_unix_time_no_time_can_be_is_none_not_an_overflow() {
        assert_eq!(unix_end(&json!(1)), Some(1_999_999));
        assert_eq!(unix_end(&json!(9_300_000_000_000_i64)), None);
        assert_eq!(unix_end(&json!(i64::MIN)), None);
        assert_eq!(unix_end(&json!("1")), None);
    }

    #[test]
    fn a_slash_in_an_id_cannot_make_two_lines_share_a_key() {
        let placed = EventKind::OrderPlaced;
        let a = line_key("c", "1/2", "3", placed, 1);
        let b = line_key("c", "1", "2/3", placed, 1);
        assert_ne!(a, b);
        assert_eq!(
            line_key("c", "12", "3", placed, 1),
            "c/12/3/placed",
            "plain ids unchanged"
        );
        assert_ne!(
            line_key("c", "1%2F2", "3", placed, 1),
            a,
            "nor a percent sign"
        );
    }

    #[test]
    fn ids_times_and_quantities() {
        assert_eq!(id(&json!(123)), Some("123".into()));
        assert_eq!(id(&json!("gid://x/1")), Some("gid://x/1".into()));
        assert_eq!(id(&json!(-1)), None);
        assert_eq!(id(&json!("")), None);
        assert_eq!(
            time(&json!("2026-11-27T10:00:00")),
            time(&json!("2026-11-27T11:00:00+01:00"))
        );
        assert_eq!(time(&json!("yesterday")), None);
        assert_eq!(quantity(&json!(0)), None);
        assert_eq!(quantity(&json!(3)), Some(3));
        assert_eq!(sku(&json!("  A-1 ")), Some("A-1".into()));
        assert_eq!(sku(&json!("")), None);
        let now = 10 * MICROS_PER_HOUR;
        assert_eq!(source_time(&[None, Some(5)], now), 5);
        assert_eq!(source_time(&[Some(now * 2)], now), now + MICROS_PER_HOUR);
        assert_eq!(source_time(&[None], now), now);
    }

    #[test]
    fn only_the_lines_a_snapshot_shows_closed_carry_their_placement_time() {
        let line = |order: &str, id: &str| LineRef {
            order_id: order.into(),
            line_id: id.into(),
        };
        let at = |h: i64| h * MICROS_PER_HOUR;
        let mut events = Vec::new();
        // Order 1: line a shipped whole (additive), line b half shipped (open), line c
        // shipped 1 and released 1 of 2 as running totals (closed).
        events.extend(line_events(
            "ch",
            &line("1", "a"),
            "A",
            2,
            &[
                (EventKind::OrderPlaced, at(1)),
                (EventKind::OrderShipped, at(5)),
            ],
            0,
        ));
        events.extend(order_line_units(
            "ch",
            line("1", "b"),
            Some("B"),
            &[
                (EventKind::OrderPlaced, at(1), 4),
                (EventKind::OrderShippedTotal, at(5), 2),
            ],
            "",
            0,
        ));
        events.extend(order_line_units(
            "ch",
            line("1", "c"),
            Some("C"),
            &[
                (EventKind::OrderPlaced, at(1), 2),
                (EventKind::OrderShippedTotal, at(5), 1),
                (EventKind::OrderReleasedTotal, at(6), 1),
            ],
            "",
            0,
        ));
        // Order 2: a cancellation alone, its placement not in the snapshot; placed only.
        events.extend(line_events(
            "ch",
            &line("2", "a"),
            "A",
            2,
            &[(EventKind::OrderCancelled, at(7))],
            0,
        ));
        events.extend(line_events(
            "ch",
            &line("2", "b"),
            "B",
            2,
            &[(EventKind::OrderPlaced, at(2))],
            0,
        ));
        stamp_origins(&mut events);
        let origins: Vec<(&str, &str, EventKind, Option<Micros>)> = events
            .iter()
            .map(|e| {
                let l = e.line.as_ref().unwrap();
                (l.order_id.as_str(), l.line_id.as_str(), e.kind, e.origin)
            })
            .collect();
        assert_eq!(
            origins,
            [
                ("1", "a", EventKind::OrderPlaced, Some(at(1))),
                ("1", "a", EventKind::OrderShipped, Some(at(1))),
                ("1", "b", EventKind::OrderPlaced, None),
                ("1", "b", EventKind::OrderShippedTotal, None),
                ("1", "c", EventKind::OrderPlaced, Some(at(1))),
                ("1", "c", EventKind::OrderShippedTotal, Some(at(1))),
                ("1", "c", EventKind::OrderReleasedTotal, Some(at(1))),
                ("2", "a", EventKind::OrderCancelled, None),
                ("2", "b", EventKind::OrderPlaced, None),
            ]
        );
    }

    #[test]
    fn an_edited_quantity_is_what_the_line_must_ship_to_close() {
        // A line placed at 2 and raised to 5 (WooCommerce's placement, then its quantity
        // as a total): shipping 2 leaves it open, shipping 5 closes it.
        let origins = |shipped: i64| {
            let mut events = order_line_units(
                "ch",
                LineRef {
                    order_id: "1".into(),
                    line_id: "a".into(),
                },
                Some("A"),
                &[
                    (EventKind::OrderPlaced, MICROS_PER_HOUR, 2),
                    (EventKind::OrderPlacedTotal, 2 * MICROS_PER_HOUR, 5),
                    (EventKind::OrderShippedTotal, 3 * MICROS_PER_HOUR, shipped),
                ],
                "",
                0,
            );
            stamp_origins(&mut events);
            events.iter().map(|e| e.origin).collect::<Vec<_>>()
        };
        assert_eq!(origins(2), [None, None, None], "open: 3 units to ship");
        assert_eq!(origins(5), [Some(MICROS_PER_HOUR); 3], "closed at 5");
    }
}
