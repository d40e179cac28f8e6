//! The `woocommerce` kind: a WooCommerce site over its REST API v3 (CHANNELS.md §2).
//!
//! Inbound `POST /webhooks/{name}`, checked with `X-WC-Webhook-Signature` (base64 of
//! HMAC-SHA256 over the raw body with the webhook's secret; the previous secret too):
//! - the creation ping (form body `webhook_id=N`, unsigned) is answered 200;
//! - `order.created` / `order.updated` / `order.restored`: the order's status maps to
//!   line transitions (CHANNELS.md "Our choices"): `processing`, `on-hold` placed;
//!   `completed` placed and shipped (less the units a refund restocked before: they
//!   never ship); a partial refund that restocked units of an order not yet shipped
//!   releases them (the line's `_restock_refunded_items` meta, a running total); one
//!   after shipping is a return, which the product's level report brings;
//!   `cancelled`, `failed` released; `refunded` placed and shipped when the order had
//!   been completed (`date_completed_gmt`: the status restocks nothing, so the units stay
//!   sold unless a refund restocked them, which the level report brings), else released;
//!   `pending` and anything else nothing yet. Keys are
//!   `{channel}/{site}/{order}/{line}/{transition}` (the Delivery-ID is new on every
//!   delivery, so it cannot be one). A payload whose `date_modified_gmt` is older than one
//!   already taken for that order is stale (WooCommerce builds payloads at send time and
//!   sends them unordered) and is dropped.
//! - `product.updated`: the stock the site shows for a catalog-mapped product or
//!   variation, as a `level` report (echoes of our own writes match and change nothing).
//! - Deliveries are never refused for load: WooCommerce does not retry and disables a
//!   webhook after 5 failures, so they wait for room instead (`never_refuse`).
//! - A watermarked poll of `GET /wp-json/wc/v3/orders?modified_after=` is the safety net
//!   for lost deliveries; it maps orders exactly as the webhooks do.
//!
//! Outbound: `POST /wp-json/wc/v3/products/batch` (and `products/{parent}/variations/batch`
//! for catalog ids of the form `parent/variation`), at most 100 items per call, HTTP Basic
//! with the consumer key and secret. Reads: `GET /wp-json/wc/v3/products?include=...` (and
//! the variations listing), the list form of `GET /products/{id}`.

use std::sync::Mutex;
use std::time::Duration;

use ahash::AHashMap;
use base64::Engine as _;
use http::HeaderMap;
use serde_json::{json, Value};

use super::kind::{self, Kind, Problem};
use super::pacing::{Pace, ADAPTIVE_CEILING};
use super::payload;
use super::time_cursor::TimeCursor;
use super::{
    body_hmac, excerpt, unmapped, Catalog, ChannelAdapter, Delivery, OrderPoll, OutboundRequest,
};
use super::{BoxFuture, Caller, PollPage, PushItem, PushReply, RateLimit};
use crate::clock::{format_rfc3339, Micros};
use crate::config::{ChannelConfig, ChannelKind};
use crate::core::event::{Event, EventKind, LineRef};
use crate::refusal::ApiError;

/// WooCommerce's batch limit (create + update + delete); more is a 413.
const BATCH_MAX: usize = 100;
/// WooCommerce core has no rate limit; hosts and firewalls do. A modest default.
const DEFAULT_RATE: RateLimit = RateLimit {
    requests_per_second: 5.0,
    burst: 10,
};
/// Seconds between order polls unless configured.
const POLL_INTERVAL_DEFAULT_S: u64 = 60;
/// Orders whose modification time was remembered, before the memory is cleared (a
/// cleared memory only lets a stale payload through, whose keys are duplicates anyway).
const SEEN_ORDERS_MAX: usize = 200_000;

/// A WooCommerce site.
pub struct WooCommerce {
    name: String,
    base_url: String,
    /// The site's host: part of every key.
    site: String,
    keys: Vec<Vec<u8>>,
    /// `Basic base64(consumer_key:consumer_secret)`.
    authorization: String,
    catalog: Catalog,
    batch_max: usize,
    poll_interval: Duration,
    /// Order id → the newest `date_modified_gmt` taken.
    seen: Mutex<AHashMap<String, Micros>>,
}

/// The `[[channels]]` keys of kind `woocommerce`: the REST API's key pair, sent as HTTP
/// Basic auth over HTTPS (https://woocommerce.github.io/woocommerce-rest-api-docs/#authentication-over-https).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    consumer_key: Option<String>,
    consumer_secret: Option<String>,
}

