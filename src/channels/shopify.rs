//! The `shopify` kind: a Shopify store, spoken to as a Shopify app (CHANNELS.md §1).
//!
//! Inbound `POST /webhooks/{name}`, checked with `X-Shopify-Hmac-Sha256` (base64 of
//! HMAC-SHA256 over the raw body with the app secret; the previous secret too while a
//! rotation is under way):
//! - `orders/create`, `orders/updated`, `orders/paid`, `orders/cancelled`,
//!   `orders/fulfilled`, `orders/partially_fulfilled` (and the poll): whatever the topic,
//!   the order as it now is. Each line is placed, and its units shipped (Σ of its
//!   `success` fulfillments) and released (removed by edits or `cancel` refunds, read
//!   from `current_quantity`; all units not shipped once the order is cancelled or
//!   closed) are sent as running totals, keyed `{channel}/{order}/{line}/shipped_to/{n}`:
//!   a lost, late or repeated topic is made up by the next, and never counts a unit
//!   twice. `refunds/create` (and an order's `refunds`) return units refunded as
//!   `return`, keyed per refund; `orders/edited` is taken (its `orders/updated` says it).
//!   Source times come from the payload (`created_at`, `cancelled_at`, ...), else
//!   `X-Shopify-Triggered-At`.
//! - `inventory_levels/update`: the level the store shows, for the SKU the catalog maps
//!   the `inventory_item_id` (at `location_id`) to; keyed by `X-Shopify-Event-Id`. An
//!   item the catalog does not map is recorded as `unmapped` and answered 200 (Shopify
//!   would retry a refusal and then delete the subscription).
//!
//! Outbound: GraphQL `inventorySetQuantities` on `/admin/api/{version}/graphql.json`
//! with `X-Shopify-Access-Token`, many items per call, each with the compare value the
//! engine expects the store to show: `changeFromQuantity` from API version 2026-04 on,
//! `compareQuantity` before it; an item never acknowledged opts out explicitly
//! (`changeFromQuantity: null`, or `ignoreCompareQuantity: true` in a request of its
//! own). From 2026-01 each call carries `@idempotent(key:)`. A stale compare comes back
//! as a `userErrors` code: from 2026-01 the pusher sends the call's changes as one
//! `inventoryAdjustQuantities` of deltas (`adjust`), which commute with the store's own
//! sales; before it, it reads those items and pushes once more. Replies
//! carry `extensions.cost.throttleStatus`; a `THROTTLED` error (HTTP 200) is a throttle,
//! and a nearly empty cost bucket pauses the next call until it refills.
//!
//! Reads for reconciliation: the GraphQL `nodes(ids:)` query of CHANNELS.md.
//!
//! Orders are also polled (`orders.json?updated_at_min=&updated_at_max=`, in windows, every `poll_interval_s`,
//! default 60): Shopify deletes a subscription after 8 failed deliveries. The poll is
//! REST, whose requests have a bucket of their own apart from GraphQL's cost (`REST_RATE`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use serde_json::{json, Value};

use super::kind::{self, Kind, Problem};
use super::payload;
use super::Pace;
use super::{
    body_hmac, excerpt, unmapped, Catalog, ChannelAdapter, Delivery, OutboundRequest, PushItem,
};
use super::{BoxFuture, Caller, Inbound, OrderPoll, PollPage, PushReply, RateLimit};
use crate::clock::Micros;
use crate::config::{ChannelConfig, ChannelKind};
use crate::core::event::{Event, EventKind, LineRef};
use crate::refusal::ApiError;

/// Items per `inventorySetQuantities` call. Shopify documents no cap for it (its older
/// bulk mutation took 100); 100 keeps each call's cost and size modest.
const BATCH_MAX: usize = 250;
const BATCH_DEFAULT: usize = 100;
/// A mutation costs 10 points; the Standard plan restores 100 points/s (10 calls/s) into
/// a bucket of 1,000: a burst of 50 calls spends half of it and leaves room for reads.
/// Every reply's `throttleStatus` paces us further when the bucket runs low.
const DEFAULT_RATE: RateLimit = RateLimit {
    requests_per_second: 10.0,
    burst: 50,
};
/// The REST Admin API's limit, which the order poll's requests spend: a bucket of 40
/// leaking 2 requests a second on the Standard plan (4 on Advanced, 20 on Plus), a full
/// bucket answering 429 with `Retry-After`
/// (https://shopify.dev/docs/api/admin-rest/usage/rate-limits). Apart from GraphQL's
/// cost bucket, so a poll neither waits behind pushes nor starves them. Paced at the
/// Standard plan's, which every plan allows: a busy store's pass of many pages (250
/// orders each) sent at once would meet the 429 and, its watermark unmoved, meet it again
/// on every pass.
const REST_RATE: RateLimit = RateLimit {
    requests_per_second: 2.0,
    burst: 40,
};
/// Variants a listing page asks for: Shopify's most per connection. At one point per
/// object a node selects (the variant and its inventory item), a page's requested cost
/// is about 500, under the 1,000 a single query may cost on every plan
/// (https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits).
const LISTING_PAGE: usize = 250;

/// Throttled answers a read waits out before it fails.
const READ_THROTTLED_MAX: usize = 10;

/// The userErrors codes of a failed compare.
const STALE_CODES: [&str; 2] = ["CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"];
/// "This request is currently in progress, please try again": an earlier send of this
/// very request, under this key, is still being applied. Sent again with the same key
/// it is answered once; under a new key the write would land twice, or be found stale
/// against itself (InventorySetQuantitiesUserErrorCode and
/// InventoryAdjustQuantitiesUserErrorCode,
/// https://shopify.dev/docs/api/admin-graphql/2026-01/enums/InventorySetQuantitiesUserErrorCode).
const IN_PROGRESS: &str = "IDEMPOTENCY_CONCURRENT_REQUEST";
/// userErrors that say "try again" rather than "this write is wrong": a previous attempt
/// under the key failed ("Retry with a new idempotency key"), or the store could not
/// apply it now ("The quantities couldn't be adjusted. Try again.", SERVICE_UNAVAILABLE).
const TRY_AGAIN_CODES: [&str; 3] = [
    "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED",
    "ADJUST_QUANTITIES_FAILED",
    "SERVICE_UNAVAILABLE",
];

/// A Shopify store.
pub struct Shopify {
    name: String,
    base_url: String,
    api_version: String,
    access_token: String,
    /// The numeric id of the configured location.
    location: String,
    keys: Vec<Vec<u8>>,
    /// Item ids and locations as plain numbers.
    catalog: Catalog,
    batch_max: usize,
    /// 2026-04 and later: `changeFromQuantity` (mandatory); before: `compareQuantity`.
    change_from: bool,
    /// 2026-01 and later: the `@idempotent` directive.
    idempotent: bool,
    boot: Micros,
    calls: AtomicU64,
    /// The last set request that has not had a definitive answer (its fingerprint and
    /// idempotency key): the same request sent again reuses the key, so a call that was
    /// applied but whose answer was lost is answered with its first result instead of
    /// being applied twice (Shopify: "a retried key returns the original result").
    unanswered: std::sync::Mutex<Option<(u64, String)>>,
    poll_interval: Duration,
    /// The REST Admin API's budget (`REST_RATE`): the order poll's.
    rest_bucket: std::sync::Arc<tokio::sync::Mutex<super::pacing::TokenBucket>>,
}

