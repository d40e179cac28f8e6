//! A simulated eBay seller, as lockstep's `ebay` kind meets it (CHANNELS.md §5).
//!
//! - OAuth: `POST /identity/v1/oauth2/token` (Basic client credentials, refresh-token
//!   grant) issues the user token every call needs as `Authorization: Bearer` (401 with
//!   eBay's `errors` body otherwise).
//! - `POST /sell/inventory/v1/bulk_update_price_quantity`: at most 25 requests (more is a
//!   400, error 25709 here), each naming a known SKU and its offer; answered 200, or 207
//!   when some responses failed, with one response for the inventory item (no `offerId`)
//!   and one for each offer (`PriceQuantityResponse`), each with its own `statusCode`. Every call revises each listing it touches once; past
//!   the listing's daily revision limit (250, settable) that listing's items fail.
//! - `GET /sell/inventory/v1/inventory_item/{sku}`, and
//!   `POST /sell/inventory/v1/bulk_get_inventory_item`: 1 to 25 `requests` of `{"sku"}`
//!   (more is a 400, error 25709 here), answered with one `GetInventoryItemResponse` per
//!   SKU (`statusCode` 200 with the `inventoryItem`, or 404 with `errors`).
//! - `GET /sell/fulfillment/v1/order?filter=lastmodifieddate:[from..until]&limit&offset`, `from`
//!   in ISO 8601 with milliseconds (`2026-11-30T10:15:43.511Z`); any other form is a 400
//!   (error 30800).
//! - `GET /sell/inventory/v1/inventory_item` (getInventoryItems, paged by `next`) and
//!   `GET /sell/inventory/v1/offer?sku=` (getOffers); for an inventory item with no offer
//!   getOffers answers 404 with error 25713, as integrators meet it (its page lists no
//!   404: `nepalez/ebay_api` `offers/list.rb`, `rjdavis3/ebay-sdk` `OfferClientImpl.java`).
//! - No order webhooks: orders are found by polling, and they can be listed late.
//! - A rate limit, when set, answers 429 (eBay's throttle, error 2001, without
//!   `Retry-After`); a daily call limit (`set_daily_limit`) answers the same once spent,
//!   and `GET /developer/analytics/v1_beta/user_rate_limit/` (getRateLimits) says which
//!   limit is spent (`remaining: 0`) and when it resets.

//!
//! Pages followed: getOrders and its `filter`
//! (https://developer.ebay.com/api-docs/sell/fulfillment/resources/order/methods/getOrders),
//! bulkUpdatePriceQuantity and its per-item and per-offer responses
//! (https://developer.ebay.com/api-docs/sell/inventory/resources/offer/methods/bulkUpdatePriceQuantity),
//! bulkGetInventoryItem and its `GetInventoryItemResponse`
//! (https://developer.ebay.com/api-docs/sell/inventory/resources/inventory_item/methods/bulkGetInventoryItem),
//! the 429 error codes (https://developer.ebay.com/develop/api/sell/error_codes) and
//! getRateLimits for user tokens
//! (https://developer.ebay.com/api-docs/developer/analytics/resources/user_rate_limit/methods/getUserRateLimits).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::market::{self, gate, lock, now_us, rfc3339, Market, Req, Shop, Stage};
use crate::sim::{reply, Reply, Sender};

/// `bulk_update_price_quantity`'s limit.
pub const BATCH_LIMIT: usize = 25;

struct Extra {
    basic: String,
    refresh_token: String,
    token: String,
    revision_limit: u32,
    /// Listing id → revisions today.
    revisions: HashMap<String, u32>,
    /// SKUs whose offer update fails (error 25001) while their inventory item's succeeds.
    failing_offers: std::collections::HashSet<String>,
    /// The Inventory API's daily call limit: (limit, calls counted, when it resets).
    daily: Option<(u32, u32, std::time::Instant)>,
    /// Offers beside the listings' (`EbaySim::add_offer`): (SKU, listing id or none, offer id).
    more: Vec<(String, Option<String>, String)>,
    /// Inventory items never offered (`EbaySim::add_item`): getOffers answers 404 for them.
    unoffered: Vec<String>,
    /// The SKUs each inventory read asked for, one entry per call (either form).
    reads: Vec<usize>,
    /// Orders whose shipping fulfillments answer this status (`fail_fulfillments`).
    unreadable_fulfillments: HashMap<String, u16>,
    /// Orders listed with lines that have no `lineItemId` (`garble_order`).
    garbled: std::collections::HashSet<String>,
}