impl Kind for WooCommerce {
    type Settings = Settings;

    fn check(channel: &ChannelConfig, settings: &Settings) -> Result<(), Problem> {
        let woo = ChannelKind::Woocommerce;
        kind::required(&channel.webhook_secret, "webhook_secret", woo)?;
        kind::required(&settings.consumer_key, "consumer_key", woo)?;
        kind::required(&settings.consumer_secret, "consumer_secret", woo)?;
        Ok(())
    }

    fn check_item_id(id: &str) -> Result<(), &'static str> {
        if kind::one_number(id) || kind::two_numbers(id) {
            Ok(())
        } else {
            Err("a WooCommerce item_id is a product id, or parent/variation for a variation")
        }
    }

    fn open(
        channel: &ChannelConfig,
        settings: Settings,
        catalog: Catalog,
        _data_dir: &std::path::Path,
    ) -> WooCommerce {
        WooCommerce::from_settings(channel, settings, catalog)
    }
}

impl WooCommerce {
    fn from_settings(config: &ChannelConfig, settings: Settings, catalog: Catalog) -> WooCommerce {
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let site = base_url
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| base_url.clone());
        let credentials = format!(
            "{}:{}",
            settings.consumer_key.as_deref().unwrap_or_default(),
            settings.consumer_secret.as_deref().unwrap_or_default()
        );
        WooCommerce {
            name: config.name.clone(),
            site,
            base_url,
            keys: kind::secrets(config)
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
            catalog,
            batch_max: kind::batch_max(config, BATCH_MAX, BATCH_MAX),
            poll_interval: Duration::from_secs(
                config.poll_interval_s.unwrap_or(POLL_INTERVAL_DEFAULT_S),
            ),
            seen: Mutex::new(AHashMap::new()),
        }
    }

    fn get(&self, path_and_query: &str) -> OutboundRequest {
        http::Request::get(format!("{}{path_and_query}", self.base_url))
            .header("authorization", &self.authorization)
            .body(Vec::new())
            .expect("a validated base_url makes a valid request")
    }

    /// The parent product of a catalog item (`parent/variation`), if it is a variation.
    fn parent_of(&self, sku: &str) -> Option<String> {
        let id = &self.catalog.item(sku)?.id;
        id.split_once('/').map(|(parent, _)| parent.to_string())
    }

    /// The item's own id (the variation's for a variation).
    fn leaf_of(&self, sku: &str) -> Option<u64> {
        let id = &self.catalog.item(sku)?.id;
        id.rsplit('/').next()?.parse().ok()
    }

    /// Whether an order payload modified at `modified` is older than one already taken.
    fn is_stale(&self, order_id: &str, modified: Option<Micros>) -> bool {
        let Some(modified) = modified else {
            return false;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= SEEN_ORDERS_MAX {
            seen.clear();
        }
        let newest = seen.entry(order_id.to_string()).or_insert(modified);
        if modified < *newest {
            return true;
        }
        *newest = modified;
        false
    }

    /// The events of one order resource (from a webhook or the poll).
    fn order_events(&self, order: &Value, now: Micros) -> Result<Vec<Event>, ApiError> {
        let order_id = payload::required_id(&order["id"], "id")?;
        // Held to an hour ahead, as every source time is: a date in year 9999 kept as the
        // order's newest would make every later update of it look stale.
        let modified = woo_time(&order["date_modified_gmt"]).map(|m| payload::held_ahead(m, now));
        if self.is_stale(&order_id, modified) {
            return Ok(Vec::new());
        }
        let at = |field: &str| payload::source_time(&[woo_time(&order[field]), modified], now);
        let placed = (EventKind::OrderPlaced, at("date_created_gmt"));
        // The line's quantity as a running total, stamped when the order last changed: a
        // seller may edit it on an order not yet shipped, and WooCommerce then takes the
        // difference from the product's stock (`wc_save_order_items` and
        // `wc_maybe_adjust_line_item_product_stock`, for `processing`, `on-hold` and
        // `completed` orders:
        // https://github.com/woocommerce/woocommerce/blob/trunk/plugins/woocommerce/includes/admin/wc-admin-functions.php).
        // A raised quantity holds the units added; a placement key alone, read once,
        // would never see them.
        let raised = (EventKind::OrderPlacedTotal, at("date_modified_gmt"));
        let shipped = (EventKind::OrderShipped, at("date_completed_gmt"));
        let released = (EventKind::OrderCancelled, at("date_modified_gmt"));
        let status = order["status"].as_str().unwrap_or("");
        let transitions = match status {
            "processing" | "on-hold" => vec![placed, raised],
            "completed" => vec![placed, raised, shipped],
            "cancelled" | "failed" => vec![released],
            // The status puts nothing back in stock: WooCommerce restocks on `cancelled`
            // and `pending` alone (`wc_maybe_increase_stock_levels`), and setting
            // `refunded` only records a refund of no lines (`wc_order_fully_refunded`,
            // https://github.com/woocommerce/woocommerce/blob/trunk/plugins/woocommerce/includes/wc-stock-functions.php
            // and wc-order-functions.php). Shipped units come back only through a refund
            // that restocks them, which raises the product's stock: its level report.
            "refunded" if !order["date_completed_gmt"].is_null() => vec![placed, raised, shipped],
            "refunded" => vec![released],
            // `pending` (unpaid), drafts, trash: no stock is held yet.
            _ => Vec::new(),
        };
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let lines = order["line_items"]
            .as_array()
            .ok_or_else(|| ApiError::field("invalid_payload", "line_items", "must be an array"))?;
        let mut events = Vec::new();
        let prefix = format!("{}/{}", self.name, self.site);
        let reader = payload::OrderLines {
            channel: &self.name,
            prefix: &prefix,
            order_id: &order_id,
            at: placed.1,
            now,
        };
        for (i, line) in lines.iter().enumerate() {
            let Some((line_id, qty)) = reader.read(line, ("id", "quantity"), i, &mut events) else {
                continue;
            };
            let Some(sku) = self.line_sku(line) else {
                events.push(unmapped(
                    &self.name,
                    &format!(
                        "order {order_id} line {line_id} (product {}) has no SKU",
                        self.line_item_id(line)
                    ),
                    format!("{}/{}/{order_id}/{line_id}/unmapped", self.name, self.site),
                    placed.1,
                    now,
                ));
                continue;
            };
            // A refund that restocked units of a line not yet shipped released them: the
            // line's `_restock_refunded_items` meta is its running total (WooCommerce
            // keeps it on the order item in `wc_restock_refunded_items`:
            // https://github.com/woocommerce/woocommerce/blob/trunk/plugins/woocommerce/includes/wc-order-functions.php;
            // REST line items carry the item's meta, `_reduced_stock` among it:
            // https://github.com/woocommerce/woocommerce/issues/51024).
            // On a shipped order (`completed`, or `refunded` after it) the restocked units
            // are taken as put back before it shipped: released, and not shipped. A
            // restock after shipping raises the product's stock, which its level report
            // brings (`inventory_updates`); its release then finds the line closed.
            let restocked = restocked_units(line).min(qty);
            let mut transitions = transitions.clone();
            // `refunded` after `completed` maps as `completed` does, to the same keys:
            // the refund changes nothing the order's lines did.
            let open = transitions.iter().any(|t| t.0 == EventKind::OrderPlaced);
            if restocked > 0 && open {
                transitions.push((EventKind::OrderReleasedTotal, at("date_modified_gmt")));
            }
            for (kind, source_ts) in &transitions {
                let qty = match kind {
                    EventKind::OrderReleasedTotal => restocked,
                    // Units put back before the order completed never shipped.
                    EventKind::OrderShipped => qty - restocked,
                    _ => qty,
                };
                if qty <= 0 {
                    continue;
                }
                events.push(Event {
                    sku: sku.clone(),
                    kind: *kind,
                    qty,
                    source: self.name.clone(),
                    source_ts: *source_ts,
                    received_at: now,
                    key: payload::line_key(
                        &format!("{}/{}", self.name, self.site),
                        &order_id,
                        &line_id,
                        *kind,
                        qty,
                    ),
                    line: Some(LineRef {
                        order_id: order_id.clone(),
                        line_id: line_id.clone(),
                    }),
                    origin: None,
                });
            }
        }
        payload::stamp_origins(&mut events);
        Ok(events)
    }

    /// A line's catalog item id: `product` or `product/variation`.
    fn line_item_id(&self, line: &Value) -> String {
        let product = payload::id(&line["product_id"]).unwrap_or_else(|| "0".into());
        match payload::id(&line["variation_id"]).filter(|v| v != "0") {
            Some(variation) => format!("{product}/{variation}"),
            None => product,
        }
    }

    /// A line's SKU: its `sku` field, else the catalog's SKU for its product/variation.
    fn line_sku(&self, line: &Value) -> Option<String> {
        payload::sku(&line["sku"]).or_else(|| {
            self.catalog
                .sku_of(&self.line_item_id(line), None, None)
                .map(str::to_string)
        })
    }

    /// A `product.updated` delivery: the level the site shows, for a mapped product.
    fn product_level(&self, product: &Value, now: Micros) -> Result<Vec<Event>, ApiError> {
        let id = payload::required_id(&product["id"], "id")?;
        let item = match payload::id(&product["parent_id"]).filter(|p| p != "0") {
            Some(parent) => format!("{parent}/{id}"),
            None => id,
        };
        let modified = product["date_modified_gmt"].as_str().unwrap_or("");
        let source_ts = payload::source_time(&[woo_time(&product["date_modified_gmt"])], now);
        // The modification time has whole seconds: the stock joins it in the key, so two
        // edits within one second are two reports, and a redelivery is one.
        let stock_text = product["stock_quantity"].to_string();
        let key = format!(
            "{}/{}/product/{item}/{modified}/{stock_text}",
            self.name, self.site
        );
        let Some(sku) = self.catalog.sku_of(&item, None, None) else {
            return Ok(vec![unmapped(
                &self.name,
                &format!("product {item}"),
                key,
                source_ts,
                now,
            )]);
        };
        let managed = product["manage_stock"].as_bool().unwrap_or(false);
        let Some(stock) = product["stock_quantity"].as_i64().filter(|_| managed) else {
            return Ok(Vec::new());
        };
        Ok(vec![Event {
            sku: sku.to_string(),
            kind: EventKind::Level,
            qty: stock,
            source: self.name.clone(),
            source_ts,
            received_at: now,
            key,
            line: None,
            origin: None,
        }])
    }
}

