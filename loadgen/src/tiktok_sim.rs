//! A simulated TikTok Shop, as lockstep's `tiktok` kind meets it (CHANNELS.md §8).
//!
//! - Every API call is signed: `app_key`, `timestamp` (within 5 minutes), `shop_cipher`
//!   and `sign` (hex HMAC-SHA256 keyed with the app secret over secret + path + the sorted
//!   parameters + body + secret) in the query, `x-tts-access-token` in a header; a bad
//!   signature or token is refused with TikTok's `code`/`message` body.
//! - `GET /order/202309/orders?ids=` (line items one per unit) and
//!   `POST /order/202309/orders/search` (`update_time_ge`, `update_time_lt`, newest
//!   `create_time` first, paged by `page_token`),
//!   `POST /product/202309/products/{product_id}/inventory/update` (the product's SKUs;
//!   an unknown SKU id comes back in `data.errors`), `GET /product/202309/products/{id}`.
//! - Warehouses: every SKU is in warehouse 7000; one can be in others too
//!   (`add_warehouse`), and then its update must name them all ("You must include all
//!   warehouse IDs assigned to this SKU. Do not omit any or add unrelated warehouses",
//!   https://partner.tiktokshop.com/docv2/page/6503068fc20ad60284b38858): one left out is
//!   refused in `data.errors` as the page's example refuses a warehouse: the answer's code
//!   0, the entry's the wrapper 12052990 "Batch update inventory error.", and under it in
//!   `detail.extra_errors` 12019028 for one left out, 12052533 for one not the SKU's
//!   (the codes of Partner Center's error tables). Only a SKU with one warehouse may leave
//!   the id out.
//! - Webhooks: type 1 (order status change) on every status change and type 11
//!   (cancellation status change) on a cancellation, signed in `Authorization` as the hex
//!   HMAC-SHA256 of app key + body; retried 3 times.
//! - Tokens: `GET /api/v2/token/refresh?app_key&app_secret&refresh_token&grant_type=
//!   refresh_token` (on TikTok's auth host; here on the same server) answers `{code: 0,
//!   data: {access_token, access_token_expire_in, refresh_token, refresh_token_expire_in,
//!   ...}}`, the `_expire_in` fields Unix times (Partner Center, "Authorization
//!   overview"). Each refresh rotates the refresh token: the old one is refused after.
//!   An expired or unknown access token is code 105002 ("Expired credentials").
//! - A throttle (the rate limit is unverified for TikTok) is answered HTTP 200 with code
//!   36009002 ("Too many requests", Partner Center "Common errors"): on writes under the
//!   market's rate limit or fault, on product reads as many times as a test asks
//!   (`throttle_reads`). A test can make a product's reads fail for good
//!   (`fail_product_reads`).

//!
//! Pages followed (Partner Center): the token grant and refresh
//! (https://partner.tiktokshop.com/docv2/page/authorization-overview-202407), the error
//! codes 105002 and 36009002 (https://partner.tiktokshop.com/docv2/page/common-errors), and
//! the order search (https://partner.tiktokshop.com/docv2/page/get-order-list-202309).

use std::sync::{Arc, Mutex};

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::market::{gate, lock, now_us, Market, Req, Shop, Stage};
use crate::sim::{reply, Reply, Sender};

pub const SHOP_CIPHER: &str = "GCP_sim_cipher";