/// The `[[channels]]` keys of kind `shopify` (CHANNELS.md §1; the Admin API's
/// authentication: https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Sent as `X-Shopify-Access-Token`.
    access_token: Option<String>,
    /// The Admin API version, `YYYY-MM` (https://shopify.dev/docs/api/usage/versioning).
    api_version: Option<String>,
    /// The location whose levels lockstep sets, `gid://shopify/Location/N` or `N`.
    location_id: Option<String>,
}

impl Kind for Shopify {
    type Settings = Settings;

    fn check(channel: &ChannelConfig, settings: &Settings) -> Result<(), Problem> {
        let shopify = ChannelKind::Shopify;
        kind::required(&channel.webhook_secret, "webhook_secret", shopify)?;
        kind::required(&settings.access_token, "access_token", shopify)?;
        let version = kind::required(&settings.api_version, "api_version", shopify)?;
        kind::required(&settings.location_id, "location_id", shopify)?;
        let ok = version.len() == 7
            && version.as_bytes()[4] == b'-'
            && version[..4]
                .bytes()
                .chain(version[5..].bytes())
                .all(|b| b.is_ascii_digit());
        if !ok {
            return Err(Problem::new(
                "api_version",
                "a Shopify API version like \"2026-01\"",
            ));
        }
        Ok(())
    }

    fn check_item_id(id: &str) -> Result<(), &'static str> {
        let n = id
            .strip_prefix("gid://shopify/InventoryItem/")
            .unwrap_or(id);
        if kind::one_number(n) {
            Ok(())
        } else {
            Err("a Shopify item_id is the inventory item's number or its gid://shopify/InventoryItem/ form")
        }
    }

    fn open(
        channel: &ChannelConfig,
        settings: Settings,
        catalog: Catalog,
        _data_dir: &std::path::Path,
    ) -> Shopify {
        Shopify::from_settings(channel, settings, catalog)
    }
}

/// `gid://shopify/InventoryItem/123` and `123` are one id: keep the number.
pub fn numeric_id(id: &str) -> String {
    id.rsplit('/').next().unwrap_or(id).to_string()
}

