//! A simulated Etsy shop, as lockstep's `etsy` kind meets it (CHANNELS.md §7).
//!
//! - OAuth: `POST /v3/public/oauth/token` (refresh-token grant, `client_id` = the
//!   keystring) issues a bearer token of an hour (`expires_in`: 3600) and a new refresh
//!   token; the one spent is refused after ("Requesting a Refresh OAuth Token" answers
//!   `{access_token, token_type, expires_in, refresh_token}`: developers.etsy.com
//!   "Authentication"; the spent one refused: etsy/open-api #353 and integrators' reports,
//!   which lockstep must survive either way). Every `/v3/application` call also needs
//!   `x-api-key: keystring:shared_secret`. The keystring alone is refused with 403
//!   "Shared secret is required in x-api-key header.", as Etsy has since 2026-02-09
//!   (etsy/open-api discussions #1529, #1531; developers.etsy.com "Authentication").
//! - `GET` and `PUT /v3/application/listings/{listing_id}/inventory`. The PUT replaces the
//!   listing's whole inventory, as Etsy's does: a product not sent is deleted. Prices are
//!   read as `{amount, divisor, currency_code}` and must be written as decimals; the
//!   write refuses read-only fields (`product_id`, `offering_id`, `is_deleted`). Each
//!   listing also has a product lockstep does not map (the seller's own variation), so a
//!   write that drops it shows.
//! - Receipts: `GET /v3/application/shops/{shop_id}/receipts/{receipt_id}` (refused with
//!   `refused_orders`' status, as a test asks) and the listing by `min_last_modified` (Unix
//!   seconds, `limit`/`offset`).
//! - Webhooks: `order.paid` only (flat `{event_type, resource_url, shop_id}`), signed
//!   Standard-Webhooks style with the endpoint's secret, retried 3 times. Cancellations
//!   send nothing.
//! - Limits: 10 requests/s and a daily quota, reported on every answer in
//!   `x-limit-per-second`, `x-remaining-this-second`, `x-limit-per-day`,
//!   `x-remaining-today`; past them, 429 with `retry-after`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::market::{gate, lock, now_us, Market, Req, Shop, Stage};
use crate::signing;
use crate::sim::{reply, Bucket, Reply, Sender};

pub const SHOP_ID: &str = "31415926";
const DAILY_QUOTA: i64 = 10_000;

#[derive(Clone, Debug)]
struct Offering {
    id: u64,
    quantity: i64,
    price_cents: i64,
    enabled: bool,
    /// The processing profile of a migrated listing; Etsy's spec makes the write
    /// carry it (nullable).
    readiness_state_id: Option<u64>,
}

/// Every offering's processing profile here.
const READINESS_STATE_ID: u64 = 1_402_336_022;

#[derive(Clone, Debug)]
struct Product {
    id: u64,
    sku: String,
    color: String,
    offerings: Vec<Offering>,
}

struct Extra {
    /// The app's keystring (the token grant's `client_id`).
    api_key: String,
    /// The app's shared secret, which `x-api-key` carries after the keystring.
    shared_secret: String,
    /// The one refresh token that works now (each refresh rotates it).
    refresh_token: String,
    /// Access tokens issued, with when each expires (Unix seconds).
    tokens: BTreeMap<String, i64>,
    /// The lifetime of the access tokens issued from now on.
    token_lifetime_s: i64,
    refreshes: u32,
    secret: String,
    per_second: Bucket,
    remaining_today: i64,
    /// Calls answered 429 (past the per-second or daily quota), reads and writes alike.
    throttled: usize,
    /// Listing id → its products.
    inventories: BTreeMap<String, Vec<Product>>,
    /// Listing id → its state (`active`, `inactive`, `sold_out`; active unless set).
    states: BTreeMap<String, String>,
    /// Receipts refunded in full.
    refunded: std::collections::BTreeSet<u64>,
    next_id: u64,
    /// A unit of this SKU is sold right after the next inventory read is answered: the
    /// sale lands between lockstep's read and its write of the whole listing.
    sell_after_read: Option<String>,
}

/// A product as a test sees it: SKU, color, and (quantity, price in cents) per offering.
pub type ProductView = (String, String, Vec<(i64, i64)>);