/// A running simulated eBay seller.
pub struct EbaySim {
    pub market: Market,
    extra: Arc<Mutex<Extra>>,
}

fn errors(status: u16, id: u32, message: &str) -> Reply {
    reply(
        status,
        &json!({"errors": [{"errorId": id, "domain": "API_INVENTORY", "category": "REQUEST", "message": message}]}),
        &[],
    )
}

fn order_id(id: u64) -> String {
    format!("12-{:05}-{:05}", id / 100_000 % 100_000, id % 100_000)
}

impl EbaySim {
    /// Adds an offer of `sku` lockstep's catalog does not map: on listing `listing`
    /// (published), or unpublished (`None`).
    pub fn add_offer(&self, sku: &str, listing: Option<&str>, offer: &str) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .more
            .push((sku.into(), listing.map(str::to_string), offer.into()));
    }

    /// Adds an inventory item of `sku` with no offer at all (created, never offered):
    /// getInventoryItems lists it, getOffers answers 404 error 25713 for it.
    pub fn add_item(&self, sku: &str) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unoffered
            .push(sku.into());
    }

    /// A seller listing `items` (our SKU, `listing_id/offer_id`), with app credentials
    /// `(client_id, client_secret)` and the user's `refresh_token`.
    pub fn start(items: &[(&str, &str)], client: (&str, &str), refresh_token: &str) -> EbaySim {
        use base64::Engine as _;
        let extra = Arc::new(Mutex::new(Extra {
            basic: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", client.0, client.1))
            ),
            refresh_token: refresh_token.into(),
            token: "v^1.1#i^1#sim-user-token".into(),
            revision_limit: 250,
            revisions: HashMap::new(),
            failing_offers: Default::default(),
            daily: None,
            more: Vec::new(),
            unoffered: Vec::new(),
            reads: Vec::new(),
            unreadable_fulfillments: HashMap::new(),
            garbled: Default::default(),
        }));
        let state = extra.clone();
        let market = Market::start(
            items,
            0,
            Arc::new(move |shop, sender, req| handle(shop, sender, &state, req)),
        );
        EbaySim { market, extra }
    }

    fn extra(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Revisions allowed per listing per day.
    /// From now on the offer update of `sku` fails (500, error 25001) while its inventory
    /// item's succeeds (`false`: they succeed again).
    pub fn fail_offer(&self, sku: &str, failing: bool) {
        let mut e = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        if failing {
            e.failing_offers.insert(sku.to_string());
        } else {
            e.failing_offers.remove(sku);
        }
    }

    /// The Inventory API allows `limit` calls in a window that resets in `reset_in`;
    /// past it, 429 with error 2001, and getRateLimits says `remaining: 0`.
    pub fn set_daily_limit(&self, limit: u32, reset_in: std::time::Duration) {
        let mut e = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        e.daily = Some((limit, 0, std::time::Instant::now() + reset_in));
    }

    /// How many SKUs each inventory read asked for, one entry per call.
    pub fn reads(&self) -> Vec<usize> {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reads
            .clone()
    }

    pub fn set_revision_limit(&self, limit: u32) {
        self.extra().revision_limit = limit;
    }

    /// Revisions made today on a listing.
    pub fn revisions(&self, listing: &str) -> u32 {
        self.extra().revisions.get(listing).copied().unwrap_or(0)
    }

    /// A buyer's order; returns its id.
    pub fn place_order(&self, lines: &[(&str, i64)]) -> String {
        order_id(self.market.shop().place(lines))
    }

    /// `units` of the order's line `line` ship (a shipping fulfillment of their own).
    /// `order`'s shipping fulfillments answer `status` from now on (eBay's error body).
    pub fn fail_fulfillments(&self, order: &str, status: u16) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unreadable_fulfillments
            .insert(order.to_string(), status);
    }

    /// `order`'s shipping fulfillments answer again (`fail_fulfillments`).
    pub fn mend_fulfillments(&self, order: &str) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unreadable_fulfillments
            .remove(order);
    }

    /// `order` is listed with lines that have no `lineItemId` from now on: lines no
    /// reader can key.
    pub fn garble_order(&self, order: &str) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .garbled
            .insert(order.to_string());
    }

    pub fn ship_units(&self, order: &str, line: usize, units: i64) {
        let mut shop = self.market.shop();
        let id = internal_id(&shop, order);
        shop.ship_units(id, line, units);
    }

    pub fn advance(&self, order: &str, stage: Stage) {
        let mut shop = self.market.shop();
        let id = internal_id(&shop, order);
        shop.advance(id, stage);
    }
}

