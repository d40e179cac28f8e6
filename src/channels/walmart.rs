//! The `walmart` kind: a Walmart Marketplace seller (CHANNELS.md §6 and "Our choices").
//!
//! Inbound `POST /webhooks/{name}`: `PO_CREATED` and `ORDER_UPDATES` events
//! (`{source: {eventType, eventTime, eventId}, payload: {purchaseOrderId, orderDate,
//! orderLines}}`), authenticated the way the subscription chose: `webhook_auth = "hmac"`
//! (HMAC-SHA256 of the whole body keyed with `webhook_secret`, else `client_secret`, in
//! the header named by
//! `auth_header`, default `Authorization`; its encoding is unverified, so base64 and hex
//! are both taken) or `"basic"` (`Basic base64(webhook_secret)`). `source.eventId`
//! deduplicates redeliveries. `PO_CREATED` places the lines; `PO_LINE_AUTOCANCELLED` and
//! `FRAUD_CANCEL` release them (`INTENT_TO_CANCEL` is a request, not yet a cancellation).
//! Walmart calls its events lightweight and says to keep polling, so `GET /v3/orders`
//! runs too, in windows of modification time (`walmart_orders.rs`), with line statuses
//! `Created`/`Acknowledged` placed, `Shipped`/`Delivered` shipped, `Cancelled` (or
//! `Canceled`, as one of Walmart's pages spells it) released;
//! its 429s are waited out until the orders bucket's tokens come back.
//! Keys `{channel}/{purchaseOrderId}/{lineNumber}/{transition}`.
//!
//! Outbound: the bulk inventory feed (`walmart_feed.rs`) for most changes, and for the
//! urgent ones (down to `urgent_at_or_below` units) `PUT /v3/inventory?sku=` (`{sku,
//! quantity: {unit: "EACH", amount}}`), one SKU per call (the catalog maps a SKU to
//! Walmart's seller SKU); every call with
//! `WM_SEC.ACCESS_TOKEN` (from `POST /v3/token`, client credentials), `WM_SVC.NAME` and a
//! fresh `WM_QOS.CORRELATION_ID` on every call. A 429's `Retry-After` is honoured. The
//! per-call limit is unverified: the default pace is 5 requests/s, configurable.

use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::call::{form, with_headers, TokenCache};
use super::kind::{self, Kind, Problem};
use super::walmart_feed::{FeedSettings, FEEDS_PER_HOUR_DEFAULT, URGENT_AT_OR_BELOW_DEFAULT};
use super::Pace;

/// Items a Get All Items page asks for (its most, in Walmart's published spec).
const LISTING_PAGE: usize = 50;
use super::{body_hmac, excerpt, payload, BoxFuture, Caller, Catalog, ChannelAdapter, Delivery};
use super::{BulkWrite, RateLimit, Seen};
use super::{Inbound, Levels, OrderPoll, OutboundRequest, PushItem, PushReply};
use crate::clock::Micros;
use crate::config::{ChannelConfig, ChannelKind};
use crate::core::event::{Event, EventKind, LineRef};
use crate::refusal::ApiError;

const DEFAULT_RATE: RateLimit = RateLimit {
    requests_per_second: 5.0,
    burst: 10,
};
const POLL_INTERVAL_DEFAULT_S: u64 = 60;
/// The name Walmart sees on our calls (`WM_SVC.NAME`).
const SERVICE_NAME: &str = "lockstep";

/// How webhooks prove they come from Walmart.
enum HookAuth {
    Hmac { header: String, key: Vec<u8> },
    Basic { header: String, expected: String },
}

/// A Walmart Marketplace seller.
pub struct Walmart {
    name: String,
    base_url: String,
    /// `Basic base64(client_id:client_secret)`, sent with every call.
    basic: String,
    hook_auth: HookAuth,
    catalog: Catalog,
    pub(super) poll_interval: Duration,
    token: TokenCache,
    seen: Seen,
    pub(super) feed: FeedSettings,
}

