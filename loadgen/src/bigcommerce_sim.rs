//! A simulated BigCommerce store, as lockstep's `bigcommerce` kind meets it (CHANNELS.md §3).
//!
//! - REST under `/stores/{hash}` with `X-Auth-Token` (401 otherwise):
//!   `GET /v2/orders/{id}` (RFC 2822 dates, `status_id`), `GET /v2/orders/{id}/products`
//!   (`limit`: 50 when not given, at most 250; `page`; 204 past the last page),
//!   `PUT /v3/inventory/adjustments/absolute` (at most 2,000 items, else 422; answered with
//!   a `transaction_id`; exactly one of `variant_id`, `product_id`, `sku` per item, and an
//!   item tracked by product (`track_by_product`) must be named by `product_id`, else the
//!   whole transaction is a 422), `GET /v3/inventory/items?variant_id:in=` paged by `page`
//!   and `limit` (50 when not given, at most 1,000) with `meta.pagination`, and
//!   `GET /v3/catalog/products?id:in=` with `inventory_tracking`, `GET /v3/catalog/variants`
//!   (every variant, paged; variants beside the listings by `add_variant`: no SKU, a
//!   SKU another has); a request target over
//!   8 KiB is a 414.
//! - Rate limit per store in a fixed window (150 requests per 30 s unless set), reported on
//!   every answer in `X-Rate-Limit-Requests-Left`, `-Requests-Quota`, `-Time-Reset-Ms`,
//!   `-Time-Window-Ms`; past it, 429 with the same headers.
//! - Webhooks: `store/order/created` and `store/order/statusUpdated`, thin (`{scope,
//!   store_id, producer, hash, created_at, data}`), with the hook's registered custom
//!   header and a Standard Webhooks signature keyed with the app's client secret; `hash`
//!   is the SHA-1 of the payload, the same on a redelivery; retried 3 times. After an
//!   inventory write, `store/product/inventory/updated` (`method: "absolute"`) when echoes
//!   are on.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha1::Digest;

use crate::market::{gate, lock, now_us, rfc2822, Market, Order, Req, Shop, Stage};
use crate::signing;
use crate::sim::{reply, Delivery, Reply, Sender};

pub const STORE_HASH: &str = "abc123sim";
/// Items per absolute adjustment.
pub const BATCH_LIMIT: usize = 2_000;

struct Window {
    quota: u32,
    length: Duration,
    started: Instant,
    used: u32,
}

struct Extra {
    /// Reads answered 429 for want of room in the window.
    throttled_reads: u32,
    /// `GET /v2/orders/{id}/products` calls answered (an order's lines fetched).
    line_reads: u32,
    token: String,
    secret: String,
    header: (String, String),
    window: Window,
    /// SKUs whose product is tracked by product (`inventory_tracking: "product"`), not
    /// by variant: an absolute adjustment must name their `product_id`.
    by_product: std::collections::HashSet<String>,
    /// Variants beyond the listings (`BigCommerceSim::add_variant`): (variant id, SKU).
    more: Vec<(u64, String)>,
    /// SKUs whose orders' lines are answered as an object, not a list
    /// (`answer_lines_unreadably`): an order no reader can take, however often asked.
    unreadable_lines: std::collections::HashSet<String>,
}

/// Items a page of `GET /v3/inventory/items` holds when the call names no `limit` (the
/// spec names no default; BigCommerce's v3 lists default to 50).
pub const ITEMS_PAGE_DEFAULT: usize = 50;
/// The most a page holds ("Limit of 1000 items for payload length", inventory.v3.yml).
pub const ITEMS_PAGE_MAX: usize = 1_000;
/// Longest request target the store takes; longer is 414 (id lists must fit a URL).
pub const URL_BYTES_MAX: usize = 8_192;

/// A running simulated store.
pub struct BigCommerceSim {
    pub market: Market,
    extra: Arc<Mutex<Extra>>,
}

/// The order's `status_id` (orders.v2.oas2.yml: 11 Awaiting Fulfillment, 3 Partially
/// Shipped, 2 Shipped, 5 Cancelled).
fn status_id(order: &Order) -> u32 {
    match order.stage {
        Stage::Placed if order.partly_shipped() => 3,
        Stage::Placed => 11,
        Stage::Shipped => 2,
        Stage::Cancelled => 5,
    }
}

