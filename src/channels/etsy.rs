//! The `etsy` kind: an Etsy shop over Open API v3 (CHANNELS.md §7 and "Our choices").
//!
//! Inbound `POST /webhooks/{name}`: the `order.paid` webhook, signed Standard-Webhooks
//! style with the endpoint's signing secret (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`; a `whsec_` secret is decoded, any other taken as its bytes: the
//! form is unverified). Its flat payload names a receipt; the receipt is fetched for its
//! transactions (only the receipt id is taken from `resource_url`: the fetch always goes
//! to the configured API). `webhook-id` deduplicates redeliveries. Etsy sends nothing on
//! cancellations, so receipts are also polled (`min_last_modified`, each page after the
//! newest update the one before showed: `time_cursor.rs`).
//! A receipt's transactions are placed when it is paid, shipped when it is shipped, and
//! released when it is canceled or fully refunded before shipping; keys `{channel}/{receipt_id}/{transaction_id}/{transition}`.
//!
//! Outbound: `PUT /v3/application/listings/{listing_id}/inventory` replaces the listing's
//! whole inventory: anything not sent is deleted. So each push reads the listing's
//! inventory first and sends every product, its property values and every offering back,
//! changing only the quantities of the products being pushed; an exhausted product's
//! offering is disabled, and a listing left with nothing to sell is set inactive
//! (`updateListing`) and active again when stock returns (one listing per call; the
//! catalog maps a SKU to `listing_id/product_id`). Calls carry `x-api-key` (the app's
//! keystring and shared secret, `keystring:shared_secret`) and a bearer
//! token from the refresh token, which Etsy rotates on every refresh: the newest is kept
//! in the data directory (`rotating_token.rs`), as TikTok's is; pacing is 10
//! requests/s, and the daily quota is read from `x-remaining-today` (exported as
//! `lockstep_channel_quota_remaining`): when it is spent, pushes wait instead of drawing
//! 429s, and below half of `x-limit-per-day` reconciliation stops reading (`reads_held`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use serde_json::{json, Map, Value};

use super::call::{form, json_answer, with_headers, Answer};
use super::kind::{self, Kind, Problem};
use super::rotating_token::{self, Grant, RotatingToken};
use super::standard_webhooks::{self, Key};
use super::time_cursor::TimeCursor;
use super::FetchFailure;
use super::Pace;
use super::{excerpt, payload, BoxFuture, Caller, Catalog};
use super::{ChannelAdapter, Delivery, Levels, OrderPoll, OutboundRequest, PollPage};
use super::{PushItem, PushReply, RateLimit, Seen, ShownAs};
use crate::clock::{Micros, MICROS_PER_SECOND};
use crate::config::{ChannelConfig, ChannelKind};
use crate::core::event::{Event, EventKind, LineRef};
use crate::refusal::ApiError;

/// Etsy's default: 10 requests per second per app.
const DEFAULT_RATE: RateLimit = RateLimit {
    requests_per_second: 10.0,
    burst: 10,
};
/// Below this many requests left today, pushes wait a minute at a time (`pushes_held`):
/// the receipt fetches and polls that bring orders in still need some.
const QUOTA_FLOOR: i64 = 100;
/// Reconciliation reads two calls a listing each pass (its inventory and its state), so
/// a shop of a few hundred listings read every 5 minutes would spend Etsy's 10,000 a
/// day by itself (https://developers.etsy.com/documentation/essentials/rate-limits):
/// its reads stop once less than the day's quota (`x-limit-per-day`) divided by this
/// (a half) is left, which stays for pushes and orders (`reads_held`).
const READ_RESERVE_SHARE: i64 = 2;
const POLL_INTERVAL_DEFAULT_S: u64 = 60;
const PAGE_SIZE: u64 = 100;

/// An Etsy shop.
pub struct Etsy {
    name: String,
    base_url: String,
    shop_id: String,
    /// The `x-api-key` of every `/v3/application` call: `keystring:shared_secret`.
    api_key: String,
    keys: Vec<Key>,
    catalog: Catalog,
    poll_interval: Duration,
    token: RotatingToken,
    seen: Seen,
    /// `x-limit-per-day` of the latest answer (-1: not seen yet).
    limit_per_day: AtomicI64,
    /// `x-remaining-today` of the latest answer (-1: not seen yet).
    remaining_today: AtomicI64,
    /// Each listing's state as last read or set (`active`, `inactive`, `sold_out`...).
    states: std::sync::Mutex<ahash::AHashMap<String, String>>,
}

