//! A simulated WooCommerce site, as lockstep's `woocommerce` kind meets it (CHANNELS.md §2).
//!
//! - REST v3 with HTTP Basic (consumer key and secret; 401 otherwise):
//!   `POST /wp-json/wc/v3/products/batch` and `POST .../products/{id}/variations/batch`
//!   (`{"update": [{"id", "stock_quantity"}]}`, at most 100 items: more is WooCommerce's
//!   413 `woocommerce_rest_request_entity_too_large`; an unknown id comes back with an
//!   `error`), `GET .../products/{id}`, `GET .../products?include=` and the variations
//!   listing, and `GET .../orders?modified_after=` with `X-WP-Total` / `X-WP-TotalPages`.
//!   No rate limit (WooCommerce core has none), unless one is set.
//! - Orders placed on the site lower its stock (and cancellations and refunds restore
//!   it) and send `order.created` / `order.updated`, signed with the webhook secret, with
//!   WooCommerce's habits: the payload is built when the delivery is sent (so a late
//!   delivery shows the order's newest state), a new Delivery-ID every time, no retries;
//!   lost deliveries, duplicates, delays and reordering can be switched on. A REST stock
//!   write sends `product.updated` (the echo) when echoes are on.
//! - Every value written is recorded with its arrival time.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Value};

use crate::market::civil_from_days;
use crate::signing;
use crate::sim::{reply, Arrival, Bucket, Delivery, Habits, Reply, Sender, Server};
use crate::webhook_sim::Fault;

/// WooCommerce's batch limit (`woocommerce_rest_batch_items_limit`).
pub const BATCH_LIMIT: usize = 100;

#[derive(Clone)]
struct Product {
    id: u64,
    parent: Option<u64>,
    sku: String,
    stock: i64,
    modified: String,
}

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

/// One batch call as it arrived.
#[derive(Clone, Debug)]
pub struct BatchCall {
    pub at: Instant,
    pub path: String,
    pub items: usize,
    pub status: u16,
}

struct State {
    authorization: String,
    fault: Fault,
    rate: Option<Bucket>,
    products: HashMap<u64, Product>,
    by_sku: HashMap<String, u64>,
    orders: BTreeMap<u64, Order>,
    arrivals: HashMap<String, Vec<Arrival>>,
    calls: Vec<BatchCall>,
    order_polls: usize,
}

/// A running simulated site.
pub struct WooSim {
    pub server: Server,
    state: Arc<Mutex<State>>,
    pub sender: Arc<Sender>,
    secret: String,
    next_id: AtomicU64,
}