fn handle(
    shop: &Arc<Mutex<Shop>>,
    _sender: &Arc<Sender>,
    extra: &Arc<Mutex<Extra>>,
    req: Req,
) -> Reply {
    let x = || extra.lock().unwrap_or_else(|e| e.into_inner());
    if req.path == "/identity/v1/oauth2/token" {
        let e = x();
        let refresh = req.form("refresh_token");
        if req.header("authorization") != Some(e.basic.as_str()) {
            return reply(
                401,
                &json!({"error": "invalid_client", "error_description": "client authentication failed"}),
                &[],
            );
        }
        if req.form("grant_type").as_deref() != Some("refresh_token")
            || refresh.as_deref() != Some(&e.refresh_token)
        {
            return reply(
                400,
                &json!({"error": "invalid_grant", "error_description": "the provided authorization refresh token is invalid or was issued to another client"}),
                &[],
            );
        }
        return reply(
            200,
            &json!({"access_token": e.token, "expires_in": 7200, "token_type": "User Access Token"}),
            &[],
        );
    }
    if req.header("authorization") != Some(format!("Bearer {}", x().token).as_str()) {
        return reply(
            401,
            &json!({"errors": [{"errorId": 1001, "domain": "OAuth", "category": "REQUEST", "message": "Invalid access token",
                                "longMessage": "Invalid access token. Check the value of the Authorization HTTP request header."}]}),
            &[],
        );
    }
    let throttled = |_: u64| {
        reply(
            429,
            &json!({"errors": [{"errorId": 2001, "domain": "ACCESS", "category": "REQUEST",
                                        "message": "Too many requests. The request limit has been reached for the resource."}]}),
            &[],
        )
    };
    let failed = |code: u16| errors(code, 25001, "A system error has occurred.");
    match (req.method.clone(), req.path.as_str()) {
        (hyper::Method::POST, "/sell/inventory/v1/bulk_update_price_quantity") => {
            if let Some(r) = gate(shop, &req.path, throttled, failed) {
                return r;
            }
            {
                let mut e = x();
                if let Some((limit, used, reset)) = e.daily.as_mut() {
                    if std::time::Instant::now() >= *reset {
                        e.daily = None;
                    } else if *used >= *limit {
                        drop(e);
                        lock(shop).log_call(&req.path, 0, 429);
                        return throttled(0);
                    } else {
                        *used += 1;
                    }
                }
            }
            bulk_update(shop, extra, &req)
        }
        // getRateLimits for the user's token (Analytics API): the Inventory API's rate.
        (hyper::Method::GET, "/developer/analytics/v1_beta/user_rate_limit/") => {
            let e = x();
            let (limit, used, reset_us) = match e.daily {
                Some((limit, used, reset)) => {
                    let left = reset.saturating_duration_since(std::time::Instant::now());
                    (limit, used, now_us() + left.as_micros() as i64)
                }
                None => (5_000_000, 0, now_us() + 86_400_000_000),
            };
            reply(
                200,
                &json!({"rateLimits": [{"apiContext": "sell", "apiName": "inventory", "apiVersion": "v1",
                    "resources": [{"name": "sell.inventory", "rates": [{"count": used, "limit": limit,
                        "remaining": limit.saturating_sub(used), "reset": rfc3339(reset_us), "timeWindow": 86400}]}]}]}),
                &[],
            )
        }
        // getInventoryItems: `limit` 1 to 200, `offset` a page number (as eBay documents
        // it), `next` to the following page, absent on the last; `size` is the number of
        // pages (https://developer.ebay.com/api-docs/sell/inventory/types/slr:InventoryItems).
        (hyper::Method::GET, "/sell/inventory/v1/inventory_item") => {
            let limit = req.number("limit", 25);
            if !(1..=200).contains(&limit) {
                return errors(
                    400,
                    25709,
                    "Invalid value for limit. The value must be between 1 and 200",
                );
            }
            let page = req.number("offset", 0);
            let more: Vec<String> = {
                let x = x();
                let offered = x.more.iter().map(|(sku, _, _)| sku.clone());
                offered.chain(x.unoffered.iter().cloned()).collect()
            };
            let s = lock(shop);
            let mut skus: Vec<(String, i64)> = s
                .listings
                .values()
                .map(|l| (l.sku.clone(), l.level))
                .collect();
            skus.extend(
                more.into_iter()
                    .filter(|m| !s.listings.contains_key(m))
                    .map(|m| (m, 0)),
            );
            skus.sort();
            skus.dedup_by(|a, b| a.0 == b.0);
            let total = skus.len();
            let pages = total.div_ceil(limit).max(1);
            let items: Vec<Value> = skus
                .iter()
                .skip(page * limit)
                .take(limit)
                .map(|(sku, level)| {
                    json!({"sku": sku, "locale": "en_US", "condition": "NEW",
                    "availability": {"shipToLocationAvailability": {"quantity": level}}})
                })
                .collect();
            let href = |p: usize| {
                format!("https://api.ebay.com/sell/inventory/v1/inventory_item?limit={limit}&offset={p}")
            };
            let mut answer = json!({"href": href(page), "limit": limit, "size": pages, "total": total, "inventoryItems": items});
            if page + 1 < pages {
                answer["next"] = json!(href(page + 1));
            }
            reply(200, &answer, &[])
        }
        // getOffers: `sku` required; the listing's offer (published), and the offers added
        // beside it (an auction beside the fixed price; an unpublished one, no `listing`).
        (hyper::Method::GET, "/sell/inventory/v1/offer") => {
            let Some(sku) = req.param("sku") else {
                return errors(400, 25707, "This is an invalid value for a SKU");
            };
            let mut offers: Vec<Value> = Vec::new();
            if let Some(l) = lock(shop).listings.get(&sku) {
                if let Some((listing, offer)) = l.id.split_once('/') {
                    offers.push(json!({"offerId": offer, "sku": sku, "marketplaceId": "EBAY_US", "format": "FIXED_PRICE",
                        "availableQuantity": l.level, "status": "PUBLISHED",
                        "listing": {"listingId": listing, "listingStatus": "ACTIVE", "soldQuantity": 0}}));
                }
            }
            for (s, listing, offer) in x().more.iter().filter(|(s, _, _)| *s == sku) {
                let mut o = json!({"offerId": offer, "sku": s, "marketplaceId": "EBAY_US", "format": "AUCTION",
                    "availableQuantity": 1, "status": if listing.is_some() { "PUBLISHED" } else { "UNPUBLISHED" }});
                if let Some(listing) = listing {
                    o["listing"] =
                        json!({"listingId": listing, "listingStatus": "ACTIVE", "soldQuantity": 0});
                }
                offers.push(o);
            }
            if offers.is_empty() {
                return errors(404, 25713, "This Offer is not available.");
            }
            reply(
                200,
                &json!({"href": "", "limit": 100, "size": offers.len(), "total": offers.len(), "offers": offers}),
                &[],
            )
        }
        (hyper::Method::POST, "/sell/inventory/v1/bulk_get_inventory_item") => {
            if let Some(r) = gate(shop, &req.path, throttled, failed) {
                return r;
            }
            bulk_get(shop, extra, &req)
        }
        (hyper::Method::GET, path) if path.starts_with("/sell/inventory/v1/inventory_item/") => {
            x().reads.push(1);
            let sku = market::decode(path.trim_start_matches("/sell/inventory/v1/inventory_item/"));
            match lock(shop).listings.get(&sku) {
                Some(l) => reply(
                    200,
                    &json!({"sku": sku, "availability": {"shipToLocationAvailability": {"quantity": l.level}}}),
                    &[],
                ),
                None => errors(
                    404,
                    25702,
                    &format!("SKU {sku} is not available in the system"),
                ),
            }
        }
        (hyper::Method::GET, "/sell/fulfillment/v1/order") => {
            let garbled = x().garbled.clone();
            list_orders(shop, &req, &garbled)
        }
        (hyper::Method::GET, path) if path.ends_with("/shipping_fulfillment") => {
            let order = path
                .trim_start_matches("/sell/fulfillment/v1/order/")
                .trim_end_matches("/shipping_fulfillment");
            let failing = x().unreadable_fulfillments.get(order).copied();
            match failing {
                Some(status) => {
                    lock(shop).log_call(path, 0, status);
                    errors(status, 32100, &format!("Order {order} not found"))
                }
                None => shipping_fulfillments(shop, path),
            }
        }
        _ => errors(404, 2002, "Resource not found"),
    }
}