/// A fresh `WM_QOS.CORRELATION_ID`.
fn correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The `[[channels]]` keys of kind `walmart`: the API client's id and secret (client
/// credentials: https://developer.walmart.com/doc/us/mp/us-mp-auth/), how its webhooks
/// authenticate, and the inventory feed's budget.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    client_id: Option<String>,
    client_secret: Option<String>,
    /// The token endpoint, when not `{base_url}/v3/token`.
    token_url: Option<String>,
    /// The name of the header Walmart signs webhooks in (the subscription's
    /// `authHeaderName`; default `authorization`).
    auth_header: Option<String>,
    /// How its webhooks authenticate, as chosen at subscription: `hmac` (the default;
    /// HMAC-SHA256 of the body keyed with `webhook_secret`, else `client_secret`) or
    /// `basic` (`webhook_secret` holds `user:password`).
    webhook_auth: Option<String>,
    /// A change to this many units or fewer, downward, cannot wait for the inventory
    /// feed and goes by `PUT /v3/inventory` at once (default 10).
    urgent_at_or_below: Option<i64>,
    /// Inventory feeds per hour, Walmart's limit (default 10); 0 sends every change by
    /// `PUT /v3/inventory`.
    feeds_per_hour: Option<u32>,
}

impl Kind for Walmart {
    type Settings = Settings;

    fn check(channel: &ChannelConfig, settings: &Settings) -> Result<(), Problem> {
        kind::no_batch_max(
            channel,
            "one SKU per PUT /v3/inventory, the rest in inventory feeds (feeds_per_hour)",
        )?;
        let walmart = ChannelKind::Walmart;
        kind::required(&settings.client_id, "client_id", walmart)?;
        kind::required(&settings.client_secret, "client_secret", walmart)?;
        kind::optional_url(&settings.token_url, "token_url")?;
        if settings
            .urgent_at_or_below
            .is_some_and(|n| !(0..=crate::core::event::QTY_MAX).contains(&n))
        {
            return Err(Problem::new("urgent_at_or_below", "0 or more units"));
        }
        if settings.feeds_per_hour.is_some_and(|n| n > 3_600) {
            return Err(Problem::new("feeds_per_hour", "0 to 3600 feeds an hour"));
        }
        let name_ok = settings
            .auth_header
            .as_deref()
            .is_none_or(|h| http::HeaderName::from_bytes(h.trim().as_bytes()).is_ok());
        if !name_ok {
            return Err(Problem::new(
                "auth_header",
                "for walmart, the name of the header Walmart signs in (authHeaderName)",
            ));
        }
        match settings.webhook_auth.as_deref() {
            None | Some("hmac") => Ok(()),
            Some("basic")
                if channel
                    .webhook_secret
                    .as_deref()
                    .is_some_and(|s| s.contains(':')) =>
            {
                Ok(())
            }
            Some("basic") => Err(Problem::new(
                "webhook_secret",
                "webhook_auth = \"basic\" needs webhook_secret = \"user:password\"",
            )),
            Some(_) => Err(Problem::new("webhook_auth", "\"hmac\" or \"basic\"")),
        }
    }

    fn open(
        channel: &ChannelConfig,
        settings: Settings,
        catalog: Catalog,
        _data_dir: &std::path::Path,
    ) -> Walmart {
        Walmart::from_settings(channel, settings, catalog)
    }
}

