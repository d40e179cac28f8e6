//! The native event format: the JSON bodies of the API (`POST /v1/events`,
//! `PUT /v1/skus/{sku}`) and of the `webhook` channel kind, parsed and validated into
//! engine events.
//!
//! The format and its limits are lockstep's own (the external contract in DESIGN.md and
//! the README's "API"); no vendor decides them. Over the `webhook` kind the same body
//! arrives signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md),
//! checked in `standard_webhooks.rs` before this module reads it. Every refusal names the field at fault, and a
//! request with any bad event is refused whole, before anything is applied.

use serde_json::{Map, Value};

use super::payload;
use crate::clock::{parse_rfc3339, Micros, MICROS_PER_HOUR};
use crate::core::event::{Event, EventKind, LineRef, QTY_MAX, SKU_BYTES_MAX};
use crate::refusal::ApiError;

/// Most events in one `POST /v1/events`.
pub const REQUEST_EVENTS_MAX: usize = 1_000;
/// Longest idempotency key, order id or line id, in bytes.
pub const ID_BYTES_MAX: usize = 256;
/// Longest source name, in bytes.
pub const SOURCE_BYTES_MAX: usize = 64;
/// How far in the future a source timestamp may be. A count stamped years ahead would
/// shadow every real count after it, so clock skew is allowed, nothing more.
pub const FUTURE_SKEW_MAX: Micros = MICROS_PER_HOUR;

/// A field's name as an error reports it (`events[3].qty`, or `on_hand`), made into text
/// only when there is an error to report: a valid event names eight fields and formats
/// none of them.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    event: Option<usize>,
    name: &'a str,
}

impl<'a> Field<'a> {
    /// A field of the body itself, or of a path.
    pub fn named(name: &'a str) -> Field<'a> {
        Field { event: None, name }
    }

    /// A field of the request's event `index`.
    fn of_event(index: usize, name: &'a str) -> Field<'a> {
        Field {
            event: Some(index),
            name,
        }
    }
}

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.event {
            Some(i) => write!(f, "events[{i}].{}", self.name),
            None => f.write_str(self.name),
        }
    }
}

impl From<Field<'_>> for String {
    fn from(field: Field<'_>) -> String {
        field.to_string()
    }
}

/// Checks a SKU (from a body or a URL path).
pub fn check_sku(sku: &str, field: Field<'_>) -> Result<(), ApiError> {
    if sku.is_empty() {
        return Err(ApiError::field("invalid_sku", field, "must not be empty"));
    }
    if sku.len() > SKU_BYTES_MAX {
        return Err(ApiError::field(
            "invalid_sku",
            field,
            format!("is {} bytes; at most {SKU_BYTES_MAX}", sku.len()),
        ));
    }
    if sku.chars().any(char::is_control) {
        return Err(ApiError::field(
            "invalid_sku",
            field,
            "must not contain control characters",
        ));
    }
    // Invisible and direction-changing characters make two SKUs that look the same (or a
    // SKU that reads backwards in the audit): refused, as control characters are.
    if let Some(c) = sku.chars().find(|c| crate::core::event::is_format_char(*c)) {
        return Err(ApiError::field(
            "invalid_sku",
            field,
            format!(
                "must not contain invisible or bidirectional format characters (U+{:04X})",
                c as u32
            ),
        ));
    }
    Ok(())
}

fn check_text(
    value: &str,
    code: &'static str,
    field: Field<'_>,
    max: usize,
) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max {
        return Err(ApiError::field(
            code,
            field,
            format!("must be 1 to {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::field(
            code,
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn parse_json(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match super::strict_json::body(body)? {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::field(
            "invalid_body",
            "body",
            "must be a JSON object",
        )),
    }
}

fn opt_str<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    code: &'static str,
    field: Field<'_>,
) -> Result<Option<&'a str>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::field(code, field, "must be a string")),
    }
}