/// `bulkGetInventoryItem`: each SKU's inventory item, or its 404, in the order asked.
fn bulk_get(shop: &Arc<Mutex<Shop>>, extra: &Arc<Mutex<Extra>>, req: &Req) -> Reply {
    let body = req.json().unwrap_or(Value::Null);
    let requests = body["requests"].as_array().cloned().unwrap_or_default();
    if requests.is_empty() || requests.len() > BATCH_LIMIT {
        return errors(
            400,
            25709,
            &format!("Invalid value for requests. A call takes 1 to {BATCH_LIMIT} requests."),
        );
    }
    let s = lock(shop);
    let responses: Vec<Value> = requests
        .iter()
        .map(|r| {
            let sku = r["sku"].as_str().unwrap_or_default();
            match s.listings.get(sku) {
                Some(l) => json!({"statusCode": 200, "sku": sku,
                    "inventoryItem": {"sku": sku, "availability": {"shipToLocationAvailability": {"quantity": l.level}}}}),
                None => json!({"statusCode": 404, "sku": sku,
                    "errors": [{"errorId": 25702, "domain": "API_INVENTORY", "category": "REQUEST",
                                "message": format!("SKU {sku} is not available in the system")}]}),
            }
        })
        .collect();
    drop(s);
    extra
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reads
        .push(requests.len());
    let status = if responses.iter().all(|r| r["statusCode"] == 200) {
        200
    } else {
        207
    };
    reply(status, &json!({ "responses": responses }), &[])
}

