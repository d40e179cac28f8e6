//! The `bigcommerce` kind: a BigCommerce store (CHANNELS.md §3 and "Our choices").
//!
//! Inbound `POST /webhooks/{name}`: `store/order/*` hooks, signed with Standard Webhooks
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`, HMAC-SHA256 keyed with the
//! app's client secret as is), and carrying the custom header registered with the hook
//! when `auth_header = "Name: value"` is set. The payload is thin (`{scope, store_id,
//! producer, hash, created_at, data: {type, id}}`): the order (`GET /v2/orders/{id}`, for
//! its status) and its lines (`GET /v2/orders/{id}/products`, 250 a page, every page)
//! are fetched. The payload's `hash` (the same when BigCommerce fires a hook twice), with
//! `created_at` (so two firings about two edits of one order, whose thin payloads are
//! alike, stay apart), deduplicates redeliveries; keys are
//! `{channel}/{order}/{line}/{transition}`, so two hooks about one change (created and
//! statusUpdated) apply it once. Order statuses: 0 Incomplete and 7 Awaiting Payment hold
//! nothing; each line of any other is placed, with its `quantity_shipped` as the line's
//! shipped running total (3 Partially Shipped ships some units); once it is 2 Shipped or
//! 10 Completed (everything shipped unless it says otherwise), or 5 Cancelled, 6 Declined
//! or 4 Refunded, the units not shipped are released; 4 Refunded returns the shipped
//! ones. A partial refund (14) adjusts no stock, as in BigCommerce. Inventory hooks are
//! answered 200 and left to reconciliation. The follow-up fetches spend the channel's
//! budget, shared with the pushes (BigCommerce limits all calls of a store together).
//!
//! Outbound: `PUT /stores/{hash}/v3/inventory/adjustments/absolute`, up to 2,000 items
//! (`{location_id, variant_id, quantity}`; the catalog maps a SKU to its variant id),
//! `X-Auth-Token`. Pacing follows the `X-Rate-Limit-*` headers: when a reply says one
//! request is left in the window, the next waits for `X-Rate-Limit-Time-Reset-Ms`; a 429
//! waits that long too. An item tracked by product must be adjusted by its `product_id`
//! (BigCommerce answers 422 "Item with variant_id N is tracked by product" otherwise,
//! failing the whole transaction: inventory.v3.yml): on that answer the batch's variants
//! are looked up (`GET /v3/inventory/items` for their product ids, then
//! `GET /v3/catalog/products?id:in=...` for `inventory_tracking`), remembered, and the
//! batch sent once more naming those items by product.
//! Reads: `GET /v3/inventory/items?variant_id:in=...&location_id:in=...`, at most
//! `READ_IDS_MAX` ids a call (the list must fit a URL), paged through `meta.pagination`.

//!
//! Pages followed: inventory items and absolute adjustments, with the "tracked by product"
//! 422 (https://developer.bigcommerce.com/docs/rest-management/inventory, the spec
//! `reference/inventory.v3.yml` of bigcommerce/docs), `inventory_tracking` on products
//! (https://developer.bigcommerce.com/docs/rest-catalog/products), the v2 orders list and
//! its `min_date_modified` (https://developer.bigcommerce.com/docs/rest-management/orders),
//! and the rate-limit headers (https://developer.bigcommerce.com/docs/start/best-practices/api-rate-limits).

use std::time::Duration;

use http::HeaderMap;
use serde_json::{json, Value};

use super::call::json_answer;
use super::fetched::Fetched;
use super::kind::{self, Kind, Problem};
use super::standard_webhooks::{self, Key};
use super::time_cursor::TimeCursor;
use super::FetchFailure;
use super::Pace;
use super::Seen;
use super::{body_hmac, excerpt, payload, BoxFuture, Caller, Catalog};
use super::{
    ChannelAdapter, Delivery, Inbound, Levels, OutboundRequest, PushItem, PushReply, RateLimit,
};
use super::{OrderPoll, PollPage};
use crate::clock::{parse_rfc2822, Micros};
use crate::config::{ChannelConfig, ChannelKind};
use crate::core::event::{Event, EventKind, LineRef};
use crate::refusal::ApiError;

/// Items per absolute adjustment.
pub const BATCH_MAX: usize = 2_000;
/// Variant ids one read names: 200 ids of up to 10 digits keep the URL near 2 KiB, well
/// inside what servers and proxies take (BigCommerce documents no figure).
pub const READ_IDS_MAX: usize = 200;
/// Items a read page asks for (BigCommerce takes up to 1,000, "Limit of 1000 items for
/// payload length"; unasked, it answers a short default page).
const READ_PAGE_LIMIT: usize = 250;
/// Orders per page of the order poll (BigCommerce's default page).
const POLL_PAGE_SIZE: usize = 50;
/// Seconds between order polls unless configured.
const POLL_INTERVAL_DEFAULT_S: u64 = 60;
/// Orders whose lines the poll keeps (`fetched.rs`).
const POLLED_ORDERS_KEPT_MAX: usize = 10_000;
/// Lines a page of an order's products asks for: the most BigCommerce gives (unasked,
/// it answers 50 and says nothing of the rest; orders.v2.oas2.yml, "Lists 50 order
/// products on an order", `limit` at most 250).
const LINES_PAGE: usize = 250;
/// Most pages of one order's lines followed (25,000 lines): a store that answers full
/// pages for ever is an error, not a loop.
const LINE_PAGES_MAX: usize = 100;
/// Variants a listing page asks for: BigCommerce's most
/// (https://developer.bigcommerce.com/docs/start/about/common-query-params).
const LISTING_PAGE: usize = 250;
/// Most pages one read follows: `READ_IDS_MAX` ids fit one page; more pages mean the
/// store lists an id more than once, and the bound keeps that from looping.
const READ_PAGES_MAX: u32 = 10;
/// 150 requests per 30 s (Standard and Plus plans), shared by every app of the store.
const DEFAULT_RATE: RateLimit = RateLimit {
    requests_per_second: 5.0,
    burst: 10,
};

/// A BigCommerce store.
pub struct BigCommerce {
    name: String,
    /// `{base_url}/stores/{hash}`.
    store_url: String,
    access_token: String,
    location_id: String,
    keys: Vec<Key>,
    auth_header: Option<String>,
    catalog: Catalog,
    /// Items per push: `batch_max`, at most `BATCH_MAX`.
    batch_max: usize,
    seen: Seen,
    /// Variants whose product is tracked by product, with that product's id: their
    /// adjustments name `product_id` (learned from a 422, see the module doc).
    by_product: std::sync::Mutex<ahash::AHashMap<u64, u64>>,
    poll_interval: Duration,
    /// Each polled order's lines by its `date_modified`: fetched once per version.
    polled_lines: Fetched<Value>,
}

/// The `[[channels]]` keys of kind `bigcommerce` (an API account's token:
/// https://developer.bigcommerce.com/docs/start/authentication/api-accounts).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The store's hash, in every API path (`/stores/{store_hash}/v3/...`).
    store_hash: Option<String>,
    /// Sent as `X-Auth-Token`.
    access_token: Option<String>,
    /// The inventory location lockstep sets (default 1, the store's default location).
    location_id: Option<String>,
    /// The header registered with the webhooks (`headers` of the hook), as
    /// `Name: value`; a delivery without it is refused.
    auth_header: Option<String>,
}