/// A running simulated Etsy shop.
pub struct EtsySim {
    pub market: Market,
    extra: Arc<Mutex<Extra>>,
}

fn etsy_error(status: u16, message: &str, headers: &[(&str, String)]) -> Reply {
    reply(status, &json!({ "error": message }), headers)
}

impl EtsySim {
    /// A shop listing `items` (our SKU, `listing_id/product_id`): each listing also gets
    /// one product of its own that lockstep does not map (quantity 7, $15.00). The app's
    /// keystring and shared secret are `api_key`, the user's `refresh_token`; webhooks are signed with
    /// `secret` (a `whsec_` secret).
    pub fn start(
        items: &[(&str, &str)],
        (api_key, shared_secret): (&str, &str),
        refresh_token: &str,
        secret: &str,
    ) -> EtsySim {
        let mut inventories: BTreeMap<String, Vec<Product>> = BTreeMap::new();
        let mut next_id = 900_000;
        for (sku, id) in items {
            let (listing, product) = id.split_once('/').expect("listing_id/product_id");
            next_id += 1;
            inventories
                .entry(listing.to_string())
                .or_default()
                .push(Product {
                    id: product.parse().expect("a numeric product id"),
                    sku: sku.to_string(),
                    color: format!("color-{sku}"),
                    offerings: vec![Offering {
                        id: next_id,
                        quantity: 0,
                        price_cents: 2_250,
                        enabled: true,
                        readiness_state_id: Some(READINESS_STATE_ID),
                    }],
                });
        }
        for (listing, products) in inventories.iter_mut() {
            next_id += 1;
            products.push(Product {
                id: next_id,
                sku: format!("SELLER-OWN-{listing}"),
                color: "seller's own".into(),
                offerings: vec![Offering {
                    id: next_id + 1,
                    quantity: 7,
                    price_cents: 1_500,
                    enabled: true,
                    readiness_state_id: Some(READINESS_STATE_ID),
                }],
            });
            next_id += 1;
        }
        let extra = Arc::new(Mutex::new(Extra {
            api_key: api_key.into(),
            shared_secret: shared_secret.into(),
            refresh_token: refresh_token.into(),
            tokens: BTreeMap::new(),
            token_lifetime_s: 3_600,
            refreshes: 0,
            secret: secret.into(),
            per_second: Bucket::new(10.0, 10.0),
            remaining_today: DAILY_QUOTA,
            throttled: 0,
            inventories,
            states: BTreeMap::new(),
            refunded: Default::default(),
            next_id,
            sell_after_read: None,
        }));
        let state = extra.clone();
        let market = Market::start(
            items,
            3,
            Arc::new(move |shop, sender, req| handle(shop, sender, &state, req)),
        );
        EtsySim { market, extra }
    }

