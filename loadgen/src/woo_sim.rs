//! A simulated WooCommerce site, as lockstep's `woocommerce` kind meets it (CHANNELS.md §2).
//!
//! - REST v3 with HTTP Basic (consumer key and secret; 401 otherwise):
//!   `POST /wp-json/wc/v3/products/batch` and `POST .../products/{id}/variations/batch`
//!   (`{"update": [{"id", "stock_quantity"}]}`, at most 100 items: more is WooCommerce's
//!   413 `woocommerce_rest_request_entity_too_large`; an unknown id comes back with an
//!   `error`), `GET .../products/{id}`, `GET .../products` and a variable product's
//!   `variations` (paged: `per_page` 1 to 100, `page`, `include=`, `X-WP-Total`,
//!   `X-WP-TotalPages`, `Link`; products added beside the listings by `add_product`:
//!   no SKU, a duplicate SKU, stock managed by the parent), and `GET .../orders?modified_after=` with `X-WP-Total` / `X-WP-TotalPages`.
//!   No rate limit (WooCommerce core has none), unless one is set.
//! - Orders placed on the site lower its stock (and cancellations and refunds restore
//!   it) and send `order.created` / `order.updated`, signed with the webhook secret, with
//!   WooCommerce's habits: the payload is built when the delivery is sent (so a late
//!   delivery shows the order's newest state), a new Delivery-ID every time, no retries;
//!   lost deliveries, duplicates, delays and reordering can be switched on. A REST stock
//!   write sends `product.updated` (the echo) when echoes are on.
//! - Every value written is recorded with its arrival time.
//!
//! The site runs on a `market::Market`: its server, its products (each a listing under
//! its product id, a variation's parent product kept as the listing's parent, its
//! modification date as the listing's), the arrivals, the batch call log, the fault switch
//! (WooCommerce answers only a status fault: it never hung or throttled here), the host's
//! rate bucket and the webhook sender. It keeps its own orders beside them, because
//! WooCommerce's differ from the market's neutral ones: an order's status is any of the
//! site's statuses, and a refund restocks units without cancelling them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::market::{civil_from_days, lock, now_us, Call, Listing, Market, Pending, Req, Shop};
use crate::signing;
use crate::sim::{reply, Arrival, Delivery, Fault, Habits, Reply, Sender};

/// WooCommerce's batch limit (`woocommerce_rest_batch_items_limit`).
pub const BATCH_LIMIT: usize = 100;

#[derive(Clone)]
struct Line {
    id: u64,
    product: u64,
    sku: String,
    quantity: i64,
    /// Units refunded with their stock restored (`_restock_refunded_items`).
    restocked: i64,
}

#[derive(Clone)]
struct Order {
    id: u64,
    status: String,
    lines: Vec<Line>,
    created: String,
    modified: String,
    /// Microseconds, for ordering the listing.
    modified_us: i64,
    completed: Option<String>,
    /// Refunds: (id, amount).
    refunds: Vec<(u64, i64)>,
}

/// What the site keeps beside its market.
struct Extra {
    authorization: String,
    orders: BTreeMap<u64, Order>,
    /// Products beyond the listings (`WooSim::add_product`).
    more: Vec<MoreProduct>,
    /// Set by `touch_after_first_page`: the next order listing of more than one page
    /// modifies its first order once page 1 is answered.
    touch_after_first_page: bool,
}

/// A product or variation the site has beside its listings: without a SKU, with a SKU
/// another has (a plugin lifting the uniqueness check), or whose stock is its parent's.
#[derive(Clone, Debug)]
struct MoreProduct {
    id: u64,
    parent: Option<u64>,
    sku: String,
    /// `true`, `false` or `"parent"`.
    manage_stock: Value,
}

/// A running simulated site.
pub struct WooSim {
    pub market: Market,
    /// The market's webhook sender (the same one): kept as a field of its own because
    /// `src/demo.rs` and `tests/channels_e2e.rs` read `woo.sender`.
    pub sender: Arc<Sender>,
    extra: Arc<Mutex<Extra>>,
    secret: String,
    next_id: AtomicU64,
}

/// Now as WooCommerce's `_gmt` fields give it (seconds, no offset) and in microseconds.
fn now_gmt() -> (String, i64) {
    let micros = now_us();
    (gmt_text(micros), micros)
}