struct Extra {
    app_key: String,
    app_secret: String,
    /// The one refresh token that works now (each refresh rotates it).
    refresh_token: String,
    /// Access tokens issued, with when each expires (Unix seconds).
    tokens: std::collections::HashMap<String, i64>,
    /// How long an access token lives.
    token_lifetime_s: i64,
    /// Refreshes answered so far.
    refreshes: u32,
    /// SKUs beyond the listings (`TikTokSim::add_sku`): (product id, SKU id, seller SKU).
    more: Vec<(String, String, String)>,
    /// A listed SKU's warehouses beside the default one (`TikTokSim::add_warehouse`),
    /// by our SKU: (warehouse id, quantity).
    warehouses: std::collections::HashMap<String, Vec<(String, i64)>>,
    /// Product reads still to answer with the throttle code (`throttle_reads`).
    reads_throttled: u32,
    /// Products whose reads fail with HTTP 500 (`fail_product_reads`).
    unreadable: Vec<String>,
    /// Inventory updates still to refuse whole with an error naming no SKU
    /// (`refuse_updates_unnamed`).
    updates_refused_unnamed: u32,
}

/// Every SKU's default warehouse, which holds the listing's level.
const WAREHOUSE: &str = "7000";

/// A SKU's `inventory`: the default warehouse at `level`, then its others.
fn inventory_json(extra: &Extra, sku: &str, level: i64) -> Value {
    let mut inventory = vec![json!({"warehouse_id": WAREHOUSE, "quantity": level})];
    for (w, q) in extra.warehouses.get(sku).into_iter().flatten() {
        inventory.push(json!({"warehouse_id": w, "quantity": q}));
    }
    json!(inventory)
}

/// TikTok's access tokens live about a week (commonly reported; the grant says).
const TOKEN_LIFETIME_S: i64 = 7 * 24 * 3_600;

/// A running simulated TikTok Shop.
pub struct TikTokSim {
    pub market: Market,
    extra: Arc<Mutex<Extra>>,
}

fn hex_mac(key: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn payload_list(value: &Value) -> Vec<Value> {
    value.as_array().cloned().unwrap_or_default()
}

fn tts(code: i64, message: &str, data: Value) -> Value {
    json!({"code": code, "message": message, "request_id": format!("{:016x}", rand::random::<u64>()), "data": data})
}

/// The order's `status`: `PARTIALLY_SHIPPING` while some of its items are in transit and
/// others are not (Get Order Detail's status values).
fn order_status(order: &crate::market::Order) -> &'static str {
    match order.stage {
        Stage::Placed if order.partly_shipped() => "PARTIALLY_SHIPPING",
        Stage::Placed => "AWAITING_SHIPMENT",
        Stage::Shipped => "IN_TRANSIT",
        Stage::Cancelled => "CANCELLED",
    }
}