impl Window {
    /// Spends one request if the window has room; returns the rate headers.
    fn spend(&mut self) -> (bool, Vec<(&'static str, String)>) {
        if self.started.elapsed() >= self.length {
            self.started = Instant::now();
            self.used = 0;
        }
        let ok = self.used < self.quota;
        if ok {
            self.used += 1;
        }
        let reset = self
            .length
            .saturating_sub(self.started.elapsed())
            .as_millis();
        let headers = vec![
            (
                "x-rate-limit-requests-left",
                (self.quota - self.used).to_string(),
            ),
            ("x-rate-limit-requests-quota", self.quota.to_string()),
            ("x-rate-limit-time-reset-ms", reset.to_string()),
            (
                "x-rate-limit-time-window-ms",
                self.length.as_millis().to_string(),
            ),
        ];
        (ok, headers)
    }
}

fn bc_error(status: u16, title: &str, headers: &[(&str, String)]) -> Reply {
    reply(
        status,
        &json!({"status": status, "title": title, "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes"}),
        headers,
    )
}

/// v2's refusal of a read (`Shop::refused_orders`): a list of `{"status", "message"}`,
/// the shape of its 404s.
fn v2_refused(status: u16, headers: &[(&str, String)]) -> Reply {
    let message = "The request could not be processed.";
    reply(
        status,
        &json!([{"status": status, "message": message}]),
        headers,
    )
}

/// v2's answer to an empty collection: 204, no body.
fn no_content(headers: &[(&str, String)]) -> Reply {
    let mut answer = reply(204, &Value::Null, headers);
    *answer.body_mut() = http_body_util::Full::new(hyper::body::Bytes::new());
    answer.headers_mut().remove("content-type");
    answer
}

impl BigCommerceSim {
    /// Adds a variant lockstep's catalog does not map (`sku` empty, or another's).
    pub fn add_variant(&self, id: u64, sku: &str) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .more
            .push((id, sku.to_string()));
    }

    /// A store listing `items` (our SKU, variant id) whose app has `token` (API) and
    /// `secret` (client secret: the webhook signing key); hooks carry `header`.
    pub fn start(
        items: &[(&str, &str)],
        token: &str,
        secret: &str,
        header: (&str, &str),
    ) -> BigCommerceSim {
        let extra = Arc::new(Mutex::new(Extra {
            token: token.into(),
            secret: secret.into(),
            header: (header.0.into(), header.1.into()),
            window: Window {
                quota: 150,
                length: Duration::from_secs(30),
                started: Instant::now(),
                used: 0,
            },
            by_product: Default::default(),
            more: Vec::new(),
            unreadable_lines: Default::default(),
            throttled_reads: 0,
            line_reads: 0,
        }));
        let state = extra.clone();
        let market = Market::start(
            items,
            3,
            Arc::new(move |shop, sender, req| handle(shop, sender, &state, req)),
        );
        BigCommerceSim { market, extra }
    }