impl Walmart {
    fn from_settings(config: &ChannelConfig, settings: Settings, catalog: Catalog) -> Walmart {
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let client_secret = settings.client_secret.clone().unwrap_or_default();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{client_secret}",
                settings.client_id.as_deref().unwrap_or_default()
            ))
        );
        let token_url = settings
            .token_url
            .clone()
            .unwrap_or_else(|| format!("{base_url}/v3/token"));
        let token_basic = basic.clone();
        let token = TokenCache::new("wm_sec.access_token", "", move || {
            http::Request::post(&token_url)
                .header("authorization", &token_basic)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .header("wm_svc.name", SERVICE_NAME)
                .header("wm_qos.correlation_id", correlation_id())
                .body(form(&[("grant_type", "client_credentials")]))
                .expect("a validated token_url makes a valid request")
        });
        let header = settings
            .auth_header
            .clone()
            .unwrap_or_else(|| "authorization".into())
            .to_ascii_lowercase();
        let hook_auth = match settings.webhook_auth.as_deref() {
            Some("basic") => HookAuth::Basic {
                header,
                expected: format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(config.webhook_secret.as_deref().unwrap_or_default())
                ),
            },
            // The HMAC key is the `clientSecret` of the subscription's `authDetails`
            // (developer.walmart.com, "Create subscription": "HMACSHA256 of the complete
            // response as the value, with clientSecret as the key"), which need not be the
            // API client secret: `webhook_secret` when set.
            _ => HookAuth::Hmac {
                header,
                key: config
                    .webhook_secret
                    .clone()
                    .unwrap_or_else(|| client_secret.clone())
                    .into_bytes(),
            },
        };
        Walmart {
            name: config.name.clone(),
            base_url,
            basic,
            hook_auth,
            catalog,
            poll_interval: Duration::from_secs(
                config.poll_interval_s.unwrap_or(POLL_INTERVAL_DEFAULT_S),
            ),
            token,
            seen: Seen::default(),
            feed: FeedSettings {
                feeds_per_hour: settings.feeds_per_hour.unwrap_or(FEEDS_PER_HOUR_DEFAULT),
                urgent_at_or_below: settings
                    .urgent_at_or_below
                    .unwrap_or(URGENT_AT_OR_BELOW_DEFAULT),
            },
        }
    }

    pub(super) fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> OutboundRequest {
        http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url))
            .header("authorization", &self.basic)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .header("wm_svc.name", SERVICE_NAME)
            .header("wm_qos.correlation_id", correlation_id())
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .expect("a validated base_url makes a valid request")
    }

    pub(super) fn seller_sku(&self, sku: &str) -> Option<&str> {
        self.catalog.item(sku).map(|i| i.id.as_str())
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        match &self.hook_auth {
            HookAuth::Hmac { header, key } => {
                let given = body_hmac::required_header(headers, header)?;
                let expected = body_hmac::mac(key, &[body]);
                if body_hmac::matches(given, &expected, true, true) {
                    Ok(())
                } else {
                    Err(body_hmac::mismatch(header))
                }
            }
            HookAuth::Basic { header, expected } => {
                let given = body_hmac::required_header(headers, header)?;
                let same: bool =
                    subtle::ConstantTimeEq::ct_eq(given.trim().as_bytes(), expected.as_bytes())
                        .into();
                if same {
                    Ok(())
                } else {
                    Err(body_hmac::mismatch(header))
                }
            }
        }
    }

    /// Checks and reads one delivery: its events and its `source.eventId`.
    fn take(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Inbound, ApiError> {
        self.verify(headers, body)?;
        let hook = payload::json(body)?;
        let id = payload::required_id(&hook["source"]["eventId"], "source.eventId")?;
        if self.seen.contains(&id) {
            return Ok(Inbound::default());
        }
        Ok(Inbound {
            events: self.hook_events(&hook, now)?,
            notification: Some(id),
            ..Inbound::default()
        })
    }

    /// The events of one webhook event.
    fn hook_events(&self, hook: &Value, now: Micros) -> Result<Vec<Event>, ApiError> {
        let source = &hook["source"];
        let at = payload::source_time(
            &[
                payload::time_end(&source["eventTime"]),
                millis(&source["eventTime"]),
            ],
            now,
        );
        let outer = &hook["payload"];
        // `ORDER_UPDATES` (the only order event after 2026-12-15) nests the order in
        // `payload.order` and names what happened in `subEventType`, beside the order or
        // in the `meta` block (developer.walmart.com, "Order management event"); the
        // legacy events (`PO_CREATED`, ...) carry the order as `payload` itself
        // ("Purchase order (PO) created event").
        let updates = source["eventType"] == "ORDER_UPDATES";
        let data = if updates { &outer["order"] } else { outer };
        let kind = [
            &outer["subEventType"],
            &outer["meta"]["subEventType"],
            &hook["meta"]["subEventType"],
            &source["subEventType"],
        ]
        .into_iter()
        .find_map(Value::as_str)
        .or_else(|| (!updates).then(|| source["eventType"].as_str()).flatten())
        .unwrap_or_default();
        if updates && !data.is_object() {
            return Err(payload::invalid("payload.order", "is missing"));
        }
        let at_field = if updates { "payload.order" } else { "payload" };
        let transitions = match kind {
            "PO_CREATED" => {
                let ordered = payload::source_time(&[millis(&data["orderDate"]), Some(at)], now);
                vec![(EventKind::OrderPlaced, ordered)]
            }
            // The line's units cancelled, as a running total: the orders API's `Cancelled`
            // status quantity says the same, under the same key.
            "PO_LINE_AUTOCANCELLED" | "FRAUD_CANCEL" => {
                vec![(EventKind::OrderReleasedTotal, at)]
            }
            _ => return Ok(Vec::new()),
        };
        let order_id = payload::required_id(
            &data["purchaseOrderId"],
            &format!("{at_field}.purchaseOrderId"),
        )?;
        let mut events = Vec::new();
        let reader = payload::OrderLines::of(&self.name, &order_id, transitions[0].1, now);
        for line in Self::hook_lines(data) {
            match line {
                // No units: nothing to apply.
                Ok((_, _, 0)) => {}
                Ok(line) => events.extend(self.line(&order_id, line, &transitions, now)),
                Err((place, why)) => events.push(reader.unreadable(&place, &why)),
            }
        }
        payload::stamp_origins(&mut events);
        Ok(events)
    }

    /// One line's events: `(line number, seller SKU, quantity)`.
    fn line(
        &self,
        order_id: &str,
        (number, seller_sku, qty): (String, String, i64),
        transitions: &[(EventKind, Micros)],
        now: Micros,
    ) -> Vec<Event> {
        let line = LineRef {
            order_id: order_id.to_string(),
            line_id: number,
        };
        let sku = self.catalog.sku_of(&seller_sku, None, None);
        let what = format!("seller SKU {seller_sku}");
        payload::order_line(&self.name, line, sku, qty, transitions, &what, now)
    }

    /// A webhook event's lines: number, SKU and quantity, in either of the shapes Walmart
    /// uses: the events' flat `sku` with `quantity: {unitOfMeasure, measurementValue: "2"}`
    /// (developer.walmart.com, "Purchase order (PO) created event": a numeric string), or
    /// the orders API's `item.sku` with `orderLineQuantity: {unitOfMeasurement, amount}`.
    fn hook_lines(order: &Value) -> Vec<ReadLine> {
        let lines = match &order["orderLines"] {
            Value::Array(lines) => lines.as_slice(),
            other => payload::list(&other["orderLine"]),
        };
        lines.iter().enumerate().map(read_line).collect()
    }

    /// The events of one order from the orders API, line by line from its statuses. A
    /// line's `orderLineStatuses.orderLineStatus[]` splits its units by status, each with
    /// its `statusQuantity.amount` (multi-quantity lines ship and cancel some units at a
    /// time: developer.walmart.com, "Multi-line multi-quantity (MLMQ) migration guide",
    /// https://developer.walmart.com/us-marketplace/docs/multi-line-multi-quantity-mlmq-migration-guide):
    /// the line is placed, the units `Shipped` or `Delivered` are its shipped running
    /// total and the units `Cancelled` its released one. A status without a quantity
    /// counts the whole line.
    pub(super) fn order_events(&self, order: &Value, now: Micros) -> (Vec<Event>, Option<Micros>) {
        // Always there: the poll leaves out orders without one.
        let order_id = payload::id(&order["purchaseOrderId"]).unwrap_or_default();
        let ordered = payload::source_time(&[millis(&order["orderDate"])], now);
        let mut newest = millis(&order["orderDate"]);
        let mut events = Vec::new();
        let reader = payload::OrderLines::of(&self.name, &order_id, ordered, now);
        for (i, l) in payload::list(&order["orderLines"]["orderLine"])
            .iter()
            .enumerate()
        {
            let status_at = millis(&l["statusDate"]);
            newest = newest.max(status_at);
            let at = payload::source_time(&[status_at, Some(ordered)], now);
            let (number, sku, qty) = match read_line((i, l)) {
                // No units: nothing to apply.
                Ok((_, _, 0)) => continue,
                Ok(read) => read,
                Err((place, why)) => {
                    events.push(reader.unreadable(&place, &why));
                    continue;
                }
            };
            let (mut shipped, mut cancelled, mut known) = (0, 0, false);
            for status in payload::list(&l["orderLineStatuses"]["orderLineStatus"]) {
                let units = quantity_text(&status["statusQuantity"]["amount"]).unwrap_or(qty);
                match status["status"].as_str().unwrap_or("") {
                    "Shipped" | "Delivered" => shipped += units,
                    // "Cancelled" in Walmart's OpenAPI spec of the US Orders API
                    // (getAllOrders' `status`: "Valid statuses are: Created, Acknowledged,
                    // Shipped, Delivered and Cancelled", and the cancel request's example;
                    // as generated in https://github.com/highsidelabs/walmart-api-php/blob/main/docs/Apis/MP/US/OrdersApi.md),
                    // but "Canceled" in the US overview's list of statuses
                    // (https://developer.walmart.com/us-marketplace/docs/order-management-api-overview):
                    // both are read, since a cancellation passed over would hold its units for good.
                    "Cancelled" | "Canceled" => cancelled += units,
                    "Created" | "Acknowledged" => {}
                    _ => continue,
                }
                known = true;
            }
            if !known {
                continue;
            }
            let shipped = shipped.min(qty);
            let cancelled = cancelled.min(qty - shipped);
            let mut transitions = Vec::new();
            if cancelled < qty {
                transitions.push((EventKind::OrderPlaced, ordered, qty));
            }
            if shipped > 0 {
                transitions.push((EventKind::OrderShippedTotal, at, shipped));
            }
            if cancelled > 0 {
                transitions.push((EventKind::OrderReleasedTotal, at, cancelled));
            }
            for (kind, when, units) in transitions {
                events.extend(self.line(
                    &order_id,
                    (number.clone(), sku.to_string(), units),
                    &[(kind, when)],
                    now,
                ));
            }
        }
        payload::stamp_origins(&mut events);
        (events, newest)
    }
}