impl Shopify {
    /// The idempotency key of a set request: the key of the last unanswered request
    /// when this is the same request again (a retry), else a new one.
    fn key_for(&self, input: &Value) -> String {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = ahash::AHasher::default();
        input.to_string().hash(&mut hasher);
        let fingerprint = hasher.finish();
        let mut unanswered = self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, key)) = unanswered.as_ref() {
            if *seen == fingerprint {
                return key.clone();
            }
        }
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let key = format!("lockstep-{}-{:x}-{n}", self.name, self.boot);
        *unanswered = Some((fingerprint, key.clone()));
        key
    }

    /// What each item (by inventory item number) shows after an adjustment.
    fn adjust_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        ids: &[String],
    ) -> Result<Vec<i64>, PushReply> {
        if let Some(failed) = super::http_failure(status, headers, body) {
            return Err(failed);
        }
        let reply: Value = serde_json::from_slice(body).map_err(|_| PushReply::Failed {
            reason: format!("reply is not JSON: {}", excerpt(body)),
            retryable: true,
        })?;
        if let Some(refused) = graphql_errors(&reply) {
            return Err(refused);
        }
        let adjusted = &reply["data"]["inventoryAdjustQuantities"];
        let errors = payload::list(&adjusted["userErrors"]);
        if still_in_progress(errors) {
            return Err(in_progress());
        }
        // A definitive answer: the next request, even the same one, is a new intent.
        self.unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if !errors.is_empty() {
            return Err(user_errors_failed(errors));
        }
        let changes = payload::list(&adjusted["inventoryAdjustmentGroup"]["changes"]);
        ids.iter()
            .map(|id| {
                changes
                    .iter()
                    .filter(|c| c["name"].as_str().is_none_or(|n| n == "available"))
                    .find(|c| c["item"]["id"].as_str().map(numeric_id).as_deref() == Some(id))
                    .and_then(|c| c["quantityAfterChange"].as_i64())
                    .ok_or_else(|| PushReply::Failed {
                        // Applied, but what it left is not known: read before the next.
                        reason: format!(
                            "the adjustment's reply has no quantity after it for item {id}"
                        ),
                        retryable: true,
                    })
            })
            .collect()
    }

    /// The items (indices) that a set answer's non-stale `userErrors` name.
    fn refused_items(&self, body: &[u8], len: usize) -> Vec<usize> {
        let Ok(reply) = serde_json::from_slice::<Value>(body) else {
            return Vec::new();
        };
        let errors = &reply["data"]["inventorySetQuantities"]["userErrors"];
        let mut refused: Vec<usize> = payload::list(errors)
            .iter()
            .filter(|e| !e["code"].as_str().is_some_and(|c| STALE_CODES.contains(&c)))
            .filter_map(|e| e["field"].get(2)?.as_str()?.parse().ok())
            .filter(|i| *i < len)
            .collect();
        refused.sort_unstable();
        refused.dedup();
        refused
    }

    fn from_settings(config: &ChannelConfig, settings: Settings, catalog: Catalog) -> Shopify {
        let api_version = settings.api_version.unwrap_or_default();
        Shopify {
            name: config.name.clone(),
            base_url: config.base_url.trim_end_matches('/').to_string(),
            change_from: api_version.as_str() >= "2026-04",
            idempotent: api_version.as_str() >= "2026-01",
            api_version,
            access_token: settings.access_token.unwrap_or_default(),
            location: numeric_id(settings.location_id.as_deref().unwrap_or_default()),
            keys: kind::secrets(config)
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            catalog: catalog.normalized(numeric_id),
            batch_max: kind::batch_max(config, BATCH_DEFAULT, BATCH_MAX),
            boot: crate::clock::now_micros(),
            calls: AtomicU64::new(0),
            unanswered: std::sync::Mutex::new(None),
            poll_interval: Duration::from_secs(config.poll_interval_s.unwrap_or(60)),
            rest_bucket: std::sync::Arc::new(tokio::sync::Mutex::new(
                super::pacing::TokenBucket::new(REST_RATE),
            )),
        }
    }

    fn graphql(&self, body: &Value) -> OutboundRequest {
        http::Request::post(format!(
            "{}/admin/api/{}/graphql.json",
            self.base_url, self.api_version
        ))
        .header("content-type", "application/json")
        .header("x-shopify-access-token", &self.access_token)
        .body(serde_json::to_vec(body).expect("json serializes"))
        .expect("a validated base_url makes a valid request")
    }

    /// The location an item lives at (its catalog row's, else the channel's).
    fn location_of(&self, sku: &str) -> String {
        self.catalog
            .item(sku)
            .and_then(|i| i.location.clone())
            .unwrap_or_else(|| self.location.clone())
    }

    /// The events of an order payload (every `orders/*` topic, and the poll): each line's
    /// placement and, as running totals, the units it has shipped and released, so any
    /// snapshot of the order (a webhook, a late or repeated one, the poll) says the same
    /// and the newest total wins (shopify.dev REST Order, `line_items`, `fulfillments`,
    /// `refunds`: https://shopify.dev/docs/api/admin-rest/2024-10/resources/order).
    ///
    /// Per line: shipped = Σ its `quantity` in the `success` fulfillments (a fulfillment
    /// ships some units of a line: partial fulfilment); released = the units removed from
    /// it (`quantity - current_quantity`, covering order edits and refunds) less those
    /// refunded as `return` (shipped, then returned: not a release) or `no_restock`
    /// (shipped or not, Shopify does not say; held until the order closes). Once the order
    /// is cancelled or closed, every unit not shipped is released.
    fn order_events(
        &self,
        order: &Value,
        triggered: Option<Micros>,
        now: Micros,
    ) -> Result<Vec<Event>, ApiError> {
        let order_id = payload::required_id(&order["id"], "id")?;
        let lines = order["line_items"]
            .as_array()
            .ok_or_else(|| ApiError::field("invalid_payload", "line_items", "must be an array"))?;
        let at =
            |field: &str| payload::source_time(&[payload::time(&order[field]), triggered], now);
        let changed = at("updated_at");
        let done = !order["cancelled_at"].is_null() || !order["closed_at"].is_null();
        let done_at = if order["cancelled_at"].is_null() {
            at("closed_at")
        } else {
            at("cancelled_at")
        };
        let fulfilled = shipped_units(order);
        let (kept, mut events) = self.refunded_lines(order, &order_id, now)?;
        let reader = payload::OrderLines::of(&self.name, &order_id, at("created_at"), now);
        for (i, line) in lines.iter().enumerate() {
            let Some((line_id, qty)) = reader.read(line, ("id", "quantity"), i, &mut events) else {
                continue;
            };
            let Some(sku) = payload::sku(&line["sku"]) else {
                let variant = payload::id(&line["variant_id"]).unwrap_or_else(|| "none".into());
                events.push(unmapped(
                    &self.name,
                    &format!("order {order_id} line {line_id} (variant {variant}) has no SKU"),
                    format!("{}/{order_id}/{line_id}/unmapped", self.name),
                    at("created_at"),
                    now,
                ));
                continue;
            };
            // Payloads from before `fulfillments` was read carry the line's status only.
            let shipped = match fulfilled.get(&line_id) {
                Some(units) => (*units).min(qty),
                None if line["fulfillment_status"].as_str() == Some("fulfilled") => qty,
                None => 0,
            };
            let released = if done {
                qty - shipped
            } else {
                let current = line["current_quantity"].as_i64().unwrap_or(qty);
                let not_released = kept.get(&line_id).copied().unwrap_or(0);
                // Saturating: `current_quantity` is the payload's, any i64.
                qty.saturating_sub(current)
                    .saturating_sub(not_released)
                    .clamp(0, qty - shipped)
            };
            events.push(self.line_event(
                &sku,
                EventKind::OrderPlaced,
                qty,
                &order_id,
                &line_id,
                at("created_at"),
                now,
            ));
            if shipped > 0 {
                events.push(self.line_event(
                    &sku,
                    EventKind::OrderShippedTotal,
                    shipped,
                    &order_id,
                    &line_id,
                    changed,
                    now,
                ));
            }
            if released > 0 {
                let when = if done { done_at } else { changed };
                events.push(self.line_event(
                    &sku,
                    EventKind::OrderReleasedTotal,
                    released,
                    &order_id,
                    &line_id,
                    when,
                    now,
                ));
            }
        }
        payload::stamp_origins(&mut events);
        Ok(events)
    }

    /// From an order's `refunds`: per line, the units refunded that are not releases
    /// (`return`, `no_restock`, `legacy_restock`), and the `return` restocks as events
    /// (the same as `refunds/create` gives, under the same keys).
    fn refunded_lines(
        &self,
        order: &Value,
        order_id: &str,
        now: Micros,
    ) -> Result<(ahash::AHashMap<String, i64>, Vec<Event>), ApiError> {
        let mut kept = ahash::AHashMap::new();
        let mut events = Vec::new();
        for refund in payload::list(&order["refunds"]) {
            for line in payload::list(&refund["refund_line_items"]) {
                let (Some(line_id), Some(units)) = (
                    payload::id(&line["line_item_id"]),
                    payload::quantity(&line["quantity"]),
                ) else {
                    continue;
                };
                if line["restock_type"].as_str() != Some("cancel") {
                    *kept.entry(line_id).or_insert(0) += units;
                }
            }
            let mut with_order = refund.clone();
            with_order["order_id"] = json!(order_id);
            events.extend(
                self.refund_events(&with_order, None, now)?
                    .into_iter()
                    // And the records of its lines that cannot be read, as
                    // `refunds/create` gives them.
                    .filter(|e| matches!(e.kind, EventKind::Returned | EventKind::Unmapped)),
            );
        }
        Ok((kept, events))
    }

    #[allow(clippy::too_many_arguments)]
    fn line_event(
        &self,
        sku: &str,
        kind: EventKind,
        qty: i64,
        order_id: &str,
        line_id: &str,
        source_ts: Micros,
        now: Micros,
    ) -> Event {
        Event {
            sku: sku.to_string(),
            kind,
            qty,
            source: self.name.clone(),
            source_ts,
            received_at: now,
            key: payload::line_key(&self.name, order_id, line_id, kind, qty),
            line: Some(LineRef {
                order_id: order_id.to_string(),
                line_id: line_id.to_string(),
            }),
            origin: None,
        }
    }

    fn refund_events(
        &self,
        refund: &Value,
        triggered: Option<Micros>,
        now: Micros,
    ) -> Result<Vec<Event>, ApiError> {
        let refund_id = payload::required_id(&refund["id"], "id")?;
        let order_id = payload::required_id(&refund["order_id"], "order_id")?;
        let refunded_at = payload::time(&refund["created_at"]).map(|t| payload::held_ahead(t, now));
        let source_ts = payload::source_time(&[refunded_at, triggered], now);
        let lines = refund["refund_line_items"].as_array().ok_or_else(|| {
            ApiError::field("invalid_payload", "refund_line_items", "must be an array")
        })?;
        let mut events = Vec::new();
        let prefix = format!("{}/refund/{refund_id}", self.name);
        let reader = payload::OrderLines {
            channel: &self.name,
            prefix: &prefix,
            order_id: &order_id,
            at: source_ts,
            now,
        };
        for (i, line) in lines.iter().enumerate() {
            // Only `return` brings shipped units back. A `cancel` is a release of units
            // not shipped: the order's own payload says it (`current_quantity`, in the
            // `orders/updated` Shopify sends beside this topic, and in the poll) as the
            // line's running total, which a count of units here would be counted twice
            // against. `no_restock` and `legacy_restock` bring nothing back.
            let kind = match line["restock_type"].as_str() {
                Some("return") => EventKind::Returned,
                _ => continue,
            };
            let fields = ("line_item_id", "quantity");
            let Some((line_id, qty)) = reader.read(line, fields, i, &mut events) else {
                continue;
            };
            let Some(sku) = payload::sku(&line["line_item"]["sku"]) else {
                events.push(unmapped(
                    &self.name,
                    &format!("refund {refund_id} of order {order_id} line {line_id} has no SKU"),
                    format!(
                        "{}/{order_id}/{line_id}/refund/{refund_id}/unmapped",
                        self.name
                    ),
                    source_ts,
                    now,
                ));
                continue;
            };
            let mut event = self.line_event(&sku, kind, qty, &order_id, &line_id, source_ts, now);
            if kind == EventKind::Returned {
                // Each refund returns its own units: one key per refund and line.
                event.key = format!("{}/{order_id}/{line_id}/returned/{refund_id}", self.name);
                // Every later snapshot of the order carries its refunds again: one from
                // before the keys kept may have come back already (`Event::origin`).
                event.origin = refunded_at;
            }
            events.push(event);
        }
        Ok(events)
    }

    fn level_event(
        &self,
        level: &Value,
        event_id: Option<&str>,
        triggered: Option<Micros>,
        now: Micros,
    ) -> Result<Vec<Event>, ApiError> {
        let item = numeric_id(&payload::required_id(
            &level["inventory_item_id"],
            "inventory_item_id",
        )?);
        let location = payload::id(&level["location_id"]).map(|l| numeric_id(&l));
        let source_ts =
            payload::source_time(&[payload::time(&level["updated_at"]), triggered], now);
        let updated = level["updated_at"].as_str().unwrap_or("");
        let key = match event_id {
            Some(id) => format!("{}/event/{id}", self.name),
            None => format!(
                "{}/level/{item}/{}/{updated}",
                self.name,
                location.as_deref().unwrap_or("-")
            ),
        };
        let Some(sku) = self
            .catalog
            .sku_of(&item, location.as_deref(), Some(&self.location))
        else {
            let at = location.as_deref().unwrap_or("no location");
            return Ok(vec![unmapped(
                &self.name,
                &format!("inventory item {item} at location {at}"),
                key,
                source_ts,
                now,
            )]);
        };
        // `available: null`: the item is not tracked; there is no level to compare.
        let Some(available) = level["available"].as_i64() else {
            return Ok(Vec::new());
        };
        Ok(vec![Event {
            sku: sku.to_string(),
            kind: EventKind::Level,
            qty: available,
            source: self.name.clone(),
            source_ts,
            received_at: now,
            key,
            line: None,
            origin: None,
        }])
    }
}