    fn extra(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many calls were answered 429 so far, reads and writes alike.
    pub fn throttled(&self) -> usize {
        self.extra().throttled
    }

    /// Adds a product to `listing` that lockstep's catalog does not map (`sku` empty, or
    /// another product's), with 3 units.
    pub fn add_product(&self, listing: &str, sku: &str) {
        let mut x = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        x.next_id += 2;
        let id = x.next_id;
        x.inventories
            .entry(listing.to_string())
            .or_default()
            .push(Product {
                id,
                sku: sku.to_string(),
                color: format!("added-{id}"),
                offerings: vec![Offering {
                    id: id + 1,
                    quantity: 3,
                    price_cents: 1_000,
                    enabled: true,
                    readiness_state_id: Some(READINESS_STATE_ID),
                }],
            });
    }

    /// Access tokens issued from now on live `seconds`.
    pub fn set_token_lifetime(&self, seconds: i64) {
        self.extra().token_lifetime_s = seconds;
    }

    /// Refreshes answered so far.
    pub fn refreshes(&self) -> u32 {
        self.extra().refreshes
    }

    pub fn token_url(&self) -> String {
        format!("{}/v3/public/oauth/token", self.market.url())
    }

    /// Sells one unit of `sku` right after the next listing read is answered (the sale
    /// is found by the receipts poll; Etsy would send `order.paid`, which may be lost).
    pub fn sell_after_next_read(&self, sku: &str) {
        self.extra().sell_after_read = Some(sku.to_string());
    }

    /// Sets what is left of today's quota.
    pub fn set_remaining_today(&self, remaining: i64) {
        self.extra().remaining_today = remaining;
    }

    /// What is left of today's quota.
    pub fn remaining_today(&self) -> i64 {
        self.extra().remaining_today
    }

    /// Sets the quantity of the listing's own product (the one lockstep does not map).
    pub fn set_seller_own(&self, listing: &str, quantity: i64) {
        let mut x = self.extra();
        for p in x.inventories.get_mut(listing).into_iter().flatten() {
            if p.sku.starts_with("SELLER-OWN") {
                p.offerings[0].quantity = quantity;
            }
        }
    }

    /// A listing's state: `active`, `inactive` or `sold_out`.
    pub fn state(&self, listing: &str) -> String {
        state_of(&self.extra(), listing)
    }

    /// Whether `sku`'s first offering is enabled.
    pub fn enabled(&self, sku: &str) -> bool {
        self.extra()
            .inventories
            .values()
            .flatten()
            .find(|p| p.sku == sku)
            .is_some_and(|p| p.offerings[0].enabled)
    }

    /// A listing's products as (sku, color, [(quantity, price in cents)]).
    pub fn inventory(&self, listing: &str) -> Vec<ProductView> {
        self.extra().inventories[listing]
            .iter()
            .map(|p| {
                let offerings = p
                    .offerings
                    .iter()
                    .map(|o| (o.quantity, o.price_cents))
                    .collect();
                (p.sku.clone(), p.color.clone(), offerings)
            })
            .collect()
    }

    /// A buyer's paid order: stock lowered, `order.paid` sent. Returns the receipt id.
    pub fn place_order(&self, lines: &[(&str, i64)]) -> u64 {
        let id = self.market.shop().place(lines);
        self.sync_levels();
        let body = json!({
            "event_type": "order.paid",
            "resource_url": format!("https://openapi.etsy.com/v3/application/shops/{SHOP_ID}/receipts/{id}"),
            "shop_id": SHOP_ID.parse::<u64>().unwrap_or(0),
        })
        .to_string()
        .into_bytes();
        let msg = format!("msg_{:024x}", rand::random::<u128>());
        let key = signing::key_of(&self.extra().secret);
        let ts = now_us() / 1_000_000;
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("webhook-id".to_string(), msg.clone()),
            ("webhook-timestamp".to_string(), ts.to_string()),
            (
                "webhook-signature".to_string(),
                signing::sign(&key, &msg, ts, &body),
            ),
        ];
        self.market.deliver("order.paid", headers, body);
        id
    }

    /// Refunds a receipt in full before it ships (Etsy sends nothing): the units go back
    /// to stock and the receipt's status becomes "Fully Refunded".
    pub fn refund(&self, receipt: u64) {
        // Marked and restocked under the one lock the receipts' reads hold: none sees
        // "Fully Refunded" with the units not yet back.
        let mut extra = self.extra();
        extra.refunded.insert(receipt);
        self.market.shop().advance(receipt, Stage::Cancelled);
        sync_inventories(&mut extra, &self.market.levels());
    }

    /// Ships or cancels a receipt (Etsy sends nothing for either).
    pub fn advance(&self, receipt: u64, stage: Stage) {
        self.market.shop().advance(receipt, stage);
        self.sync_levels();
    }

    /// Orders change the shop's levels; the inventories follow. A listing whose every
    /// offering an order brought to 0 is `sold_out`, as Etsy marks it.
    fn sync_levels(&self) {
        // The inventories' lock before the levels are read, as the API's handlers take
        // them: a write between the two would otherwise be undone with the level read
        // before it.
        let mut extra = self.extra();
        let levels = self.market.levels();
        sync_inventories(&mut extra, &levels);
    }
}

/// The inventories follow the shop's `levels` (see `EtsySim::sync_levels`).
fn sync_inventories(x: &mut Extra, levels: &std::collections::HashMap<String, i64>) {
    for (listing, products) in x.inventories.iter_mut() {
        let mut touched = false;
        for p in products.iter_mut() {
            let o = &mut p.offerings[0];
            if let Some(level) = levels.get(&p.sku) {
                // Only what buyers could see moves with an order.
                if o.enabled
                    && *level != o.quantity
                    && x.states.get(listing).is_none_or(|s| s == "active")
                {
                    o.quantity = *level;
                    touched = true;
                }
            }
        }
        let empty = products
            .iter()
            .all(|p| p.offerings.iter().all(|o| o.quantity == 0));
        if touched && empty {
            x.states.insert(listing.clone(), "sold_out".into());
        }
    }
}