/// The `[[channels]]` keys of kind `etsy`: the app's keystring (`client_id`) and shared
/// secret, the seller's refresh token
/// (https://developers.etsy.com/documentation/essentials/authentication), and the shop.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The app's keystring.
    client_id: Option<String>,
    /// The app's shared secret, sent with the keystring in every call's `x-api-key` as
    /// `keystring:shared_secret` (required since 2026-02-09).
    shared_secret: Option<String>,
    refresh_token: Option<String>,
    shop_id: Option<String>,
    /// The token endpoint, when not `{base_url}/v3/public/oauth/token`.
    token_url: Option<String>,
}

impl Kind for Etsy {
    type Settings = Settings;

    fn check(channel: &ChannelConfig, settings: &Settings) -> Result<(), Problem> {
        kind::no_batch_max(channel, "one listing's products per inventory update")?;
        let etsy = ChannelKind::Etsy;
        kind::required(&channel.webhook_secret, "webhook_secret", etsy)?;
        for (key, value) in [
            ("client_id", &settings.client_id),
            ("shared_secret", &settings.shared_secret),
        ] {
            // Both go into the `x-api-key` header as `keystring:shared_secret`.
            if !kind::required(value, key, etsy)?
                .bytes()
                .all(|b| b.is_ascii_graphic())
            {
                return Err(Problem::new(
                    key,
                    "printable ASCII without spaces (it is sent in the x-api-key header)",
                ));
            }
        }
        kind::required(&settings.refresh_token, "refresh_token", etsy)?;
        kind::required(&settings.shop_id, "shop_id", etsy)?;
        kind::optional_url(&settings.token_url, "token_url")
    }

    fn check_item_id(id: &str) -> Result<(), &'static str> {
        if kind::two_numbers(id) {
            Ok(())
        } else {
            Err("an Etsy item_id is listing_id/product_id")
        }
    }

    fn open(
        channel: &ChannelConfig,
        settings: Settings,
        catalog: Catalog,
        data_dir: &std::path::Path,
    ) -> Etsy {
        Etsy::from_settings(channel, settings, catalog, data_dir)
    }
}

impl Etsy {
    fn from_settings(
        config: &ChannelConfig,
        settings: Settings,
        catalog: Catalog,
        data_dir: &std::path::Path,
    ) -> Etsy {
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let token_url = settings
            .token_url
            .clone()
            .unwrap_or_else(|| format!("{base_url}/v3/public/oauth/token"));
        let client_id = settings.client_id.clone().unwrap_or_default();
        let id = client_id.clone();
        let request = move |refresh: &str| {
            let body = form(&[
                ("grant_type", "refresh_token"),
                ("client_id", &id),
                ("refresh_token", refresh),
            ]);
            http::Request::post(&token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .expect("a validated token_url makes a valid request")
        };
        let token = RotatingToken::new(
            rotating_token::grant_path(data_dir, &config.name),
            settings.refresh_token.as_deref().unwrap_or_default(),
            request,
            read_grant,
        );
        Etsy {
            name: config.name.clone(),
            base_url,
            shop_id: settings.shop_id.clone().unwrap_or_default(),
            // Etsy requires `keystring:shared_secret` since 2026-02-09 and answers 403
            // "Shared secret is required in x-api-key header." to the keystring alone
            // (developers.etsy.com/documentation/essentials/authentication, "x-api-key";
            // etsy/open-api discussions #1529, #1531).
            api_key: format!(
                "{client_id}:{}",
                settings.shared_secret.as_deref().unwrap_or_default()
            ),
            keys: kind::secrets(config).map(Key::lenient).collect(),
            catalog,
            poll_interval: Duration::from_secs(
                config.poll_interval_s.unwrap_or(POLL_INTERVAL_DEFAULT_S),
            ),
            token,
            seen: Seen::default(),
            remaining_today: AtomicI64::new(-1),
            limit_per_day: AtomicI64::new(-1),
            states: Default::default(),
        }
    }

    /// (listing id, product id) of a SKU.
    fn listing_product(&self, sku: &str) -> Option<(&str, &str)> {
        self.catalog.item(sku)?.id.split_once('/')
    }

    fn get(&self, path: &str) -> OutboundRequest {
        http::Request::get(format!("{}{path}", self.base_url))
            .header("x-api-key", &self.api_key)
            .body(Vec::new())
            .expect("a validated base_url makes a valid request")
    }

    fn inventory_path(listing: &str) -> String {
        format!("/v3/application/listings/{listing}/inventory")
    }

    /// Notes the daily quota an answer reports.
    fn note_quota(&self, headers: &HeaderMap) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        if let Some(limit) = number("x-limit-per-day").filter(|l| *l > 0) {
            self.limit_per_day.store(limit, Ordering::Relaxed);
        }
        if let Some(remaining) = number("x-remaining-today") {
            self.remaining_today.store(remaining, Ordering::Relaxed);
            metrics::gauge!("lockstep_channel_quota_remaining", "channel" => self.name.clone())
                .set(remaining as f64);
        }
    }