/// How long the cost bucket needs to hold `needed` points again; `None` when it does.
fn cost_wait(reply: &Value, needed: f64) -> Option<Duration> {
    let status = &reply["extensions"]["cost"]["throttleStatus"];
    let available = status["currentlyAvailable"].as_f64()?;
    let restore = status["restoreRate"].as_f64().filter(|r| *r > 0.0)?;
    (available < needed)
        .then(|| Duration::from_secs_f64(((needed - available) / restore).min(60.0)))
}

/// What one call costs, from the reply (10 for a mutation when it says nothing).
fn call_cost(reply: &Value) -> f64 {
    reply["extensions"]["cost"]["requestedQueryCost"]
        .as_f64()
        .unwrap_or(10.0)
}

impl Shopify {
    /// One webhook delivery: verified, then read by its topic. The payload's own time is
    /// the delivery's (`Inbound::changed_at`): an order's `updated_at` (its events may
    /// all carry older times: a placement of long ago, in an edit made now), a refund's
    /// `created_at`, a level's `updated_at`. Retries carry "the original
    /// payload" (https://shopify.dev/changelog/updates-to-webhook-retry-mechanism).
    fn delivery(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Inbound, ApiError> {
        body_hmac::verify(headers, "x-shopify-hmac-sha256", body, &self.keys)?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let topic = header("x-shopify-topic").ok_or_else(|| {
            ApiError::field("missing_topic", "X-Shopify-Topic", "the header is missing")
        })?;
        let triggered = header("x-shopify-triggered-at").and_then(crate::clock::parse_rfc3339);
        // Not signed (the HMAC covers the body), and it becomes a key: held to what
        // Shopify sends (a UUID), never a header's worth of bytes.
        let event_id = header("x-shopify-event-id");
        if event_id.is_some_and(|id| {
            id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic())
        }) {
            return Err(ApiError::field(
                "invalid_event_id",
                "X-Shopify-Event-Id",
                "must be 1 to 128 visible ASCII characters",
            ));
        }
        let value = payload::json(body)?;
        let mut changed_at = None;
        let events = match topic {
            "orders/create"
            | "orders/updated"
            | "orders/paid"
            | "orders/cancelled"
            | "orders/fulfilled"
            | "orders/partially_fulfilled" => {
                changed_at = payload::time(&value["updated_at"]);
                self.order_events(&value, triggered, now)
            }
            // An edit's deltas (`order_edit.line_items.additions/removals`) come with no
            // totals; Shopify sends `orders/updated` for the same change, whose
            // `current_quantity` and new lines say it as totals. Taken, not applied (community.shopify.com, "Difference between the
            // orders/updated and orders/edited webhooks": orders/updated fires on every change).
            "orders/edited" => Ok(Vec::new()),
            "refunds/create" => {
                changed_at = payload::time(&value["created_at"]);
                self.refund_events(&value, triggered, now)
            }
            "inventory_levels/update" => {
                changed_at = payload::time(&value["updated_at"]);
                self.level_event(&value, event_id, triggered, now)
            }
            // Other topics carry nothing about stock: taken, so Shopify does not retry.
            _ => Ok(Vec::new()),
        }?;
        Ok(Inbound {
            events,
            changed_at,
            ..Inbound::default()
        })
    }
}

impl ChannelAdapter for Shopify {
    fn name(&self) -> &str {
        &self.name
    }