/// Walmart's throttling headers on its answers: `x-current-token-count` (tokens left) and
/// `x-next-replenishment-time` (when they come back; read as epoch milliseconds, a unit
/// this code could not confirm in Walmart's pages, hence the one-minute bound below)
/// (CHANNELS.md §6, "pace by them").
fn header_number(headers: &HeaderMap, name: &str) -> Option<i64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The shortest wait a read takes from a replenishment time (`Walmart::throttle`).
const THROTTLE_WAIT_MIN: Duration = Duration::from_millis(100);

/// How long until the token bucket is replenished (at most a minute: a later time is
/// not trusted as is). The header names a whole millisecond and the refill may fall
/// anywhere within it, so the wait runs to that millisecond's end: a call at its start
/// can still find the bucket empty and draw a 429.
pub(super) fn replenished_in(headers: &HeaderMap) -> Option<Duration> {
    let at_ms = header_number(headers, "x-next-replenishment-time")?;
    let end_us = at_ms.saturating_add(1).saturating_mul(1_000);
    Some(Duration::from_micros(
        end_us
            .saturating_sub(crate::clock::now_micros())
            .clamp(0, 60_000_000) as u64,
    ))
}

/// How long a 429 asks to wait: often without `Retry-After`, so the bucket's own
/// replenishment time (`x-next-replenishment-time`) says when, else a second
/// (https://developer.walmart.com/us-marketplace/docs/throttling).
pub(super) fn throttle_wait(headers: &HeaderMap) -> Duration {
    super::retry_after(headers)
        .or_else(|| replenished_in(headers))
        .unwrap_or(Duration::from_secs(1))
}