    /// The `authorization` header of a call: a bearer token, refreshed when due.
    async fn bearer(&self, caller: &Caller) -> Result<HeaderMap, String> {
        self.token
            .header(caller, http::header::AUTHORIZATION, "Bearer ")
            .await
    }

    /// Calls with credentials, noting the quota. Every call spends the caller's budget:
    /// Etsy counts each app's calls together (10 a second).
    async fn call(&self, caller: &Caller, request: OutboundRequest) -> Result<Answer, String> {
        let request = with_headers(request, self.bearer(caller).await?);
        let answer = caller.call(request).await?;
        self.note_quota(&answer.1);
        if answer.0 == 401 {
            self.token.expire();
        }
        Ok(answer)
    }

    /// The events of one receipt (from the webhook's fetch or the poll).
    pub(crate) fn receipt_events(
        &self,
        receipt: &Value,
        now: Micros,
    ) -> Result<Vec<Event>, String> {
        let id = payload::id(&receipt["receipt_id"]).ok_or("a receipt without receipt_id")?;
        let unix = |field: &str| payload::unix_end(&receipt[field]);
        let created = payload::source_time(&[unix("create_timestamp")], now);
        let updated = payload::source_time(&[unix("updated_timestamp"), Some(created)], now);
        let status = receipt["status"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        // A receipt refunded in full before it shipped will never ship: its units are
        // released like a cancellation's (`status` "Fully Refunded", Etsy's
        // ShopReceipt.status). A shipped one keeps its shipment; a return restocks
        // nothing by itself.
        let refunded_unshipped = status == "fully refunded" && receipt["is_shipped"] != true;
        let transitions = if status == "canceled" || refunded_unshipped {
            vec![(EventKind::OrderCancelled, updated)]
        } else if receipt["is_shipped"] == true || status == "completed" {
            vec![
                (EventKind::OrderPlaced, created),
                (EventKind::OrderShipped, updated),
            ]
        } else if receipt["is_paid"] == true || status == "paid" {
            vec![(EventKind::OrderPlaced, created)]
        } else {
            // Open or payment processing: nothing is held yet.
            Vec::new()
        };
        let mut events = Vec::new();
        if transitions.is_empty() {
            return Ok(events);
        }
        let reader = payload::OrderLines::of(&self.name, &id, created, now);
        for (i, tx) in payload::list(&receipt["transactions"]).iter().enumerate() {
            let fields = ("transaction_id", "quantity");
            let Some((tx_id, qty)) = reader.read(tx, fields, i, &mut events) else {
                continue;
            };
            let item = payload::pair_id(&tx["listing_id"], &tx["product_id"]);
            let line = LineRef {
                order_id: id.clone(),
                line_id: tx_id,
            };
            let sku = self.catalog.sku_of(&item, None, None);
            let what = format!("listing/product {item}");
            events.extend(payload::order_line(
                &self.name,
                line,
                sku,
                qty,
                &transitions,
                &what,
                now,
            ));
        }
        payload::stamp_origins(&mut events);
        Ok(events)
    }

    /// The PUT body that keeps every product and offering of `inventory` and sets the
    /// quantities of `items`; `Err` names an item the listing does not have.
    ///
    /// A pushed product's offerings are enabled when above 0 and disabled at 0: Etsy
    /// refuses a write that leaves every offering at 0 ("One offering must have quantity
    /// greater than 0", etsy/open-api #395, #560), so an exhausted product is shown sold
    /// out by its disabled offering while another stays above 0. While the listing is not
    /// live (inactive because it sold out), what its offerings hold is not what buyers
    /// saw: our other products are written as sold out (0, disabled), which is what the
    /// channel showed for them; the seller's own products are kept as read. Each
    /// offering's `readiness_state_id` (its processing profile; required in the write by
    /// Etsy's spec, `updateListingInventory`) goes back as read.
    fn replaced(&self, inventory: &Value, items: &[PushItem], live: bool) -> Result<Value, String> {
        let mut products = Vec::new();
        let mut found = vec![false; items.len()];
        for product in payload::list(&inventory["products"]) {
            if product["is_deleted"] == true {
                continue;
            }
            let product_id = payload::id(&product["product_id"]).unwrap_or_default();
            let pushed = items.iter().position(|i| {
                self.listing_product(&i.sku)
                    .is_some_and(|(_, p)| p == product_id)
            });
            if let Some(n) = pushed {
                found[n] = true;
            }
            let ours = self.catalog.sku_by_leaf(&product_id).is_some();
            let set_to = match pushed {
                Some(n) => Some(items[n].quantity),
                None if ours && !live => Some(0),
                None => None,
            };
            let offerings: Vec<Value> = payload::list(&product["offerings"])
                .iter()
                .filter(|o| o["is_deleted"] != true)
                .map(|o| {
                    // Prices come back as {amount, divisor}; the write takes a decimal.
                    let price = &o["price"];
                    let decimal = match (price["amount"].as_f64(), price["divisor"].as_f64()) {
                        (Some(amount), Some(divisor)) if divisor > 0.0 => amount / divisor,
                        _ => price.as_f64().unwrap_or(0.0),
                    };
                    let (quantity, enabled) = match set_to {
                        Some(q) => (json!(q), q > 0),
                        None => (o["quantity"].clone(), o["is_enabled"].as_bool().unwrap_or(true)),
                    };
                    json!({"price": decimal, "quantity": quantity, "is_enabled": enabled,
                           "readiness_state_id": o.get("readiness_state_id").cloned().unwrap_or(Value::Null)})
                })
                .collect();
            let property_values: Vec<Value> = payload::list(&product["property_values"])
                .iter()
                .map(|v| {
                    let mut kept = Map::new();
                    for field in [
                        "property_id",
                        "value_ids",
                        "scale_id",
                        "property_name",
                        "values",
                    ] {
                        if let Some(x) = v.get(field) {
                            kept.insert(field.to_string(), x.clone());
                        }
                    }
                    Value::Object(kept)
                })
                .collect();
            products.push(json!({
                "sku": product["sku"].as_str().unwrap_or_default(),
                "property_values": property_values,
                "offerings": offerings,
            }));
        }
        if let Some(missing) = found.iter().position(|f| !f) {
            return Err(format!(
                "listing inventory has no product for {}",
                items[missing].sku
            ));
        }
        let on = |field: &str| inventory.get(field).cloned().unwrap_or_else(|| json!([]));
        let mut body = json!({
            "products": products,
            "price_on_property": on("price_on_property"),
            "quantity_on_property": on("quantity_on_property"),
            "sku_on_property": on("sku_on_property"),
        });
        if let Some(readiness) = inventory.get("readiness_state_on_property") {
            body["readiness_state_on_property"] = readiness.clone();
        }
        Ok(body)
    }

    /// Whether a PUT body leaves any enabled offering above 0 (something to sell).
    fn sellable(body: &Value) -> bool {
        payload::list(&body["products"]).iter().any(|p| {
            payload::list(&p["offerings"])
                .iter()
                .any(|o| o["is_enabled"] == true && o["quantity"].as_i64().unwrap_or(0) > 0)
        })
    }

    /// The listing's state (`active`, `inactive`, `sold_out`, `draft`, `expired`): the one
    /// last seen, else read with `getListing`.
    async fn listing_state(
        &self,
        caller: &Caller,
        listing: &str,
        fresh: bool,
    ) -> Result<String, String> {
        if !fresh {
            let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = states.get(listing) {
                return Ok(state.clone());
            }
        }
        let path = format!("/v3/application/listings/{listing}");
        let answer = self.call(caller, self.get(&path)).await?;
        let state = json_answer(&answer)?["state"]
            .as_str()
            .ok_or("getListing answered no state")?
            .to_string();
        self.note_state(listing, &state);
        Ok(state)
    }

    fn note_state(&self, listing: &str, state: &str) {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(listing.to_string(), state.to_string());
    }

    /// Sets the listing `active` or `inactive` with `updateListing` (`PATCH
    /// /v3/application/shops/{shop_id}/listings/{listing_id}`, a form body; `state` takes
    /// only those two values: Etsy's spec, `updateListing`).
    async fn set_state(&self, caller: &Caller, listing: &str, state: &str) -> Result<(), String> {
        let request = http::Request::patch(format!(
            "{}/v3/application/shops/{}/listings/{listing}",
            self.base_url, self.shop_id
        ))
        .header("x-api-key", &self.api_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("state", state)]))
        .expect("a validated base_url makes a valid request");
        let answer = self.call(caller, request).await?;
        let reply =
            json_answer(&answer).map_err(|e| format!("updateListing state={state}: {e}"))?;
        self.note_state(listing, reply["state"].as_str().unwrap_or(state));
        Ok(())
    }

    fn quota_spent(&self) -> bool {
        let left = self.remaining_today.load(Ordering::Relaxed);
        (0..QUOTA_FLOOR).contains(&left)
    }
}