impl Kind for BigCommerce {
    type Settings = Settings;

    fn check(channel: &ChannelConfig, settings: &Settings) -> Result<(), Problem> {
        let bc = ChannelKind::Bigcommerce;
        kind::required(&channel.webhook_secret, "webhook_secret", bc)?;
        kind::required(&settings.store_hash, "store_hash", bc)?;
        kind::required(&settings.access_token, "access_token", bc)?;
        kind::shared_header(&settings.auth_header, "auth_header")
    }

    fn check_item_id(id: &str) -> Result<(), &'static str> {
        if kind::one_number(id) {
            Ok(())
        } else {
            Err("a BigCommerce item_id is the variant id")
        }
    }

    fn open(
        channel: &ChannelConfig,
        settings: Settings,
        catalog: Catalog,
        _data_dir: &std::path::Path,
    ) -> BigCommerce {
        BigCommerce::from_settings(channel, settings, catalog)
    }
}

impl BigCommerce {
    fn from_settings(config: &ChannelConfig, settings: Settings, catalog: Catalog) -> BigCommerce {
        BigCommerce {
            name: config.name.clone(),
            store_url: format!(
                "{}/stores/{}",
                config.base_url.trim_end_matches('/'),
                settings.store_hash.as_deref().unwrap_or_default()
            ),
            access_token: settings.access_token.unwrap_or_default(),
            location_id: settings.location_id.unwrap_or_else(|| "1".into()),
            keys: kind::secrets(config).map(Key::raw).collect(),
            auth_header: settings.auth_header,
            catalog,
            batch_max: kind::batch_max(config, BATCH_MAX, BATCH_MAX),
            seen: Seen::default(),
            by_product: Default::default(),
            polled_lines: Fetched::new(POLLED_ORDERS_KEPT_MAX),
            poll_interval: Duration::from_secs(
                config.poll_interval_s.unwrap_or(POLL_INTERVAL_DEFAULT_S),
            ),
        }
    }