    fn extra(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks `sku`'s inventory by product from now on (its product id is its variant id
    /// / 10): adjustments naming its variant are refused with 422, as BigCommerce does.
    pub fn track_by_product(&self, sku: &str) {
        self.extra().by_product.insert(sku.to_string());
    }

    /// From now on the lines of every order holding `sku` are answered as an object
    /// instead of a list, as no BigCommerce answer is: an order that cannot be read.
    pub fn answer_lines_unreadably(&self, sku: &str) {
        self.extra().unreadable_lines.insert(sku.to_string());
    }

    /// The store's rate limit: `quota` requests per `window`.
    pub fn set_window(&self, quota: u32, window: Duration) {
        self.extra().window = Window {
            quota,
            length: window,
            started: Instant::now(),
            used: 0,
        };
    }

    /// Reads (order fetches, level reads) refused 429: the window is one budget for
    /// every call of the store (api-rate-limits: "per store").
    pub fn throttled_reads(&self) -> u32 {
        self.extra().throttled_reads
    }

    /// How many times an order's lines were fetched (`GET /v2/orders/{id}/products`).
    pub fn line_reads(&self) -> u32 {
        self.extra().line_reads
    }

    pub fn place_order(&self, lines: &[(&str, i64)]) -> u64 {
        let id = self.market.shop().place(lines);
        self.hook("store/order/created", json!({"type": "order", "id": id}));
        id
    }

    pub fn advance(&self, id: u64, stage: Stage) {
        self.change(id, |shop| shop.advance(id, stage));
    }

    /// `units` of line `line` ship in a shipment of their own: the order is Partially
    /// Shipped (3) while units are open, and BigCommerce sends `store/order/statusUpdated`
    /// on the change.
    pub fn ship_units(&self, id: u64, line: usize, units: i64) {
        self.change(id, |shop| shop.ship_units(id, line, units));
    }

    /// A seller's edit of line `line` to `quantity` units ("To update a product in an
    /// order, include `id`", Update an Order): BigCommerce sends `store/order/updated`
    /// ("any changes to an existing order").
    pub fn set_quantity(&self, id: u64, line: usize, quantity: i64) {
        self.market.shop().set_quantity(id, line, quantity);
        self.hook("store/order/updated", json!({"type": "order", "id": id}));
    }

    fn change(&self, id: u64, change: impl FnOnce(&mut Shop)) {
        let previous = status_id(&self.market.shop().orders[&id]);
        change(&mut self.market.shop());
        let now = status_id(&self.market.shop().orders[&id]);
        self.hook(
            "store/order/statusUpdated",
            json!({"type": "order", "id": id,
                   "status": {"previous_status_id": previous, "new_status_id": now}}),
        );
    }

    fn hook(&self, scope: &str, data: Value) {
        let (headers, body) = hook_delivery(&self.extra(), scope, data);
        self.market.deliver(scope, headers, body);
    }
}

/// A signed hook: headers and body.
fn hook_delivery(extra: &Extra, scope: &str, data: Value) -> (Vec<(String, String)>, Vec<u8>) {
    let payload = json!({"scope": scope, "store_id": "1001", "data": data});
    let hash = format!("{:x}", sha1::Sha1::digest(payload.to_string().as_bytes()));
    let created = now_us() / 1_000_000;
    let body =
        json!({"scope": scope, "store_id": "1001", "producer": format!("stores/{STORE_HASH}"),
                      "hash": hash, "created_at": created, "data": payload["data"]})
        .to_string()
        .into_bytes();
    let id = format!("{:032x}", rand::random::<u128>());
    let signature = signing::sign(extra.secret.as_bytes(), &id, created, &body);
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("webhook-id".to_string(), id),
        ("webhook-timestamp".to_string(), created.to_string()),
        ("webhook-signature".to_string(), signature),
        (extra.header.0.clone(), extra.header.1.clone()),
    ];
    (headers, body)
}