/// Units of an order line a refund put back in stock: its `_restock_refunded_items` meta
/// (a number, or a numeric string as WooCommerce stores meta).
fn restocked_units(line: &Value) -> i64 {
    payload::list(&line["meta_data"])
        .iter()
        .find(|m| m["key"] == "_restock_refunded_items")
        .and_then(|m| match &m["value"] {
            Value::String(text) => text.trim().parse().ok(),
            other => other.as_i64(),
        })
        .filter(|n| *n > 0)
        .unwrap_or(0)
}

/// A WooCommerce `..._gmt` time: whole seconds, placed at the second's end.
fn woo_time(value: &Value) -> Option<Micros> {
    payload::time_end(value)
}

/// WooCommerce's creation ping: the form body `webhook_id=<number>`.
fn is_ping(body: &[u8]) -> bool {
    std::str::from_utf8(body)
        .ok()
        .and_then(|b| b.trim().strip_prefix("webhook_id="))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

impl ChannelAdapter for WooCommerce {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_max(&self) -> usize {
        self.batch_max
    }

    fn pace(&self) -> Pace {
        Pace::Adaptive {
            start: DEFAULT_RATE,
            ceiling: ADAPTIVE_CEILING,
        }
    }

    fn inbound(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Delivery, ApiError> {
        if is_ping(body) && !headers.contains_key("x-wc-webhook-signature") {
            return Ok(Delivery::events(Vec::new()));
        }
        body_hmac::verify(headers, "x-wc-webhook-signature", body, &self.keys)?;
        let topic = headers
            .get("x-wc-webhook-topic")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::field(
                    "missing_topic",
                    "X-WC-Webhook-Topic",
                    "the header is missing",
                )
            })?;
        let events = match topic {
            "order.created" | "order.updated" | "order.restored" => {
                self.order_events(&payload::json(body)?, now)
            }
            "product.updated" | "product.restored" => {
                self.product_level(&payload::json(body)?, now)
            }
            // `order.deleted` carries only the id; reconciliation repairs what it changed.
            _ => Ok(Vec::new()),
        };
        events.map(Delivery::events)
    }

    fn never_refuse(&self) -> bool {
        true
    }

    fn carries(&self, sku: &str) -> bool {
        self.leaf_of(sku).is_some()
    }

    fn push_groups(&self, items: &[PushItem]) -> Vec<Vec<usize>> {
        let skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
        self.catalog.group_by_parent(&skus)
    }

    fn read_groups(&self, skus: &[&str]) -> Vec<Vec<usize>> {
        self.catalog.group_by_parent(skus)
    }

    fn push_request(&self, items: &[PushItem], _now: Micros) -> OutboundRequest {
        let path = match items.first().and_then(|i| self.parent_of(&i.sku)) {
            Some(parent) => format!("/wp-json/wc/v3/products/{parent}/variations/batch"),
            None => "/wp-json/wc/v3/products/batch".to_string(),
        };
        let update: Vec<Value> = items
            .iter()
            .map(|i| json!({"id": self.leaf_of(&i.sku).unwrap_or(0), "manage_stock": true, "stock_quantity": i.quantity}))
            .collect();
        http::Request::post(format!("{}{path}", self.base_url))
            .header("content-type", "application/json")
            .header("authorization", &self.authorization)
            .body(serde_json::to_vec(&json!({ "update": update })).expect("json serializes"))
            .expect("a validated base_url makes a valid request")
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
        // Each updated item comes back with its id; a refused one carries an `error`.
        let taken: Vec<u64> = reply["update"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|u| u.get("error").is_none())
            .filter_map(|u| u["id"].as_u64())
            .collect();
        let acked = items
            .iter()
            .enumerate()
            .filter(|(_, i)| self.leaf_of(&i.sku).is_some_and(|id| taken.contains(&id)))
            .map(|(n, _)| n)
            .collect();
        PushReply::Accepted { acked, wait: None }
    }

    fn read_request(&self, skus: &[String]) -> OutboundRequest {
        let ids: Vec<String> = skus
            .iter()
            .filter_map(|s| self.leaf_of(s))
            .map(|id| id.to_string())
            .collect();
        let listing = match skus.first().and_then(|s| self.parent_of(s)) {
            Some(parent) => format!("/wp-json/wc/v3/products/{parent}/variations"),
            None => "/wp-json/wc/v3/products".to_string(),
        };
        self.get(&format!(
            "{listing}?include={}&per_page={BATCH_MAX}",
            ids.join(",")
        ))
    }

    fn read_reply(&self, status: u16, body: &[u8]) -> Result<Vec<(String, Option<i64>)>, String> {
        let reply = super::call::json_reply(status, body)?;
        let products = reply
            .as_array()
            .ok_or("the reply is not a list of products")?;
        Ok(products
            .iter()
            .filter_map(|p| {
                let id = payload::id(&p["id"])?;
                let sku = self.catalog.sku_by_leaf(&id)?.to_string();
                let managed = p["manage_stock"].as_bool().unwrap_or(false);
                Some((sku, p["stock_quantity"].as_i64().filter(|_| managed)))
            })
            .collect())
    }

    fn order_poll(&self) -> Option<&dyn OrderPoll> {
        Some(self)
    }

    /// A page of `GET /products` (100, by id, so new products append and a saved page
    /// number stays good), and every variation of its variable products
    /// (`GET /products/{id}/variations`, all their pages): variations are not in the
    /// products list (https://woocommerce.github.io/woocommerce-rest-api-docs/#list-all-products,
    /// #list-all-product-variations, #pagination). The cursor is the next page number;
    /// the last page is the one `X-WP-TotalPages` names. Grouped and external products
    /// hold no stock and are left out; a variation whose stock is its parent's
    /// (`manage_stock: "parent"`) is listed with that problem, since lockstep writes a
    /// variation's own stock.
    fn listings<'a>(
        &'a self,
        caller: &'a Caller,
        cursor: Option<&'a str>,
    ) -> super::listing::Listings<'a> {
        use super::listing::ListingPage;
        Box::pin(async move {
            let page = super::listing::page_number(cursor)?;
            let list = "/wp-json/wc/v3/products";
            let (products, pages) = self.list_page(caller, list, page).await?;
            let mut listings = Vec::new();
            for product in &products {
                match product["type"].as_str() {
                    Some("variable") => {
                        let parent = payload::id(&product["id"]).ok_or("a product without id")?;
                        let variations = format!("{list}/{parent}/variations");
                        let mut at = 1;
                        loop {
                            let (items, last) = self.list_page(caller, &variations, at).await?;
                            listings
                                .extend(items.iter().filter_map(|v| woo_listing(v, Some(&parent))));
                            // `X-WP-TotalPages` is the store's number: an empty page ends
                            // the list, and no product is read past VARIATION_PAGES_MAX.
                            if items.is_empty() || at >= last.min(VARIATION_PAGES_MAX) {
                                break;
                            }
                            at += 1;
                        }
                    }
                    Some("simple") | None => listings.extend(woo_listing(product, None)),
                    Some(_) => {}
                }
            }
            Ok(ListingPage {
                listings,
                // An empty page ends the list whatever `X-WP-TotalPages` says.
                next: (page < pages && !products.is_empty()).then(|| (page + 1).to_string()),
                pause: Duration::ZERO,
            })
        })
    }
}

