//! A simulated Walmart Marketplace seller, as lockstep's `walmart` kind meets it
//! (CHANNELS.md §6).
//!
//! - `POST /v3/token` (client credentials in Basic auth, with `WM_SVC.NAME` and
//!   `WM_QOS.CORRELATION_ID`) issues `WM_SEC.ACCESS_TOKEN` (15 minutes).
//! - Every call needs Basic auth, the token, `WM_SVC.NAME` and `WM_QOS.CORRELATION_ID`
//!   (400 naming the header otherwise); correlation ids are recorded.
//! - `PUT /v3/inventory?sku=` (`{sku, quantity: {unit: "EACH", amount}}`) one SKU per
//!   call, `GET /v3/inventory?sku=`; a token bucket (each call its own, when a test sets
//!   one) answers 429 with `Retry-After`,
//!   `x-current-token-count` and `x-next-replenishment-time`.
//! - The bulk inventory feed: `POST /v3/feeds?feedType=inventory` and
//!   `GET /v3/feeds/{feedId}` (`walmart_feed_sim.rs`), processed after a while.
//! - `GET /v3/orders?lastModifiedStartDate=` (and `lastModifiedEndDate`,
//!   `createdStartDate`, whose default is "current date - 7 days") with the orders API's
//!   nested shape, newest order date first (the reference's example), paged by
//!   `nextCursor`, which here carries the query's filters (Walmart's do carry the status
//!   and created dates in integrators' samples); nothing matching is a 404
//!   `CONTENT_NOT_FOUND.GMP_ORDER_API`, as integrators meet it; a query
//!   matching more than 10,000 orders ("a maximum of 10000 orders can be fetched at a
//!   time. Attempting to download more than 10000 orders will return an error",
//!   https://developer.walmart.com/us-marketplace/reference/getallorders) is a 400, whose
//!   shape Walmart does not document; with a token bucket when a test sets one (429
//!   without `Retry-After`, the same two headers).
//! - Webhooks as developer.walmart.com documents them: `ORDER_UPDATES` (the only order
//!   event after 2026-12-15, "Order management event"): the order in `payload.order`,
//!   what happened in `payload.subEventType` (`PO_CREATED`, `PO_LINE_AUTOCANCELLED`); or,
//!   with `EventStyle::Legacy`, the older `PO_CREATED` ("Purchase order (PO) created
//!   event") with the order as `payload`. Lines are flat: `sku` and
//!   `quantity: {unitOfMeasure: "EACH", measurementValue: "2"}` (a numeric string).
//!   Authenticated as the subscription chose (HMAC-SHA256 of the body keyed with the
//!   subscription's own `clientSecret`, base64, or Basic) in the chosen header; 2 retries
//!   (3 attempts).

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::market::{epoch_ms_at, gate, lock, now_us, rfc3339, Market, Req, Shop, Stage};
use crate::sim::{reply, Reply, Sender};
use crate::walmart_feed_sim::Feeds;

/// How the subscription authenticates webhooks.
#[derive(Clone)]
pub enum HookAuth {
    /// HMAC-SHA256 of the body keyed with the subscription's `clientSecret` (the second
    /// field; not the API client secret), base64, in this header (the first).
    Hmac(String, String),
    /// `Basic base64(user:password)` in this header.
    Basic(String, String),
}

/// Which order events the seller's subscription delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventStyle {
    /// `ORDER_UPDATES` with a `subEventType` and the order in `payload.order`.
    OrderUpdates,
    /// The legacy `PO_CREATED` / `PO_LINE_AUTOCANCELLED` events (removed 2026-12-15).
    Legacy,
}