/// A 429, often without `Retry-After`: the bucket's replenishment time says when
/// (`throttle_wait`), so a read waits until then rather than guess by doubling. A time
/// already past by our clock (skew, milliseconds cut) names no wait: the caller's doubling
/// waits then (as the orders poll floors its wait), so that its retries are not all spent
/// within milliseconds.
fn read_throttle(status: u16, headers: &HeaderMap) -> Option<Option<Duration>> {
    (status == 429).then(|| Some(throttle_wait(headers)).filter(|wait| *wait >= THROTTLE_WAIT_MIN))
}

/// An order line as the readers take it, `(line number, seller SKU, quantity)`; or where
/// it is in its order and why it cannot be applied (`payload::OrderLines`), never a
/// line silently dropped, nor one that refuses the order's other lines.
type ReadLine = Result<(String, String, i64), (String, String)>;

/// The line at `index` in either shape: the events' flat `sku` and `quantity:
/// {measurementValue}`, or the orders API's `item.sku` and `orderLineQuantity.amount`.
fn read_line((index, l): (usize, &Value)) -> ReadLine {
    let Some(number) = payload::id(&l["lineNumber"]) else {
        return Err((
            payload::line_place(index),
            payload::no_line_id(l, "lineNumber"),
        ));
    };
    let Some(sku) = l["sku"].as_str().or(l["item"]["sku"].as_str()) else {
        return Err((number, "has no `sku`".to_string()));
    };
    let given = [
        &l["quantity"]["measurementValue"],
        &l["quantity"]["amount"],
        &l["quantity"],
        &l["orderLineQuantity"]["amount"],
    ]
    .into_iter()
    .find(|v| !v.is_null() && !v.is_object())
    .unwrap_or(&Value::Null);
    // A numeric string ("2"), as the events give it, or a number; anything else is said
    // as Walmart gave it.
    let units = match given.as_str() {
        Some(text) => text
            .trim()
            .parse::<i64>()
            .map_or_else(|_| given.clone(), Value::from),
        None => given.clone(),
    };
    match payload::line_quantity(&units) {
        Ok(qty) => Ok((number, sku.to_string(), qty)),
        Err(why) => Err((number, why)),
    }
}