fn failed(reason: String) -> PushReply {
    PushReply::Failed {
        reason,
        retryable: true,
    }
}

impl ChannelAdapter for Etsy {
    fn name(&self) -> &str {
        &self.name
    }

    /// One listing per call; its products together.
    fn batch_max(&self) -> usize {
        100
    }

    fn pace(&self) -> Pace {
        Pace::Published(DEFAULT_RATE)
    }

    fn carries(&self, sku: &str) -> bool {
        self.listing_product(sku).is_some()
    }

    fn push_groups(&self, items: &[PushItem]) -> Vec<Vec<usize>> {
        let skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
        self.read_groups(&skus)
    }

    fn read_groups(&self, skus: &[&str]) -> Vec<Vec<usize>> {
        self.catalog.group_by_parent(skus)
    }

    /// Verifies; an `order.paid` delivery names its receipt, and `receive` fetches it
    /// (`fetch`).
    fn inbound(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Delivery, ApiError> {
        let (id, _) = standard_webhooks::verify_delivery(headers, body, &self.keys, now)?;
        let hook = payload::json(body)?;
        if hook["event_type"] != "order.paid" {
            return Ok(Delivery::events(Vec::new()));
        }
        let url = hook["resource_url"]
            .as_str()
            .ok_or_else(|| payload::invalid("resource_url", "is missing"))?;
        let receipt_id = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| payload::invalid("resource_url", "does not end in a receipt id"))?;
        Ok(Delivery::Names {
            notification: id,
            order_id: receipt_id.to_string(),
        })
    }