fn opt_int(
    map: &Map<String, Value>,
    name: &str,
    code: &'static str,
    field: Field<'_>,
) -> Result<Option<i64>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            ApiError::field(
                code,
                field,
                format!("must be a whole number of at most {QTY_MAX}"),
            )
        }),
        Some(_) => Err(ApiError::field(code, field, "must be a number")),
    }
}

fn opt_time(
    map: &Map<String, Value>,
    name: &str,
    field: Field<'_>,
    code: &'static str,
    received_at: Micros,
) -> Result<Micros, ApiError> {
    let Some(text) = opt_str(map, name, code, field)? else {
        return Ok(received_at);
    };
    let at = parse_rfc3339(text).ok_or_else(|| {
        ApiError::field(
            code,
            field,
            format!("{text:?} is not an RFC 3339 timestamp"),
        )
    })?;
    if at > received_at + FUTURE_SKEW_MAX {
        return Err(ApiError::field(
            code,
            field,
            "is more than an hour in the future",
        ));
    }
    Ok(at)
}

/// Checks a quantity for its kind: positive for order lines and returns, non-zero for
/// adjustments, zero or more for counts; never beyond `QTY_MAX`.
fn check_qty(kind: EventKind, qty: i64, field: Field<'_>) -> Result<(), ApiError> {
    let ok = match kind {
        EventKind::Adjusted => qty != 0 && (-QTY_MAX..=QTY_MAX).contains(&qty),
        EventKind::Counted | EventKind::CountedAvailable | EventKind::Level => {
            (0..=QTY_MAX).contains(&qty)
        }
        _ => (1..=QTY_MAX).contains(&qty),
    };
    if ok {
        return Ok(());
    }
    let want = match kind {
        EventKind::Adjusted => format!("must be non-zero and within ±{QTY_MAX}"),
        EventKind::Counted | EventKind::CountedAvailable | EventKind::Level => {
            format!("must be 0 to {QTY_MAX}")
        }
        _ => format!("must be 1 to {QTY_MAX} for {}", kind.as_str()),
    };
    Err(ApiError::field(
        "invalid_qty",
        field,
        format!("{qty} {want}"),
    ))
}

/// Parses `POST /v1/events`. `header_key` is the request's `Idempotency-Key`.
pub fn parse_events(
    body: &[u8],
    header_key: Option<&str>,
    received_at: Micros,
) -> Result<Vec<Event>, ApiError> {
    parse_events_from(body, header_key, received_at, None)
}

/// Parses a native events body. `header_key` is the fallback idempotency key (the
/// `Idempotency-Key` header, or a channel's delivery id); `channel`, when given, is the
/// source of every event whatever the body says (a signed channel speaks for itself).
pub fn parse_events_from(
    body: &[u8],
    header_key: Option<&str>,
    received_at: Micros,
    channel: Option<&str>,
) -> Result<Vec<Event>, ApiError> {
    let map = parse_json(body)?;
    let items = match map.get("events") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::field(
                "invalid_events",
                "events",
                "must be an array",
            ))
        }
        None => {
            return Err(ApiError::field(
                "invalid_events",
                "events",
                "is required: {\"events\": [...]}",
            ))
        }
    };
    if items.is_empty() {
        return Err(ApiError::field(
            "invalid_events",
            "events",
            "must hold at least one event",
        ));
    }
    if items.len() > REQUEST_EVENTS_MAX {
        return Err(ApiError::field(
            "batch_too_large",
            "events",
            format!(
                "holds {} events; at most {REQUEST_EVENTS_MAX} per request",
                items.len()
            ),
        ));
    }
    if let Some(key) = header_key {
        request_key(key)?;
    }
    let single = items.len() == 1;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            // Event i of a request of several gets `{key}#{i}`: given keys never hold a
            // bare `#` (`given_key`), so no given key can be one of these.
            let fallback = header_key.map(|k| {
                if single {
                    given_key(k)
                } else {
                    format!("{}#{i}", given_key(k))
                }
            });
            parse_event(item, i, fallback, received_at, channel)
        })
        .collect()
}