/// Now as WooCommerce's `_gmt` fields give it (seconds, no offset) and in microseconds.
fn now_gmt() -> (String, i64) {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64;
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

fn product_json(p: &Product) -> Value {
    json!({
        "id": p.id, "parent_id": p.parent.unwrap_or(0), "sku": p.sku,
        "type": if p.parent.is_some() { "variation" } else { "simple" },
        "manage_stock": true, "stock_quantity": p.stock, "stock_status": if p.stock > 0 { "instock" } else { "outofstock" },
        "date_modified_gmt": p.modified,
    })
}

/// The REST v3 order resource. A line's meta carries what WooCommerce keeps on the order
/// item: `_reduced_stock` once stock was taken, and `_restock_refunded_items` once a
/// refund put some back (`wc_restock_refunded_items` in `wc-order-functions.php`); the
/// order's `refunds` list each refund's id and total.
fn order_json(o: &Order, products: &HashMap<u64, Product>) -> Value {
    json!({
        "id": o.id, "status": o.status,
        "date_created_gmt": o.created, "date_modified_gmt": o.modified,
        "date_completed_gmt": o.completed,
        "line_items": o.lines.iter().map(|l| {
            let p = &products[&l.product];
            let mut meta = vec![json!({"id": l.id * 10, "key": "_reduced_stock", "value": (l.quantity - l.restocked).to_string()})];
            if l.restocked > 0 {
                meta.push(json!({"id": l.id * 10 + 1, "key": "_restock_refunded_items", "value": l.restocked.to_string()}));
            }
            json!({
                "id": l.id,
                "product_id": p.parent.unwrap_or(p.id),
                "variation_id": if p.parent.is_some() { p.id } else { 0 },
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
        let (modified, _) = now_gmt();
        let state = Arc::new(Mutex::new(State {
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret_key}"))
            ),
            fault: Fault::None,
            rate: None,
            products: products
                .iter()
                .map(|(sku, id, parent)| {
                    (
                        *id,
                        Product {
                            id: *id,
                            parent: *parent,
                            sku: sku.to_string(),
                            stock: 0,
                            modified: modified.clone(),
                        },
                    )
                })
                .collect(),
            by_sku: products
                .iter()
                .map(|(sku, id, _)| (sku.to_string(), *id))
                .collect(),
            orders: BTreeMap::new(),
            arrivals: HashMap::new(),
            calls: Vec::new(),
            order_polls: 0,
        }));
        // WooCommerce never retries a failed delivery.
        let sender = Sender::new(0);
        let shared = (state.clone(), sender.clone(), secret.to_string());
        let server = Server::start(move |req| {
            let (state, sender, secret) = shared.clone();
            async move { handle(state, sender, secret, req).await }
        });
        WooSim {
            server,
            state,
            sender,
            secret: secret.to_string(),
            next_id: AtomicU64::new(5_000),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The site's URL (the channel's `base_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn set_webhook_url(&self, url: &str) {
        *self.sender.url.lock().unwrap() = Some(url.to_string());
    }

    pub fn set_habits(&self, habits: Habits) {
        *self.sender.habits.lock().unwrap() = habits;
    }

    pub fn set_fault(&self, fault: Fault) {
        self.lock().fault = fault;
    }

    /// A host's rate limit (WooCommerce core has none): 429 with `Retry-After: 1`.
    pub fn set_rate_limit(&self, per_second: f64, burst: u32) {
        self.lock().rate = Some(Bucket::new(f64::from(burst), per_second));
    }

    pub fn level(&self, sku: &str) -> Option<i64> {
        let s = self.lock();
        s.by_sku.get(sku).map(|id| s.products[id].stock)
    }

    pub fn levels(&self) -> HashMap<String, i64> {
        let s = self.lock();
        s.by_sku
            .iter()
            .map(|(sku, id)| (sku.clone(), s.products[id].stock))
            .collect()
    }

    /// Waits until `check` holds of the levels, up to `timeout`; returns how long it took.
    pub fn wait_for(
        &self,
        timeout: Duration,
        check: impl Fn(&HashMap<String, i64>) -> bool,
    ) -> Option<Duration> {
        crate::sim::wait_until(timeout, || check(&self.levels()))
    }

    pub fn arrivals(&self, sku: &str) -> Vec<Arrival> {
        self.lock().arrivals.get(sku).cloned().unwrap_or_default()
    }

    /// Every batch call so far.
    pub fn calls(&self) -> Vec<BatchCall> {
        self.lock().calls.clone()
    }

    /// How many order listings were read (the poll).
    pub fn order_polls(&self) -> usize {
        self.lock().order_polls
    }

    /// A shop manager's edit: sets the stock (and sends `product.updated` when echoes
    /// are on, as a manual edit does).
    pub fn set_level(&self, sku: &str, stock: i64) {
        let id = {
            let mut s = self.lock();
            let id = s.by_sku[sku];
            let p = s.products.get_mut(&id).expect("listed");
            p.stock = stock;
            p.modified = now_gmt().0;
            id
        };
        if self.sender.habits().echo {
            send_product_webhook(
                &self.state,
                &self.sender,
                &self.secret,
                self.server.runtime.handle(),
                id,
            );
        }
    }

    /// A customer orders `lines` (SKU, quantity), paid: status `processing`, stock
    /// reduced, `order.created` sent. Returns the order id.
    pub fn place_order(&self, lines: &[(&str, i64)]) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (created, micros) = now_gmt();
        {
            let mut s = self.lock();
            let lines: Vec<Line> = lines
                .iter()
                .map(|(sku, quantity)| {
                    let product = s.by_sku[*sku];
                    s.products.get_mut(&product).expect("listed").stock -= quantity;
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
    /// `cancelled` and `refunded` restore the stock. Sends `order.updated`.
    pub fn set_status(&self, id: u64, status: &str) {
        {
            let mut s = self.lock();
            let (modified, micros) = now_gmt();
            let order = s.orders.get_mut(&id).expect("an order of this site");
            let restore = matches!(status, "cancelled" | "refunded")
                && !matches!(order.status.as_str(), "cancelled" | "refunded");
            order.status = status.to_string();
            order.modified = modified.clone();
            order.modified_us = micros;
            if status == "completed" {
                order.completed = Some(modified);
            }
            let lines = order.lines.clone();
            if restore {
                // Units a refund already put back are not put back again.
                for line in lines {
                    s.products.get_mut(&line.product).expect("listed").stock +=
                        line.quantity - line.restocked;
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
            let product = l.product;
            if restock {
                l.restocked += units;
                s.products.get_mut(&product).expect("listed").stock += units;
            }
        }
        self.order_webhook("order.updated", id);
    }

    fn order_webhook(&self, topic: &str, id: u64) {
        let state = self.state.clone();
        let build = move || {
            let s = state.lock().unwrap_or_else(|e| e.into_inner());
            order_json(&s.orders[&id], &s.products)
        };
        send_webhook(
            &self.sender,
            &self.secret,
            self.server.runtime.handle(),
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
        self.server.runtime.block_on(async move {
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
        order_json(&s.orders[&id], &s.products)
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
    state: &Arc<Mutex<State>>,
    sender: &Arc<Sender>,
    secret: &str,
    runtime: &tokio::runtime::Handle,
    id: u64,
) {
    let state = state.clone();
    let build =
        move || product_json(&state.lock().unwrap_or_else(|e| e.into_inner()).products[&id]);
    send_webhook(
        sender,
        secret,
        runtime,
        "product.updated",
        id,
        Arc::new(build),
    );
}

async fn handle(
    state: Arc<Mutex<State>>,
    sender: Arc<Sender>,
    secret: String,
    req: Request<Incoming>,
) -> Reply {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == lock().authorization);
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return woo_error(400, "rest_invalid_json", "Invalid JSON body passed."),
    };
    let Some(route) = path.strip_prefix("/wp-json/wc/v3/") else {
        return woo_error(
            404,
            "rest_no_route",
            "No route was found matching the URL and request method.",
        );
    };
    let segments: Vec<&str> = route.split('/').collect();
    let is_batch = segments.last() == Some(&"batch");
    let log_call = |status: u16, items: usize| {
        if is_batch {
            lock().calls.push(BatchCall {
                at: Instant::now(),
                path: path.clone(),
                items,
                status,
            });
        }
    };
    if !authorized {
        log_call(401, 0);
        return woo_error(
            401,
            "woocommerce_rest_cannot_view",
            "Sorry, you cannot list resources.",
        );
    }
    if let Fault::Status(code) = lock().fault {
        log_call(code, 0);
        return woo_error(
            code,
            "internal_server_error",
            "The site is experiencing technical difficulties.",
        );
    }
    let limited = lock().rate.as_mut().is_some_and(|r| !r.take(1.0));
    if limited {
        log_call(429, 0);
        return reply(
            429,
            &json!({"code": "too_many_requests", "message": "Too Many Requests"}),
            &[("retry-after", "1".into())],
        );
    }
    match (method, segments.as_slice()) {
        (hyper::Method::POST, ["products", "batch"]) => {
            batch(&state, &sender, &secret, None, &body, &log_call)
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
            batch(&state, &sender, &secret, parent, &body, &log_call)
        }
        (hyper::Method::GET, ["products", id]) => match id
            .parse::<u64>()
            .ok()
            .and_then(|id| lock().products.get(&id).cloned())
        {
            Some(p) => reply(200, &product_json(&p), &[]),
            None => woo_error(404, "woocommerce_rest_product_invalid_id", "Invalid ID."),
        },
        (hyper::Method::GET, ["products"]) => listing(&lock(), None, &query),
        (hyper::Method::GET, ["products", parent, "variations"]) => {
            listing(&lock(), parent.parse().ok(), &query)
        }
        (hyper::Method::GET, ["orders"]) => orders(&mut lock(), &query),
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

/// `products?include=` or a parent's `variations?include=`.
fn listing(s: &State, parent: Option<u64>, query: &str) -> Reply {
    let include: Vec<u64> = query_value(query, "include")
        .map(|v| v.split(',').filter_map(|id| id.parse().ok()).collect())
        .unwrap_or_default();
    let mut list: Vec<&Product> = s
        .products
        .values()
        .filter(|p| p.parent == parent && (include.is_empty() || include.contains(&p.id)))
        .collect();
    list.sort_by_key(|p| p.id);
    let body: Vec<Value> = list.into_iter().map(product_json).collect();
    let total = body.len().to_string();
    reply(
        200,
        &Value::Array(body),
        &[("x-wp-total", total), ("x-wp-totalpages", "1".into())],
    )
}

/// `orders?modified_after=&per_page=&page=`, oldest modification first.
fn orders(s: &mut State, query: &str) -> Reply {
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
    let mut matching: Vec<&Order> = s
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
        .map(|o| order_json(o, &s.products))
        .collect();
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
    state: &Arc<Mutex<State>>,
    sender: &Arc<Sender>,
    secret: &str,
    parent: Option<u64>,
    body: &[u8],
    log_call: &dyn Fn(u16, usize),
) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        log_call(400, 0);
        return woo_error(400, "rest_invalid_json", "Invalid JSON body passed.");
    };
    let count = ["create", "update", "delete"]
        .iter()
        .map(|k| request[k].as_array().map_or(0, Vec::len))
        .sum::<usize>();
    if count > BATCH_LIMIT {
        log_call(413, count);
        return woo_error(
            413,
            "woocommerce_rest_request_entity_too_large",
            &format!("Unable to accept more than {BATCH_LIMIT} items for this request."),
        );
    }
    let now = Instant::now();
    let mut changed = Vec::new();
    let updates: Vec<Value> = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let (modified, _) = now_gmt();
        request["update"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|u| {
                let id = u["id"].as_u64().unwrap_or(0);
                let found = s.products.get_mut(&id).filter(|p| p.parent == parent);
                let (Some(p), Some(stock)) = (found, u["stock_quantity"].as_i64()) else {
                    return json!({"id": id, "error": {"code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID.", "data": {"status": 400}}});
                };
                p.stock = stock;
                p.modified = modified.clone();
                let sku = p.sku.clone();
                let answer = product_json(p);
                s.arrivals.entry(sku).or_default().push(Arrival { available: stock, at: now });
                changed.push(id);
                answer
            })
            .collect()
    };
    log_call(200, count);
    if sender.habits().echo {
        for id in changed {
            send_product_webhook(
                state,
                sender,
                secret,
                &tokio::runtime::Handle::current(),
                id,
            );
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
}