    /// Reads the receipt (Etsy's order) a notification named.
    fn fetch<'a>(
        &'a self,
        caller: &'a Caller,
        receipt_id: &'a str,
        now: Micros,
    ) -> BoxFuture<'a, Result<Vec<Event>, FetchFailure>> {
        Box::pin(async move {
            let path = format!(
                "/v3/application/shops/{}/receipts/{receipt_id}",
                self.shop_id
            );
            let answer = self.call(caller, self.get(&path)).await?;
            FetchFailure::if_refused(&answer, &format!("receipt {receipt_id}"))?;
            let answer = json_answer(&answer)?;
            self.receipt_events(&answer, now)
                .map_err(FetchFailure::Unreadable)
        })
    }

    fn seen(&self) -> Option<&Seen> {
        Some(&self.seen)
    }

    /// Under `QUOTA_FLOOR` calls left today, pushes wait a minute at a time: what is left
    /// goes to the receipt fetches and the poll, which bring the orders in.
    fn pushes_held(&self) -> Option<Duration> {
        self.quota_spent().then_some(Duration::from_secs(60))
    }

    fn reads_held(&self) -> Option<String> {
        let left = self.remaining_today.load(Ordering::Relaxed);
        let limit = self.limit_per_day.load(Ordering::Relaxed);
        let reserve = (limit / READ_RESERVE_SHARE).max(QUOTA_FLOOR);
        (0..reserve).contains(&left).then(|| {
            format!(
                "Etsy's daily quota has {left} requests left (of {}): reconciliation's reads \
                 stop below {reserve} and leave the rest to pushes and orders; they go on as \
                 the quota's 24 hours move on",
                if limit > 0 {
                    limit.to_string()
                } else {
                    "an unknown number".to_string()
                }
            )
        })
    }

    fn authorize<'a>(&'a self, caller: &'a Caller) -> BoxFuture<'a, Result<HeaderMap, String>> {
        Box::pin(self.bearer(caller))
    }

    /// Read the listing's inventory, then put it back whole with the new quantities; a
    /// listing left with nothing to sell is set inactive instead (Etsy refuses the
    /// all-zero write), and one whose stock returns is set active again.
    fn push<'a>(&'a self, caller: &'a Caller, items: &'a [PushItem]) -> BoxFuture<'a, PushReply> {
        Box::pin(async move {
            let Some((listing, _)) = items.first().and_then(|i| self.listing_product(&i.sku))
            else {
                return failed("no catalog listing for the SKU".into());
            };
            let path = Self::inventory_path(listing);
            let read = match self.call(caller, self.get(&path)).await {
                Ok(answer) => answer,
                Err(reason) => return failed(reason),
            };
            if let Some(outcome) = super::http_failure(read.0, &read.1, &read.2) {
                return outcome;
            }
            let inventory = match json_answer(&read) {
                Ok(inventory) => inventory,
                Err(reason) => return failed(reason),
            };
            let state = match self.listing_state(caller, listing, false).await {
                Ok(state) => state,
                Err(reason) => return failed(reason),
            };
            let live = state == "active";
            let body = match self.replaced(&inventory, items, live) {
                Ok(body) => body,
                Err(reason) => {
                    return PushReply::Failed {
                        reason,
                        retryable: false,
                    }
                }
            };
            let not_pushed = |sku: &str| !items.iter().any(|i| i.sku == sku);
            if !Self::sellable(&body) {
                // Nothing left to sell: Etsy would refuse the write, so the listing goes
                // inactive and every product of ours on it shows 0.
                let mut shown_as = Vec::new();
                if live {
                    if let Err(reason) = self.set_state(caller, listing, "inactive").await {
                        return failed(reason);
                    }
                    shown_as = items
                        .iter()
                        .map(|i| (i.sku.clone(), ShownAs::ListingDeactivated))
                        .collect();
                }
                let written = self
                    .levels_of(&inventory, false)
                    .into_iter()
                    .filter(|(sku, _)| not_pushed(sku))
                    .map(|(sku, _)| (sku, 0))
                    .collect();
                return PushReply::Replaced {
                    acked: (0..items.len()).collect(),
                    written,
                    shown_as,
                };
            }
            let request = http::Request::put(format!("{}{path}", self.base_url))
                .header("x-api-key", &self.api_key)
                .header("content-type", "application/json")
                .body(body.to_string().into_bytes())
                .expect("a validated base_url makes a valid request");
            let mut reply = match self.call(caller, request).await {
                Ok((status, headers, body)) => self.push_reply(status, &headers, &body, items),
                Err(reason) => failed(reason),
            };
            if let PushReply::Replaced { shown_as, .. } = &mut reply {
                // Sold out inside a listing that still sells something else.
                shown_as.extend(
                    items
                        .iter()
                        .filter(|i| i.quantity == 0)
                        .map(|i| (i.sku.clone(), ShownAs::OfferingDisabled)),
                );
                // Stock is back on a listing that sold out: live again. (`draft` and
                // `expired` listings are the seller's to publish.)
                if matches!(state.as_str(), "inactive" | "sold_out") {
                    if let Err(reason) = self.set_state(caller, listing, "active").await {
                        return failed(reason);
                    }
                    shown_as.extend(
                        items
                            .iter()
                            .filter(|i| i.quantity > 0)
                            .map(|i| (i.sku.clone(), ShownAs::ListingActivated)),
                    );
                }
            }
            reply
        })
    }

    /// Not used alone: an Etsy write needs the listing read first (`push`).
    fn push_request(&self, items: &[PushItem], _now: Micros) -> OutboundRequest {
        let listing = items
            .first()
            .and_then(|i| self.listing_product(&i.sku))
            .map_or("0", |(l, _)| l);
        self.get(&Self::inventory_path(listing))
    }

    fn push_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        items: &[PushItem],
    ) -> PushReply {
        if status == 401 {
            self.token.expire();
        }
        if let Some(outcome) = super::http_failure(status, headers, body) {
            return outcome;
        }
        let Ok(reply) = serde_json::from_slice::<Value>(body) else {
            return failed(format!("reply is not JSON: {}", excerpt(body)));
        };
        // The answer is the listing's new inventory: an item is taken when its product
        // shows the quantity sent; the listing's other mapped products were written back.
        let levels = self.levels_of(&reply, true);
        let acked = items
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                levels
                    .iter()
                    .any(|(s, q)| *s == i.sku && *q == Some(i.quantity))
            })
            .map(|(n, _)| n)
            .collect();
        let written = levels
            .into_iter()
            .filter(|(sku, _)| !items.iter().any(|i| i.sku == *sku))
            .filter_map(|(sku, quantity)| Some((sku, quantity?)))
            .collect();
        PushReply::Replaced {
            acked,
            written,
            shown_as: Vec::new(),
        }
    }

    fn read_request(&self, skus: &[String]) -> OutboundRequest {
        let listing = skus
            .first()
            .and_then(|s| self.listing_product(s))
            .map_or("0", |(l, _)| l);
        self.get(&Self::inventory_path(listing))
    }

    fn read<'a>(
        &'a self,
        caller: &'a Caller,
        skus: &'a [String],
    ) -> BoxFuture<'a, Result<Levels, String>> {
        Box::pin(async move {
            let (status, _, body) = self.call(caller, self.read_request(skus)).await?;
            let inventory = super::call::json_reply(status, &body)?;
            let listing = skus
                .first()
                .and_then(|s| self.listing_product(s))
                .map_or("0", |(l, _)| l);
            let state = self.listing_state(caller, listing, true).await?;
            Ok(self.levels_of(&inventory, state == "active"))
        })
    }

    fn read_reply(&self, status: u16, body: &[u8]) -> Result<Levels, String> {
        let reply = super::call::json_reply(status, body)?;
        Ok(self.levels_of(&reply, true))
    }

    fn order_poll(&self) -> Option<&dyn OrderPoll> {
        Some(self)
    }

    /// `getListingsByShop` with its inventory (`includes=Inventory`), 100 a page by
    /// offset, for each state a listing of ours can be in: `active`, `inactive` (lockstep
    /// sets a listing with nothing to sell inactive) and `sold_out`
    /// (https://developers.etsy.com/documentation/reference#operation/getListingsByShop).
    /// Each product of a listing is one item, `listing_id/product_id`, with its SKU (Etsy
    /// returns SKUs to the shop's owner only). The cursor is `state:offset`; a listing
    /// seen twice as offsets shift is one listing (the merge dedupes by item). A daily
    /// quota at its floor stops discovery (resumable tomorrow) rather than spend what
    /// pushes need.
    fn listings<'a>(
        &'a self,
        caller: &'a Caller,
        cursor: Option<&'a str>,
    ) -> super::listing::Listings<'a> {
        use super::listing::{sku_field, Listing, ListingError, ListingPage};
        Box::pin(async move {
            if self.quota_spent() {
                return Err(ListingError::Failed(
                    "Etsy's daily quota is down to what pushes need: run discovery again later"
                        .into(),
                ));
            }
            let (state, offset) = match cursor {
                None => (LISTING_STATES[0], 0),
                Some(text) => text
                    .split_once(':')
                    .and_then(|(s, o)| {
                        let state = LISTING_STATES.iter().find(|x| **x == s)?;
                        Some((*state, o.parse::<usize>().ok()?))
                    })
                    .ok_or_else(|| ListingError::Failed(format!("bad cursor {text:?}")))?,
            };
            let request = self.get(&format!(
                "/v3/application/shops/{}/listings?state={state}&limit={LISTING_PAGE}&offset={offset}&includes=Inventory",
                self.shop_id
            ));
            let (status, _, body) = self.call(caller, request).await?;
            let reply = super::call::json_reply(status, &body)?;
            let results = reply["results"].as_array().ok_or("no results")?;
            let mut listings = Vec::new();
            for listing in results {
                let id =
                    payload::id(&listing["listing_id"]).ok_or("a listing without listing_id")?;
                let products = listing["inventory"]["products"]
                    .as_array()
                    .ok_or("a listing without its inventory (includes=Inventory)")?;
                for product in products.iter().filter(|p| p["is_deleted"] != true) {
                    let product_id =
                        payload::id(&product["product_id"]).ok_or("a product without id")?;
                    listings.push(Listing {
                        sku: sku_field(product["sku"].as_str()),
                        item_id: format!("{id}/{product_id}"),
                        location_id: None,
                        level: product["offerings"][0]["quantity"].as_i64(),
                        problem: None,
                    });
                }
            }
            let count = reply["count"].as_u64().unwrap_or(0) as usize;
            let seen = offset + results.len();
            let next = if !results.is_empty() && seen < count {
                Some(format!("{state}:{seen}"))
            } else {
                LISTING_STATES
                    .iter()
                    .skip_while(|s| **s != state)
                    .nth(1)
                    .map(|s| format!("{s}:0"))
            };
            Ok(ListingPage {
                listings,
                next,
                pause: Duration::ZERO,
            })
        })
    }
}