fn bulk_update(shop: &Arc<Mutex<Shop>>, extra: &Arc<Mutex<Extra>>, req: &Req) -> Reply {
    let body = req.json().unwrap_or(Value::Null);
    let requests = body["requests"].as_array().cloned().unwrap_or_default();
    let mut s = lock(shop);
    if requests.is_empty() || requests.len() > BATCH_LIMIT {
        s.log_call(&req.path, requests.len(), 400);
        return errors(
            400,
            25709,
            &format!("Invalid value for requests. A call takes 1 to {BATCH_LIMIT} requests."),
        );
    }
    let mut e = extra.lock().unwrap_or_else(|e| e.into_inner());
    // Each listing touched by this call is revised once.
    let mut revised: Vec<String> = Vec::new();
    let mut responses = Vec::new();
    for r in &requests {
        let sku = r["sku"].as_str().unwrap_or_default().to_string();
        let quantity = r["shipToLocationAvailability"]["quantity"].as_i64();
        let offer = r["offers"][0]["offerId"].as_str().unwrap_or_default();
        let listing = s.listings.get(&sku).map(|l| l.id.clone());
        let Some((listing_id, offer_id)) = listing
            .as_deref()
            .and_then(|l| l.split_once('/'))
            .map(|(a, b)| (a.to_string(), b.to_string()))
        else {
            responses.push(json!({"statusCode": 404, "sku": sku, "errors": [{"errorId": 25702, "message": "SKU not found"}]}));
            continue;
        };
        let Some(quantity) = quantity.filter(|_| offer == offer_id) else {
            responses.push(json!({"statusCode": 400, "sku": sku, "offerId": offer, "errors": [{"errorId": 25713, "message": "This Offer is not available"}]}));
            continue;
        };
        let used = e.revisions.get(&listing_id).copied().unwrap_or(0);
        if !revised.contains(&listing_id) && used >= e.revision_limit {
            responses.push(json!({"statusCode": 400, "sku": sku, "offerId": offer,
                                  "errors": [{"errorId": 21919, "message": "You have exceeded the maximum number of revisions for this listing today."}]}));
            continue;
        }
        if !revised.contains(&listing_id) {
            *e.revisions.entry(listing_id.clone()).or_insert(0) += 1;
            revised.push(listing_id);
        }
        // One response for the inventory item (no offerId) and one per offer
        // (PriceQuantityResponse: "the result for each offer and/or inventory item").
        responses.push(json!({"statusCode": 200, "sku": sku, "errors": [], "warnings": []}));
        if e.failing_offers.contains(&sku) {
            responses.push(json!({"statusCode": 500, "sku": sku, "offerId": offer,
                                  "errors": [{"errorId": 25001, "domain": "API_INVENTORY", "category": "APPLICATION",
                                              "message": "A system error has occurred."}], "warnings": []}));
            continue;
        }
        // The listing shows min(offer, ship-to-location): both were set.
        s.write(&sku, quantity);
        responses.push(
            json!({"statusCode": 200, "sku": sku, "offerId": offer, "errors": [], "warnings": []}),
        );
    }
    let all_ok = responses.iter().all(|r| r["statusCode"] == 200);
    let status = if all_ok { 200 } else { 207 };
    s.log_call(&req.path, requests.len(), status);
    reply(status, &json!({ "responses": responses }), &[])
}