fn state_of(extra: &Extra, listing: &str) -> String {
    extra
        .states
        .get(listing)
        .cloned()
        .unwrap_or_else(|| "active".into())
}

/// What buyers see of each of a listing's products: its first offering's quantity while
/// the listing is active and the offering enabled, else 0.
fn shown(extra: &Extra, listing: &str) -> Vec<(String, i64)> {
    let live = state_of(extra, listing) == "active";
    extra.inventories[listing]
        .iter()
        .map(|p| {
            let o = &p.offerings[0];
            (
                p.sku.clone(),
                if live && o.enabled { o.quantity } else { 0 },
            )
        })
        .collect()
}

fn inventory_json(listing: &str, products: &[Product]) -> Value {
    json!({
        "listing_id": listing.parse::<u64>().unwrap_or(0),
        "products": products.iter().map(|p| json!({
            "product_id": p.id, "sku": p.sku, "is_deleted": false,
            "offerings": p.offerings.iter().map(|o| json!({
                "offering_id": o.id, "quantity": o.quantity, "is_enabled": o.enabled, "is_deleted": false,
                "readiness_state_id": o.readiness_state_id,
                "price": {"amount": o.price_cents, "divisor": 100, "currency_code": "USD"},
            })).collect::<Vec<_>>(),
            "property_values": [{"property_id": 200, "property_name": "Primary color", "scale_id": null,
                                 "scale_name": null, "value_ids": [p.id], "values": [p.color]}],
        })).collect::<Vec<_>>(),
        "price_on_property": [], "quantity_on_property": [200], "sku_on_property": [200],
        "readiness_state_on_property": [],
    })
}

fn listing_json(extra: &Extra, listing: &str) -> Value {
    let quantity: i64 = extra.inventories[listing]
        .iter()
        .flat_map(|p| &p.offerings)
        .filter(|o| o.enabled)
        .map(|o| o.quantity)
        .sum();
    json!({"listing_id": listing.parse::<u64>().unwrap_or(0), "shop_id": SHOP_ID.parse::<u64>().unwrap_or(0),
           "title": format!("Listing {listing}"), "state": state_of(extra, listing), "quantity": quantity,
           "has_variations": true})
}

fn receipt_json(
    shop: &Shop,
    id: u64,
    listing_of: &dyn Fn(&str) -> (String, String),
    refunded: &std::collections::BTreeSet<u64>,
) -> Option<Value> {
    let o = shop.orders.get(&id)?;
    // ShopReceipt.status: paid, completed, open, payment processing, canceled, fully
    // refunded, partially refunded. A refunded receipt is marked by `refund`.
    let status = match o.stage {
        _ if refunded.contains(&id) => "Fully Refunded",
        Stage::Placed => "Paid",
        Stage::Shipped => "Completed",
        Stage::Cancelled => "Canceled",
    };
    Some(json!({
        "receipt_id": o.id, "status": status, "is_paid": o.stage != Stage::Cancelled,
        "is_shipped": o.stage == Stage::Shipped,
        "create_timestamp": o.created_us / 1_000_000, "updated_timestamp": o.modified_us / 1_000_000,
        "transactions": o.lines.iter().map(|l| {
            let (listing, product) = listing_of(&l.sku);
            json!({"transaction_id": l.id, "listing_id": listing.parse::<u64>().unwrap_or(0),
                   "product_id": product.parse::<u64>().unwrap_or(0), "sku": l.sku, "quantity": l.quantity})
        }).collect::<Vec<_>>(),
    }))
}