    fn request(&self, method: http::Method, path: &str, body: Option<Value>) -> OutboundRequest {
        http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.store_url))
            .header("x-auth-token", &self.access_token)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .expect("a validated base_url makes a valid request")
    }

    fn variant(&self, sku: &str) -> Option<u64> {
        self.catalog.item(sku)?.id.parse().ok()
    }

    /// Checks the signature and the registered header.
    fn verify(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<String, ApiError> {
        if let Some(configured) = &self.auth_header {
            body_hmac::check_shared_header(headers, configured)?;
        }
        Ok(standard_webhooks::verify_delivery(headers, body, &self.keys, now)?.0)
    }

    /// The events of an order and its product lines.
    pub(crate) fn order_events(
        &self,
        order: &Value,
        lines: &[Value],
        now: Micros,
    ) -> Result<Vec<Event>, String> {
        let order_id = payload::id(&order["id"]).ok_or("an order without id")?;
        // Whole seconds: placed at the second's end (see `payload::time_end`).
        let time = |field: &str| {
            order[field]
                .as_str()
                .and_then(parse_rfc2822)
                .map(|t| t + 999_999)
        };
        let created = payload::source_time(&[time("date_created")], now);
        let modified = payload::source_time(&[time("date_modified"), Some(created)], now);
        let shipped_at = time("date_shipped");
        let status = order["status_id"].as_u64().unwrap_or(0);
        // Per status (orders.v2.oas2.yml `status_id`): 0 Incomplete and 7 Awaiting
        // Payment hold nothing; 5 Cancelled, 6 Declined and 4 Refunded end the order; 2
        // Shipped and 10 Completed finish it; the rest (3 Partially Shipped among them)
        // are open.
        if matches!(status, 0 | 7) || status > 14 {
            return Ok(Vec::new());
        }
        let ended = matches!(status, 4..=6);
        let finished = matches!(status, 2 | 10);
        let mut events = Vec::new();
        let reader = payload::OrderLines::of(&self.name, &order_id, created, now);
        for (i, line) in lines.iter().enumerate() {
            let Some((line_id, qty)) = reader.read(line, ("id", "quantity"), i, &mut events) else {
                continue;
            };
            let variant = payload::id(&line["variant_id"]).unwrap_or_default();
            let line_ref = LineRef {
                order_id: order_id.clone(),
                line_id,
            };
            // `quantity_shipped` counts the units shipped so far (a partial shipment ships
            // some); a finished order reporting none shipped them all.
            let reported = line["quantity_shipped"].as_i64().unwrap_or(0).clamp(0, qty);
            let shipped = if finished && reported == 0 {
                qty
            } else {
                reported
            };
            let shipped_at = shipped_at.unwrap_or(modified);
            let mut transitions = Vec::new();
            if !ended || shipped > 0 {
                transitions.push((EventKind::OrderPlaced, created, qty));
                // The quantity as a running total: a seller may edit an order's
                // quantities ("To update a product in an order, include `id`", Update an
                // Order: https://docs.bigcommerce.com/developer/api-reference/rest/admin/management/orders/update-order),
                // and a raised one holds the units added.
                transitions.push((EventKind::OrderPlacedTotal, modified, qty));
            }
            if shipped > 0 {
                transitions.push((EventKind::OrderShippedTotal, shipped_at, shipped));
            }
            // An order that ended or finished ships nothing more: its other units are
            // released. BigCommerce adjusts no stock on a partial refund (webhooks
            // "events": "but not partially refunded"), so neither do we.
            if (ended || finished) && shipped < qty {
                transitions.push((EventKind::OrderReleasedTotal, modified, qty - shipped));
            }
            if status == 4 && shipped > 0 {
                transitions.push((EventKind::Returned, modified, shipped));
            }
            let sku = self.catalog.sku_of(&variant, None, None);
            let what = format!("variant {variant}");
            events.extend(payload::order_line_units(
                &self.name,
                line_ref,
                sku,
                &transitions,
                &what,
                now,
            ));
        }
        payload::stamp_origins(&mut events);
        Ok(events)
    }

    /// Fetches an order and its lines.
    async fn fetch_order(
        &self,
        caller: &Caller,
        id: &str,
        now: Micros,
    ) -> Result<Vec<Event>, FetchFailure> {
        // Each fetch spends a token of the channel's budget, shared with the pushes:
        // BigCommerce limits every call of a store in one window (api-rate-limits).
        let path = format!("/v2/orders/{}", super::call::segment(id));
        let answer = caller
            .call(self.request(http::Method::GET, &path, None))
            .await?;
        FetchFailure::if_refused(&answer, &format!("order {id}"))?;
        let order = json_answer(&answer)?;
        let lines = self.fetch_lines(caller, id).await?;
        self.order_events(&order, payload::list(&lines), now)
            .map_err(FetchFailure::Unreadable)
    }

    /// Every line of an order (`GET /v2/orders/{id}/products`), page by page: a page
    /// holds at most `LINES_PAGE`, and a shorter page, an empty one or a 204 (v2's empty
    /// collection) is the last. Lines past the first page are units sold like any other.
    /// An answer that is no list, lines still paging after `LINE_PAGES_MAX` pages, and a
    /// 4xx no retry changes (a 404: the order deleted since it was listed; a 400 or 422
    /// refusing it: `FetchFailure::if_refused`) are `Unreadable`: asking again would read
    /// the same.
    async fn fetch_lines(&self, caller: &Caller, id: &str) -> Result<Value, FetchFailure> {
        let mut lines = Vec::new();
        for page in 1..=LINE_PAGES_MAX {
            let path = format!(
                "/v2/orders/{}/products?limit={LINES_PAGE}&page={page}",
                super::call::segment(id)
            );
            let answer = caller
                .call(self.request(http::Method::GET, &path, None))
                .await?;
            if answer.0 == 204 {
                return Ok(Value::Array(lines));
            }
            FetchFailure::if_refused(&answer, &format!("order {id}'s lines"))?;
            let Value::Array(found) = json_answer(&answer)? else {
                let why = format!("order {id}'s lines are not a list");
                return Err(FetchFailure::Unreadable(why));
            };
            let last = found.len() < LINES_PAGE;
            lines.extend(found);
            if last {
                return Ok(Value::Array(lines));
            }
        }
        Err(FetchFailure::Unreadable(format!(
            "order {id}'s lines still paging after {LINE_PAGES_MAX} pages of {LINES_PAGE}"
        )))
    }
}