/// Whether `text` is `YYYY-MM-DDTHH:MM:SS.mmmZ`: exactly three fractional digits, UTC.
fn is_millis_utc(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

fn list_orders(
    shop: &Arc<Mutex<Shop>>,
    req: &Req,
    garbled: &std::collections::HashSet<String>,
) -> Reply {
    // filter=lastmodifieddate:[2026-11-27T10:00:00.000Z..2026-11-27T11:00:00.000Z]
    // eBay documents the bounds in ISO 8601 with milliseconds and a `Z`
    // (`lastmodifieddate:[2016-05-15T08:25:43.511Z..]`, getOrders' `filter` in eBay's
    // Fulfillment API spec; a bad value is error 30800 "Invalid filter value {fieldvalue}
    // for filter {fieldname}"): any other precision is refused here. The end is optional
    // and inclusive; one in the future is error 30850.
    let Some((bound, end)) = req
        .param("filter")
        .and_then(|f| f.strip_prefix("lastmodifieddate:[").map(str::to_string))
        .and_then(|f| {
            let (from, end) = f.strip_suffix(']')?.split_once("..")?;
            Some((from.to_string(), end.to_string()))
        })
    else {
        return errors(400, 30820, "Start date is missing");
    };
    let time = |t: &String| {
        Some(t)
            .filter(|t| is_millis_utc(t))
            .and_then(|t| market::parse_rfc3339(t))
    };
    let Some(from) = time(&bound) else {
        return errors(
            400,
            30800,
            &format!("Invalid filter value {bound} for filter lastmodifieddate"),
        );
    };
    let until = match end.as_str() {
        "" => i64::MAX,
        _ => match time(&end) {
            Some(until) if until > now_us() => {
                return errors(400, 30850, "Start and end dates can't be in the future.")
            }
            Some(until) if until < from => {
                return errors(400, 30840, "Start date should be before end date.")
            }
            Some(until) => until,
            None => {
                return errors(
                    400,
                    30800,
                    &format!("Invalid filter value {end} for filter lastmodifieddate"),
                )
            }
        },
    };
    let limit: usize = req.number("limit", 50).clamp(1, 200);
    let offset: usize = req.number("offset", 0);
    let mut s = lock(shop);
    // eBay's filter is inclusive of both ends; the order is not documented.
    let orders = s.modified_within(from - 1, until);
    let page: Vec<Value> = orders
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| {
            let lines: Vec<Value> = o
                .lines
                .iter()
                .map(|l| {
                    let listing = s.listings[&l.sku].id.split('/').next().unwrap_or("").to_string();
                    // eBay calls a line FULFILLED once any of its quantity is in a shipping
                    // fulfillment, shipped in full or not (LineItemFulfillmentStatusEnum):
                    // only the fulfillments count the units.
                    let mut line = json!({"lineItemId": l.id.to_string(), "legacyItemId": listing, "sku": l.sku, "quantity": l.quantity,
                           "lineItemFulfillmentStatus": if l.shipped > 0 { "FULFILLED" } else { "NOT_STARTED" }});
                    if garbled.contains(&order_id(o.id)) {
                        line.as_object_mut().map(|l| l.remove("lineItemId"));
                    }
                    line
                })
                .collect();
            json!({
                "orderId": order_id(o.id), "creationDate": rfc3339(o.created_us), "lastModifiedDate": rfc3339(o.modified_us),
                "orderFulfillmentStatus": match o.stage {
                    Stage::Shipped => "FULFILLED",
                    _ if o.partly_shipped() => "IN_PROGRESS",
                    _ => "NOT_STARTED",
                },
                "orderPaymentStatus": "PAID",
                // One getShippingFulfillment URI per package (`Order.fulfillmentHrefs`).
                "fulfillmentHrefs": o.lines.iter().filter(|l| l.shipped > 0).map(|l| format!(
                    "https://api.ebay.com/sell/fulfillment/v1/order/{}/shipping_fulfillment/FUL-{}", order_id(o.id), l.id
                )).collect::<Vec<_>>(),
                "cancelStatus": {"cancelState": if o.stage == Stage::Cancelled { "CANCELED" } else { "NONE_REQUESTED" }},
                "lineItems": lines,
            })
        })
        .collect();
    reply(
        200,
        &json!({"total": orders.len(), "limit": limit, "offset": offset, "orders": page}),
        &[],
    )
}