/// The states discovery lists, in order.
const LISTING_STATES: [&str; 3] = ["active", "inactive", "sold_out"];
/// Listings a page asks for: Etsy's most for `getListingsByShop`.
const LISTING_PAGE: usize = 100;

impl Etsy {
    /// The quantity each mapped product of a listing inventory shows buyers (its first
    /// live offering; 0 when that is disabled, or when the listing is not `live`).
    /// Product ids are unique across Etsy, so the product names the SKU.
    fn levels_of(&self, inventory: &Value, live: bool) -> Levels {
        payload::list(&inventory["products"])
            .iter()
            .filter(|p| p["is_deleted"] != true)
            .filter_map(|p| {
                let product = payload::id(&p["product_id"])?;
                let sku = self.catalog.sku_by_leaf(&product)?;
                let quantity = payload::list(&p["offerings"])
                    .iter()
                    .find(|o| o["is_deleted"] != true)
                    .and_then(|o| {
                        let shown = live && o["is_enabled"] != false;
                        o["quantity"].as_i64().map(|q| if shown { q } else { 0 })
                    });
                Some((sku.to_string(), quantity))
            })
            .collect()
    }
}

impl OrderPoll for Etsy {
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
            // The next page's bound is the newest update this one showed
            // (`time_cursor.rs`): a receipt updated during the pass goes to the end of a
            // list sorted by it, and offsets would then skip the one that slid up.
            let at = TimeCursor::read(cursor.as_deref(), since)?;
            let offset = u64::from(at.page - 1) * PAGE_SIZE;
            let path = format!(
                "/v3/application/shops/{}/receipts?min_last_modified={}&limit={PAGE_SIZE}&offset={offset}&sort_on=updated&sort_order=asc",
                self.shop_id,
                at.after.div_euclid(MICROS_PER_SECOND)
            );
            let reply = json_answer(&self.call(caller, self.get(&path)).await?)?;
            let receipts = payload::list(&reply["results"]);
            let mut page = PollPage::default();
            for receipt in receipts {
                let updated = payload::unix_end(&receipt["updated_timestamp"]);
                page.newest = page.newest.max(updated);
                match self.receipt_events(receipt, now) {
                    Ok(events) => page.events.extend(events),
                    Err(why) => super::order_left_out(&self.name, &receipt["receipt_id"], &why),
                }
            }
            let next = offset + receipts.len() as u64;
            let count = reply["count"].as_u64().unwrap_or(0);
            page.next = at.next(page.newest, !receipts.is_empty() && next < count);
            Ok(page)
        })
    }
}