/// Walmart gives quantities as text (`"amount": "2"`) or numbers.
fn quantity_text(value: &Value) -> Option<i64> {
    payload::quantity(value)
        .or_else(|| payload::quantity(&json!(value.as_str()?.trim().parse::<i64>().ok()?)))
}

/// Epoch milliseconds (the orders API's dates; placed at the millisecond's end), or
/// RFC 3339.
fn millis(value: &Value) -> Option<Micros> {
    match value.as_i64() {
        // A number no time can be (it would overflow microseconds) is none.
        Some(ms) => ms.checked_mul(1_000)?.checked_add(999),
        None => payload::time_end(value),
    }
}

impl ChannelAdapter for Walmart {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_max(&self) -> usize {
        1
    }

    /// One SKU per `PUT /v3/inventory`.
    fn push_groups(&self, items: &[PushItem]) -> Vec<Vec<usize>> {
        (0..items.len()).map(|i| vec![i]).collect()
    }

    fn bulk(&self) -> Option<&dyn BulkWrite> {
        (self.feed.feeds_per_hour > 0).then_some(self as &dyn BulkWrite)
    }

    fn pace(&self) -> Pace {
        Pace::Published(DEFAULT_RATE)
    }

    fn carries(&self, sku: &str) -> bool {
        self.seller_sku(sku).is_some()
    }