/// A request's `Idempotency-Key` as the key of its one event: checked (1 to
/// `ID_BYTES_MAX` bytes, no control characters) and encoded as a given key.
pub fn request_key(key: &str) -> Result<String, ApiError> {
    check_text(
        key,
        "invalid_idempotency_key",
        Field::named("Idempotency-Key"),
        ID_BYTES_MAX,
    )?;
    Ok(given_key(key))
}

/// A key as a sender gave it, with `%` and `#` percent-encoded: `#` is left for the keys
/// a request's Idempotency-Key makes for each of its events, so the two never meet.
fn given_key(key: &str) -> String {
    if !key.contains(['%', '#']) {
        return key.to_string();
    }
    key.replace('%', "%25").replace('#', "%23")
}

fn parse_event(
    item: &Value,
    index: usize,
    fallback_key: Option<String>,
    received_at: Micros,
    channel: Option<&str>,
) -> Result<Event, ApiError> {
    let Value::Object(map) = item else {
        return Err(ApiError::field(
            "invalid_event",
            format!("events[{index}]"),
            "must be an object",
        ));
    };
    let f = |name| Field::of_event(index, name);
    let sku = opt_str(map, "sku", "invalid_sku", f("sku"))?
        .ok_or_else(|| ApiError::field("invalid_sku", f("sku"), "is required"))?;
    check_sku(sku, f("sku"))?;
    let kind_text = opt_str(map, "kind", "invalid_kind", f("kind"))?
        .ok_or_else(|| ApiError::field("invalid_kind", f("kind"), "is required"))?;
    let kind = EventKind::parse(kind_text)
        .filter(|k| *k != EventKind::Level || channel.is_some())
        .ok_or_else(|| {
        ApiError::field(
            "invalid_kind",
            f("kind"),
            format!("{kind_text:?} is not one of order_placed, order_cancelled, order_shipped, order_shipped_total, order_released_total, returned, adjusted, counted"),
        )
    })?;
    let qty = opt_int(map, "qty", "invalid_qty", f("qty"))?
        .ok_or_else(|| ApiError::field("invalid_qty", f("qty"), "is required"))?;
    check_qty(kind, qty, f("qty"))?;
    let source = match channel {
        Some(channel) => channel,
        None => opt_str(map, "source", "invalid_source", f("source"))?.unwrap_or("api"),
    };
    check_text(source, "invalid_source", f("source"), SOURCE_BYTES_MAX)?;
    if !source
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(ApiError::field(
            "invalid_source",
            f("source"),
            "may hold only A-Z, a-z, 0-9, '.', '_' and '-'",
        ));
    }
    let source_ts = opt_time(
        map,
        "source_ts",
        f("source_ts"),
        "invalid_source_ts",
        received_at,
    )?;
    let order_id = opt_str(map, "order_id", "invalid_order_id", f("order_id"))?;
    let line_id = opt_str(map, "line_id", "invalid_line_id", f("line_id"))?;
    if let Some(order_id) = order_id {
        check_text(order_id, "invalid_order_id", f("order_id"), ID_BYTES_MAX)?;
    }
    if let Some(line_id) = line_id {
        check_text(line_id, "invalid_line_id", f("line_id"), ID_BYTES_MAX)?;
        if order_id.is_none() {
            return Err(ApiError::field(
                "invalid_order_id",
                f("order_id"),
                "is required when line_id is given",
            ));
        }
    }
    if kind.is_order_line() && kind != EventKind::OrderPlaced && order_id.is_none() {
        return Err(ApiError::field(
            "invalid_order_id",
            f("order_id"),
            format!(
                "is required for {}: it names the order line being released or shipped",
                kind.as_str()
            ),
        ));
    }
    let return_id = opt_str(map, "return_id", "invalid_return_id", f("return_id"))?;
    if let Some(return_id) = return_id {
        check_text(return_id, "invalid_return_id", f("return_id"), ID_BYTES_MAX)?;
        if kind != EventKind::Returned {
            return Err(ApiError::field(
                "invalid_return_id",
                f("return_id"),
                format!(
                    "names a return: only a returned event has one, not {}",
                    kind.as_str()
                ),
            ));
        }
        if order_id.is_none() {
            return Err(ApiError::field(
                "invalid_order_id",
                f("order_id"),
                "is required when return_id is given",
            ));
        }
    }
    let line = order_id.map(|order_id| LineRef {
        order_id: order_id.to_string(),
        line_id: line_id.unwrap_or(sku).to_string(),
    });
    // The key: the business fact when the event names its order line, else the event's
    // own key, else the request's Idempotency-Key.
    let key = match (
        &line,
        kind.is_order_line() || kind == EventKind::Returned,
        return_id,
    ) {
        // A running total is one fact per total the line reaches (`…/shipped_to/3`), so
        // a line shipped in parts sends each total it reaches and none is a duplicate.
        // Its ids are escaped as the channels' are; the other kinds keep the raw ids
        // they have always been stored under.
        (Some(line), true, _) if kind.is_running_total() => {
            payload::line_key(source, &line.order_id, &line.line_id, kind, qty)
        }
        // A line returned more than once: each return is its own fact, named by the
        // sender's return (refund, RMA) id, as a Shopify refund's id names its own. Its
        // `#` is encoded too, as a given key's is: `KEY#index` is left to the keys a
        // request's Idempotency-Key makes.
        (Some(line), true, Some(return_id)) => format!(
            "{}/{}",
            payload::line_key(source, &line.order_id, &line.line_id, kind, qty),
            payload::key_part(return_id).replace('#', "%23")
        ),
        (Some(line), true, None) => format!(
            "{source}/{}/{}/{}",
            line.order_id,
            line.line_id,
            kind.transition()
        ),
        _ => match opt_str(
            map,
            "idempotency_key",
            "invalid_idempotency_key",
            f("idempotency_key"),
        )? {
            Some(key) => {
                check_text(
                    key,
                    "invalid_idempotency_key",
                    f("idempotency_key"),
                    ID_BYTES_MAX,
                )?;
                given_key(key)
            }
            None => fallback_key.ok_or_else(|| {
                ApiError::field(
                    "invalid_idempotency_key",
                    f("idempotency_key"),
                    "is required (or an Idempotency-Key header, or an order_id)",
                )
            })?,
        },
    };
    Ok(Event {
        sku: sku.to_string(),
        kind,
        qty,
        source: source.to_string(),
        source_ts,
        received_at,
        key,
        line,
        origin: None,
    })
}