impl TikTokSim {
    /// Adds a SKU lockstep's catalog does not map to product `product` (`seller_sku`
    /// empty, or another SKU's).
    pub fn add_sku(&self, product: &str, sku_id: &str, seller_sku: &str) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .more
            .push((product.into(), sku_id.into(), seller_sku.into()));
    }

    /// A shop listing `items` (our SKU, `product_id/sku_id`), for an app with `app_key`
    /// and `app_secret`, and a seller whose grant's refresh token is `refresh_token`.
    pub fn start(
        items: &[(&str, &str)],
        app_key: &str,
        app_secret: &str,
        refresh_token: &str,
    ) -> TikTokSim {
        let extra = Arc::new(Mutex::new(Extra {
            app_key: app_key.into(),
            app_secret: app_secret.into(),
            refresh_token: refresh_token.into(),
            tokens: Default::default(),
            token_lifetime_s: TOKEN_LIFETIME_S,
            refreshes: 0,
            more: Vec::new(),
            warehouses: Default::default(),
            reads_throttled: 0,
            unreadable: Vec::new(),
            updates_refused_unnamed: 0,
        }));
        let state = extra.clone();
        let market = Market::start(
            items,
            3,
            Arc::new(move |shop, sender, req| handle(shop, sender, &state, req)),
        );
        TikTokSim { market, extra }
    }

    fn extra(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token refresh URL.
    pub fn token_url(&self) -> String {
        format!("{}/api/v2/token/refresh", self.market.url())
    }

    /// Access tokens issued from now on live `seconds`.
    pub fn set_token_lifetime(&self, seconds: i64) {
        self.extra().token_lifetime_s = seconds;
    }

    /// Listed SKU `sku` (ours) is stocked in warehouse `warehouse` too, `quantity` there:
    /// from now on every inventory update of it must name all its warehouses.
    pub fn add_warehouse(&self, sku: &str, warehouse: &str, quantity: i64) {
        let mut extra = self.extra();
        let list = extra.warehouses.entry(sku.to_string()).or_default();
        list.push((warehouse.to_string(), quantity));
    }

    /// The next `n` inventory updates are refused whole, nothing applied, with code 0 and
    /// one entry in `data.errors` that names no SKU (no `detail.sku_id`): a refusal of
    /// the product as a whole.
    pub fn refuse_updates_unnamed(&self, n: u32) {
        self.extra().updates_refused_unnamed = n;
    }

    /// What SKU `sku` (ours) has in warehouse `warehouse` beside the default one.
    pub fn warehouse_level(&self, sku: &str, warehouse: &str) -> Option<i64> {
        let extra = self.extra();
        let list = extra.warehouses.get(sku)?;
        list.iter().find(|(w, _)| w == warehouse).map(|(_, q)| *q)
    }

    /// The next `times` product reads (Get Product) answer HTTP 200 with code 36009002,
    /// "Too many requests".
    pub fn throttle_reads(&self, times: u32) {
        self.extra().reads_throttled = times;
    }

    /// From now on every read of product `product` fails with HTTP 500 (a product the
    /// channel cannot read).
    pub fn fail_product_reads(&self, product: &str) {
        self.extra().unreadable.push(product.to_string());
    }

    /// The product reads still to be answered with the throttle code.
    pub fn reads_throttled_left(&self) -> u32 {
        self.extra().reads_throttled
    }

    /// Refreshes answered so far.
    pub fn refreshes(&self) -> u32 {
        self.extra().refreshes
    }

    pub fn place_order(&self, lines: &[(&str, i64)]) -> String {
        let id = self.market.shop().place(lines);
        self.notify(1, id);
        id.to_string()
    }

    /// Ships (type 1) or cancels (type 1 and type 11) an order.
    pub fn advance(&self, order: &str, stage: Stage) {
        let id: u64 = order.parse().expect("an order id");
        self.market.shop().advance(id, stage);
        self.notify(1, id);
        if stage == Stage::Cancelled {
            self.notify(11, id);
        }
    }

    /// `units` of line `line` ship (their items go `IN_TRANSIT`, the order
    /// `PARTIALLY_SHIPPING`), with a type 1 notification.
    pub fn ship_units(&self, order: &str, line: usize, units: i64) {
        let id: u64 = order.parse().expect("an order id");
        self.market.shop().ship_units(id, line, units);
        self.notify(1, id);
    }

    /// `units` of line `line` are cancelled (their items `CANCELLED`), with type 11.
    pub fn cancel_units(&self, order: &str, line: usize, units: i64) {
        let id: u64 = order.parse().expect("an order id");
        self.market.shop().cancel_units(id, line, units);
        self.notify(11, id);
    }

    fn notify(&self, kind: i64, id: u64) {
        let (status, updated) = {
            let shop = self.market.shop();
            let o = &shop.orders[&id];
            (order_status(o), o.modified_us / 1_000_000)
        };
        let data = if kind == 11 {
            json!({"order_id": id.to_string(), "cancellation_status": "CANCELLATION_REQUEST_SUCCESS", "update_time": updated})
        } else {
            json!({"order_id": id.to_string(), "order_status": status, "is_on_hold_order": false, "update_time": updated})
        };
        let body = json!({"type": kind, "tts_notification_id": format!("{}", rand::random::<u64>()),
                          "shop_id": "7000000000001", "timestamp": now_us() / 1_000_000, "data": data})
        .to_string()
        .into_bytes();
        let signature = {
            let x = self.extra();
            hex_mac(&x.app_secret, &[x.app_key.as_bytes(), &body])
        };
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), signature),
        ];
        self.market.deliver(&format!("type {kind}"), headers, body);
    }
}