/// The safety net under hooks BigCommerce deactivates after about 48 hours of failed
/// deliveries: `GET /v2/orders?min_date_modified=&sort=date_modified:asc` (orders.v2.oas2
/// .yml; ISO 8601 accepted beside RFC 2822), each page after the newest modification the
/// one before showed (`time_cursor.rs`), each order's lines fetched.
impl OrderPoll for BigCommerce {
    fn interval(&self) -> Duration {
        self.poll_interval
    }

    fn page<'a>(
        &'a self,
        caller: &'a Caller,
        since: Micros,
        _until: Option<Micros>,
        cursor: Option<String>,
        now: Micros,
    ) -> BoxFuture<'a, Result<PollPage, String>> {
        Box::pin(async move {
            // The next page's bound is the newest modification this one showed
            // (`time_cursor.rs`): an order modified during the pass goes to the end of a
            // list sorted by it, and page numbers would then skip the one that slid up.
            let at = TimeCursor::read(cursor.as_deref(), since)?;
            let path = format!(
                "/v2/orders?min_date_modified={}&sort=date_modified:asc&limit={POLL_PAGE_SIZE}&page={}",
                percent_encoding::utf8_percent_encode(
                    &crate::clock::format_iso8601_millis(at.after),
                    percent_encoding::NON_ALPHANUMERIC
                ),
                at.page
            );
            // Paced: every call of a store spends one window (api-rate-limits, above).
            let answer = caller
                .call(self.request(http::Method::GET, &path, None))
                .await?;
            // No order modified since: 204 without a body.
            let orders = if answer.0 == 204 {
                Value::Array(Vec::new())
            } else {
                json_answer(&answer)?
            };
            let orders = payload::list(&orders);
            let mut result = PollPage::default();
            for order in orders {
                let Some(id) = payload::id(&order["id"]) else {
                    super::order_left_out(&self.name, &order["id"], &"an order without id");
                    continue;
                };
                let modified = order["date_modified"]
                    .as_str()
                    .and_then(parse_rfc2822)
                    .map(|t| t + 999_999);
                result.newest = result.newest.max(modified);
                match self.polled_order(caller, &id, order, now).await {
                    Ok(events) => result.took(events),
                    // The lines call failed for this order: set aside, read again at
                    // every pass (`propagate::set_aside`), while the pass reads on.
                    Err(why) => result.set_aside(id, order, why)?,
                }
            }
            result.next = at.next(result.newest, orders.len() == POLL_PAGE_SIZE);
            Ok(result)
        })
    }

    fn read_again<'a>(
        &'a self,
        caller: &'a Caller,
        listed: &'a Value,
        now: Micros,
    ) -> BoxFuture<'a, Result<Vec<Event>, String>> {
        Box::pin(async move {
            // Set aside with its id (`page`).
            let id = payload::id(&listed["id"]).unwrap_or_default();
            self.polled_order(caller, &id, listed, now).await
        })
    }
}