/// Most items a WooCommerce list page holds (WordPress's bound on `per_page`).
const LIST_PAGE: usize = 100;

impl WooCommerce {
    /// Page `page` of a products or variations list, and how many pages it has.
    async fn list_page(
        &self,
        caller: &Caller,
        list: &str,
        page: usize,
    ) -> Result<(Vec<Value>, usize), super::listing::ListingError> {
        let request = self.get(&format!(
            "{list}?per_page={LIST_PAGE}&page={page}&orderby=id&order=asc"
        ));
        let (status, headers, body) = caller.call(request).await?;
        let reply = super::call::json_reply(status, &body)?;
        let items = reply
            .as_array()
            .ok_or("the reply is not a list of products")?
            .clone();
        let pages = headers
            .get("x-wp-totalpages")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Ok((items, pages))
    }
}

/// Most pages of one product's variations read (10,000 variations at `LIST_PAGE` a page,
/// far past what a store's product carries).
const VARIATION_PAGES_MAX: usize = 100;

/// A product or variation as a listing: `id`, or `parent/id` for a variation.
fn woo_listing(item: &Value, parent: Option<&str>) -> Option<super::listing::Listing> {
    let id = payload::id(&item["id"])?;
    let managed = &item["manage_stock"];
    Some(super::listing::Listing {
        sku: super::listing::sku_field(item["sku"].as_str()),
        item_id: match parent {
            Some(parent) => format!("{parent}/{id}"),
            None => id,
        },
        location_id: None,
        level: item["stock_quantity"].as_i64().filter(|_| managed == true),
        problem: match managed {
            // Lockstep's writes set `manage_stock: true` on the variation itself, which
            // would split the pool its siblings share: the seller decides.
            Value::String(s) if s == "parent" => Some(
                "its stock is its parent product's (manage_stock: parent): writing it \
                 would split the stock its sibling variations share"
                    .to_string(),
            ),
            // Not managed yet: lockstep's first write turns it on.
            _ => None,
        },
    })
}