/// A refresh answer: `{access_token, token_type, expires_in, refresh_token}`, with
/// `expires_in` in seconds from now (an hour) and a new refresh token each time
/// (https://developers.etsy.com/documentation/essentials/authentication, "Requesting a
/// Refresh OAuth Token"; etsy/open-api #353: "a new AT, a new RT"). Etsy does not say
/// when the refresh token expires (90 days after it was issued), so it is left unsaid.
fn read_grant(reply: &Value) -> Result<Grant, String> {
    let text = |f: &str| reply[f].as_str().unwrap_or_default().to_string();
    if reply["access_token"].is_null() {
        return Err(format!("{}: {}", text("error"), text("error_description")));
    }
    // An hour when unsaid: refusing the answer would drop the new refresh token in it,
    // after Etsy has rotated the one spent.
    let expires_in = reply["expires_in"].as_i64().unwrap_or(3_600);
    Ok(Grant {
        access_token: text("access_token"),
        // Held to a lifetime a grant can mean by `RotatingToken` before it is kept.
        access_expires_at: (crate::clock::now_micros() / MICROS_PER_SECOND)
            .saturating_add(expires_in),
        refresh_token: text("refresh_token"),
        refresh_expires_at: 0,
        obtained_at: 0,
        seed: String::new(),
    })
}