/// The simulator's id of the order eBay calls `order`.
fn internal_id(shop: &Shop, order: &str) -> u64 {
    *shop
        .orders
        .keys()
        .find(|id| order_id(**id) == order)
        .expect("an order of this seller")
}

/// `GET /sell/fulfillment/v1/order/{orderId}/shipping_fulfillment`: the order's shipping
/// fulfillments, each naming the line items and the units it carries
/// (https://developer.ebay.com/api-docs/sell/fulfillment/resources/order/shipping_fulfillment/methods/getShippingFulfillments;
/// `LineItemReference`: `lineItemId`, `quantity`). One fulfillment per shipped line here.
fn shipping_fulfillments(shop: &Arc<Mutex<Shop>>, path: &str) -> Reply {
    let id = path
        .trim_start_matches("/sell/fulfillment/v1/order/")
        .trim_end_matches("/shipping_fulfillment");
    let mut s = lock(shop);
    s.log_call(path, 0, 200);
    let Some(o) = s.orders.values().find(|o| order_id(o.id) == id) else {
        return errors(404, 32100, &format!("Order {id} not found"));
    };
    let fulfillments: Vec<Value> = o
        .lines
        .iter()
        .filter(|l| l.shipped > 0)
        .map(|l| {
            json!({"fulfillmentId": format!("FUL-{}", l.id), "shippedDate": rfc3339(o.modified_us),
                   "lineItems": [{"lineItemId": l.id.to_string(), "quantity": l.shipped}]})
        })
        .collect();
    reply(
        200,
        &json!({"total": fulfillments.len(), "fulfillments": fulfillments}),
        &[],
    )
}

impl crate::sim::Simulator for EbaySim {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_filter_takes_milliseconds_only() {
        assert!(is_millis_utc("2026-11-30T10:15:43.511Z"));
        // Read to the millisecond, once.
        let at = market::parse_rfc3339("2026-11-30T10:15:43.511Z").unwrap();
        assert_eq!(at.rem_euclid(1_000_000), 511_000);
        for other in [
            "2026-11-30T10:15:43.511999Z",
            "2026-11-30T10:15:43Z",
            "2026-11-30T10:15:43.511+00:00",
            "2026-11-30 10:15:43.511Z",
        ] {
            assert!(!is_millis_utc(other), "{other}");
        }
    }
}