impl OrderPoll for WooCommerce {
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
            let at = TimeCursor::read(cursor.as_deref(), since)?;
            let (status, headers, body) = caller.call(self.poll_request(at)).await?;
            self.poll_reply(status, &headers, &body, at, now)
        })
    }
}

impl WooCommerce {
    /// Orders modified after the cursor's bound, oldest first: the next page's bound is
    /// the newest modification this one showed (`time_cursor.rs`), so an order the shop
    /// modifies during a pass cannot slide another past it.
    fn poll_request(&self, at: TimeCursor) -> OutboundRequest {
        // WooCommerce takes ISO 8601 without an offset; `dates_are_gmt` says it is UTC.
        let since = format_rfc3339(at.after);
        let since = since.trim_end_matches('Z');
        self.get(&format!(
            "/wp-json/wc/v3/orders?modified_after={since}&dates_are_gmt=true&orderby=modified&order=asc&per_page={BATCH_MAX}&page={}",
            at.page
        ))
    }

    fn poll_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        at: TimeCursor,
        now: Micros,
    ) -> Result<PollPage, String> {
        let reply = super::call::json_reply(status, body)?;
        let orders = reply
            .as_array()
            .ok_or("the reply is not a list of orders")?;
        let mut result = PollPage::default();
        for order in orders {
            result.newest = result.newest.max(woo_time(&order["date_modified_gmt"]));
            match self.order_events(order, now) {
                Ok(events) => result.events.extend(events),
                Err(e) => super::order_left_out(&self.name, &order["id"], &e.message),
            }
        }
        let pages: u32 = headers
            .get("x-wp-totalpages")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(at.page);
        result.next = at.next(result.newest, at.page < pages && !orders.is_empty());
        Ok(result)
    }
}