/// Parses `PUT /v1/skus/{sku}`: `{"on_hand": n}` or `{"available": n}`, optional `"at"`.
pub fn parse_count(
    sku: &str,
    body: &[u8],
    key: String,
    received_at: Micros,
) -> Result<Event, ApiError> {
    let map = parse_json(body)?;
    let on_hand = opt_int(&map, "on_hand", "invalid_on_hand", Field::named("on_hand"))?;
    let available = opt_int(
        &map,
        "available",
        "invalid_available",
        Field::named("available"),
    )?;
    let (kind, qty, field) = match (on_hand, available) {
        (Some(n), None) => (EventKind::Counted, n, "on_hand"),
        (None, Some(n)) => (EventKind::CountedAvailable, n, "available"),
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "invalid_count",
                "on_hand",
                "give on_hand or available, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::field(
                "invalid_count",
                "on_hand",
                "one of on_hand or available is required",
            ))
        }
    };
    if !(0..=QTY_MAX).contains(&qty) {
        let code = if field == "on_hand" {
            "invalid_on_hand"
        } else {
            "invalid_available"
        };
        return Err(ApiError::field(
            code,
            field,
            format!("{qty} must be 0 to {QTY_MAX}"),
        ));
    }
    let source_ts = opt_time(&map, "at", Field::named("at"), "invalid_at", received_at)?;
    Ok(Event {
        sku: sku.to_string(),
        kind,
        qty,
        source: "api".to_string(),
        source_ts,
        received_at,
        key,
        line: None,
        origin: None,
    })
}