    /// `productVariants` of active and draft products, `LISTING_PAGE` a page, by the
    /// connection's cursor (https://shopify.dev/docs/api/admin-graphql/latest/queries/productVariants,
    /// https://shopify.dev/docs/api/usage/pagination-graphql): each variant's SKU and its
    /// inventory item, the id lockstep writes to. Archived products are left out, so an
    /// old product's SKU is no duplicate of the live one's. A throttled page (the
    /// `THROTTLED` error, or a 429) is asked again once the cost bucket has refilled.
    fn listings<'a>(
        &'a self,
        caller: &'a Caller,
        cursor: Option<&'a str>,
    ) -> super::listing::Listings<'a> {
        Box::pin(async move {
            let request = self.graphql(&json!({
                "query": "query LockstepListings($first: Int!, $after: String) { productVariants(first: $first, after: $after, query: \"product_status:ACTIVE,DRAFT\") { nodes { id sku inventoryItem { id tracked } } pageInfo { hasNextPage endCursor } } }",
                "variables": {"first": LISTING_PAGE, "after": cursor},
            }));
            let (status, headers, body) = caller.call(request).await?;
            listing_page(status, &headers, &body)
        })
    }

    fn batch_max(&self) -> usize {
        self.batch_max
    }

    fn pace(&self) -> Pace {
        Pace::Published(DEFAULT_RATE)
    }

    fn inbound(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Delivery, ApiError> {
        self.delivery(headers, body, now).map(Delivery::Carried)
    }

    fn push_groups(&self, items: &[PushItem]) -> Vec<Vec<usize>> {
        if self.change_from {
            // `changeFromQuantity: null` opts one item out; all travel together.
            return vec![(0..items.len()).collect()];
        }
        // Before 2026-04 the opt-out (`ignoreCompareQuantity`) covers a whole request.
        let (compared, first): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|i| items[*i].expected.is_some());
        [compared, first]
            .into_iter()
            .filter(|g| !g.is_empty())
            .collect()
    }

    fn order_poll(&self) -> Option<&dyn OrderPoll> {
        Some(self)
    }

    fn read_groups(&self, skus: &[&str]) -> Vec<Vec<usize>> {
        // One `nodes` query reads one location.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, sku) in skus.iter().enumerate() {
            let location = self.location_of(sku);
            match groups.iter_mut().find(|(l, _)| *l == location) {
                Some((_, group)) => group.push(i),
                None => groups.push((location, vec![i])),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }

    fn carries(&self, sku: &str) -> bool {
        self.catalog.item(sku).is_some()
    }

    fn push_request(&self, items: &[PushItem], _now: Micros) -> OutboundRequest {
        let opt_out = !self.change_from && items.iter().all(|i| i.expected.is_none());
        let quantities: Vec<Value> = items
            .iter()
            .map(|item| {
                let id = self.catalog.item(&item.sku).map_or("0", |i| i.id.as_str());
                let mut q = json!({
                    "inventoryItemId": format!("gid://shopify/InventoryItem/{id}"),
                    "locationId": format!("gid://shopify/Location/{}", self.location_of(&item.sku)),
                    "quantity": item.quantity,
                });
                if self.change_from {
                    q["changeFromQuantity"] = json!(item.expected);
                } else if let Some(expected) = item.expected {
                    q["compareQuantity"] = json!(expected);
                }
                q
            })
            .collect();
        let mut input = json!({
            "name": "available",
            "reason": "correction",
            "referenceDocumentUri": format!("lockstep://{}/push", self.name),
            "quantities": quantities,
        });
        if opt_out {
            input["ignoreCompareQuantity"] = json!(true);
        }
        let selection = "{ inventoryAdjustmentGroup { id } userErrors { field message code } }";
        let body = if self.idempotent {
            let key = self.key_for(&input);
            json!({
                "query": format!("mutation LockstepSet($input: InventorySetQuantitiesInput!, $key: String!) {{ inventorySetQuantities(input: $input) @idempotent(key: $key) {selection} }}"),
                "variables": {"input": input, "key": key},
            })
        } else {
            json!({
                "query": format!("mutation LockstepSet($input: InventorySetQuantitiesInput!) {{ inventorySetQuantities(input: $input) {selection} }}"),
                "variables": {"input": input},
            })
        };
        self.graphql(&body)
    }

    /// A non-stale `userErrors` entry refuses only its own item: the call is sent once
    /// more without the refused items (Shopify applies a call whole or not at all), and
    /// the refused ones go back to the outbox, retried slowly.
    fn push<'a>(&'a self, caller: &'a Caller, items: &'a [PushItem]) -> BoxFuture<'a, PushReply> {
        Box::pin(async move {
            let request = self.push_request(items, crate::clock::now_micros());
            let (status, headers, body) = match caller.call(request).await {
                Ok(answer) => answer,
                Err(reason) => {
                    return PushReply::Failed {
                        reason,
                        retryable: true,
                    }
                }
            };
            let reply = self.push_reply(status, &headers, &body, items);
            let PushReply::Failed { reason, .. } = &reply else {
                return reply;
            };
            let refused = self.refused_items(&body, items.len());
            if refused.is_empty() || refused.len() >= items.len() {
                return reply;
            }
            tracing::warn!(channel = %self.name, %reason, "items refused by Shopify; the rest sent without them");
            let rest: Vec<usize> = (0..items.len()).filter(|i| !refused.contains(i)).collect();
            let subset: Vec<PushItem> = rest.iter().map(|i| items[*i].clone()).collect();
            let back = |indices: Vec<usize>| -> Vec<usize> {
                indices
                    .into_iter()
                    .filter_map(|i| rest.get(i).copied())
                    .collect()
            };
            match super::push_once(self, caller, &subset).await {
                PushReply::Accepted { acked, wait } => PushReply::Accepted {
                    acked: back(acked),
                    wait,
                },
                PushReply::Stale { stale } => PushReply::Stale { stale: back(stale) },
                other => other,
            }
        })
    }

    fn push_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        items: &[PushItem],
    ) -> PushReply {
        if let Some(failed) = super::http_failure(status, headers, body) {
            return failed;
        }
        let Ok(reply) = serde_json::from_slice::<Value>(body) else {
            return PushReply::Failed {
                reason: format!("reply is not JSON: {}", excerpt(body)),
                retryable: true,
            };
        };
        if let Some(throttled) = graphql_errors(&reply) {
            return throttled;
        }
        let errors = reply["data"]["inventorySetQuantities"]["userErrors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if still_in_progress(&errors) {
            return in_progress();
        }
        // A definitive answer: the next request, even the same one, is a new intent.
        self.unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if errors.is_empty() {
            return PushReply::Accepted {
                acked: (0..items.len()).collect(),
                wait: cost_wait(&reply, call_cost(&reply)),
            };
        }
        let stale: Vec<usize> = errors
            .iter()
            .filter(|e| e["code"].as_str().is_some_and(|c| STALE_CODES.contains(&c)))
            .filter_map(|e| e["field"].get(2)?.as_str()?.parse().ok())
            .filter(|i| *i < items.len())
            .collect();
        if stale.len() == errors.len() {
            return PushReply::Stale { stale };
        }
        user_errors_failed(&errors)
    }

    /// `inventoryAdjustQuantities` of `quantity - expected` for each item, with
    /// `changeFromQuantity: null` (no compare: the delta is meant to land on whatever
    /// the store's own sales left) and `@idempotent(key:)`, required on it from 2026-04
    /// (https://shopify.dev/docs/api/admin-graphql/2026-04/mutations/inventoryAdjustQuantities;
    /// `changeFromQuantity` required with an explicit `null` opt-out from 2026-04:
    /// https://shopify.dev/changelog/making-changefromquantity-field-required). The reply's
    /// `changes` give each item's `quantityAfterChange`. Offered from 2026-01, where both
    /// the directive and the field exist: before it a retried adjustment could apply twice.
    fn adjust<'a>(
        &'a self,
        caller: &'a Caller,
        items: &'a [PushItem],
    ) -> Option<BoxFuture<'a, Result<Vec<i64>, PushReply>>> {
        if !self.idempotent {
            return None;
        }
        Some(Box::pin(async move {
            let ids: Vec<String> = items
                .iter()
                .map(|item| {
                    self.catalog
                        .item(&item.sku)
                        .map_or("0", |i| i.id.as_str())
                        .to_string()
                })
                .collect();
            let changes: Vec<Value> = items
                .iter()
                .zip(&ids)
                .map(|(item, id)| {
                    json!({
                        "inventoryItemId": format!("gid://shopify/InventoryItem/{id}"),
                        "locationId": format!("gid://shopify/Location/{}", self.location_of(&item.sku)),
                        "delta": item.quantity - item.expected.unwrap_or(item.quantity),
                        "changeFromQuantity": null,
                    })
                })
                .collect();
            let input = json!({
                "name": "available",
                "reason": "correction",
                "referenceDocumentUri": format!("lockstep://{}/push", self.name),
                "changes": changes,
            });
            let key = self.key_for(&input);
            let body = json!({
                "query": "mutation LockstepAdjust($input: InventoryAdjustQuantitiesInput!, $key: String!) { inventoryAdjustQuantities(input: $input) @idempotent(key: $key) { inventoryAdjustmentGroup { changes { name quantityAfterChange item { id } } } userErrors { field message code } } }",
                "variables": {"input": input, "key": key},
            });
            let (status, headers, body) =
                caller
                    .call(self.graphql(&body))
                    .await
                    .map_err(|reason| PushReply::Failed {
                        reason,
                        retryable: true,
                    })?;
            self.adjust_reply(status, &headers, &body, &ids)
        }))
    }

    /// A read answered `THROTTLED` (the cost bucket spent, by a discovery or by pushes)
    /// is asked again once the bucket holds its cost, a few times, instead of failing
    /// the reconciliation, plan or import that asked.
    fn read<'a>(
        &'a self,
        caller: &'a Caller,
        skus: &'a [String],
    ) -> BoxFuture<'a, Result<super::Levels, String>> {
        Box::pin(async move {
            for _ in 0..READ_THROTTLED_MAX {
                let (status, headers, body) = caller.call(self.read_request(skus)).await?;
                match throttled(status, &headers, &body) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return self.read_reply(status, &body),
                }
            }
            Err(format!(
                "throttled {READ_THROTTLED_MAX} times in a row reading {} items",
                skus.len()
            ))
        })
    }

    fn read_request(&self, skus: &[String]) -> OutboundRequest {
        let ids: Vec<String> = skus
            .iter()
            .filter_map(|s| self.catalog.item(s))
            .map(|i| format!("gid://shopify/InventoryItem/{}", i.id))
            .collect();
        let location = skus
            .first()
            .map_or_else(|| self.location.clone(), |s| self.location_of(s));
        self.graphql(&json!({
            "query": "query LockstepLevels($ids: [ID!]!, $locationId: ID!) { nodes(ids: $ids) { ... on InventoryItem { id inventoryLevel(locationId: $locationId) { quantities(names: [\"available\"]) { name quantity } } } } }",
            "variables": {"ids": ids, "locationId": format!("gid://shopify/Location/{location}")},
        }))
    }

    fn read_reply(&self, status: u16, body: &[u8]) -> Result<Vec<(String, Option<i64>)>, String> {
        let reply = super::call::json_reply(status, body)?;
        if let Some(errors) = reply["errors"].as_array() {
            return Err(format!("errors: {}", Value::Array(errors.clone())));
        }
        let nodes = reply["data"]["nodes"].as_array().ok_or("no data.nodes")?;
        Ok(nodes
            .iter()
            .filter_map(|node| {
                let id = numeric_id(node["id"].as_str()?);
                let sku = self.catalog.sku_by_leaf(&id)?.to_string();
                let available = node["inventoryLevel"]["quantities"]
                    .as_array()
                    .and_then(|q| q.iter().find(|q| q["name"] == "available"))
                    .and_then(|q| q["quantity"].as_i64());
                Some((sku, available))
            })
            .collect())
    }
}