fn handle(
    shop: &Arc<Mutex<Shop>>,
    sender: &Arc<Sender>,
    extra: &Arc<Mutex<Extra>>,
    req: Req,
) -> Reply {
    let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
    if req.header("x-auth-token") != Some(x.token.as_str()) {
        return bc_error(
            401,
            "The request was not authorized: X-Auth-Token is missing or invalid.",
            &[],
        );
    }
    let (room, rate) = x.window.spend();
    let is_write = req.method == hyper::Method::PUT;
    if !room {
        if is_write {
            lock(shop).log_call(&req.path, 0, 429);
        } else {
            x.throttled_reads += 1;
        }
        return bc_error(429, "Too many requests", &rate);
    }
    drop(x);
    if is_write {
        let throttled = |s: u64| {
            bc_error(
                429,
                "Too many requests",
                &[("x-rate-limit-time-reset-ms", (s * 1000).to_string())],
            )
        };
        let failed = |code: u16| bc_error(code, "Internal error", &[]);
        if let Some(r) = gate(shop, &req.path, throttled, failed) {
            return r;
        }
    }
    if req.target_len() > URL_BYTES_MAX {
        return bc_error(414, "Request-URI Too Long", &rate);
    }
    let Some(route) = req.route(&format!("/stores/{STORE_HASH}/")) else {
        return bc_error(404, "Not found", &rate);
    };
    match (req.method.clone(), route.as_slice()) {
        // The orders list (orders.v2.oas2.yml): `min_date_modified` (RFC 2822 or ISO 8601;
        // ISO 8601 taken here), `sort=date_modified:asc`, `limit` (default 50) and `page`;
        // a bare array.
        (hyper::Method::GET, ["v2", "orders"]) => {
            let since = req
                .param("min_date_modified")
                .and_then(|t| crate::market::parse_rfc3339(&t));
            let Some(since) = since else {
                return reply(
                    400,
                    &json!([{"status": 400, "message": "min_date_modified must be an RFC 2822 or ISO 8601 date"}]),
                    &rate,
                );
            };
            let limit = req.number("limit", 50).clamp(1, 250);
            let page = req.number("page", 1).max(1);
            let mut s = lock(shop);
            let listed = s.modified_after(since - 1);
            let orders: Vec<Value> = listed
                .iter()
                .skip((page - 1) * limit)
                .take(limit)
                .map(|o| {
                    let shipped = o.shipped_us.map(rfc2822).unwrap_or_default();
                    let id = (!s.is_unreadable(o)).then_some(o.id);
                    json!({"id": id, "status_id": status_id(o), "date_created": rfc2822(o.created_us),
                           "date_modified": rfc2822(o.modified_us), "date_shipped": shipped})
                })
                .collect();
            reply(200, &Value::Array(orders), &rate)
        }
        (hyper::Method::GET, ["v2", "orders", id]) => {
            let s = lock(shop);
            let Some(o) = id.parse().ok().and_then(|id: u64| s.orders.get(&id)) else {
                return reply(
                    404,
                    &json!([{"status": 404, "message": "The requested resource was not found."}]),
                    &rate,
                );
            };
            if let Some(status) = s.refusal_of(o) {
                return v2_refused(status, &rate);
            }
            let shipped = o.shipped_us.map(rfc2822).unwrap_or_default();
            reply(
                200,
                &json!({"id": o.id, "status_id": status_id(o), "date_created": rfc2822(o.created_us),
                        "date_modified": rfc2822(o.modified_us), "date_shipped": shipped}),
                &rate,
            )
        }
        // An order's lines (orders.v2.oas2.yml, "Lists 50 order products on an order"):
        // `limit` (default 50, at most 250) and `page`; a page past the last is v2's
        // empty collection, 204 without a body.
        (hyper::Method::GET, ["v2", "orders", id, "products"]) => {
            let unreadable = {
                let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
                x.line_reads += 1;
                x.unreadable_lines.clone()
            };
            let s = lock(shop);
            let Some(o) = id.parse().ok().and_then(|id: u64| s.orders.get(&id)) else {
                return reply(
                    404,
                    &json!([{"status": 404, "message": "The requested resource was not found."}]),
                    &rate,
                );
            };
            if let Some(status) = s.refusal_of(o) {
                return v2_refused(status, &rate);
            }
            if o.lines.iter().any(|l| unreadable.contains(&l.sku)) {
                return reply(200, &json!({"lines": "unreadable"}), &rate);
            }
            let limit = req.number("limit", 50).clamp(1, 250);
            let page = req.number("page", 1).max(1);
            let lines: Vec<Value> = o
                .lines
                .iter()
                .skip((page - 1) * limit)
                .take(limit)
                .map(|l| {
                    let variant: u64 = s.listings[&l.sku].id.parse().unwrap_or(0);
                    json!({"id": l.id, "order_id": o.id, "product_id": variant / 10, "variant_id": variant,
                           "sku": l.sku, "quantity": l.quantity,
                           "quantity_shipped": l.shipped})
                })
                .collect();
            if lines.is_empty() {
                return no_content(&rate);
            }
            reply(200, &Value::Array(lines), &rate)
        }
        (hyper::Method::PUT, ["v3", "inventory", "adjustments", "absolute"]) => {
            let body = req.json().unwrap_or(Value::Null);
            let items = body["items"].as_array().cloned().unwrap_or_default();
            let mut s = lock(shop);
            if items.is_empty() || items.len() > BATCH_LIMIT {
                s.log_call(&req.path, items.len(), 422);
                return reply(
                    422,
                    &json!({"status": 422, "title": "Input is invalid",
                                          "errors": {"items": format!("must have 1 to {BATCH_LIMIT} items")}}),
                    &rate,
                );
            }
            let by_product = extra
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .by_product
                .clone();
            let mut writes = Vec::new();
            for (i, item) in items.iter().enumerate() {
                // Exactly one of variant_id, product_id or sku names the item; an item
                // tracked by product must be named by product_id, else the whole
                // transaction fails with 422 (inventory.v3.yml, the absolute
                // adjustment's 422 example).
                let (variant, product) = (item["variant_id"].as_u64(), item["product_id"].as_u64());
                let listing = match (variant, product) {
                    (Some(v), None) => s.by_id(&v.to_string()).map(|l| l.sku.clone()),
                    (None, Some(p)) => s
                        .listings
                        .values()
                        .find(|l| l.id.parse::<u64>().ok().map(|v| v / 10) == Some(p))
                        .map(|l| l.sku.clone()),
                    _ => None,
                };
                let tracked_by_product = listing.as_ref().is_some_and(|l| by_product.contains(l));
                if let (Some(v), true) = (variant, tracked_by_product) {
                    s.log_call(&req.path, items.len(), 422);
                    let title = format!("[Item with variant_id {v} is tracked by product, please update stock by product id]");
                    return reply(
                        422,
                        &json!({"status": 422, "title": title, "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes", "errors": {}}),
                        &rate,
                    );
                }
                if let (Some(p), false) = (product, tracked_by_product) {
                    s.log_call(&req.path, items.len(), 422);
                    let title = format!("[Item with product_id {p} is tracked by variant, please update stock by variant id]");
                    return reply(
                        422,
                        &json!({"status": 422, "title": title, "errors": {}}),
                        &rate,
                    );
                }
                let variant = listing
                    .as_ref()
                    .and_then(|l| s.listings.get(l))
                    .map(|l| l.id.clone());
                let (Some(sku), Some(quantity)) = (listing, item["quantity"].as_i64()) else {
                    s.log_call(&req.path, items.len(), 422);
                    return reply(
                        422,
                        &json!({"status": 422, "title": "Input is invalid",
                                              "errors": {format!("items.{i}"): "unknown variant or no quantity"}}),
                        &rate,
                    );
                };
                writes.push((sku, quantity, variant.unwrap_or_default()));
            }
            // One transaction: every item, or none.
            for (sku, quantity, _) in &writes {
                s.write(sku, *quantity);
            }
            s.log_call(&req.path, items.len(), 200);
            drop(s);
            if sender.habits().echo {
                let x = extra.lock().unwrap_or_else(|e| e.into_inner());
                for (_, quantity, variant) in writes {
                    let product = variant.parse::<u64>().unwrap_or(0) / 10;
                    let data = json!({"type": "product", "id": product,
                                      "inventory": {"product_id": product, "method": "absolute", "value": quantity}});
                    let (headers, body) =
                        hook_delivery(&x, "store/product/inventory/updated", data);
                    let build = move || Delivery {
                        headers: headers.clone(),
                        body: body.clone(),
                    };
                    sender.send(
                        &tokio::runtime::Handle::current(),
                        "store/product/inventory/updated",
                        Arc::new(build),
                    );
                }
            }
            reply(
                200,
                &json!({"transaction_id": format!("{:032x}", rand::random::<u128>())}),
                &rate,
            )
        }
        (hyper::Method::GET, ["v3", "inventory", "items"]) => {
            let s = lock(shop);
            let wanted: Vec<String> = req
                .param("variant_id:in")
                .map(|v| v.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            let found: Vec<Value> = wanted
                .iter()
                .filter_map(|v| s.by_id(v))
                .map(|l| {
                    let variant: u64 = l.id.parse().unwrap_or(0);
                    json!({"identity": {"sku": l.sku, "variant_id": variant, "product_id": variant / 10, "sku_id": variant},
                           "locations": [{"location_id": 1, "location_code": "BC-LOCATION-1", "location_name": "Default location",
                                          "total_inventory_onhand": l.level, "available_to_sell": l.level, "location_enabled": true,
                                          "settings": {"safety_stock": 0, "is_in_stock": l.level > 0, "warning_level": 0,
                                                       "bin_picking_number": "", "backorder_message": ""}}]})
                })
                .collect();
            // Paged by `page` and `limit` (`meta.pagination`, inventory.v3.yml).
            let limit = req
                .number("limit", ITEMS_PAGE_DEFAULT)
                .clamp(1, ITEMS_PAGE_MAX);
            let page = req.number("page", 1).max(1);
            reply(200, &paged(found, page, limit), &rate)
        }
        // Every variant, base variants included (a simple product's SKU is its base
        // variant's): `page`, `limit` 1 to 250 (default 50), `meta.pagination`
        // (https://developer.bigcommerce.com/docs/rest-catalog/product-variants/variants-batch#get-all-variants).
        (hyper::Method::GET, ["v3", "catalog", "variants"]) => {
            let s = lock(shop);
            let more = extra.lock().unwrap_or_else(|e| e.into_inner()).more.clone();
            let mut all: Vec<(u64, String, i64)> = s
                .listings
                .values()
                .filter_map(|l| Some((l.id.parse().ok()?, l.sku.clone(), l.level)))
                .chain(more.into_iter().map(|(id, sku)| (id, sku, 0)))
                .collect();
            all.sort_by_key(|(id, _, _)| *id);
            let variants: Vec<Value> = all
                .into_iter()
                .map(|(id, sku, level)| {
                    json!({"id": id, "product_id": id / 10, "sku": sku, "inventory_level": level})
                })
                .collect();
            let limit = req.number("limit", 50);
            if !(1..=250).contains(&limit) {
                return bc_error(422, "The limit must be between 1 and 250", &rate);
            }
            let page = req.number("page", 1).max(1);
            reply(200, &paged(variants, page, limit), &rate)
        }
        (hyper::Method::GET, ["v3", "catalog", "products"]) => {
            let s = lock(shop);
            let by_product = &extra.lock().unwrap_or_else(|e| e.into_inner()).by_product;
            let wanted: Vec<u64> = req
                .param("id:in")
                .map(|v| v.split(',').filter_map(|p| p.parse().ok()).collect())
                .unwrap_or_default();
            let found: Vec<Value> = wanted
                .iter()
                .filter_map(|p| {
                    let l = s
                        .listings
                        .values()
                        .find(|l| l.id.parse::<u64>().ok().map(|v| v / 10) == Some(*p))?;
                    let tracking = if by_product.contains(&l.sku) {
                        "product"
                    } else {
                        "variant"
                    };
                    Some(json!({"id": p, "inventory_tracking": tracking}))
                })
                .collect();
            let limit = req.number("limit", 50).clamp(1, 250);
            let page = req.number("page", 1).max(1);
            reply(200, &paged(found, page, limit), &rate)
        }
        _ => bc_error(404, "Not found", &rate),
    }
}

/// One page of `items` with BigCommerce's v3 `meta.pagination`.
fn paged(items: Vec<Value>, page: usize, limit: usize) -> Value {
    let total = items.len();
    let total_pages = total.div_ceil(limit).max(1);
    let data: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    let link = |p: usize| format!("?limit={limit}&page={p}");
    json!({"data": data, "meta": {"pagination": {
        "total": total, "count": data.len(), "per_page": limit, "current_page": page,
        "total_pages": total_pages,
        "links": {"previous": (page > 1).then(|| link(page - 1)), "current": link(page),
                  "next": (page < total_pages).then(|| link(page + 1))},
    }}})
}

impl crate::sim::Simulator for BigCommerceSim {
    fn levels(&self) -> std::collections::HashMap<String, i64> {
        self.market.levels()
    }

    fn arrivals(&self, sku: &str) -> Vec<crate::sim::Arrival> {
        self.market.arrivals(sku)
    }

    fn place(&self, lines: &[(&str, i64)]) -> crate::sim::Cancel<'_> {
        let id = self.place_order(lines);
        Box::new(move || self.advance(id, crate::market::Stage::Cancelled))
    }

    fn connect(&self, url: &str) {
        self.market.set_webhook_url(url);
    }

    fn set_habits(&self, habits: &crate::sim::Habits) {
        self.market.set_habits(habits.clone());
    }
}