/// The headers a throttled call's answer carries.
type TokenHeaders = Vec<(&'static str, String)>;

/// Spends a token of a call's bucket, when it has one: the headers to answer with, or the
/// 429 to answer (without `Retry-After`, as Walmart's often is), logged as a call of
/// `items` items.
fn spend(
    tokens: Option<&mut Tokens>,
    shop: &Arc<Mutex<Shop>>,
    path: &str,
    items: usize,
) -> Result<TokenHeaders, Box<Reply>> {
    match tokens.map(Tokens::take) {
        None => Ok(Vec::new()),
        Some(Ok(headers)) => Ok(headers),
        Some(Err(headers)) => {
            lock(shop).log_call(path, items, 429);
            Err(Box::new(wm_error(
                429,
                "REQUEST_THRESHOLD_VIOLATED.GMP_GATEWAY_API",
                "Too many requests",
                &headers,
            )))
        }
    }
}

/// A call's token bucket (the single-item inventory call's, the orders list's):
/// `capacity` tokens, all back at each replenishment (every `period`).
struct Tokens {
    capacity: u32,
    left: u32,
    period: std::time::Duration,
    next: std::time::Instant,
}

impl Tokens {
    fn new(capacity: u32, period: std::time::Duration) -> Tokens {
        Tokens {
            capacity,
            left: capacity,
            period,
            next: std::time::Instant::now() + period,
        }
    }

    /// Takes a token: `Ok` with the headers that say what is left
    /// (`x-current-token-count`) and when tokens come back (`x-next-replenishment-time`,
    /// epoch ms); `Err` with those headers when none is left.
    fn take(&mut self) -> Result<TokenHeaders, TokenHeaders> {
        let now = std::time::Instant::now();
        while now >= self.next {
            self.left = self.capacity;
            self.next += self.period;
        }
        let next_ms = epoch_ms_at(self.next);
        let headers = |left: u32| {
            vec![
                ("x-current-token-count", left.to_string()),
                ("x-next-replenishment-time", next_ms.to_string()),
            ]
        };
        if self.left == 0 {
            return Err(headers(0));
        }
        self.left -= 1;
        Ok(headers(self.left))
    }
}

struct Extra {
    basic: String,
    token: String,
    style: EventStyle,
    /// `PUT /v3/inventory`'s budget, when set (`set_token_bucket`).
    put_tokens: Option<Tokens>,
    /// `GET /v3/orders`' budget, when set (`set_orders_token_bucket`).
    order_tokens: Option<Tokens>,
    /// `GET /v3/inventory`'s budget, when set (`set_read_token_bucket`).
    read_tokens: Option<Tokens>,
    hook_auth: HookAuth,
    correlation_ids: Vec<String>,
    feeds: Feeds,
    /// Seller SKUs beyond the listings (`WalmartSim::add_item`).
    more: Vec<String>,
    /// Most orders one query of `GET /v3/orders` answers (`set_orders_cap`).
    orders_cap: usize,
}

/// Most orders one query answers (the reference's "maximum of 10000 orders").
const ORDERS_CAP: usize = 10_000;

/// A running simulated Walmart seller.
pub struct WalmartSim {
    pub market: Market,
    extra: Arc<Mutex<Extra>>,
}

fn wm_error(status: u16, code: &str, description: &str, headers: &[(&str, String)]) -> Reply {
    reply(
        status,
        &json!({"errors": [{"code": code, "description": description, "severity": "ERROR", "category": "APPLICATION"}]}),
        headers,
    )
}

impl WalmartSim {
    /// Adds an item (its seller SKU) lockstep's catalog does not map.
    pub fn add_item(&self, seller_sku: &str) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .more
            .push(seller_sku.to_string());
    }

    /// A seller listing `items` (our SKU, Walmart seller SKU) with API credentials
    /// `(client_id, client_secret)`; webhooks authenticated by `hook_auth`.
    pub fn start(items: &[(&str, &str)], client: (&str, &str), hook_auth: HookAuth) -> WalmartSim {
        let extra = Arc::new(Mutex::new(Extra {
            basic: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", client.0, client.1))
            ),
            token: "eyJraWQiOiJzaW0ifQ.sim-access-token".into(),
            style: EventStyle::OrderUpdates,
            put_tokens: None,
            order_tokens: None,
            read_tokens: None,
            hook_auth,
            correlation_ids: Vec::new(),
            feeds: Feeds::default(),
            orders_cap: ORDERS_CAP,
            more: Vec::new(),
        }));
        let state = extra.clone();
        let market = Market::start(
            items,
            2,
            Arc::new(move |shop, sender, req| handle(shop, sender, &state, req)),
        );
        // Walmart processes feeds on its own time: a worker applies each when it is due,
        // whether or not anyone asks for its status.
        let (shop, feeds) = (Arc::downgrade(&market.shop), Arc::downgrade(&extra));
        std::thread::spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let (Some(shop), Some(extra)) = (shop.upgrade(), feeds.upgrade()) else {
                return;
            };
            let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
            x.feeds.process_due(&mut lock(&shop));
        });
        WalmartSim { market, extra }
    }

    /// How long Walmart takes to process a feed (it documents up to 30 minutes, the
    /// default here; tests and the mixed scenario shorten it to end in seconds).
    pub fn set_feed_processing(&self, took: std::time::Duration) {
        self.extra().feeds.processing = took;
    }

    /// The feed upload budget: `capacity` feeds, all back every `period` (Walmart: 10
    /// an hour).
    pub fn set_feed_budget(&self, capacity: u32, period: std::time::Duration) {
        self.extra().feeds.set_budget(capacity, period);
    }

    /// Feed items for this seller SKU are refused from now on (`DATA_ERROR`).
    pub fn refuse_feed_item(&self, seller_sku: &str) {
        self.extra().feeds.refuse.push(seller_sku.to_string());
    }

    /// Feed items for this seller SKU fail in Walmart's own systems from now on
    /// (`SYSTEM_ERROR`), until `heal_feed_items`.
    pub fn fail_feed_item(&self, seller_sku: &str) {
        self.extra().feeds.fail.push(seller_sku.to_string());
    }

    /// Walmart's systems take every feed item again.
    pub fn heal_feed_items(&self) {
        self.extra().feeds.fail.clear();
    }

    /// The feeds submitted so far: (id, items carried, processed).
    pub fn feeds(&self) -> Vec<(String, usize, bool)> {
        self.extra()
            .feeds
            .list
            .iter()
            .map(|f| (f.id.clone(), f.items(), f.processed()))
            .collect()
    }

    fn extra(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `PUT /v3/inventory` gets `capacity` tokens, replenished every `period`: each
    /// answer says what is left (`x-current-token-count`) and when they come back
    /// (`x-next-replenishment-time`, epoch ms), and an empty bucket is a 429 without
    /// `Retry-After`, as Walmart's throttling documents.
    pub fn set_token_bucket(&self, capacity: u32, period: std::time::Duration) {
        self.extra().put_tokens = Some(Tokens::new(capacity, period));
    }

    /// `GET /v3/orders` gets a token bucket too, answered as `set_token_bucket`'s is
    /// (Walmart's throttling page: "Rate limits vary by API", each with these headers;
    /// it gives no figure for the orders list, so none is set unless a test sets one).
    pub fn set_orders_token_bucket(&self, capacity: u32, period: std::time::Duration) {
        self.extra().order_tokens = Some(Tokens::new(capacity, period));
    }

    /// `GET /v3/inventory` gets a token bucket too, answered as `set_token_bucket`'s is
    /// (a 429 without `Retry-After`, the replenishment time in its headers). Its calls
    /// are logged as `GET /v3/inventory`, apart from the writes.
    pub fn set_read_token_bucket(&self, capacity: u32, period: std::time::Duration) {
        self.extra().read_tokens = Some(Tokens::new(capacity, period));
    }

    /// From now on one query of `GET /v3/orders` answers at most `cap` orders (Walmart's
    /// is 10,000): a query matching more is refused.
    pub fn set_orders_cap(&self, cap: usize) {
        self.extra().orders_cap = cap;
    }

    /// Which order events are sent from now on.
    pub fn set_event_style(&self, style: EventStyle) {
        self.extra().style = style;
    }

    /// Every `WM_QOS.CORRELATION_ID` received so far.
    pub fn correlation_ids(&self) -> Vec<String> {
        self.extra().correlation_ids.clone()
    }

    /// A customer order: `PO_CREATED` sent. Returns the purchase order id.
    pub fn place_order(&self, lines: &[(&str, i64)]) -> String {
        let id = self.market.shop().place(lines);
        self.event("PO_CREATED", id);
        id.to_string()
    }

    /// Ships (no event) or auto-cancels (`PO_LINE_AUTOCANCELLED`).
    pub fn advance(&self, order: &str, stage: Stage) {
        let id: u64 = order.parse().expect("a purchase order id");
        self.market.shop().advance(id, stage);
        if stage == Stage::Cancelled {
            self.event("PO_LINE_AUTOCANCELLED", id);
        }
    }

    /// `units` of line `line` ship (no event: the orders API shows the line's `Shipped`
    /// status quantity).
    pub fn ship_units(&self, order: &str, line: usize, units: i64) {
        let id: u64 = order.parse().expect("a purchase order id");
        self.market.shop().ship_units(id, line, units);
    }

    /// The seller cancels `units` of line `line` (no event: the orders API shows the
    /// line's `Cancelled` status quantity).
    pub fn cancel_units(&self, order: &str, line: usize, units: i64) {
        let id: u64 = order.parse().expect("a purchase order id");
        self.market.shop().cancel_units(id, line, units);
    }

    /// Sends `what` about order `id` in the subscription's event style.
    fn event(&self, what: &str, id: u64) {
        let style = self.extra().style;
        let body = {
            let shop = self.market.shop();
            let o = &shop.orders[&id];
            let lines: Vec<Value> = o
                .lines
                .iter()
                .enumerate()
                .map(|(n, l)| json!({"lineNumber": (n + 1).to_string(), "sku": shop.listings[&l.sku].id,
                                     "productName": format!("Item {}", l.sku),
                                     "quantity": {"unitOfMeasure": "EACH", "measurementValue": l.quantity.to_string()},
                                     "status": "Created", "statusDate": rfc3339(o.modified_us)}))
                .collect();
            let order = json!({"partnerId": "10001", "purchaseOrderId": id.to_string(),
                               "customerOrderId": format!("2000{id}"), "orderDate": rfc3339(o.created_us),
                               "orderLines": lines});
            let event_id = format!("{:032x}", rand::random::<u128>());
            let hook = match style {
                EventStyle::OrderUpdates => json!({
                    "source": {"eventType": "ORDER_UPDATES", "eventTime": rfc3339(now_us()),
                               "eventId": event_id, "eventFilters": null},
                    "payload": {"subEventType": what, "order": order},
                }),
                EventStyle::Legacy => json!({
                    "source": {"eventType": what, "eventTime": rfc3339(now_us()), "eventId": event_id},
                    "payload": order,
                }),
            };
            hook.to_string().into_bytes()
        };
        let extra = self.extra();
        let auth = match &extra.hook_auth {
            HookAuth::Hmac(header, secret) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
                mac.update(&body);
                let sig =
                    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
                (header.clone(), sig)
            }
            HookAuth::Basic(header, credentials) => (
                header.clone(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials)
                ),
            ),
        };
        drop(extra);
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            auth,
        ];
        self.market.deliver(what, headers, body);
    }
}