/// Reads a `productVariants` page (`Shopify::listings`).
fn listing_page(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<super::listing::ListingPage, super::listing::ListingError> {
    use super::listing::{sku_field, Listing, ListingError, ListingPage};
    if let Some(wait) = throttled(status, headers, body) {
        return Err(ListingError::Throttled { wait });
    }
    let reply = super::call::json_reply(status, body)?;
    if let Some(errors) = reply["errors"].as_array() {
        return Err(ListingError::Failed(format!(
            "errors: {}",
            Value::Array(errors.clone())
        )));
    }
    let variants = &reply["data"]["productVariants"];
    let nodes = variants["nodes"]
        .as_array()
        .ok_or("no data.productVariants.nodes")?;
    let mut listings = Vec::with_capacity(nodes.len());
    for node in nodes {
        let item = &node["inventoryItem"];
        let Some(item_id) = item["id"].as_str().map(numeric_id) else {
            return Err(ListingError::Failed(format!(
                "variant {} has no inventoryItem id",
                node["id"]
            )));
        };
        listings.push(Listing {
            sku: sku_field(node["sku"].as_str()),
            item_id,
            location_id: None,
            level: None,
            problem: (item["tracked"] == false)
                .then(|| "Shopify does not track this item's inventory".to_string()),
        });
    }
    let next = if variants["pageInfo"]["hasNextPage"] == true {
        let cursor = variants["pageInfo"]["endCursor"]
            .as_str()
            .ok_or("hasNextPage without an endCursor")?;
        Some(cursor.to_string())
    } else {
        None
    };
    Ok(ListingPage {
        listings,
        next,
        pause: refill_wait(&reply),
    })
}

/// How long until the cost bucket holds again what the answered query asked for.
fn refill_wait(reply: &Value) -> Duration {
    let cost = &reply["extensions"]["cost"];
    let requested = cost["requestedQueryCost"].as_f64().unwrap_or(0.0);
    let available = cost["throttleStatus"]["currentlyAvailable"]
        .as_f64()
        .unwrap_or(requested);
    let rate = cost["throttleStatus"]["restoreRate"]
        .as_f64()
        .unwrap_or(50.0)
        .max(1.0);
    Duration::from_secs_f64(((requested - available) / rate).clamp(0.0, 60.0))
}

/// The wait a throttled answer asks for: a 429 (its `Retry-After`, else a second), or
/// the `THROTTLED` error Shopify answers with HTTP 200 (until the bucket refills).
fn throttled(status: u16, headers: &HeaderMap, body: &[u8]) -> Option<Duration> {
    if status == 429 {
        return Some(super::retry_after(headers).unwrap_or(Duration::from_secs(1)));
    }
    let reply: Value = serde_json::from_slice(body).ok()?;
    let errors = reply["errors"].as_array()?;
    errors
        .iter()
        .any(|e| e["extensions"]["code"] == "THROTTLED")
        .then(|| refill_wait(&reply).max(Duration::from_millis(100)))
}

/// Most orders a page of the order poll holds (Shopify's REST maximum).
const POLL_PAGE_SIZE: usize = 250;

/// The safety net under webhooks Shopify gives up on (a subscription is deleted after 8
/// failed deliveries): `GET /admin/api/{version}/orders.json?updated_at_min=&updated_at_max=&status=any`,
/// 250 a page, paged by the `Link` header's `page_info` (REST Order,
/// https://shopify.dev/docs/api/admin-rest/2024-10/resources/order: `updated_at_min` "at
/// or after", `updated_at_max` "at or before"; "Make paginated
/// requests to the REST Admin API": a request with `page_info` carries only `limit`, the
/// first request's filters ride in it). The list's order is not documented, so it is read
/// in windows of `updated_at` (`OrderPoll::windowed`). Each order is read as `orders/updated` is: placed, with its lines' shipped
/// and released totals. Its requests spend the REST budget (`REST_RATE`) and wait out a
/// 429 (its `Retry-After`), so a pass of more pages than the bucket holds is read whole.
impl OrderPoll for Shopify {
    fn interval(&self) -> Duration {
        self.poll_interval
    }

    fn windowed(&self) -> bool {
        true
    }

    fn page<'a>(
        &'a self,
        caller: &'a Caller,
        since: Micros,
        until: Option<Micros>,
        cursor: Option<String>,
        now: Micros,
    ) -> BoxFuture<'a, Result<PollPage, String>> {
        Box::pin(async move {
            let query = match &cursor {
                Some(info) => format!(
                    "limit={POLL_PAGE_SIZE}&page_info={}",
                    percent_encoding::utf8_percent_encode(info, percent_encoding::NON_ALPHANUMERIC)
                ),
                None => {
                    // Whole seconds, as Shopify's examples give the times: the start
                    // rounded down and the end up, so the window holds what it names.
                    let time = |t: Micros| {
                        percent_encoding::utf8_percent_encode(
                            &crate::clock::format_rfc3339(t),
                            percent_encoding::NON_ALPHANUMERIC,
                        )
                        .to_string()
                    };
                    let second = crate::clock::MICROS_PER_SECOND;
                    let mut query = format!(
                        "updated_at_min={}&status=any&limit={POLL_PAGE_SIZE}",
                        time(since.div_euclid(second) * second)
                    );
                    if let Some(until) = until {
                        let end = (until + second - 1).div_euclid(second) * second;
                        query.push_str(&format!("&updated_at_max={}", time(end)));
                    }
                    query
                }
            };
            let request = http::Request::get(format!(
                "{}/admin/api/{}/orders.json?{query}",
                self.base_url, self.api_version
            ))
            .header("x-shopify-access-token", &self.access_token)
            .body(Vec::new())
            .expect("a validated base_url makes a valid request");
            let rest = caller
                .paced_by(self.rest_bucket.clone())
                .waiting_out_throttles();
            let answer = rest.call(request).await?;
            let reply = super::call::json_answer(&answer)?;
            let mut page = PollPage::default();
            for order in payload::list(&reply["orders"]) {
                match self.order_events(order, None, now) {
                    Ok(events) => page.events.extend(events),
                    Err(e) => super::order_left_out(&self.name, &order["id"], &e.message),
                }
            }
            page.next = next_page_info(&answer.1);
            Ok(page)
        })
    }
}