impl BigCommerce {
    /// The events of the order `id` as the orders list gave it, its lines read (or
    /// remembered for this version of it: `polled_lines`). An order whose lines the store
    /// refuses for good, or that cannot be read, is left out and said. `Err`: the lines
    /// call failed in a way another try may mend.
    async fn polled_order(
        &self,
        caller: &Caller,
        id: &str,
        order: &Value,
        now: Micros,
    ) -> Result<Vec<Event>, String> {
        let version = order["date_modified"].as_str().unwrap_or_default();
        let lines = match self.polled_lines.get(id, version) {
            Some(lines) => lines,
            None => match self.fetch_lines(caller, id).await {
                Ok(lines) => {
                    self.polled_lines.keep(id, version, lines.clone());
                    lines
                }
                Err(FetchFailure::Call(e)) => return Err(e),
                Err(FetchFailure::Unreadable(why)) => {
                    super::order_left_out(&self.name, &order["id"], &why);
                    return Ok(Vec::new());
                }
            },
        };
        match self.order_events(order, payload::list(&lines), now) {
            Ok(events) => Ok(events),
            Err(why) => {
                super::order_left_out(&self.name, &order["id"], &why);
                Ok(Vec::new())
            }
        }
    }
}

/// `X-Rate-Limit-Time-Reset-Ms` as a duration.
fn reset_after(headers: &HeaderMap) -> Option<Duration> {
    let ms = headers
        .get("x-rate-limit-time-reset-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    Some(super::pacing::wait_secs(ms / 1_000.0))
}

impl ChannelAdapter for BigCommerce {
    fn name(&self) -> &str {
        &self.name
    }

    /// `GET /v3/catalog/variants`, 250 a page (BigCommerce's most), by page number:
    /// every variant with its SKU, base variants included, so a simple product's SKU is
    /// found on its base variant, the id lockstep writes to
    /// (https://developer.bigcommerce.com/docs/rest-catalog/product-variants/variants-batch#get-all-variants;
    /// `meta.pagination.total_pages` names the last page). A page that leaves one
    /// request in the window pauses until it resets (`X-Rate-Limit-Time-Reset-Ms`), as
    /// pushes do; a 429 is waited out by the caller.
    fn listings<'a>(
        &'a self,
        caller: &'a Caller,
        cursor: Option<&'a str>,
    ) -> super::listing::Listings<'a> {
        use super::listing::{sku_field, Listing, ListingPage};
        Box::pin(async move {
            let page = super::listing::page_number(cursor)?;
            let request = self.request(
                http::Method::GET,
                &format!(
                    "/v3/catalog/variants?limit={LISTING_PAGE}&page={page}&include_fields=product_id,sku,inventory_level"
                ),
                None,
            );
            let (status, headers, body) = caller.call(request).await?;
            let millis = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
                    .map(|ms| super::pacing::wait_secs(ms / 1_000.0))
            };
            // The wait until the window resets is within the window (30 s unless the
            // store says otherwise), and never more than `WAIT_MAX`: the store's numbers
            // are not slept on as they come (a reset of a trillion ms is 31 years).
            let window = millis("x-rate-limit-time-window-ms").unwrap_or(Duration::from_secs(30));
            let reset = millis("x-rate-limit-time-reset-ms").map(|r| r.min(window));
            let reply = super::call::json_reply(status, &body)?;
            let variants = reply["data"].as_array().ok_or("no data")?;
            let mut listings = Vec::with_capacity(variants.len());
            for v in variants {
                let id = payload::id(&v["id"]).ok_or("a variant without id")?;
                listings.push(Listing {
                    sku: sku_field(v["sku"].as_str()),
                    item_id: id,
                    location_id: None,
                    level: v["inventory_level"].as_i64(),
                    problem: None,
                });
            }
            let pages = reply["meta"]["pagination"]["total_pages"]
                .as_u64()
                .unwrap_or(1) as usize;
            let left = headers
                .get("x-rate-limit-requests-left")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok());
            Ok(ListingPage {
                listings,
                next: (page < pages).then(|| (page + 1).to_string()),
                pause: match (left, reset) {
                    (Some(left), Some(reset)) if left <= 1 => reset,
                    _ => Duration::ZERO,
                },
            })
        })
    }

    fn batch_max(&self) -> usize {
        self.batch_max
    }

    fn pace(&self) -> Pace {
        Pace::Published(DEFAULT_RATE)
    }

    fn carries(&self, sku: &str) -> bool {
        self.variant(sku).is_some()
    }

    /// Verifies; an order's hook names it, and `receive` fetches it (`fetch`).
    fn inbound(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Delivery, ApiError> {
        self.verify(headers, body, now)?;
        let hook = payload::json(body)?;
        // The hash is the same when a hook fires twice; with the creation time, two
        // firings of the same thin payload for two edits stay apart.
        let hash = format!(
            "{}@{}",
            payload::required_id(&hook["hash"], "hash")?,
            hook["created_at"]
        );
        let scope = hook["scope"].as_str().unwrap_or_default();
        if !scope.starts_with("store/order/") || scope == "store/order/archived" {
            return Ok(Delivery::Carried(Inbound {
                notification: Some(hash),
                ..Inbound::default()
            }));
        }
        // Refund hooks name the order in `data.id` too.
        Ok(Delivery::Names {
            notification: hash,
            order_id: payload::required_id(&hook["data"]["id"], "data.id")?,
        })
    }

    fn fetch<'a>(
        &'a self,
        caller: &'a Caller,
        order_id: &'a str,
        now: Micros,
    ) -> BoxFuture<'a, Result<Vec<Event>, FetchFailure>> {
        Box::pin(self.fetch_order(caller, order_id, now))
    }

    fn seen(&self) -> Option<&Seen> {
        Some(&self.seen)
    }

    fn push_request(&self, items: &[PushItem], _now: Micros) -> OutboundRequest {
        let location: Value = self
            .location_id
            .parse::<u64>()
            .map_or_else(|_| json!(self.location_id), |n| json!(n));
        let by_product = self.by_product.lock().unwrap_or_else(|e| e.into_inner());
        let items: Vec<Value> = items
            .iter()
            .map(|i| {
                let variant = self.variant(&i.sku);
                match variant.and_then(|v| by_product.get(&v)) {
                    Some(product) => json!({"location_id": location, "product_id": product, "quantity": i.quantity}),
                    None => json!({"location_id": location, "variant_id": variant, "quantity": i.quantity}),
                }
            })
            .collect();
        drop(by_product);
        self.request(
            http::Method::PUT,
            "/v3/inventory/adjustments/absolute",
            Some(json!({"reason": "lockstep sync", "items": items})),
        )
    }

    fn push_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        items: &[PushItem],
    ) -> PushReply {
        if status == 429 {
            return PushReply::Throttled {
                retry_after: reset_after(headers).unwrap_or(Duration::from_secs(1)),
            };
        }
        if let Some(outcome) = super::http_failure(status, headers, body) {
            return outcome;
        }
        let left = headers
            .get("x-rate-limit-requests-left")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let wait = match left {
            Some(left) if left <= 1 => reset_after(headers),
            _ => None,
        };
        // The adjustment is one transaction: a 200 with its id took every item.
        let taken = serde_json::from_slice::<Value>(body)
            .ok()
            .is_some_and(|r| r.get("transaction_id").is_some());
        if !taken {
            return PushReply::Failed {
                reason: format!("adjustment without a transaction_id: {}", excerpt(body)),
                retryable: true,
            };
        }
        PushReply::Accepted {
            acked: (0..items.len()).collect(),
            wait,
        }
    }

    fn read_request(&self, skus: &[String]) -> OutboundRequest {
        self.read_page(skus, 1)
    }

    fn read_groups(&self, skus: &[&str]) -> Vec<Vec<usize>> {
        let all: Vec<usize> = (0..skus.len()).collect();
        all.chunks(READ_IDS_MAX).map(<[usize]>::to_vec).collect()
    }

    fn order_poll(&self) -> Option<&dyn OrderPoll> {
        Some(self)
    }

    /// Every page of the group's read.
    fn read<'a>(
        &'a self,
        caller: &'a Caller,
        skus: &'a [String],
    ) -> BoxFuture<'a, Result<Levels, String>> {
        Box::pin(async move {
            let mut levels = Levels::new();
            for page in 1..=READ_PAGES_MAX {
                let (status, _, body) = caller.call(self.read_page(skus, page)).await?;
                let reply = super::call::json_reply(status, &body)?;
                levels.extend(self.levels_of(&reply));
                let pagination = &reply["meta"]["pagination"];
                let (current, pages) = (
                    pagination["current_page"].as_u64().unwrap_or(1),
                    pagination["total_pages"].as_u64().unwrap_or(1),
                );
                if current >= pages {
                    return Ok(levels);
                }
            }
            Err(format!(
                "inventory items still paging after {READ_PAGES_MAX} pages"
            ))
        })
    }

    /// Tries the adjustment; when BigCommerce says some of its items are tracked by
    /// product, learns which are and tries once more.
    fn push<'a>(&'a self, caller: &'a Caller, items: &'a [PushItem]) -> BoxFuture<'a, PushReply> {
        Box::pin(async move {
            let now = crate::clock::now_micros();
            let mut learned = false;
            loop {
                let (status, headers, body) = match caller.call(self.push_request(items, now)).await
                {
                    Ok(answer) => answer,
                    Err(reason) => {
                        return PushReply::Failed {
                            reason,
                            retryable: true,
                        }
                    }
                };
                let tracked_by_product = status == 422
                    && String::from_utf8_lossy(&body).contains("is tracked by product");
                if tracked_by_product && !learned {
                    learned = true;
                    if let Err(reason) = self.learn_tracking(caller, items).await {
                        return PushReply::Failed {
                            reason: format!("tracked by product, and the lookup failed: {reason}"),
                            retryable: true,
                        };
                    }
                    continue;
                }
                return self.push_reply(status, &headers, &body, items);
            }
        })
    }

    fn read_reply(&self, status: u16, body: &[u8]) -> Result<Levels, String> {
        let reply = super::call::json_reply(status, body)?;
        Ok(self.levels_of(&reply))
    }
}