/// Writes `body` as the listing's whole new inventory; `Err` is Etsy's 400 message.
fn replace(extra: &mut Extra, listing: &str, body: &Value) -> Result<Vec<Product>, String> {
    let sent = body["products"].as_array().ok_or("products is required")?;
    let old = extra.inventories.get(listing).cloned().unwrap_or_default();
    let mut products = Vec::new();
    for p in sent {
        for field in ["product_id", "is_deleted"] {
            if p.get(field).is_some() {
                return Err(format!("products.{field} is read-only"));
            }
        }
        let sku = p["sku"].as_str().unwrap_or_default().to_string();
        let color = p["property_values"][0]["values"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut offerings = Vec::new();
        for o in p["offerings"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if o.get("offering_id").is_some() {
                return Err("offerings.offering_id is read-only".into());
            }
            let price = o["price"]
                .as_f64()
                .ok_or("offerings.price must be a decimal")?;
            let quantity = o["quantity"]
                .as_i64()
                .filter(|q| (0..=999).contains(q))
                .ok_or("offerings.quantity must be 0 to 999")?;
            // Required, nullable (Etsy's spec, updateListingInventory's offerings).
            let Some(readiness) = o.get("readiness_state_id") else {
                return Err("offerings.readiness_state_id is required".into());
            };
            extra.next_id += 1;
            offerings.push(Offering {
                id: extra.next_id,
                quantity,
                price_cents: (price * 100.0).round() as i64,
                enabled: o["is_enabled"].as_bool().unwrap_or(true),
                readiness_state_id: readiness.as_u64(),
            });
        }
        if offerings.is_empty() {
            return Err(format!("product {sku} has no offerings"));
        }
        // A product the listing had keeps its id; a new one gets a new id.
        let id = old
            .iter()
            .find(|o| o.sku == sku && o.color == color)
            .map(|o| o.id)
            .unwrap_or_else(|| {
                extra.next_id += 1;
                extra.next_id
            });
        products.push(Product {
            id,
            sku,
            color,
            offerings,
        });
    }
    // "There is no way in the API to zero out all of the inventory for a listing"
    // (Etsy staff, etsy/open-api #560; the message as reported in #395).
    if products
        .iter()
        .all(|p| p.offerings.iter().all(|o| o.quantity == 0))
    {
        return Err("One offering must have quantity greater than 0".into());
    }
    extra
        .inventories
        .insert(listing.to_string(), products.clone());
    Ok(products)
}

fn handle(
    shop: &Arc<Mutex<Shop>>,
    _sender: &Arc<Sender>,
    extra: &Arc<Mutex<Extra>>,
    req: Req,
) -> Reply {
    let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
    if req.path == "/v3/public/oauth/token" {
        let ok = req.form("grant_type").as_deref() == Some("refresh_token")
            && req.form("client_id").as_deref() == Some(&x.api_key)
            && req.form("refresh_token").as_deref() == Some(&x.refresh_token);
        return if ok {
            // Tokens are prefixed by the user's numeric id, as Etsy's are.
            let access = format!("12345678.{:032x}", rand::random::<u128>());
            x.refresh_token = format!("12345678.{:032x}", rand::random::<u128>());
            let expires = now_us() / 1_000_000 + x.token_lifetime_s;
            x.tokens.insert(access.clone(), expires);
            x.refreshes += 1;
            reply(
                200,
                &json!({"access_token": access, "token_type": "Bearer", "expires_in": x.token_lifetime_s, "refresh_token": x.refresh_token}),
                &[],
            )
        } else {
            reply(
                400,
                &json!({"error": "invalid_grant", "error_description": "refresh token not found or expired"}),
                &[],
            )
        };
    }
    match req.header("x-api-key").map(|k| k.split_once(':')) {
        Some(Some((key, secret))) if key == x.api_key && secret == x.shared_secret => {}
        Some(None) => {
            return etsy_error(403, "Shared secret is required in x-api-key header.", &[])
        }
        _ => return etsy_error(403, "Invalid API key", &[]),
    }
    let now_s = now_us() / 1_000_000;
    let live = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|t| x.tokens.get(t))
        .is_some_and(|expires| now_s < *expires);
    if !live {
        return etsy_error(401, "invalid_token", &[]);
    }
    // Every call spends the quotas; the answer reports them.
    let limited = !x.per_second.take(1.0) || x.remaining_today <= 0;
    if !limited {
        x.remaining_today -= 1;
    }
    let quota = [
        ("x-limit-per-second", "10".to_string()),
        (
            "x-remaining-this-second",
            (x.per_second.available.floor() as i64).to_string(),
        ),
        ("x-limit-per-day", DAILY_QUOTA.to_string()),
        ("x-remaining-today", x.remaining_today.max(0).to_string()),
    ];
    let is_write = matches!(req.method, hyper::Method::PUT | hyper::Method::PATCH);
    if limited {
        x.throttled += 1;
        if is_write {
            lock(shop).log_call(&req.path, 0, 429);
        }
        let mut headers = quota.to_vec();
        headers.push(("retry-after", "1".into()));
        return etsy_error(429, "You have exceeded your quota", &headers);
    }
    drop(x);
    if is_write {
        let throttled =
            |s: u64| etsy_error(429, "Too many requests", &[("retry-after", s.to_string())]);
        let failed = |code: u16| etsy_error(code, "Server error", &[]);
        if let Some(r) = gate(shop, &req.path, throttled, failed) {
            return r;
        }
    }
    let Some(route) = req.route("/v3/application/") else {
        return etsy_error(404, "Resource not found", &quota);
    };
    match (req.method.clone(), route.as_slice()) {
        (hyper::Method::GET, ["listings", listing, "inventory"]) => {
            let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
            let answer = match x.inventories.get(*listing) {
                Some(products) => reply(200, &inventory_json(listing, products), &quota),
                None => return etsy_error(404, "Listing not found", &quota),
            };
            if let Some(sku) = x.sell_after_read.take() {
                let mut s = lock(shop);
                s.place(&[(sku.as_str(), 1)]);
                let level = s.listings.get(&sku).map_or(0, |l| l.level);
                for p in x
                    .inventories
                    .values_mut()
                    .flatten()
                    .filter(|p| p.sku == sku)
                {
                    p.offerings[0].quantity = level;
                }
            }
            answer
        }
        (hyper::Method::PUT, ["listings", listing, "inventory"]) => {
            let body = req.json().unwrap_or(Value::Null);
            let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
            if !x.inventories.contains_key(*listing) {
                return etsy_error(404, "Listing not found", &quota);
            }
            let sent = body["products"].as_array().map_or(0, Vec::len);
            match replace(&mut x, listing, &body) {
                Ok(products) => {
                    let mut s = lock(shop);
                    for (sku, level) in shown(&x, listing) {
                        if s.listings.contains_key(&sku) {
                            s.write(&sku, level);
                        }
                    }
                    s.log_call(&req.path, sent, 200);
                    reply(200, &inventory_json(listing, &products), &quota)
                }
                Err(message) => {
                    lock(shop).log_call(&req.path, sent, 400);
                    etsy_error(400, &message, &quota)
                }
            }
        }
        // getListingsByShop: `state` (default active), `limit` 1 to 100 (default 25),
        // `offset`, `includes=Inventory`; newest listing first; `count` is the state's
        // total.
        (hyper::Method::GET, ["shops", shop_id, "listings"]) if *shop_id == SHOP_ID => {
            let x = extra.lock().unwrap_or_else(|e| e.into_inner());
            let state = req.param("state").unwrap_or_else(|| "active".into());
            let limit = req.number("limit", 25);
            if !(1..=100).contains(&limit) {
                return etsy_error(400, "limit must be between 1 and 100", &quota);
            }
            let offset = req.number("offset", 0);
            let with_inventory = req
                .param("includes")
                .is_some_and(|i| i.split(',').any(|i| i == "Inventory"));
            let mut ids: Vec<&String> = x
                .inventories
                .keys()
                .filter(|l| state_of(&x, l) == state)
                .collect();
            ids.sort_by_key(|l| std::cmp::Reverse(l.parse::<u64>().unwrap_or(0)));
            let results: Vec<Value> = ids
                .iter()
                .skip(offset)
                .take(limit)
                .map(|l| {
                    let mut listing = listing_json(&x, l);
                    if with_inventory {
                        listing["inventory"] = inventory_json(l, &x.inventories[l.as_str()]);
                    }
                    listing
                })
                .collect();
            reply(
                200,
                &json!({"count": ids.len(), "results": results}),
                &quota,
            )
        }
        (hyper::Method::GET, ["listings", listing]) => {
            let x = extra.lock().unwrap_or_else(|e| e.into_inner());
            if !x.inventories.contains_key(*listing) {
                return etsy_error(404, "Listing not found", &quota);
            }
            reply(200, &listing_json(&x, listing), &quota)
        }
        // updateListing: a form body; `state` may be set to `active` or `inactive` only.
        (hyper::Method::PATCH, ["shops", shop_id, "listings", listing]) if *shop_id == SHOP_ID => {
            let mut x = extra.lock().unwrap_or_else(|e| e.into_inner());
            if !x.inventories.contains_key(*listing) {
                return etsy_error(404, "Listing not found", &quota);
            }
            if req.header("content-type") != Some("application/x-www-form-urlencoded") {
                return etsy_error(
                    400,
                    "Expected an application/x-www-form-urlencoded body",
                    &quota,
                );
            }
            match req.form("state").as_deref() {
                Some(state @ ("active" | "inactive")) => {
                    // "Setting a sold_out listing to active will update the quantity to 1
                    // and renew the listing" (Etsy's spec, ShopListing.state).
                    if state == "active" && state_of(&x, listing) == "sold_out" {
                        let products = x.inventories.get_mut(*listing).expect("checked");
                        if products
                            .iter()
                            .all(|p| p.offerings.iter().all(|o| o.quantity == 0))
                        {
                            products[0].offerings[0].quantity = 1;
                        }
                    }
                    x.states.insert(listing.to_string(), state.to_string());
                }
                Some(other) => {
                    return etsy_error(400, &format!("state: {other} is not a valid value"), &quota)
                }
                None => {}
            }
            let mut s = lock(shop);
            for (sku, level) in shown(&x, listing) {
                if s.listings.contains_key(&sku) {
                    s.write(&sku, level);
                }
            }
            s.log_call(&req.path, 0, 200);
            reply(200, &listing_json(&x, listing), &quota)
        }
        (hyper::Method::GET, ["shops", shop_id, "receipts", receipt]) if *shop_id == SHOP_ID => {
            // The extra state before the shop's, in the order every handler takes them,
            // and held while the shop is read: a refund (`EtsySim::refund`) changes both.
            let x = extra.lock().unwrap_or_else(|e| e.into_inner());
            let refunded = &x.refunded;
            let s = lock(shop);
            let listing_of = |sku: &str| split_id(&s, sku);
            let id: Option<u64> = receipt.parse().ok();
            // A receipt the shop refuses to give (`Shop::refused_orders`), with Etsy's
            // error body; its listing in the receipts' list is not refused.
            if let Some(status) = id
                .and_then(|id| s.orders.get(&id))
                .and_then(|o| s.refusal_of(o))
            {
                return etsy_error(status, "The receipt cannot be read", &quota);
            }
            match id.and_then(|id| receipt_json(&s, id, &listing_of, refunded)) {
                Some(r) => reply(200, &r, &quota),
                None => etsy_error(404, "Receipt not found", &quota),
            }
        }
        (hyper::Method::GET, ["shops", shop_id, "receipts"]) if *shop_id == SHOP_ID => {
            let since_s = req.number("min_last_modified", 0) as i64;
            let limit: usize = req.number("limit", 25).clamp(1, 100);
            let offset: usize = req.number("offset", 0);
            let x = extra.lock().unwrap_or_else(|e| e.into_inner());
            let refunded = &x.refunded;
            let mut s = lock(shop);
            // `min_last_modified` is inclusive, in whole seconds.
            let orders = s.modified_after(since_s * 1_000_000 - 1);
            let listing_of = |sku: &str| split_id(&s, sku);
            let results: Vec<Value> = orders
                .iter()
                .skip(offset)
                .take(limit)
                .filter_map(|o| {
                    let mut receipt = receipt_json(&s, o.id, &listing_of, refunded)?;
                    if s.is_unreadable(o) {
                        receipt["receipt_id"] = Value::Null;
                    }
                    Some(receipt)
                })
                .collect();
            reply(
                200,
                &json!({"count": orders.len(), "results": results}),
                &quota,
            )
        }
        _ => etsy_error(404, "Resource not found", &quota),
    }
}

fn split_id(shop: &Shop, sku: &str) -> (String, String) {
    let id = shop
        .listings
        .get(sku)
        .map(|l| l.id.clone())
        .unwrap_or_default();
    let (listing, product) = id.split_once('/').unwrap_or(("0", "0"));
    (listing.to_string(), product.to_string())
}

impl crate::sim::Simulator for EtsySim {
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