    fn inbound(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Delivery, ApiError> {
        self.take(headers, body, now).map(Delivery::Carried)
    }

    fn seen(&self) -> Option<&Seen> {
        Some(&self.seen)
    }

    fn authorize<'a>(&'a self, caller: &'a Caller) -> BoxFuture<'a, Result<HeaderMap, String>> {
        Box::pin(async move {
            let mut headers = self.token.headers(caller).await?;
            // A fresh correlation id on the call itself, too.
            if let Ok(id) = HeaderValue::from_str(&correlation_id()) {
                headers.insert("wm_qos.correlation_id", id);
            }
            Ok(headers)
        })
    }

    /// Get All Items (`GET /v3/items`, `nextCursor=*` first, then the answer's
    /// `nextCursor`; none means the last page), 50 a page, active items only
    /// (https://developer.walmart.com/us-marketplace/docs/get-all-items). Walmart's SKU is
    /// the seller's own and the id lockstep writes to, required and unique per seller.
    fn listings<'a>(
        &'a self,
        caller: &'a Caller,
        cursor: Option<&'a str>,
    ) -> super::listing::Listings<'a> {
        use super::listing::{sku_field, Listing, ListingPage};
        Box::pin(async move {
            let next = percent_encoding::utf8_percent_encode(
                cursor.unwrap_or("*"),
                percent_encoding::NON_ALPHANUMERIC,
            );
            let request = self.request(
                http::Method::GET,
                &format!("/v3/items?nextCursor={next}&limit={LISTING_PAGE}&lifecycleStatus=ACTIVE"),
                None,
            );
            let request = with_headers(request, self.authorize(caller).await?);
            let (status, _, body) = caller.call(request).await?;
            let reply = super::call::json_reply(status, &body)?;
            let items = reply["ItemResponse"].as_array().ok_or("no ItemResponse")?;
            let listings = items
                .iter()
                .filter_map(|item| sku_field(item["sku"].as_str()))
                .map(|sku| Listing::keyed_by_sku(sku, None, None))
                .collect();
            Ok(ListingPage {
                listings,
                next: reply["nextCursor"]
                    .as_str()
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
                pause: Duration::ZERO,
            })
        })
    }

    fn push_request(&self, items: &[PushItem], _now: Micros) -> OutboundRequest {
        let item = &items[0];
        let seller_sku = self.seller_sku(&item.sku).unwrap_or(&item.sku);
        self.request(
            http::Method::PUT,
            &format!(
                "/v3/inventory?sku={}",
                utf8_percent_encode(seller_sku, NON_ALPHANUMERIC)
            ),
            Some(json!({"sku": seller_sku, "quantity": {"unit": "EACH", "amount": item.quantity}})),
        )
    }

    fn push_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        items: &[PushItem],
    ) -> PushReply {
        if status == 401 {
            self.token.forget();
        }
        if status == 429 {
            return PushReply::Throttled {
                retry_after: throttle_wait(headers),
            };
        }
        if let Some(outcome) = super::http_failure(status, headers, body) {
            return outcome;
        }
        let reply: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let amount = reply["quantity"]["amount"].as_i64();
        if amount == Some(items[0].quantity) {
            // The last token spent: the next call waits for the replenishment instead
            // of drawing a 429.
            let spent = header_number(headers, "x-current-token-count").is_some_and(|n| n < 1);
            PushReply::Accepted {
                acked: vec![0],
                wait: if spent { replenished_in(headers) } else { None },
            }
        } else {
            PushReply::Failed {
                reason: format!(
                    "inventory reply does not show the amount sent: {}",
                    excerpt(body)
                ),
                retryable: true,
            }
        }
    }

    fn read_groups(&self, skus: &[&str]) -> Vec<Vec<usize>> {
        (0..skus.len()).map(|i| vec![i]).collect()
    }

    fn read_request(&self, skus: &[String]) -> OutboundRequest {
        let seller_sku = self.seller_sku(&skus[0]).unwrap_or(&skus[0]);
        self.request(
            http::Method::GET,
            &format!(
                "/v3/inventory?sku={}",
                utf8_percent_encode(seller_sku, NON_ALPHANUMERIC)
            ),
            None,
        )
    }

    fn read_reply(&self, status: u16, body: &[u8]) -> Result<Levels, String> {
        if status == 404 {
            return Ok(Vec::new());
        }
        let reply = super::call::json_reply(status, body)?;
        let seller_sku = reply["sku"].as_str().ok_or("the reply names no sku")?;
        let sku = self
            .catalog
            .sku_of(seller_sku, None, None)
            .ok_or("the reply names a SKU the catalog does not map")?;
        Ok(vec![(
            sku.to_string(),
            reply["quantity"]["amount"].as_i64(),
        )])
    }

    fn order_poll(&self) -> Option<&dyn OrderPoll> {
        Some(self)
    }

    fn throttle(&self, status: u16, headers: &HeaderMap, _body: &[u8]) -> Option<Option<Duration>> {
        read_throttle(status, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_waits_for_the_replenishment_unless_it_is_already_past() {
        let at = |ms_from_now: i64| {
            let mut headers = HeaderMap::new();
            let ms = crate::clock::now_micros() / 1_000 + ms_from_now;
            headers.insert("x-next-replenishment-time", ms.to_string().parse().unwrap());
            headers
        };
        let named = read_throttle(429, &at(2_000)).flatten().unwrap();
        assert!(named > Duration::from_millis(1_900), "{named:?}");
        assert_eq!(
            read_throttle(429, &at(-1_000)),
            Some(None),
            "the caller's doubling"
        );
        assert_eq!(read_throttle(200, &at(2_000)), None);
    }

    #[test]
    fn a_replenishment_time_of_any_i64_waits_at_most_a_minute() {
        let wait = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-next-replenishment-time", value.parse().unwrap());
            replenished_in(&headers)
        };
        assert_eq!(wait("-9223372036854775808"), Some(Duration::ZERO));
        assert_eq!(wait("9223372036854775807"), Some(Duration::from_secs(60)));
    }

    /// The header names a millisecond, and the refill may come late in it: waking at its
    /// start could draw a 429 (a `pushes_pace_by_the_token_count…` run once did).
    #[test]
    fn a_replenishment_time_is_waited_for_to_the_end_of_its_millisecond() {
        let mut headers = HeaderMap::new();
        let at_ms = crate::clock::now_micros() / 1_000 + 50;
        headers.insert(
            "x-next-replenishment-time",
            at_ms.to_string().parse().unwrap(),
        );
        let wait = replenished_in(&headers).unwrap();
        // Waking `wait` after the call is at or past the millisecond's end.
        let wakes = crate::clock::now_micros() + i64::try_from(wait.as_micros()).unwrap();
        assert!(wakes >= (at_ms + 1) * 1_000, "{wait:?}");
    }

    #[test]
    fn epoch_milliseconds_no_time_can_be_are_none_not_an_overflow() {
        assert_eq!(millis(&json!(1)), Some(1_999));
        assert_eq!(millis(&json!(9_300_000_000_000_000_i64)), None);
        assert_eq!(millis(&json!(i64::MIN)), None);
        assert!(millis(&json!("2026-11-27T10:00:00Z")).is_some());
    }
}