/// A line's units split by status, each with its `statusQuantity` (MLMQ: a line ships
/// and cancels some units at a time; developer.walmart.com, "Multi-line multi-quantity
/// (MLMQ) migration guide").
fn line_statuses(l: &crate::market::Line) -> Vec<Value> {
    [
        ("Acknowledged", l.open()),
        ("Shipped", l.shipped),
        ("Cancelled", l.cancelled),
    ]
    .into_iter()
    .filter(|(_, units)| *units > 0)
    .map(|(status, units)| {
        json!({"status": status,
               "statusQuantity": {"unitOfMeasurement": "EACH", "amount": units.to_string()}})
    })
    .collect()
}

fn order_json(shop: &Shop, id: u64) -> Value {
    let o = &shop.orders[&id];
    let lines: Vec<Value> = o
        .lines
        .iter()
        .enumerate()
        .map(|(n, l)| {
            json!({"lineNumber": (n + 1).to_string(), "item": {"productName": l.sku, "sku": shop.listings[&l.sku].id},
                   "orderLineQuantity": {"unitOfMeasurement": "EACH", "amount": l.quantity.to_string()},
                   "statusDate": o.modified_us / 1_000,
                   "orderLineStatuses": {"orderLineStatus": line_statuses(l)}})
        })
        .collect();
    json!({"purchaseOrderId": id.to_string(), "customerOrderId": format!("2000{id}"),
           "orderDate": o.created_us / 1_000, "orderLines": {"orderLine": lines}})
}