impl BigCommerce {
    /// One page of the inventory items of `skus`' variants at our location.
    fn read_page(&self, skus: &[String], page: u32) -> OutboundRequest {
        let ids: Vec<String> = skus
            .iter()
            .filter_map(|s| self.variant(s))
            .map(|v| v.to_string())
            .collect();
        self.request(
            http::Method::GET,
            &format!(
                "/v3/inventory/items?variant_id:in={}&location_id:in={}&limit={READ_PAGE_LIMIT}&page={page}",
                ids.join(","),
                self.location_id
            ),
            None,
        )
    }

    /// Learns which of `items`' variants belong to products tracked by product: their
    /// product ids from the inventory items, then each product's `inventory_tracking`
    /// (catalog API: `none`, `product` or `variant`).
    async fn learn_tracking(&self, caller: &Caller, items: &[PushItem]) -> Result<(), String> {
        let skus: Vec<String> = items.iter().map(|i| i.sku.clone()).collect();
        let mut product_of: ahash::AHashMap<u64, u64> = ahash::AHashMap::new();
        for group in skus.chunks(READ_IDS_MAX) {
            let (status, _, body) = caller.call(self.read_page(group, 1)).await?;
            let reply = super::call::json_reply(status, &body)?;
            for item in payload::list(&reply["data"]) {
                let identity = &item["identity"];
                if let (Some(v), Some(p)) = (
                    identity["variant_id"].as_u64(),
                    identity["product_id"].as_u64(),
                ) {
                    product_of.insert(v, p);
                }
            }
        }
        let mut products: Vec<u64> = product_of.values().copied().collect();
        products.sort_unstable();
        products.dedup();
        let mut by_product = ahash::AHashSet::new();
        for group in products.chunks(READ_IDS_MAX) {
            let ids: Vec<String> = group.iter().map(u64::to_string).collect();
            let path = format!(
                "/v3/catalog/products?id:in={}&include_fields=inventory_tracking&limit={}",
                ids.join(","),
                group.len()
            );
            let answer = caller
                .call(self.request(http::Method::GET, &path, None))
                .await?;
            for product in payload::list(&json_answer(&answer)?["data"]) {
                if product["inventory_tracking"] == "product" {
                    by_product.extend(product["id"].as_u64());
                }
            }
        }
        let mut known = self.by_product.lock().unwrap_or_else(|e| e.into_inner());
        for (variant, product) in product_of {
            if by_product.contains(&product) {
                known.insert(variant, product);
            } else {
                known.remove(&variant);
            }
        }
        Ok(())
    }

    /// What an inventory items page shows per SKU at our location.
    fn levels_of(&self, reply: &Value) -> Levels {
        payload::list(&reply["data"])
            .iter()
            .filter_map(|item| {
                let variant = payload::id(&item["identity"]["variant_id"])?;
                let sku = self.catalog.sku_of(&variant, None, None)?.to_string();
                let level = payload::list(&item["locations"])
                    .iter()
                    .find(|l| payload::id(&l["location_id"]).as_deref() == Some(&self.location_id))
                    .and_then(|l| l["total_inventory_onhand"].as_i64());
                Some((sku, level))
            })
            .collect()
    }
}