fn gmt_text(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS` (what `modified_after` takes) into microseconds.
fn parse_gmt(text: &str) -> Option<i64> {
    crate::market::parse_rfc3339(text)
}

/// A product's id (its listing's).
fn product_id(p: &Listing) -> u64 {
    p.id.parse().expect("numeric product ids")
}

/// A variation's parent product.
fn parent_of(p: &Listing) -> Option<u64> {
    p.parent
        .as_ref()
        .map(|id| id.parse().expect("numeric product ids"))
}

fn product_json(p: &Listing) -> Value {
    let parent = parent_of(p);
    json!({
        "id": product_id(p), "parent_id": parent.unwrap_or(0), "sku": p.sku,
        "type": if parent.is_some() { "variation" } else { "simple" }, "status": "publish",
        "manage_stock": true, "stock_quantity": p.level, "stock_status": if p.level > 0 { "instock" } else { "outofstock" },
        "date_modified_gmt": gmt_text(p.modified_us),
    })
}

/// The REST v3 order resource. A line's meta carries what WooCommerce keeps on the order
/// item: `_reduced_stock` once stock was taken, and `_restock_refunded_items` once a
/// refund put some back (`wc_restock_refunded_items` in `wc-order-functions.php`); the
/// order's `refunds` list each refund's id and total.
fn order_json(o: &Order, shop: &Shop) -> Value {
    json!({
        "id": o.id, "status": o.status,
        "date_created_gmt": o.created, "date_modified_gmt": o.modified,
        "date_completed_gmt": o.completed,
        "line_items": o.lines.iter().map(|l| {
            let p = shop.by_id(&l.product.to_string()).expect("listed");
            let parent = parent_of(p);
            let mut meta = vec![json!({"id": l.id * 10, "key": "_reduced_stock", "value": (l.quantity - l.restocked).to_string()})];
            if l.restocked > 0 {
                meta.push(json!({"id": l.id * 10 + 1, "key": "_restock_refunded_items", "value": l.restocked.to_string()}));
            }
            json!({
                "id": l.id,
                "product_id": parent.unwrap_or(product_id(p)),
                "variation_id": if parent.is_some() { product_id(p) } else { 0 },
                "sku": l.sku, "quantity": l.quantity,
                "meta_data": meta,
            })
        }).collect::<Vec<_>>(),
        "refunds": o.refunds.iter().map(|(id, total)| json!({"id": id, "reason": "", "total": format!("-{total}.00")})).collect::<Vec<_>>(),
    })
}

fn woo_error(status: u16, code: &str, message: &str) -> Reply {
    reply(
        status,
        &json!({"code": code, "message": message, "data": {"status": status}}),
        &[],
    )
}

impl WooSim {
    /// Starts a site with `products`: (SKU, product id, parent id for a variation), stock
    /// 0. Webhooks are signed with `secret`; the REST API takes `key`:`secret_key`.
    pub fn start(
        secret: &str,
        key: &str,
        secret_key: &str,
        products: &[(&str, u64, Option<u64>)],
    ) -> WooSim {
        let ids: Vec<(&str, String)> = products
            .iter()
            .map(|(sku, id, _)| (*sku, id.to_string()))
            .collect();
        let ids: Vec<(&str, &str)> = ids.iter().map(|(s, id)| (*s, id.as_str())).collect();
        let mut shop = Shop::new(&ids);
        for (sku, _, parent) in products {
            let listing = shop.listings.get_mut(*sku).expect("listed");
            listing.parent = parent.map(|p| p.to_string());
        }
        let extra = Arc::new(Mutex::new(Extra {
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret_key}"))
            ),
            orders: BTreeMap::new(),
            more: Vec::new(),
            touch_after_first_page: false,
        }));
        let (state, hook_secret) = (extra.clone(), secret.to_string());
        let handle = move |shop, sender, req| -> Pending {
            Box::pin(handle(
                shop,
                sender,
                state.clone(),
                hook_secret.clone(),
                req,
            ))
        };
        // WooCommerce never retries a failed delivery.
        let market = Market::serve(shop, 0, 0, Arc::new(handle));
        WooSim {
            sender: market.sender.clone(),
            market,
            extra,
            secret: secret.to_string(),
            next_id: AtomicU64::new(5_000),
        }
    }

    /// Adds a product (or, with `parent`, a variation) lockstep's catalog does not map:
    /// `sku` may be empty or another product's; `manage_stock` is `true`, `false` or
    /// `"parent"`. Listed by the products and variations lists only.
    pub fn add_product(&self, id: u64, parent: Option<u64>, sku: &str, manage_stock: Value) {
        self.lock().more.push(MoreProduct {
            id,
            parent,
            sku: sku.to_string(),
            manage_stock,
        });
    }

    /// Dates every order back, as if placed during an outage: the first (by id)
    /// `oldest_s` seconds ago, each next `step_s` seconds later.
    pub fn spread_orders_back(&self, oldest_s: i64, step_s: i64) {
        let start = now_us() - oldest_s * 1_000_000;
        for (k, order) in self.lock().orders.values_mut().enumerate() {
            let micros = start + k as i64 * step_s * 1_000_000;
            order.modified_us = micros;
            order.modified = gmt_text(micros);
            order.created = gmt_text(micros);
        }
    }

    /// The next listing of orders that has more than one page modifies the first order
    /// of its page 1 once that page is answered, as staff completing an order while a
    /// poll reads would: the order goes to the end of the list.
    pub fn touch_after_first_page(&self) {
        self.lock().touch_after_first_page = true;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The site's URL (the channel's `base_url`).
    pub fn url(&self) -> String {
        self.market.url()
    }

    pub fn set_webhook_url(&self, url: &str) {
        self.market.set_webhook_url(url);
    }

    pub fn set_habits(&self, habits: Habits) {
        self.market.set_habits(habits);
    }

    /// Only a status fault acts on the site (its API answers that status).
    pub fn set_fault(&self, fault: Fault) {
        self.market.set_fault(fault);
    }

    /// A host's rate limit (WooCommerce core has none): 429 with `Retry-After: 1`.
    pub fn set_rate_limit(&self, per_second: f64, burst: u32) {
        self.market.set_rate_limit(per_second, burst);
    }

    pub fn level(&self, sku: &str) -> Option<i64> {
        self.market.level(sku)
    }

    pub fn levels(&self) -> HashMap<String, i64> {
        self.market.levels()
    }

    /// Waits until `check` holds of the levels, up to `timeout`; returns how long it took.
    pub fn wait_for(
        &self,
        timeout: Duration,
        check: impl Fn(&HashMap<String, i64>) -> bool,
    ) -> Option<Duration> {
        self.market.wait_for(timeout, check)
    }

    pub fn arrivals(&self, sku: &str) -> Vec<Arrival> {
        self.market.arrivals(sku)
    }

    /// Every batch call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.market.calls()
    }

    /// How many order listings were read (the poll).
    pub fn order_polls(&self) -> usize {
        self.market.order_polls()
    }

    /// The product id of `sku`.
    fn product(&self, sku: &str) -> u64 {
        product_id(self.market.shop().listings.get(sku).expect("listed"))
    }

    /// A shop manager's edit: sets the stock (and sends `product.updated` when echoes
    /// are on, as a manual edit does).
    pub fn set_level(&self, sku: &str, stock: i64) {
        let id = self.product(sku);
        self.market.set_level(sku, stock);
        if self.sender.habits().echo {
            send_product_webhook(
                &self.market.shop,
                &self.sender,
                &self.secret,
                self.market.server.runtime.handle(),
                id,
            );
        }
    }

    /// A customer orders `lines` (SKU, quantity), paid: status `processing`, stock
    /// reduced, `order.created` sent. Returns the order id.
    /// Dates an order's last change at `micros` (Unix microseconds): a shop whose clock
    /// is far off, or a hostile listing.
    pub fn set_order_modified(&self, id: u64, micros: i64) {
        if let Some(o) = self.lock().orders.get_mut(&id) {
            o.modified = gmt_text(micros);
            o.modified_us = micros;
        }
    }

    pub fn place_order(&self, lines: &[(&str, i64)]) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (created, micros) = now_gmt();
        {
            let mut s = self.lock();
            let lines: Vec<Line> = lines
                .iter()
                .map(|(sku, quantity)| {
                    let product = self.product(sku);
                    self.market.shop().adjust(sku, -quantity);
                    Line {
                        id: self.next_id.fetch_add(1, Ordering::Relaxed),
                        product,
                        sku: sku.to_string(),
                        quantity: *quantity,
                        restocked: 0,
                    }
                })
                .collect();
            s.orders.insert(
                id,
                Order {
                    id,
                    status: "processing".into(),
                    lines,
                    created: created.clone(),
                    modified: created,
                    modified_us: micros,
                    completed: None,
                    refunds: Vec::new(),
                },
            );
        }
        self.order_webhook("order.created", id);
        id
    }

    /// Moves an order to `status` as the site does: `completed` stamps the completion,
    /// `cancelled` restores the stock, and `refunded` does not (WooCommerce restocks on
    /// `cancelled` and `pending` alone: `wc_maybe_increase_stock_levels` in
    /// wc-stock-functions.php; `wc_order_fully_refunded` records a refund of no lines).
    /// Sends `order.updated`.
    pub fn set_status(&self, id: u64, status: &str) {
        {
            let mut s = self.lock();
            let (modified, micros) = now_gmt();
            let order = s.orders.get_mut(&id).expect("an order of this site");
            let restore = status == "cancelled" && order.status != "cancelled";
            order.status = status.to_string();
            order.modified = modified.clone();
            order.modified_us = micros;
            if status == "completed" {
                order.completed = Some(modified);
            }
            if restore {
                // Units a refund already put back are not put back again.
                let mut shop = self.market.shop();
                for line in &order.lines {
                    shop.adjust(&line.sku, line.quantity - line.restocked);
                }
            }
        }
        self.order_webhook("order.updated", id);
    }

    /// A partial refund of `units` of line `line`, with their stock restored when
    /// `restock` (the admin's "Restock refunded items"): the product's stock rises, the
    /// line's `_restock_refunded_items` grows, and `order.updated` is sent (WooCommerce
    /// has no refund topic).
    pub fn refund_units(&self, id: u64, line: usize, units: i64, restock: bool) {
        {
            let mut s = self.lock();
            let (modified, micros) = now_gmt();
            let refund_id = micros as u64 % 1_000_000_000;
            let order = s.orders.get_mut(&id).expect("an order of this site");
            order.modified = modified;
            order.modified_us = micros;
            order.refunds.push((refund_id, units * 10));
            let l = &mut order.lines[line];
            if restock {
                l.restocked += units;
                self.market.shop().adjust(&l.sku, units);
            }
        }
        self.order_webhook("order.updated", id);
    }

    /// A seller's edit of line `line` to `quantity` units, as the admin's order items
    /// save it (`wc_save_order_items`): the product's stock moves by the difference, as
    /// `wc_maybe_adjust_line_item_product_stock` moves it for a `processing`,
    /// `completed` or `on-hold` order (and its `_reduced_stock` with it), and
    /// `order.updated` is sent.
    pub fn set_quantity(&self, id: u64, line: usize, quantity: i64) {
        {
            let mut s = self.lock();
            let (modified, micros) = now_gmt();
            let order = s.orders.get_mut(&id).expect("an order of this site");
            order.modified = modified;
            order.modified_us = micros;
            let holds = ["processing", "completed", "on-hold"].contains(&order.status.as_str());
            let l = &mut order.lines[line];
            if holds {
                self.market.shop().adjust(&l.sku, l.quantity - quantity);
            }
            l.quantity = quantity;
        }
        self.order_webhook("order.updated", id);
    }

    fn order_webhook(&self, topic: &str, id: u64) {
        let (extra, shop) = (self.extra.clone(), self.market.shop.clone());
        let build = move || {
            let x = extra.lock().unwrap_or_else(|e| e.into_inner());
            order_json(&x.orders[&id], &lock(&shop))
        };
        send_webhook(
            &self.sender,
            &self.secret,
            self.market.server.runtime.handle(),
            topic,
            id,
            Arc::new(build),
        );
    }

    /// Sends WooCommerce's creation ping (form body `webhook_id=N`, unsigned); returns
    /// the status lockstep answered.
    pub fn ping(&self, url: &str) -> u16 {
        let client = reqwest::Client::new();
        let request = client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "WooCommerce/9.4.0 Hookshot (WordPress/6.7)")
            .body("webhook_id=7");
        self.market.server.runtime.block_on(async move {
            request
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    }

    /// Signs `body` as the site signs webhooks (for tests that deliver by hand).
    pub fn sign(&self, body: &[u8]) -> String {
        signing::body_signature(&self.secret, body)
    }

    /// An order's resource as the REST API and the webhooks give it.
    pub fn order(&self, id: u64) -> Value {
        let s = self.lock();
        order_json(&s.orders[&id], &self.market.shop())
    }
}

static DELIVERIES: AtomicU64 = AtomicU64::new(1);

/// One webhook with WooCommerce's headers, its body built at send time and signed then.
fn send_webhook(
    sender: &Arc<Sender>,
    secret: &str,
    runtime: &tokio::runtime::Handle,
    topic: &str,
    resource_id: u64,
    build: Arc<dyn Fn() -> Value + Send + Sync>,
) {
    let (secret, topic_name) = (secret.to_string(), topic.to_string());
    let (resource, event) = topic.split_once('.').unwrap_or((topic, ""));
    let (resource, event) = (resource.to_string(), event.to_string());
    sender.send(
        runtime,
        topic,
        Arc::new(move || {
            let body = serde_json::to_vec(&build()).expect("json serializes");
            Delivery {
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    (
                        "user-agent".into(),
                        "WooCommerce/9.4.0 Hookshot (WordPress/6.7)".into(),
                    ),
                    (
                        "x-wc-webhook-source".into(),
                        "https://woo-sim.example/".into(),
                    ),
                    ("x-wc-webhook-topic".into(), topic_name.clone()),
                    ("x-wc-webhook-resource".into(), resource.clone()),
                    ("x-wc-webhook-event".into(), event.clone()),
                    (
                        "x-wc-webhook-signature".into(),
                        signing::body_signature(&secret, &body),
                    ),
                    ("x-wc-webhook-id".into(), "7".into()),
                    // New on every delivery, as WooCommerce's hash of id and time is.
                    (
                        "x-wc-webhook-delivery-id".into(),
                        format!(
                            "{:x}",
                            DELIVERIES.fetch_add(1, Ordering::Relaxed) * 2_654_435_761
                                + resource_id
                        ),
                    ),
                ],
                body,
            }
        }),
    );
}

fn send_product_webhook(
    shop: &Arc<Mutex<Shop>>,
    sender: &Arc<Sender>,
    secret: &str,
    runtime: &tokio::runtime::Handle,
    id: u64,
) {
    let shop = shop.clone();
    let build = move || product_json(lock(&shop).by_id(&id.to_string()).expect("listed"));
    send_webhook(
        sender,
        secret,
        runtime,
        "product.updated",
        id,
        Arc::new(build),
    );
}

/// The site's REST API. Of the faults, only a status acts here.
async fn handle(
    shop: Arc<Mutex<Shop>>,
    sender: Arc<Sender>,
    extra: Arc<Mutex<Extra>>,
    secret: String,
    req: Req,
) -> Reply {
    let x = || extra.lock().unwrap_or_else(|e| e.into_inner());
    let (path, query, method, body) = (&req.path, &req.query, &req.method, &req.body);
    let authorized = req
        .header("authorization")
        .is_some_and(|v| v == x().authorization);
    let Some(route) = path.strip_prefix("/wp-json/wc/v3/") else {
        return woo_error(
            404,
            "rest_no_route",
            "No route was found matching the URL and request method.",
        );
    };
    let segments: Vec<&str> = route.split('/').collect();
    let is_batch = segments.last() == Some(&"batch");
    // Takes the store's lock from its caller, so that a batch is logged under the lock
    // that writes its levels: whoever sees a new level finds the call among `calls()`.
    let log_call = |s: &mut Shop, status: u16, items: usize| {
        if is_batch {
            s.log_call(path, items, status);
        }
    };
    if !authorized {
        log_call(&mut lock(&shop), 401, 0);
        return woo_error(
            401,
            "woocommerce_rest_cannot_view",
            "Sorry, you cannot list resources.",
        );
    }
    let fault = lock(&shop).fault.clone();
    if let Fault::Status(code) = fault {
        log_call(&mut lock(&shop), code, 0);
        return woo_error(
            code,
            "internal_server_error",
            "The site is experiencing technical difficulties.",
        );
    }
    let limited = !lock(&shop).spend(1.0);
    if limited {
        log_call(&mut lock(&shop), 429, 0);
        return reply(
            429,
            &json!({"code": "too_many_requests", "message": "Too Many Requests"}),
            &[("retry-after", "1".into())],
        );
    }
    match (method.clone(), segments.as_slice()) {
        (hyper::Method::POST, ["products", "batch"]) => {
            batch(&shop, &sender, &secret, None, body, &log_call)
        }
        (hyper::Method::POST, ["products", parent, "variations", "batch"]) => {
            let parent = parent.parse().ok();
            if parent.is_none() {
                return woo_error(
                    404,
                    "rest_no_route",
                    "No route was found matching the URL and request method.",
                );
            }
            batch(&shop, &sender, &secret, parent, body, &log_call)
        }
        (hyper::Method::GET, ["products", id]) => match id
            .parse::<u64>()
            .ok()
            .and_then(|id| lock(&shop).by_id(&id.to_string()).cloned())
        {
            Some(p) => reply(200, &product_json(&p), &[]),
            None => woo_error(404, "woocommerce_rest_product_invalid_id", "Invalid ID."),
        },
        // The site's own state first, then the store's, as the order methods take them
        // (the other order could leave a test's order and this listing waiting for ever).
        (hyper::Method::GET, ["products"]) => {
            let x = x();
            listing(&lock(&shop), &x.more, None, &req)
        }
        (hyper::Method::GET, ["products", parent, "variations"]) => match parent.parse() {
            Ok(parent) => {
                let x = x();
                listing(&lock(&shop), &x.more, Some(parent), &req)
            }
            Err(_) => woo_error(404, "woocommerce_rest_product_invalid_id", "Invalid ID."),
        },
        (hyper::Method::GET, ["orders"]) => orders(&mut x(), &mut lock(&shop), query),
        _ => woo_error(
            404,
            "rest_no_route",
            "No route was found matching the URL and request method.",
        ),
    }
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// `products` (simple and variable products) or a parent's `variations`, by id, a page
/// at a time: `per_page` 1 to 100 (default 10; else WordPress's 400), `page` from 1,
/// `include=` ids, with `X-WP-Total`, `X-WP-TotalPages` and a `Link` to the next page
/// (https://woocommerce.github.io/woocommerce-rest-api-docs/#pagination). A variable
/// product (the parent of listed variations) lists its `variations`; variations are not
/// in the products list.
fn listing(s: &Shop, more: &[MoreProduct], parent: Option<u64>, req: &Req) -> Reply {
    let query = req.query.as_str();
    let include: Vec<u64> = query_value(query, "include")
        .map(|v| v.split(',').filter_map(|id| id.parse().ok()).collect())
        .unwrap_or_default();
    let per_page: usize = query_value(query, "per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    if !(1..=100).contains(&per_page) {
        return reply(
            400,
            &json!({"code": "rest_invalid_param", "message": "Invalid parameter(s): per_page",
                    "data": {"status": 400, "params": {"per_page": "per_page must be between 1 (inclusive) and 100 (inclusive)"}}}),
            &[],
        );
    }
    let page: usize = query_value(query, "page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    // (id, JSON) of everything this list holds.
    let mut all: Vec<(u64, Value)> = s
        .listings
        .values()
        .filter(|p| parent_of(p) == parent)
        .map(|p| (product_id(p), product_json(p)))
        .collect();
    all.extend(more.iter().filter(|m| m.parent == parent).map(|m| {
        let json = json!({
            "id": m.id, "parent_id": m.parent.unwrap_or(0), "sku": m.sku, "status": "publish",
            "type": if m.parent.is_some() { "variation" } else { "simple" },
            "manage_stock": m.manage_stock, "stock_quantity": null, "stock_status": "instock",
        });
        (m.id, json)
    }));
    if parent.is_none() {
        // Variable products: the parents of variations.
        let parents: std::collections::BTreeSet<u64> = s
            .listings
            .values()
            .filter_map(parent_of)
            .chain(more.iter().filter_map(|m| m.parent))
            .collect();
        all.extend(parents.into_iter().map(|id| {
            let variations: Vec<u64> = s
                .listings
                .values()
                .filter(|p| parent_of(p) == Some(id))
                .map(product_id)
                .chain(more.iter().filter(|m| m.parent == Some(id)).map(|m| m.id))
                .collect();
            let json = json!({
                "id": id, "parent_id": 0, "sku": "", "status": "publish", "type": "variable",
                "manage_stock": false, "stock_quantity": null, "variations": variations,
            });
            (id, json)
        }));
    }
    all.retain(|(id, _)| include.is_empty() || include.contains(id));
    all.sort_by_key(|(id, _)| *id);
    let total = all.len();
    let pages = total.div_ceil(per_page).max(1);
    let body: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(_, json)| json)
        .collect();
    let mut headers = vec![
        ("x-wp-total", total.to_string()),
        ("x-wp-totalpages", pages.to_string()),
    ];
    if page < pages {
        let host = req.header("host").unwrap_or("127.0.0.1");
        headers.push((
            "link",
            format!(
                "<http://{host}{}?per_page={per_page}&page={}>; rel=\"next\"",
                req.path,
                page + 1
            ),
        ));
    }
    reply(200, &Value::Array(body), &headers)
}

/// `orders?modified_after=&per_page=&page=`, oldest modification first.
fn orders(x: &mut Extra, s: &mut Shop, query: &str) -> Reply {
    s.order_polls += 1;
    let after = query_value(query, "modified_after")
        .and_then(parse_gmt)
        .unwrap_or(i64::MIN);
    let per_page: usize = query_value(query, "per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let page: usize = query_value(query, "page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    // WooCommerce compares at its stored (second) resolution.
    let mut matching: Vec<&Order> = x
        .orders
        .values()
        .filter(|o| parse_gmt(&o.modified).unwrap_or(0) > after)
        .collect();
    matching.sort_by_key(|o| (o.modified_us, o.id));
    let total = matching.len();
    let pages = total.div_ceil(per_page).max(1);
    let body: Vec<Value> = matching
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|o| order_json(o, s))
        .collect();
    let first = body.first().and_then(|o| o["id"].as_u64());
    if x.touch_after_first_page && page == 1 && pages > 1 {
        x.touch_after_first_page = false;
        if let Some(order) = first.and_then(|id| x.orders.get_mut(&id)) {
            let (modified, micros) = now_gmt();
            order.modified = modified;
            order.modified_us = micros;
        }
    }
    reply(
        200,
        &Value::Array(body),
        &[
            ("x-wp-total", total.to_string()),
            ("x-wp-totalpages", pages.to_string()),
        ],
    )
}

/// A products or variations batch: updates only (what lockstep sends).
fn batch(
    shop: &Arc<Mutex<Shop>>,
    sender: &Arc<Sender>,
    secret: &str,
    parent: Option<u64>,
    body: &[u8],
    log_call: &dyn Fn(&mut Shop, u16, usize),
) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        log_call(&mut lock(shop), 400, 0);
        return woo_error(400, "rest_invalid_json", "Invalid JSON body passed.");
    };
    let count = ["create", "update", "delete"]
        .iter()
        .map(|k| request[k].as_array().map_or(0, Vec::len))
        .sum::<usize>();
    if count > BATCH_LIMIT {
        log_call(&mut lock(shop), 413, count);
        return woo_error(
            413,
            "woocommerce_rest_request_entity_too_large",
            &format!("Unable to accept more than {BATCH_LIMIT} items for this request."),
        );
    }
    let now = Instant::now();
    let mut changed = Vec::new();
    let updates: Vec<Value> = {
        let mut s = lock(shop);
        let modified = now_us();
        let updates = request["update"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|u| {
                let id = u["id"].as_u64().unwrap_or(0);
                let found = s.by_id(&id.to_string()).filter(|p| parent_of(p) == parent);
                let (Some(sku), Some(stock)) = (found.map(|p| p.sku.clone()), u["stock_quantity"].as_i64()) else {
                    return json!({"id": id, "error": {"code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID.", "data": {"status": 400}}});
                };
                s.write_at(&sku, stock, now);
                let p = s.listings.get_mut(&sku).expect("listed");
                // One modification time for the whole batch, as the site stamps it.
                p.modified_us = modified;
                changed.push(id);
                product_json(p)
            })
            .collect();
        log_call(&mut s, 200, count);
        updates
    };
    if sender.habits().echo {
        for id in changed {
            send_product_webhook(shop, sender, secret, &tokio::runtime::Handle::current(), id);
        }
    }
    reply(200, &json!({ "update": updates }), &[])
}

impl crate::sim::Simulator for WooSim {
    fn levels(&self) -> std::collections::HashMap<String, i64> {
        WooSim::levels(self)
    }

    fn arrivals(&self, sku: &str) -> Vec<crate::sim::Arrival> {
        WooSim::arrivals(self, sku)
    }

    fn place(&self, lines: &[(&str, i64)]) -> crate::sim::Cancel<'_> {
        let id = self.place_order(lines);
        Box::new(move || self.set_status(id, "cancelled"))
    }

    fn connect(&self, url: &str) {
        self.market.set_webhook_url(url);
    }

    fn set_habits(&self, habits: &crate::sim::Habits) {
        self.market.set_habits(habits.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::blocking::Client;

    fn site() -> WooSim {
        WooSim::start("hook", "ck", "cs", &[("A", 11, None), ("V", 21, Some(20))])
    }

    fn post(site: &WooSim, path: &str, body: Value) -> (u16, Value) {
        let response = Client::new()
            .post(format!("{}/wp-json/wc/v3/{path}", site.url()))
            .basic_auth("ck", Some("cs"))
            .json(&body)
            .send()
            .unwrap();
        (response.status().as_u16(), response.json().unwrap())
    }

    #[test]
    fn a_batch_writes_products_and_variations_of_their_parent_only() {
        let site = site();
        let (status, answer) = post(
            &site,
            "products/batch",
            json!({"update": [{"id": 11, "stock_quantity": 5}, {"id": 21, "stock_quantity": 9}]}),
        );
        assert_eq!(status, 200);
        assert_eq!(answer["update"][0]["stock_quantity"], 5);
        assert_eq!(answer["update"][0]["type"], "simple");
        assert_eq!(
            answer["update"][1]["error"]["code"],
            "woocommerce_rest_product_invalid_id"
        );
        let (status, answer) = post(
            &site,
            "products/20/variations/batch",
            json!({"update": [{"id": 21, "stock_quantity": 9}]}),
        );
        assert_eq!(status, 200);
        assert_eq!(
            (
                answer["update"][0]["parent_id"].clone(),
                answer["update"][0]["type"].clone()
            ),
            (json!(20), json!("variation"))
        );
        assert_eq!(
            site.levels(),
            HashMap::from([("A".into(), 5), ("V".into(), 9)])
        );
        let calls: Vec<(u16, usize)> = site.calls().iter().map(|c| (c.status, c.items)).collect();
        assert_eq!(calls, [(200, 2), (200, 1)]);
        let over: Vec<Value> = (0..=BATCH_LIMIT)
            .map(|_| json!({"id": 11, "stock_quantity": 1}))
            .collect();
        let (status, answer) = post(&site, "products/batch", json!({ "update": over }));
        assert_eq!(status, 413);
        assert_eq!(answer["code"], "woocommerce_rest_request_entity_too_large");
    }

    #[test]
    fn an_order_takes_stock_and_a_cancellation_puts_it_back() {
        let site = site();
        site.set_level("A", 10);
        let id = site.place_order(&[("A", 3), ("V", 1)]);
        assert_eq!(
            site.levels(),
            HashMap::from([("A".into(), 7), ("V".into(), -1)])
        );
        let order = site.order(id);
        assert_eq!(order["line_items"][1]["product_id"], 20);
        assert_eq!(order["line_items"][1]["variation_id"], 21);
        site.refund_units(id, 0, 1, true);
        site.set_status(id, "cancelled");
        assert_eq!(
            site.levels(),
            HashMap::from([("A".into(), 10), ("V".into(), 0)])
        );
        let listed: Value = Client::new()
            .get(format!("{}/wp-json/wc/v3/products?include=11", site.url()))
            .basic_auth("ck", Some("cs"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(listed[0]["stock_quantity"], 10);
        site.set_fault(Fault::Status(503));
        let (status, _) = post(&site, "products/batch", json!({"update": []}));
        assert_eq!(status, 503);
    }
}