/// Units of each line in the order's `success` fulfillments (shopify.dev REST
/// Fulfillment: `status` pending, open, success, cancelled, error, failure; `line_items[]`
/// with the order line's `id` and the `quantity` fulfilled:
/// https://shopify.dev/docs/api/admin-rest/2024-10/resources/fulfillment).
fn shipped_units(order: &Value) -> ahash::AHashMap<String, i64> {
    let mut units = ahash::AHashMap::new();
    for fulfillment in payload::list(&order["fulfillments"]) {
        if fulfillment["status"].as_str() != Some("success") {
            continue;
        }
        for line in payload::list(&fulfillment["line_items"]) {
            if let (Some(id), Some(qty)) = (
                payload::id(&line["id"]),
                payload::quantity(&line["quantity"]),
            ) {
                *units.entry(id).or_insert(0) += qty;
            }
        }
    }
    units
}

/// The `page_info` of a `Link` header's `rel="next"` URL.
fn next_page_info(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, rel) = part.split_once(';')?;
        if !rel.contains("rel=\"next\"") {
            return None;
        }
        let url = url.trim().trim_start_matches('<').trim_end_matches('>');
        let query = url.split_once('?')?.1;
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("page_info="))
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    })
}

/// An earlier send of the same request is still being applied: tried again soon, and
/// its key kept for it.
fn in_progress() -> PushReply {
    PushReply::Failed {
        reason: format!(
            "{IN_PROGRESS}: the store is still applying this write; sent again under the same key"
        ),
        retryable: true,
    }
}

/// Whether every userError of a reply is `IDEMPOTENCY_CONCURRENT_REQUEST`: the request
/// is still being applied, and is to be sent again under the same key.
fn still_in_progress(errors: &[Value]) -> bool {
    !errors.is_empty() && errors.iter().all(|e| e["code"] == IN_PROGRESS)
}

/// A reply's userErrors as a failure: retried when each of them says to try again.
fn user_errors_failed(errors: &[Value]) -> PushReply {
    PushReply::Failed {
        reason: format!("userErrors: {}", Value::Array(errors.to_vec())),
        retryable: errors.iter().all(|e| {
            e["code"]
                .as_str()
                .is_some_and(|c| TRY_AGAIN_CODES.contains(&c))
        }),
    }
}