/// An order as TikTok's order APIs give it: one line item per unit.
fn order_json(s: &Shop, o: &crate::market::Order) -> Value {
    let items: Vec<Value> = o
        .lines
        .iter()
        .flat_map(|l| {
            let (product, sku_id) = s.listings[&l.sku]
                .id
                .split_once('/')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or_default();
            // The first units shipped, the next cancelled, the rest waiting.
            let (shipped, cancelled) = (l.shipped, l.shipped + l.cancelled);
            (0..l.quantity).map(move |n| {
                let status = if n < shipped {
                    "IN_TRANSIT"
                } else if n < cancelled {
                    "CANCELLED"
                } else {
                    "AWAITING_SHIPMENT"
                };
                json!({"id": format!("{}{:03}", l.id, n), "product_id": product, "sku_id": sku_id,
                       "seller_sku": l.sku, "display_status": status})
            })
        })
        .collect();
    json!({"id": o.id.to_string(), "status": order_status(o), "create_time": o.created_us / 1_000_000,
           "update_time": o.modified_us / 1_000_000, "line_items": items})
}

/// The refresh-token grant: a new access token and a rotated refresh token.
fn refresh(extra: &mut Extra, req: &Req) -> Reply {
    let ok = req.param("app_key").as_deref() == Some(&extra.app_key)
        && req.param("app_secret").as_deref() == Some(&extra.app_secret)
        && req.param("grant_type").as_deref() == Some("refresh_token");
    if !ok {
        return reply(
            200,
            &tts(
                36004004,
                "Invalid app_key, app_secret or grant_type.",
                json!({}),
            ),
            &[],
        );
    }
    if req.param("refresh_token").as_deref() != Some(&extra.refresh_token) {
        return reply(
            200,
            &tts(36004004, "Invalid or expired refresh_token.", json!({})),
            &[],
        );
    }
    let now_s = now_us() / 1_000_000;
    let access = format!("ROW_{:024x}", rand::random::<u128>());
    extra.refresh_token = format!("ROW_r_{:024x}", rand::random::<u128>());
    let expires = now_s + extra.token_lifetime_s;
    extra.tokens.insert(access.clone(), expires);
    extra.refreshes += 1;
    let data = json!({"access_token": access, "access_token_expire_in": expires,
                      "refresh_token": extra.refresh_token, "refresh_token_expire_in": now_s + 365 * 86_400,
                      "open_id": "sim-open-id", "seller_name": "Sim Shop", "seller_base_region": "US",
                      "user_type": 0, "granted_scopes": ["seller.product.basic", "seller.order.info"]});
    reply(200, &tts(0, "success", data), &[])
}

/// Checks the request signature; `Err` is TikTok's refusal: (code, message).
fn check_sign(extra: &Extra, req: &Req) -> Result<(), (i64, &'static str)> {
    let refuse = |code: i64, message: &'static str| (code, message);
    let now_s = now_us() / 1_000_000;
    let live = req
        .header("x-tts-access-token")
        .and_then(|t| extra.tokens.get(t))
        .is_some_and(|expires| now_s < *expires);
    if !live {
        return Err(refuse(
            105002,
            "Expired credentials. The access_token or x-tts-access-token header has expired.",
        ));
    }
    if req.param("app_key").as_deref() != Some(&extra.app_key)
        || req.param("shop_cipher").as_deref() != Some(SHOP_CIPHER)
    {
        return Err(refuse(106011, "Invalid app_key or shop_cipher."));
    }
    let fresh = req
        .param("timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|t| (now_us() / 1_000_000 - t).abs() <= 300);
    if !fresh {
        return Err(refuse(106010, "Invalid timestamp."));
    }
    let mut params: Vec<(String, String)> = req
        .query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (crate::market::decode(k), crate::market::decode(v)))
        .filter(|(k, _)| k != "sign" && k != "access_token")
        .collect();
    params.sort();
    let mut text = format!("{}{}", extra.app_secret, req.path);
    for (k, v) in params {
        text.push_str(&k);
        text.push_str(&v);
    }
    let expected = hex_mac(
        &extra.app_secret,
        &[text.as_bytes(), &req.body, extra.app_secret.as_bytes()],
    );
    if req.param("sign").as_deref() != Some(expected.as_str()) {
        return Err(refuse(106001, "Invalid sign."));
    }
    Ok(())
}