fn handle(
    shop: &Arc<Mutex<Shop>>,
    _sender: &Arc<Sender>,
    extra: &Arc<Mutex<Extra>>,
    req: Req,
) -> Reply {
    let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
    for header in ["wm_svc.name", "wm_qos.correlation_id"] {
        if req.header(header).is_none_or(|v| v.trim().is_empty()) {
            return wm_error(
                400,
                "INVALID_REQUEST_HEADER.GMP_GATEWAY_API",
                &format!("{} set null or invalid", header.to_uppercase()),
                &[],
            );
        }
    }
    x.correlation_ids.push(
        req.header("wm_qos.correlation_id")
            .unwrap_or_default()
            .to_string(),
    );
    if req.header("authorization") != Some(x.basic.as_str()) {
        return wm_error(
            401,
            "UNAUTHORIZED.GMP_GATEWAY_API",
            "Unauthorized: client credentials",
            &[],
        );
    }
    if req.path == "/v3/token" {
        return if req.form("grant_type").as_deref() == Some("client_credentials") {
            reply(
                200,
                &json!({"access_token": x.token, "token_type": "Bearer", "expires_in": 900}),
                &[],
            )
        } else {
            wm_error(
                400,
                "INVALID_REQUEST.GMP_GATEWAY_API",
                "grant_type must be client_credentials",
                &[],
            )
        };
    }
    if req.header("wm_sec.access_token") != Some(x.token.as_str()) {
        return wm_error(
            401,
            "UNAUTHORIZED.GMP_GATEWAY_API",
            "Unauthorized token or token expired",
            &[],
        );
    }
    drop(x);
    // Faults and the test's rate limit stop writes: the single-item call and the feed.
    let throttled = |s: u64| {
        wm_error(
            429,
            "REQUEST_THRESHOLD_VIOLATED.GMP_GATEWAY_API",
            "Too many requests",
            &[
                ("retry-after", s.to_string()),
                ("x-current-token-count", "0".into()),
                (
                    "x-next-replenishment-time",
                    ((now_us() / 1_000) + s as i64 * 1_000).to_string(),
                ),
            ],
        )
    };
    let failed = |code: u16| wm_error(code, "SYSTEM_ERROR.GMP_GATEWAY_API", "System error", &[]);
    match (req.method.clone(), req.path.as_str()) {
        // Get All Items: `nextCursor` (`*` first; the answer's `nextCursor`, absent on the
        // last page), `limit` at most 50 (else 400), `ItemResponse[].sku`, `totalItems`
        // (https://developer.walmart.com/us-marketplace/docs/get-all-items).
        (hyper::Method::GET, "/v3/items") => {
            let limit = req.number("limit", 20);
            if !(1..=50).contains(&limit) {
                return wm_error(
                    400,
                    "INVALID_REQUEST_PARAM.GMP_ITEM_QUERY_API",
                    "limit cannot be more than 50",
                    &[],
                );
            }
            let from: usize = match req.param("nextCursor").as_deref() {
                None | Some("*") => 0,
                Some(c) => match c.strip_prefix('c').and_then(|n| n.parse().ok()) {
                    Some(n) => n,
                    None => {
                        return wm_error(
                            400,
                            "INVALID_REQUEST_PARAM.GMP_ITEM_QUERY_API",
                            "invalid nextCursor",
                            &[],
                        )
                    }
                },
            };
            let more = extra.lock().unwrap_or_else(|e| e.into_inner()).more.clone();
            let mut skus: Vec<String> = lock(shop)
                .listings
                .values()
                .map(|l| l.id.clone())
                .chain(more)
                .collect();
            skus.sort();
            let total = skus.len();
            let items: Vec<Value> = skus
                .iter()
                .skip(from)
                .take(limit)
                .map(|sku| {
                    json!({"mart": "WALMART_US", "sku": sku, "wpid": format!("WP{sku}"),
                                  "publishedStatus": "PUBLISHED", "lifecycleStatus": "ACTIVE"})
                })
                .collect();
            let mut answer = json!({"ItemResponse": items, "totalItems": total});
            if from + limit < total {
                answer["nextCursor"] = json!(format!("c{}", from + limit));
            }
            reply(200, &answer, &[])
        }
        (hyper::Method::PUT, "/v3/inventory") => {
            if let Some(r) = gate(shop, &req.path, throttled, failed) {
                return r;
            }
            let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
            let token_headers = match spend(x.put_tokens.as_mut(), shop, &req.path, 1) {
                Ok(headers) => headers,
                Err(throttled) => return *throttled,
            };
            drop(x);
            let body = req.json().unwrap_or(Value::Null);
            let seller_sku = req
                .param("sku")
                .or_else(|| body["sku"].as_str().map(str::to_string))
                .unwrap_or_default();
            let mut s = lock(shop);
            let Some(sku) = s.by_id(&seller_sku).map(|l| l.sku.clone()) else {
                s.log_call(&req.path, 1, 404);
                return wm_error(
                    404,
                    "CONTENT_NOT_FOUND.GMP_ITEM_INVENTORY_API",
                    &format!("sku {seller_sku} not found"),
                    &[],
                );
            };
            let Some(amount) = body["quantity"]["amount"]
                .as_i64()
                .filter(|_| body["quantity"]["unit"] == "EACH")
            else {
                s.log_call(&req.path, 1, 400);
                return wm_error(
                    400,
                    "INVALID_REQUEST_CONTENT.GMP_ITEM_INVENTORY_API",
                    "quantity.unit EACH and quantity.amount are required",
                    &[],
                );
            };
            s.write(&sku, amount);
            s.log_call(&req.path, 1, 200);
            reply(
                200,
                &json!({"sku": seller_sku, "quantity": {"unit": "EACH", "amount": amount}}),
                &token_headers,
            )
        }
        (hyper::Method::POST, "/v3/feeds") => {
            if let Some(r) = gate(shop, &req.path, throttled, failed) {
                return r;
            }
            // Logged before the feeds' lock is let go: the worker that processes the
            // feed takes it first, so no level it writes is seen before the call that
            // asked for it is (the worker's lock order: feeds, then the shop).
            let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
            let submitted = x.feeds.submit(&req);
            match submitted {
                Ok(id) => {
                    lock(shop).log_call(&req.path, 0, 200);
                    drop(x);
                    reply(200, &json!({"feedId": id}), &[])
                }
                Err((status, why, headers)) => {
                    lock(shop).log_call(&req.path, 0, status);
                    drop(x);
                    let code = if status == 429 {
                        "REQUEST_THRESHOLD_VIOLATED.GMP_GATEWAY_API"
                    } else {
                        "INVALID_REQUEST_CONTENT.GMP_FEED_API"
                    };
                    wm_error(status, code, &why, &headers)
                }
            }
        }
        (hyper::Method::GET, path) if path.starts_with("/v3/feeds/") => {
            let id = crate::market::decode(&path["/v3/feeds/".len()..]);
            let x = extra.lock().unwrap_or_else(|e| e.into_inner());
            match x.feeds.status(&id, &req) {
                Ok(answer) => reply(200, &answer, &[]),
                Err((status, why)) => wm_error(status, "CONTENT_NOT_FOUND.GMP_FEED_API", &why, &[]),
            }
        }
        (hyper::Method::GET, "/v3/inventory") => {
            const READS: &str = "GET /v3/inventory";
            let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
            let token_headers = match x.read_tokens.as_mut() {
                None => None,
                Some(tokens) => match spend(Some(tokens), shop, READS, 1) {
                    Ok(headers) => Some(headers),
                    Err(throttled) => return *throttled,
                },
            };
            drop(x);
            let seller_sku = req.param("sku").unwrap_or_default();
            let mut s = lock(shop);
            let level = s.by_id(&seller_sku).map(|l| l.level);
            if token_headers.is_some() {
                s.log_call(READS, 1, if level.is_some() { 200 } else { 404 });
            }
            drop(s);
            let headers = token_headers.unwrap_or_default();
            match level {
                Some(level) => reply(
                    200,
                    &json!({"sku": seller_sku, "quantity": {"unit": "EACH", "amount": level}}),
                    &headers,
                ),
                None => wm_error(
                    404,
                    "CONTENT_NOT_FOUND.GMP_ITEM_INVENTORY_API",
                    "sku not found",
                    &headers,
                ),
            }
        }
        (hyper::Method::GET, "/v3/orders") => {
            let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
            let token_headers = match spend(x.order_tokens.as_mut(), shop, &req.path, 0) {
                Ok(headers) => headers,
                Err(throttled) => return *throttled,
            };
            let cap = x.orders_cap;
            drop(x);
            let date = |name: &str| req.param(name).map(|t| crate::market::parse_rfc3339(&t));
            let invalid =
                |what: &str| wm_error(400, "INVALID_REQUEST_CONTENT.GMP_ORDER_API", what, &[]);
            let Some(Some(since)) = date("lastModifiedStartDate") else {
                return invalid("lastModifiedStartDate is required");
            };
            let (Some(until), Some(created_from)) = (
                date("lastModifiedEndDate").unwrap_or(Some(i64::MAX)),
                // "Default is current date - 7 days" (the reference's createdStartDate).
                date("createdStartDate").unwrap_or(Some(now_us() - 7 * 86_400_000_000)),
            ) else {
                return invalid("a date is not ISO 8601");
            };
            let limit: usize = req.number("limit", 100).clamp(1, 200);
            let cursor: usize = req.number("cursor", 0);
            let mut s = lock(shop);
            // Walmart keeps status dates in milliseconds; the filters are inclusive.
            // Newest order date first, as the reference's example lists them: not by
            // modification time.
            let mut orders = s.modified_within(since - 1_000, until.saturating_add(999));
            orders.retain(|o| o.created_us >= created_from);
            if orders.is_empty() {
                // What integrators meet when nothing matches (the kmcconnell Walmart
                // SDK's CHANGELOG, 1.3.4; fulfilio/python-walmart PR #14).
                // The body in the shape that SDK parses it from.
                s.log_call(&req.path, 0, 404);
                return reply(
                    404,
                    &json!({"errors": {"error": [{"code": "CONTENT_NOT_FOUND.GMP_ORDER_API",
                        "description": "Failed when called getAllOrders. Orders not found for given search parameters",
                        "info": "Requested content could not be found.", "severity": "INFO", "category": "APPLICATION"}]}}),
                    &[],
                );
            }
            if orders.len() > cap {
                s.log_call(&req.path, 0, 400);
                return wm_error(
                    400,
                    "INVALID_REQUEST_CONTENT.GMP_ORDER_API",
                    &format!("a maximum of {cap} orders can be fetched at a time"),
                    &[],
                );
            }
            let page: Vec<Value> = orders
                .iter()
                .skip(cursor)
                .take(limit)
                .map(|o| {
                    let mut order = order_json(&s, o.id);
                    if s.is_unreadable(o) {
                        order["purchaseOrderId"] = Value::Null;
                    }
                    order
                })
                .collect();
            // The cursor carries the first query's filters, as Walmart's do in integrators'
            // samples (the status and created dates; the modification dates are not shown).
            let next = (cursor + limit < orders.len()).then(|| {
                let mut next = format!(
                    "?createdStartDate={}&lastModifiedStartDate={}",
                    rfc3339(created_from),
                    rfc3339(since)
                );
                if until != i64::MAX {
                    next.push_str(&format!("&lastModifiedEndDate={}", rfc3339(until)));
                }
                next + &format!("&limit={limit}&cursor={}", cursor + limit)
            });
            reply(
                200,
                &json!({"list": {"meta": {"totalCount": orders.len(), "limit": limit, "nextCursor": next},
                                 "elements": {"order": page}}}),
                &token_headers,
            )
        }
        _ => wm_error(
            404,
            "CONTENT_NOT_FOUND.GMP_GATEWAY_API",
            "resource not found",
            &[],
        ),
    }
}

impl crate::sim::Simulator for WalmartSim {
    fn levels(&self) -> std::collections::HashMap<String, i64> {
        self.market.levels()
    }

    fn arrivals(&self, sku: &str) -> Vec<crate::sim::Arrival> {
        self.market.arrivals(sku)
    }

    fn place(&self, lines: &[(&str, i64)]) -> crate::sim::Cancel<'_> {
        let id = self.place_order(lines);
        Box::new(move || self.advance(&id, crate::market::Stage::Cancelled))
    }

    fn connect(&self, url: &str) {
        self.market.set_webhook_url(url);
    }

    fn set_habits(&self, habits: &crate::sim::Habits) {
        self.market.set_habits(habits.clone());
    }
}