/// Top-level GraphQL `errors`: `THROTTLED` is a throttle (it comes as HTTP 200), anything
/// else fails the call.
fn graphql_errors(reply: &Value) -> Option<PushReply> {
    let errors = reply["errors"].as_array()?;
    let throttled = errors
        .iter()
        .any(|e| e["extensions"]["code"].as_str() == Some("THROTTLED"));
    Some(if throttled {
        PushReply::Throttled {
            retry_after: cost_wait(reply, call_cost(reply)).unwrap_or(Duration::from_secs(1)),
        }
    } else {
        PushReply::Failed {
            reason: format!("GraphQL errors: {}", Value::Array(errors.clone())),
            retryable: false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CatalogRow;

    fn adapter() -> Shopify {
        let config: crate::config::Config = toml::from_str(
            r#"
[[channels]]
name = "shop"
kind = "shopify"
base_url = "https://example.myshopify.com/"
api_version = "2026-04"
webhook_secret = "secret"
access_token = "token"
location_id = "gid://shopify/Location/1"
"#,
        )
        .unwrap();
        let rows = [CatalogRow {
            sku: "A".into(),
            channel: "shop".into(),
            item_id: "gid://shopify/InventoryItem/55".into(),
            location_id: None,
        }];
        super::kind::open::<Shopify>(
            &config.channels[0],
            Catalog::of("shop", &rows),
            &std::env::temp_dir(),
        )
        .expect("a valid channel")
    }

    /// A request still in progress at Shopify keeps its key for the next send of it;
    /// any other answer ends it, and only a "try again" one is retried.
    #[test]
    fn a_write_still_in_progress_is_sent_again_under_its_key() {
        let shop = adapter();
        let item = PushItem {
            sku: "A".into(),
            quantity: 7,
            expected: Some(10),
            caused_at: 0,
            repair: false,
        };
        let input = json!({"sku": "A", "to": 7});
        let answer = |code: &str| {
            let errors = json!([{"field": ["input"], "message": "m", "code": code}]);
            let body = json!({"data": {"inventorySetQuantities": {"userErrors": errors}}});
            shop.push_reply(
                200,
                &HeaderMap::new(),
                body.to_string().as_bytes(),
                std::slice::from_ref(&item),
            )
        };
        let retried = |code: &str| match answer(code) {
            PushReply::Failed { retryable, .. } => retryable,
            other => panic!("{other:?}"),
        };
        let first = shop.key_for(&input);
        assert!(retried(IN_PROGRESS));
        assert_eq!(shop.key_for(&input), first, "the same key again");
        assert!(retried("IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED"));
        let second = shop.key_for(&input);
        assert_ne!(second, first, "a new key after the key's attempt failed");
        assert!(!retried("INVALID_LOCATION"));
        assert_ne!(shop.key_for(&input), second);
    }

    fn kinds(events: &[Event]) -> Vec<(&str, &str, i64)> {
        events
            .iter()
            .map(|e| (e.kind.as_str(), e.key.as_str(), e.qty))
            .collect()
    }

    #[test]
    fn an_order_says_each_lines_placement_and_its_shipped_and_released_totals() {
        let shop = adapter();
        let order = json!({"id": 9, "created_at": "2026-11-27T10:00:00Z",
            "cancelled_at": "2026-11-27T10:05:00Z",
            "line_items": [{"id": 1, "sku": "A", "quantity": 2}, {"id": 2, "sku": "", "quantity": 1}]});
        let now = crate::clock::now_micros();
        let events = shop.order_events(&order, None, now).unwrap();
        assert_eq!(
            kinds(&events),
            [
                ("order_placed", "shop/9/1/placed", 2),
                ("order_released_total", "shop/9/1/released_to/2", 2),
                ("unmapped", "shop/9/2/unmapped", 0),
            ]
        );
        assert_eq!(
            events[1].source_ts,
            crate::clock::parse_rfc3339("2026-11-27T10:05:00Z").unwrap()
        );
        // A payload with the line's status only (no `fulfillments`).
        let shipped = json!({"id": 9, "created_at": "2026-11-27T10:00:00Z", "cancelled_at": null,
            "line_items": [{"id": 1, "sku": "A", "quantity": 2, "fulfillment_status": "fulfilled"}]});
        assert_eq!(
            kinds(&shop.order_events(&shipped, None, 0).unwrap()),
            [
                ("order_placed", "shop/9/1/placed", 2),
                ("order_shipped_total", "shop/9/1/shipped_to/2", 2)
            ]
        );
        assert!(shop
            .order_events(&json!({"line_items": []}), None, 0)
            .is_err());
    }

    #[test]
    fn an_extreme_current_quantity_is_taken_within_the_line_not_overflowed() {
        // The payload's number, any i64: once a panic (overflow checks are on in release).
        let shop = adapter();
        for current in [i64::MIN, i64::MAX] {
            let order = json!({"id": 9, "created_at": "2026-11-27T10:00:00Z", "cancelled_at": null,
                "line_items": [{"id": 1, "sku": "A", "quantity": 2, "current_quantity": current}]});
            let events = shop.order_events(&order, None, 0).unwrap();
            assert_eq!(events[0].qty, 2, "{current}");
            assert!(events.iter().all(|e| (0..=2).contains(&e.qty)), "{current}");
        }
    }

    #[test]
    fn partial_fulfilments_edits_and_refunds_are_running_totals() {
        let shop = adapter();
        // 5 ordered: 2 shipped in one fulfillment (a cancelled one does not count), 1
        // removed by an edit, 1 refunded as `cancel`, 1 shipped and returned: current 2.
        let order = json!({"id": 9, "created_at": "2026-11-27T10:00:00Z", "cancelled_at": null,
            "updated_at": "2026-11-27T12:00:00Z",
            "line_items": [{"id": 1, "sku": "A", "quantity": 5, "current_quantity": 2,
                            "fulfillment_status": "partial"}],
            "fulfillments": [
                {"id": 301, "status": "success", "line_items": [{"id": 1, "quantity": 2}]},
                {"id": 302, "status": "cancelled", "line_items": [{"id": 1, "quantity": 1}]}],
            "refunds": [
                {"id": 70, "created_at": "2026-11-27T11:00:00Z", "refund_line_items": [
                    {"line_item_id": 1, "quantity": 1, "restock_type": "cancel", "line_item": {"sku": "A"}}]},
                {"id": 71, "created_at": "2026-11-27T11:30:00Z", "refund_line_items": [
                    {"line_item_id": 1, "quantity": 1, "restock_type": "return", "line_item": {"sku": "A"}}]}]});
        let events = shop.order_events(&order, None, 0).unwrap();
        assert_eq!(
            kinds(&events),
            [
                ("returned", "shop/9/1/returned/71", 1),
                ("order_placed", "shop/9/1/placed", 5),
                ("order_shipped_total", "shop/9/1/shipped_to/2", 2),
                // The edit's unit and the cancelled one; not the returned one.
                ("order_released_total", "shop/9/1/released_to/2", 2),
            ]
        );
        // A `no_restock` refund is not a release while the order is open...
        let mut no_restock = order.clone();
        no_restock["refunds"][0]["refund_line_items"][0]["restock_type"] = json!("no_restock");
        let events = shop.order_events(&no_restock, None, 0).unwrap();
        assert_eq!(events.last().unwrap().key, "shop/9/1/released_to/1");
        // ...and every unit not shipped is released once it closes.
        no_restock["closed_at"] = json!("2026-11-28T10:00:00Z");
        let events = shop.order_events(&no_restock, None, 0).unwrap();
        assert_eq!(events.last().unwrap().key, "shop/9/1/released_to/3");
    }

    #[test]
    fn refunds_bring_back_returned_units_only() {
        let shop = adapter();
        let refund = json!({"id": 70, "order_id": 9, "created_at": "2026-11-27T11:00:00Z",
            "refund_line_items": [
                {"line_item_id": 1, "quantity": 1, "restock_type": "cancel", "line_item": {"sku": "A"}},
                {"line_item_id": 2, "quantity": 1, "restock_type": "return", "line_item": {"sku": "A"}},
                {"line_item_id": 3, "quantity": 1, "restock_type": "no_restock", "line_item": {"sku": "A"}},
                {"line_item_id": 4, "quantity": 1, "restock_type": "legacy_restock", "line_item": {"sku": "A"}}]});
        let events = shop.refund_events(&refund, None, 0).unwrap();
        assert_eq!(kinds(&events), [("returned", "shop/9/2/returned/70", 1)]);
    }

    #[test]
    fn levels_map_through_the_catalog_in_either_id_form() {
        let shop = adapter();
        let level = json!({"inventory_item_id": 55, "location_id": 1, "available": 4});
        let events = shop.level_event(&level, Some("e1"), None, 0).unwrap();
        assert_eq!(kinds(&events), [("level", "shop/event/e1", 4)]);
        assert_eq!(events[0].sku, "A");
        let untracked = json!({"inventory_item_id": 55, "location_id": 1, "available": null});
        assert!(shop
            .level_event(&untracked, None, None, 0)
            .unwrap()
            .is_empty());
        assert!(shop.carries("A") && !shop.carries("B"));
    }

    #[test]
    fn an_adjustment_reply_gives_each_items_level_after_or_fails() {
        let shop = adapter();
        let ids = vec!["55".to_string()];
        let answer = |body: Value| {
            shop.adjust_reply(200, &HeaderMap::new(), body.to_string().as_bytes(), &ids)
        };
        let done = json!({"data": {"inventoryAdjustQuantities": {"userErrors": [],
            "inventoryAdjustmentGroup": {"changes": [
                {"name": "available", "quantityAfterChange": 8, "item": {"id": "gid://shopify/InventoryItem/55"}}]}}}});
        assert_eq!(answer(done), Ok(vec![8]));
        // Applied, but without its level after: unknown, so the pusher reads.
        let silent = json!({"data": {"inventoryAdjustQuantities": {"userErrors": [],
            "inventoryAdjustmentGroup": {"changes": []}}}});
        assert!(matches!(
            answer(silent),
            Err(PushReply::Failed {
                retryable: true,
                ..
            })
        ));
        // Refused: nothing was applied.
        let refused = json!({"data": {"inventoryAdjustQuantities": {"inventoryAdjustmentGroup": null,
            "userErrors": [{"field": ["input", "changes", "0", "locationId"], "code": "ITEM_NOT_STOCKED_AT_LOCATION", "message": "x"}]}}});
        assert!(matches!(
            answer(refused),
            Err(PushReply::Failed {
                retryable: false,
                ..
            })
        ));
        let throttled =
            json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]});
        assert!(matches!(
            answer(throttled),
            Err(PushReply::Throttled { .. })
        ));
    }

    #[test]
    fn a_push_sends_compare_values_and_reads_stale_fields_back() {
        let shop = adapter();
        let items = [
            PushItem {
                sku: "A".into(),
                quantity: 3,
                expected: Some(5),
                caused_at: 0,
                repair: false,
            },
            PushItem {
                sku: "A".into(),
                quantity: 1,
                expected: None,
                caused_at: 0,
                repair: false,
            },
        ];
        let request = shop.push_request(&items, 0);
        assert_eq!(
            request.uri().to_string(),
            "https://example.myshopify.com/admin/api/2026-04/graphql.json"
        );
        assert_eq!(request.headers()["x-shopify-access-token"], "token");
        let body: Value = serde_json::from_slice(request.body()).unwrap();
        let q = &body["variables"]["input"]["quantities"];
        assert_eq!(q[0]["changeFromQuantity"], 5);
        assert_eq!(q[0]["inventoryItemId"], "gid://shopify/InventoryItem/55");
        assert!(q[1]["changeFromQuantity"].is_null() && q[1].get("changeFromQuantity").is_some());
        assert!(body["query"].as_str().unwrap().contains("@idempotent"));
        let stale = json!({"data": {"inventorySetQuantities": {"userErrors": [
            {"field": ["input", "quantities", "1", "changeFromQuantity"], "code": "CHANGE_FROM_QUANTITY_STALE", "message": "x"}]}}});
        let reply = shop.push_reply(200, &HeaderMap::new(), stale.to_string().as_bytes(), &items);
        assert_eq!(reply, PushReply::Stale { stale: vec![1] });
        let low = json!({"data": {"inventorySetQuantities": {"userErrors": []}},
            "extensions": {"cost": {"requestedQueryCost": 10, "throttleStatus": {"maximumAvailable": 100.0, "currentlyAvailable": 4, "restoreRate": 2.0}}}});
        let reply = shop.push_reply(200, &HeaderMap::new(), low.to_string().as_bytes(), &items);
        assert_eq!(
            reply,
            PushReply::Accepted {
                acked: vec![0, 1],
                wait: Some(Duration::from_secs(3))
            },
            "6 points short at 2 points/s"
        );
    }
}