fn handle(
    shop: &Arc<Mutex<Shop>>,
    _sender: &Arc<Sender>,
    extra: &Arc<Mutex<Extra>>,
    req: Req,
) -> Reply {
    if req.path == "/api/v2/token/refresh" {
        return refresh(&mut extra.lock().unwrap_or_else(|e| e.into_inner()), &req);
    }
    if let Err((code, message)) = check_sign(&extra.lock().unwrap_or_else(|e| e.into_inner()), &req)
    {
        return reply(401, &tts(code, message, json!({})), &[]);
    }
    let Some(route) = req.route("/") else {
        return reply(404, &tts(36009003, "Path not found.", json!({})), &[]);
    };
    match (req.method.clone(), route.as_slice()) {
        (hyper::Method::GET, ["order", "202309", "orders"]) => {
            let s = lock(shop);
            let ids: Vec<u64> = req
                .param("ids")
                .unwrap_or_default()
                .split(',')
                .filter_map(|i| i.parse().ok())
                .collect();
            let orders: Vec<Value> = ids
                .iter()
                .filter_map(|id| s.orders.get(id))
                .map(|o| order_json(&s, o))
                .collect();
            reply(200, &tts(0, "Success", json!({ "orders": orders })), &[])
        }
        // Get order list: `update_time_ge` (Unix seconds, inclusive) and `update_time_lt`
        // (exclusive) in the JSON body,
        // `page_size` (at most 100) and `page_token` in the query; `next_page_token` is
        // empty on the last page (Partner Center, "Get order list" 202309).
        (hyper::Method::POST, ["order", "202309", "orders", "search"]) => {
            let body = req.json().unwrap_or(Value::Null);
            let Some(since) = body["update_time_ge"].as_i64() else {
                return reply(
                    200,
                    &tts(36009003, "update_time_ge is required here.", json!({})),
                    &[],
                );
            };
            let size: usize = req.number("page_size", 20);
            if !(1..=100).contains(&size) {
                return reply(
                    200,
                    &tts(36009003, "page_size must be 1 to 100.", json!({})),
                    &[],
                );
            }
            let start: usize = req
                .param("page_token")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            // `update_time_lt` is exclusive; the list runs newest `create_time` first,
            // the default `sort_field` and `sort_order` (DESC).
            let until = body["update_time_lt"]
                .as_i64()
                .map_or(i64::MAX, |t| t.saturating_mul(1_000_000) - 1);
            let mut s = lock(shop);
            let listed = s.modified_within(since * 1_000_000 - 1, until);
            let page: Vec<Value> = listed
                .iter()
                .skip(start)
                .take(size.min(s.page_cap))
                .map(|o| {
                    let mut order = order_json(&s, o);
                    if s.is_unreadable(o) {
                        order["id"] = Value::Null;
                    }
                    order
                })
                .collect();
            let next = start + page.len();
            let token = if next < listed.len() {
                next.to_string()
            } else {
                String::new()
            };
            reply(
                200,
                &tts(
                    0,
                    "Success",
                    json!({"orders": page, "next_page_token": token, "total_count": listed.len()}),
                ),
                &[],
            )
        }
        (
            hyper::Method::POST,
            ["product", "202309", "products", product, "inventory", "update"],
        ) => {
            // TikTok signals a throttle by its code, 36009002 "Too many requests"
            // (Partner Center, "Common errors"), here on an HTTP 200.
            let throttled = |_: u64| {
                reply(
                    200,
                    &tts(36009002, "Too many requests. You've made too many requests in a short period of time.", json!({})),
                    &[],
                )
            };
            let failed = |code: u16| reply(code, &tts(36009001, "Internal error.", json!({})), &[]);
            if let Some(r) = gate(shop, &req.path, throttled, failed) {
                return r;
            }
            let body = req.json().unwrap_or(Value::Null);
            let skus = body["skus"].as_array().cloned().unwrap_or_default();
            let mut s = lock(shop);
            let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
            if x.updates_refused_unnamed > 0 {
                x.updates_refused_unnamed -= 1;
                s.log_call(&req.path, skus.len(), 207);
                let errors = json!([{"code": 12052990, "message": "Batch update inventory error.", "detail": {}}]);
                return reply(200, &tts(0, "Success", json!({ "errors": errors })), &[]);
            }
            let mut errors = Vec::new();
            for sku in &skus {
                let sku_id = sku["id"].as_str().unwrap_or_default();
                let refuse = |code: i64, message: &str| json!({"code": code, "message": message, "detail": {"sku_id": sku_id}});
                // Each entry's warehouse (none named: allowed only for a SKU with one) and
                // quantity, "non-negative ... And less then 99999": [0, 99,998].
                let given: Option<Vec<(Option<String>, i64)>> = payload_list(&sku["inventory"])
                    .iter()
                    .map(|i| {
                        let w = i["warehouse_id"].as_str().map(str::to_string);
                        Some((
                            w,
                            i["quantity"]
                                .as_i64()
                                .filter(|q| (0..=99_998).contains(q))?,
                        ))
                    })
                    .collect();
                let ours = s
                    .by_id(&format!("{product}/{sku_id}"))
                    .map(|l| l.sku.clone());
                let (Some(ours), Some(given)) = (ours, given.filter(|g| !g.is_empty())) else {
                    errors.push(refuse(
                        17019003,
                        "The SKU does not exist or the quantity is invalid.",
                    ));
                    continue;
                };
                // "You must include all warehouse IDs assigned to this SKU. Do not omit
                // any or add unrelated warehouses." A refusal is reported as the page's
                // example reports one: the wrapper 12052990 with the warehouse's code in
                // `extra_errors`.
                let mut assigned: Vec<&str> = vec![WAREHOUSE];
                let others = x.warehouses.get(&ours).cloned().unwrap_or_default();
                assigned.extend(others.iter().map(|(w, _)| w.as_str()));
                let given: Vec<(String, i64)> = match given {
                    g if g.len() == 1 && g[0].0.is_none() && others.is_empty() => {
                        vec![(WAREHOUSE.to_string(), g[0].1)]
                    }
                    g => g
                        .into_iter()
                        .map(|(w, q)| (w.unwrap_or_default(), q))
                        .collect(),
                };
                let unrelated = given.iter().find(|(w, _)| !assigned.contains(&w.as_str()));
                let missing = assigned
                    .iter()
                    .find(|a| !given.iter().any(|(w, _)| w == *a));
                let refusal = match (unrelated, missing) {
                    (Some((w, _)), _) => Some((
                        w.as_str(),
                        12052533,
                        "Removal, addition, and change of warehouses are not permitted.",
                    )),
                    (None, Some(w)) => Some((
                        *w,
                        12019028,
                        "Multiple warehouses detected. Include all warehouse IDs and details.",
                    )),
                    (None, None) => None,
                };
                if let Some((warehouse, code, message)) = refusal {
                    let mut error = refuse(12052990, "Batch update inventory error.");
                    error["detail"]["extra_errors"] =
                        json!([{"warehouse_id": warehouse, "code": code, "message": message}]);
                    errors.push(error);
                    continue;
                }
                for (w, quantity) in given {
                    if w == WAREHOUSE {
                        s.write(&ours, quantity);
                    } else if let Some(other) = x
                        .warehouses
                        .get_mut(&ours)
                        .and_then(|list| list.iter_mut().find(|(o, _)| *o == w))
                    {
                        other.1 = quantity;
                    }
                }
            }
            drop(x);
            // "A successful top-level response can still include this list when
            // individual updates fail": code 0, the SKUs refused in `data.errors`. (The
            // call log says 207 for a partial refusal.)
            s.log_call(
                &req.path,
                skus.len(),
                if errors.is_empty() { 200 } else { 207 },
            );
            reply(200, &tts(0, "Success", json!({ "errors": errors })), &[])
        }
        // Search Products: `page_size` 1 to 100 in the query (else 12019109), `page_token`
        // from the last answer's `next_page_token` (empty on the last page), `status` in
        // the body (every SKU here is live); products by id
        // (https://partner.tiktokshop.com/docv2/page/search-products-202502).
        (hyper::Method::POST, ["product", "202309", "products", "search"]) => {
            let size: usize = req.number("page_size", 0);
            if !(1..=100).contains(&size) {
                return reply(200, &tts(12019109, "page size is invalid", json!({})), &[]);
            }
            let from: usize = match req.param("page_token") {
                None => 0,
                Some(token) => match token.parse() {
                    Ok(n) => n,
                    Err(_) => {
                        return reply(
                            200,
                            &tts(12019108, "page number is invalid", json!({})),
                            &[],
                        )
                    }
                },
            };
            let s = lock(shop);
            let x = extra.lock().unwrap_or_else(|e| e.into_inner());
            let more = x.more.clone();
            let mut products: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for l in s.listings.values() {
                if let Some((p, sku_id)) = l.id.split_once('/') {
                    products.entry(p.to_string()).or_default().push(json!({
                        "id": sku_id, "seller_sku": l.sku, "status_info": {"status": "NORMAL"},
                        "inventory": inventory_json(&x, &l.sku, l.level)}));
                }
            }
            drop(x);
            for (p, sku_id, seller_sku) in more {
                products.entry(p).or_default().push(json!({
                    "id": sku_id, "seller_sku": seller_sku, "status_info": {"status": "NORMAL"},
                    "inventory": [{"warehouse_id": WAREHOUSE, "quantity": 0}]}));
            }
            let total = products.len();
            let page: Vec<Value> = products
                .into_iter()
                .skip(from)
                .take(size)
                .map(|(id, skus)| json!({"id": id, "status": "ACTIVATE", "skus": skus}))
                .collect();
            let next = if from + size < total {
                (from + size).to_string()
            } else {
                String::new()
            };
            reply(
                200,
                &tts(
                    0,
                    "Success",
                    json!({"total_count": total, "next_page_token": next, "products": page}),
                ),
                &[],
            )
        }
        (hyper::Method::GET, ["product", "202309", "products", product]) => {
            let s = lock(shop);
            let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
            if x.unreadable.iter().any(|p| p == product) {
                return reply(500, &tts(36009001, "Internal error.", json!({})), &[]);
            }
            if x.reads_throttled > 0 {
                x.reads_throttled -= 1;
                return reply(200, &tts(36009002, "Too many requests. You've made too many requests in a short period of time.", json!({})), &[]);
            }
            let skus: Vec<Value> = s
                .listings
                .values()
                .filter_map(|l| {
                    let (p, sku_id) = l.id.split_once('/')?;
                    (p == *product).then(|| json!({"id": sku_id, "seller_sku": l.sku, "inventory": inventory_json(&x, &l.sku, l.level)}))
                })
                .collect();
            reply(
                200,
                &tts(0, "Success", json!({"id": product, "skus": skus})),
                &[],
            )
        }
        _ => reply(404, &tts(36009003, "Path not found.", json!({})), &[]),
    }
}

impl crate::sim::Simulator for TikTokSim {
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
