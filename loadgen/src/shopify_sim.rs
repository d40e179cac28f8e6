//! A simulated Shopify store, as lockstep's `shopify` kind meets it (CHANNELS.md §1).
//!
//! - `POST /admin/api/{version}/graphql.json` with `X-Shopify-Access-Token` (401 with
//!   Shopify's message otherwise). Two operations, recognized by their field names:
//!   `inventorySetQuantities` (compare-and-set on each quantity: `changeFromQuantity`,
//!   required from 2026-04, or `compareQuantity` / `ignoreCompareQuantity` before; a
//!   mismatch is a `*_STALE` userError and nothing in the call is applied; a retried
//!   `@idempotent` key answers the first result; from 2026-04 the directive is required
//!   and `compareQuantity` / `ignoreCompareQuantity` are refused);
//!   `inventoryAdjustQuantities` (a `delta` per change, each with `changeFromQuantity`:
//!   a value compares, `null` opts out, and from 2026-04 the field and the `@idempotent`
//!   directive are required; all or nothing; the reply's `changes` carry each item's
//!   `quantityAfterChange`); and the `nodes(ids:)` level query (at most 250 ids, as every
//!   input array).
//! - `productVariants(first:, after:)` (catalog discovery): the listings and the variants
//!   added beside them (`add_variant`: no SKU, a duplicate SKU, untracked), by id, a
//!   cursor per page, `first` at most 250.
//! - Calculated-cost throttling per plan: 10 points a mutation, 1 + 1 per id a query, a
//!   connection one point per object its nodes select (charged for `first`, refunded
//!   to what was returned; over 1,000 refused with `MAX_COST_EXCEEDED`); an
//!   empty bucket answers HTTP 200 with a `THROTTLED` error; every reply carries
//!   `extensions.cost.throttleStatus`.
//! - `GET /admin/api/{version}/orders.json` (the REST orders list), on the REST Admin
//!   API's own request bucket (40, leaking 2 a second on a Standard plan): a full bucket
//!   answers 429 with `Retry-After`, and every answer carries
//!   `X-Shopify-Shop-Api-Call-Limit: used/size`.
//! - Orders placed on the store lower its levels and send signed webhooks
//!   (`orders/create`; `orders/cancelled` plus a `cancel` refund; `orders/fulfilled` and
//!   `orders/partially_fulfilled` with the order's `fulfillments`; `orders/edited` plus
//!   `orders/updated` for an edit that removes units; `refunds/create` plus
//!   `orders/updated` for a refund of some units, restocked or not), with the echo `inventory_levels/update` after every
//!   change when switched on, and Shopify's habits: duplicates (same
//!   `X-Shopify-Event-Id`), delays, reordering, and 8 retries of a failed delivery.
//! - Every value written is recorded with its arrival time.
//!
//! The store runs on a `market::Market`: its server, its levels (each inventory item is a
//! listing under its id), the arrivals, the fault switch, the cost bucket (the market's
//! rate bucket, spent by each call's cost) and the webhook sender. It keeps its own
//! orders beside them, because Shopify's differ from the market's neutral ones: edits
//! and refunds take units off a line without shipping or cancelling them, and its
//! webhooks show fulfillments and refunds; and its own call log, which records each
//! item's compare value and the call's outcome.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::market::{lock, now_us, rfc3339, Market, Pending, Req, Shop};
use crate::signing;
use crate::sim::{reply, Arrival, Bucket, Delivery, Fault, Habits, Reply, Sender};

/// The store's one location.
pub const LOCATION: u64 = 1;
/// A Standard plan: 100 points/s restored; the bucket holds 1,000.
pub const STANDARD_PLAN: (f64, f64) = (1_000.0, 100.0);
/// The REST Admin API's bucket on a Standard plan: 40 requests, leaking 2 a second
/// (https://shopify.dev/docs/api/admin-rest/usage/rate-limits: "Standard limit: 2
/// requests/second", a bucket of 40; Advanced 4, Plus 20 a second).
pub const STANDARD_REST: (f64, f64) = (40.0, 2.0);
const MUTATION_COST: f64 = 10.0;

/// One `inventorySetQuantities` (or `inventoryAdjustQuantities`) call as it arrived.
#[derive(Clone, Debug)]
pub struct SetCall {
    pub at: Instant,
    /// (SKU, quantity, the compare value sent: `None` when omitted or null); for an
    /// adjustment, the delta in place of the quantity.
    pub items: Vec<(String, i64, Option<i64>)>,
    /// `applied`, `adjusted`, `stale`, `throttled`, `unauthorized`, `invalid`, or a fault
    /// status.
    pub outcome: String,
}

struct Line {
    id: u64,
    sku: String,
    item: u64,
    quantity: i64,
    /// Units taken off the line by edits and refunds (`quantity - current_quantity`).
    removed: i64,
    /// Units that will not ship: edited out, or refunded before shipping.
    unshippable: i64,
}

impl Line {
    /// Units still to ship, given the units fulfilled.
    fn left(&self, fulfilled: i64) -> i64 {
        (self.quantity - self.unshippable - fulfilled).max(0)
    }
}

/// An order as the store keeps it: what `orders/*` payloads and `orders.json` show.
struct Order {
    id: u64,
    lines: Vec<Line>,
    created_at: String,
    cancelled_at: Option<String>,
    /// `success` fulfillments: (fulfillment id, [(line id, units)]).
    fulfillments: Vec<(u64, Vec<(u64, i64)>)>,
    /// Refunds as sent: each `refunds/create` body.
    refunds: Vec<Value>,
}

impl Order {
    fn fulfilled(&self, line: u64) -> i64 {
        self.fulfillments
            .iter()
            .flat_map(|(_, lines)| lines)
            .filter(|(id, _)| *id == line)
            .map(|(_, n)| n)
            .sum()
    }
}

/// What the store keeps beside its market.
struct Extra {
    token: String,
    calls: Vec<SetCall>,
    idempotent: HashMap<String, Value>,
    /// Every idempotency key received on an `inventorySetQuantities` call, in order.
    keys: Vec<String>,
    /// Replies to lose after applying the call (the client sees a 502 and retries).
    lose_replies: u32,
    lose_adjust_replies: u32,
    orders: HashMap<u64, Order>,
    /// Each order as its latest `orders/*` webhook showed it, with when (Unix µs): what
    /// the REST orders list answers.
    order_states: BTreeMap<u64, (i64, Value)>,
    /// Variants beyond the listings: no SKU, a SKU another variant has, untracked.
    more: Vec<MoreVariant>,
    /// The REST Admin API's request bucket (`orders.json`), apart from GraphQL's cost.
    rest: Bucket,
    /// REST requests answered 429 because the bucket was full.
    rest_throttled: u64,
}

/// A variant the store has beside its listings (`ShopifySim::add_variant`).
#[derive(Clone, Debug)]
struct MoreVariant {
    item: u64,
    sku: Option<String>,
    tracked: bool,
}

/// A running simulated store.
pub struct ShopifySim {
    pub market: Market,
    /// The market's webhook sender (the same one): kept as a field of its own because
    /// `src/demo.rs` and `tests/channels_e2e.rs` read `shop.sender`.
    pub sender: Arc<Sender>,
    extra: Arc<Mutex<Extra>>,
    secret: String,
    next_id: AtomicU64,
}

fn now_text() -> String {
    rfc3339(now_us())
}

/// What inventory item `item` shows at the location (`None`: not stocked there).
fn level_of(shop: &Shop, item: u64) -> Option<i64> {
    shop.by_id(&item.to_string())
        .filter(|l| l.stocked)
        .map(|l| l.level)
}

/// The SKU of inventory item `item`, or the item's number when the store lists none.
fn sku_of(shop: &Shop, item: u64) -> String {
    shop.by_id(&item.to_string())
        .map_or_else(|| item.to_string(), |l| l.sku.clone())
}

/// The number at the end of a `gid://shopify/Type/123`.
fn gid_number(value: &Value) -> Option<u64> {
    value.as_str()?.rsplit('/').next()?.parse().ok()
}

impl ShopifySim {
    /// Adds a variant (its inventory item `item`) that lockstep's catalog does not map:
    /// without a SKU, with a SKU another variant carries, or not tracked. Listed by
    /// `productVariants` only.
    pub fn add_variant(&self, item: u64, sku: Option<&str>, tracked: bool) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .more
            .push(MoreVariant {
                item,
                sku: sku.map(str::to_string),
                tracked,
            });
    }

    /// Starts a store whose app has `secret` (webhook HMAC key) and `token` (Admin API),
    /// listing `items` (SKU, inventory item id) with level 0, on the Standard plan.
    pub fn start(secret: &str, token: &str, items: &[(&str, u64)]) -> ShopifySim {
        let ids: Vec<(&str, String)> = items.iter().map(|(s, id)| (*s, id.to_string())).collect();
        let ids: Vec<(&str, &str)> = ids.iter().map(|(s, id)| (*s, id.as_str())).collect();
        let mut shop = Shop::new(&ids);
        shop.rate = Some(Bucket::new(STANDARD_PLAN.0, STANDARD_PLAN.1));
        let extra = Arc::new(Mutex::new(Extra {
            token: token.to_string(),
            calls: Vec::new(),
            idempotent: HashMap::new(),
            order_states: Default::default(),
            keys: Vec::new(),
            lose_replies: 0,
            lose_adjust_replies: 0,
            orders: HashMap::new(),
            more: Vec::new(),
            rest: Bucket::new(STANDARD_REST.0, STANDARD_REST.1),
            rest_throttled: 0,
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
        // Shopify retries a failed delivery 8 times.
        let market = Market::serve(shop, 8, 0, Arc::new(handle));
        ShopifySim {
            sender: market.sender.clone(),
            market,
            extra,
            secret: secret.to_string(),
            next_id: AtomicU64::new(1_000),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's URL (the channel's `base_url`).
    pub fn url(&self) -> String {
        self.market.url()
    }

    /// Where the store sends its webhooks (lockstep's `/webhooks/{name}`).
    pub fn set_webhook_url(&self, url: &str) {
        self.market.set_webhook_url(url);
    }

    pub fn set_habits(&self, habits: Habits) {
        self.market.set_habits(habits);
    }

    /// The plan's cost bucket: capacity and restore rate in points per second.
    pub fn set_plan(&self, capacity: f64, restore_per_s: f64) {
        self.market.shop().rate = Some(Bucket::new(capacity, restore_per_s));
    }

    /// The REST Admin API's bucket: its size in requests and its leak per second.
    pub fn set_rest_plan(&self, size: f64, leak_per_s: f64) {
        self.lock().rest = Bucket::new(size, leak_per_s);
    }

    /// REST requests answered 429 so far (the bucket was full).
    pub fn rest_throttled(&self) -> u64 {
        self.lock().rest_throttled
    }

    /// Empties the cost bucket (as a burst of the app's other calls would).
    pub fn drain_bucket(&self) {
        if let Some(bucket) = self.market.shop().rate.as_mut() {
            bucket.take(0.0);
            bucket.available = 0.0;
        }
    }

    pub fn set_fault(&self, fault: Fault) {
        self.market.set_fault(fault);
    }

    /// The level the store shows for `sku`.
    pub fn level(&self, sku: &str) -> Option<i64> {
        self.market.level(sku)
    }

    /// Every SKU's level.
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

    /// Every `inventorySetQuantities` call so far.
    pub fn calls(&self) -> Vec<SetCall> {
        self.lock().calls.clone()
    }

    /// Every idempotency key of an `inventorySetQuantities` call so far.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys.clone()
    }

    /// The next `n` set calls are applied but their answers lost (a 502 instead).
    pub fn lose_replies(&self, n: u32) {
        self.lock().lose_replies = n;
    }

    /// The next `n` adjustments are applied but their answers lost (a 502 instead).
    pub fn lose_adjust_replies(&self, n: u32) {
        self.lock().lose_adjust_replies = n;
    }

    /// The SKU's inventory item is no longer stocked at the location: a set naming it
    /// is refused with `ITEM_NOT_STOCKED_AT_LOCATION`.
    pub fn unstock(&self, sku: &str) {
        let mut shop = self.market.shop();
        shop.listings.get_mut(sku).expect("a listed SKU").stocked = false;
    }

    /// The inventory item of `sku`.
    fn item(&self, sku: &str) -> u64 {
        let shop = self.market.shop();
        let listing = shop.listings.get(sku).expect("a listed SKU");
        listing.id.parse().expect("a numeric item id")
    }

    /// A merchant's edit in the admin: sets the level (and sends the inventory webhook
    /// when echoes are on, as Shopify does for any change).
    pub fn set_level(&self, sku: &str, available: i64) {
        let item = self.item(sku);
        self.market.set_level(sku, available);
        self.level_webhook(item);
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A customer orders `lines` (SKU, quantity): the levels drop and `orders/create` is
    /// sent (and the inventory webhooks, when echoes are on). Returns the order id.
    pub fn place_order(&self, lines: &[(&str, i64)]) -> u64 {
        let order_id = self.id();
        let lines: Vec<Line> = lines
            .iter()
            .map(|(sku, quantity)| Line {
                id: self.id(),
                sku: sku.to_string(),
                item: self.item(sku),
                quantity: *quantity,
                removed: 0,
                unshippable: 0,
            })
            .collect();
        for line in &lines {
            self.market.shop().adjust(&line.sku, -line.quantity);
        }
        let items: Vec<u64> = lines.iter().map(|l| l.item).collect();
        let order = Order {
            id: order_id,
            lines,
            created_at: now_text(),
            cancelled_at: None,
            fulfillments: Vec::new(),
            refunds: Vec::new(),
        };
        let body = self.order_json(order_id, &order);
        self.lock().orders.insert(order_id, order);
        self.webhook("orders/create", body);
        for item in items {
            self.level_webhook(item);
        }
        order_id
    }

    /// The REST Order resource as webhooks and `orders.json` carry it (shopify.dev,
    /// https://shopify.dev/docs/api/admin-rest/2024-10/resources/order): per line
    /// `quantity` (as ordered), `current_quantity` (less removed units),
    /// `fulfillable_quantity` and `fulfillment_status`; the order's `fulfillments` and
    /// `refunds`.
    fn order_json(&self, id: u64, order: &Order) -> Value {
        let line_status = |l: &Line| {
            let fulfilled = order.fulfilled(l.id);
            match (fulfilled, l.left(fulfilled)) {
                (0, _) => Value::Null,
                (_, 0) => Value::from("fulfilled"),
                _ => Value::from("partial"),
            }
        };
        let open = order.cancelled_at.is_none();
        let all_fulfilled = order
            .lines
            .iter()
            .all(|l| l.left(order.fulfilled(l.id)) == 0);
        json!({
            "id": id,
            "admin_graphql_api_id": format!("gid://shopify/Order/{id}"),
            "created_at": order.created_at,
            "updated_at": now_text(),
            "cancelled_at": order.cancelled_at,
            "closed_at": Value::Null,
            "financial_status": "paid",
            "fulfillment_status": if all_fulfilled { Value::from("fulfilled") } else if order.fulfillments.is_empty() { Value::Null } else { Value::from("partial") },
            "line_items": order.lines.iter().map(|l| json!({
                "id": l.id, "variant_id": l.item + 10_000, "product_id": l.item + 20_000,
                "sku": l.sku, "quantity": l.quantity,
                "current_quantity": l.quantity - l.removed,
                "fulfillable_quantity": if open { l.left(order.fulfilled(l.id)) } else { 0 },
                "fulfillment_status": line_status(l),
            })).collect::<Vec<_>>(),
            "fulfillments": order.fulfillments.iter().map(|(fid, lines)| json!({
                "id": fid, "order_id": id, "status": "success",
                "line_items": lines.iter().map(|(line, n)| json!({"id": line, "quantity": n})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "refunds": order.refunds,
        })
    }

    /// Applies `change` to the order and sends `topic` with the order after it, then any
    /// `refunds/create` the change made and the inventory webhooks of `items`.
    fn change_order(
        &self,
        order_id: u64,
        topic: &str,
        change: impl FnOnce(&Self, &mut Order, &mut Shop) -> Option<Value>,
    ) {
        let (body, refund, items) = {
            // The store's lock first, then the simulator's own: the order the API's
            // handler takes them in (it logs a write under the store's lock), so neither
            // waits on the other for ever.
            let mut shop = self.market.shop();
            let mut s = self.lock();
            let order = s.orders.get_mut(&order_id).expect("a placed order");
            let refund = change(self, order, &mut shop);
            if let Some(refund) = &refund {
                order.refunds.push(refund.clone());
            }
            let body = self.order_json(order_id, order);
            let items: Vec<u64> = order.lines.iter().map(|l| l.item).collect();
            (body, refund, items)
        };
        if let Some(refund) = refund {
            self.webhook("refunds/create", refund);
        }
        self.webhook(topic, body);
        for item in items {
            self.level_webhook(item);
        }
    }

    /// The merchant cancels the order with restock: the units not shipped come back, and
    /// Shopify sends `refunds/create` (`restock_type: cancel`) and `orders/cancelled`.
    pub fn cancel_order(&self, order_id: u64) {
        self.change_order(order_id, "orders/cancelled", |sim, order, levels| {
            let lines: Vec<(usize, i64)> = order
                .lines
                .iter()
                .enumerate()
                .map(|(i, l)| (i, l.left(order.fulfilled(l.id))))
                .filter(|(_, n)| *n > 0)
                .collect();
            order.cancelled_at = Some(now_text());
            sim.refund(order, &lines, "cancel", levels)
        });
    }

    /// The order ships in full: one fulfillment of every unit left, `orders/fulfilled`
    /// (the levels do not change: Shopify took the units off `available` at the order).
    pub fn fulfill_order(&self, order_id: u64) {
        self.change_order(order_id, "orders/fulfilled", |sim, order, _| {
            let lines: Vec<(u64, i64)> = order
                .lines
                .iter()
                .map(|l| (l.id, l.left(order.fulfilled(l.id))))
                .filter(|(_, n)| *n > 0)
                .collect();
            order.fulfillments.push((sim.id(), lines));
            None
        });
    }

    /// `units` of line `line` ship in a fulfillment of their own (partial fulfilment):
    /// `orders/partially_fulfilled`, or `orders/fulfilled` when nothing is left.
    pub fn fulfill_units(&self, order_id: u64, line: usize, units: i64) {
        let done =
            {
                let s = self.lock();
                let order = &s.orders[&order_id];
                order.lines.iter().enumerate().all(|(i, l)| {
                    l.left(order.fulfilled(l.id)) == if i == line { units } else { 0 }
                })
            };
        let topic = if done {
            "orders/fulfilled"
        } else {
            "orders/partially_fulfilled"
        };
        self.change_order(order_id, topic, |sim, order, _| {
            let id = order.lines[line].id;
            order.fulfillments.push((sim.id(), vec![(id, units)]));
            None
        });
    }

    /// The merchant edits the order, removing `units` of line `line` (restocked, as the
    /// admin offers by default): Shopify sends `orders/edited` with the delta and
    /// `orders/updated` with `current_quantity` lowered.
    pub fn edit_remove(&self, order_id: u64, line: usize, units: i64) {
        let (edit, sku) = {
            let mut s = self.lock();
            let order = s.orders.get_mut(&order_id).expect("a placed order");
            let l = &mut order.lines[line];
            l.removed += units;
            l.unshippable += units;
            let edit = json!({"order_edit": {"id": self.id(), "order_id": order_id,
                "created_at": now_text(), "committed_at": now_text(), "notify_customer": false,
                "line_items": {"additions": [], "removals": [{"id": l.id, "delta": units}]}}});
            (edit, l.sku.clone())
        };
        self.market.shop().adjust(&sku, units);
        self.webhook("orders/edited", edit);
        self.change_order(order_id, "orders/updated", |_, _, _| None);
    }

    /// A refund of `units` of line `line` with `restock_type` (`cancel` for units not
    /// shipped, `return` for shipped ones, `no_restock`): `refunds/create`, then
    /// `orders/updated` with the refund in `refunds` and `current_quantity` lowered.
    pub fn refund_units(&self, order_id: u64, line: usize, units: i64, restock_type: &str) {
        self.change_order(order_id, "orders/updated", |sim, order, levels| {
            sim.refund(order, &[(line, units)], restock_type, levels)
        });
    }

    /// A customer returns `quantity` of the order's first line, restocked.
    pub fn return_line(&self, order_id: u64, quantity: i64) {
        self.refund_units(order_id, 0, quantity, "return");
    }

    /// A refund of `(line index, units)` with `restock`: the lines' removed units grow
    /// and the levels rise for a restock (shopify.dev REST Refund, `restock_type`:
    /// https://shopify.dev/docs/api/admin-rest/latest/resources/refund).
    fn refund(
        &self,
        order: &mut Order,
        lines: &[(usize, i64)],
        restock: &str,
        shop: &mut Shop,
    ) -> Option<Value> {
        if lines.is_empty() {
            return None;
        }
        let refund_id = self.id();
        let mut items = Vec::new();
        for (i, units) in lines {
            let l = &mut order.lines[*i];
            l.removed += units;
            if restock != "return" {
                // Refunded before shipping (the simulator's `no_restock` is of units not
                // shipped, too): they will not ship.
                l.unshippable += units;
            }
            if restock != "no_restock" {
                shop.adjust(&l.sku, *units);
            }
            items.push(json!({
                "id": self.id(), "line_item_id": l.id, "quantity": units,
                "restock_type": restock, "location_id": LOCATION,
                "line_item": {"id": l.id, "variant_id": l.item + 10_000, "sku": l.sku, "quantity": l.quantity},
            }));
        }
        Some(
            json!({"id": refund_id, "order_id": order.id, "created_at": now_text(), "refund_line_items": items}),
        )
    }

    fn level_webhook(&self, item: u64) {
        if !self.sender.habits().echo {
            return;
        }
        send_level_webhook(
            &self.market.shop,
            &self.sender,
            &self.secret,
            self.market.server.runtime.handle(),
            item,
        );
    }

    fn webhook(&self, topic: &str, body: Value) {
        if topic.starts_with("orders/") {
            if let Some(id) = body["id"].as_u64() {
                self.lock()
                    .order_states
                    .insert(id, (now_us(), body.clone()));
            }
        }
        send_webhook(
            &self.sender,
            &self.secret,
            self.market.server.runtime.handle(),
            topic,
            body,
        );
    }

    /// Signs `body` as the store signs webhooks (for tests that deliver by hand).
    pub fn sign(&self, body: &[u8]) -> String {
        signing::body_signature(&self.secret, body)
    }
}

static EVENT_IDS: AtomicU64 = AtomicU64::new(1);

/// Sends one signed webhook with Shopify's headers; a duplicate repeats the event id.
fn send_webhook(
    sender: &Arc<Sender>,
    secret: &str,
    runtime: &tokio::runtime::Handle,
    topic: &str,
    body: Value,
) {
    let event_id = format!("evt-{}", EVENT_IDS.fetch_add(1, Ordering::Relaxed));
    let bytes = serde_json::to_vec(&body).expect("json serializes");
    let signature = signing::body_signature(secret, &bytes);
    let triggered = now_text();
    let topic_name = topic.to_string();
    sender.send(
        runtime,
        topic,
        Arc::new(move || Delivery {
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-shopify-topic".into(), topic_name.clone()),
                ("x-shopify-hmac-sha256".into(), signature.clone()),
                (
                    "x-shopify-shop-domain".into(),
                    "lockstep-sim.myshopify.com".into(),
                ),
                ("x-shopify-api-version".into(), "2026-04".into()),
                (
                    "x-shopify-webhook-id".into(),
                    format!("wh-{}", EVENT_IDS.fetch_add(1, Ordering::Relaxed)),
                ),
                ("x-shopify-event-id".into(), event_id.clone()),
                ("x-shopify-triggered-at".into(), triggered.clone()),
            ],
            body: bytes.clone(),
        }),
    );
}

fn send_level_webhook(
    shop: &Arc<Mutex<Shop>>,
    sender: &Arc<Sender>,
    secret: &str,
    runtime: &tokio::runtime::Handle,
    item: u64,
) {
    let available = level_of(&lock(shop), item);
    let body = json!({
        "inventory_item_id": item, "location_id": LOCATION, "available": available,
        "updated_at": now_text(),
        "admin_graphql_api_id": format!("gid://shopify/InventoryLevel/{LOCATION}?inventory_item_id={item}"),
    });
    send_webhook(sender, secret, runtime, "inventory_levels/update", body);
}

/// `GET /admin/api/{version}/orders.json`: `updated_at_min` and `updated_at_max` (ISO 8601,
/// "at or after", "at or before"), `status=any`, `limit` (at most 250), paged by the
/// `Link` header's `page_info` (a request with `page_info` may carry only `limit`; the
/// first request's filters ride in it) (shopify.dev, REST Order resource; "Make paginated
/// requests to the REST Admin API"). The list's order is not documented: newest first here.
/// `unreadable`: SKUs whose orders are listed without their id (`Shop::unreadable_skus`).
fn list_orders(s: &Extra, req: &Req, unreadable: &std::collections::BTreeSet<String>) -> Reply {
    let param = |name: &str| req.param(name);
    let limit: usize = param("limit").and_then(|l| l.parse().ok()).unwrap_or(50);
    if !(1..=250).contains(&limit) {
        return reply(400, &json!({"errors": {"limit": "must be 1 to 250"}}), &[]);
    }
    // `page_info` is a cursor, not an offset: the next page starts after the last order
    // given (ids descending), so an order that leaves the window meanwhile moves no other
    // past it.
    let (since, until, after) = match param("page_info") {
        Some(info) => {
            let filters = ["updated_at_min", "updated_at_max", "status"];
            if filters.iter().any(|f| param(f).is_some()) {
                return reply(
                    400,
                    &json!({"errors": {"page_info": "page_info cannot be used with other filters"}}),
                    &[],
                );
            }
            let parsed: Option<Vec<i64>> = info.split('.').map(|p| p.parse().ok()).collect();
            let Some([since, until, after]) =
                parsed.as_deref().and_then(|p| <[i64; 3]>::try_from(p).ok())
            else {
                return reply(
                    400,
                    &json!({"errors": {"page_info": "Invalid value."}}),
                    &[],
                );
            };
            (since, until, after.max(0) as u64)
        }
        None => {
            let time = |name: &str| param(name).and_then(|t| crate::market::parse_rfc3339(&t));
            let since = time("updated_at_min").unwrap_or(0);
            let until = time("updated_at_max").unwrap_or(i64::MAX);
            (since, until, u64::MAX)
        }
    };
    let mut listed: Vec<(u64, &Value)> = s
        .order_states
        .values()
        .filter(|(at, _)| (since..=until).contains(at))
        .filter_map(|(_, v)| Some((v["id"].as_u64()?, v)))
        .filter(|(id, _)| *id < after)
        .collect();
    listed.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    let page: Vec<Value> = listed
        .iter()
        .take(limit)
        .map(|(_, v)| {
            let mut order = (*v).clone();
            let skus = order["line_items"].as_array().into_iter().flatten();
            if skus
                .filter_map(|l| l["sku"].as_str())
                .any(|sku| unreadable.contains(sku))
            {
                order["id"] = Value::Null;
            }
            order
        })
        .collect();
    let mut headers = Vec::new();
    if listed.len() > limit {
        let last = listed[limit - 1].0;
        let host = req.header("host").unwrap_or("127.0.0.1");
        headers.push((
            "link",
            format!(
                "<http://{host}{}?limit={limit}&page_info={since}.{until}.{last}>; rel=\"next\"",
                req.path
            ),
        ));
    }
    reply(200, &json!({"orders": page}), &headers)
}

/// The cost report of every answer, from the market's rate bucket (the plan's).
fn throttle_status(shop: &Shop, cost: f64) -> Value {
    let bucket = shop.rate.as_ref().expect("a store on a plan");
    json!({"cost": {
        "requestedQueryCost": cost,
        "actualQueryCost": cost,
        "throttleStatus": {
            "maximumAvailable": bucket.capacity,
            "currentlyAvailable": bucket.available.floor(),
            "restoreRate": bucket.rate,
        },
    }})
}

/// The store's HTTP API. Faults wait here, after the auth check (a wrong token is
/// answered at once even by a hanging store).
async fn handle(
    shop: Arc<Mutex<Shop>>,
    sender: Arc<Sender>,
    extra: Arc<Mutex<Extra>>,
    secret: String,
    req: Req,
) -> Reply {
    let x = || extra.lock().unwrap_or_else(|e| e.into_inner());
    let path = req.path.clone();
    if req.method == hyper::Method::GET && path.ends_with("/orders.json") {
        let token = req.header("x-shopify-access-token").unwrap_or("");
        if token != x().token {
            return reply(
                401,
                &json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}),
                &[],
            );
        }
        // Taken before the simulator's own lock, never inside it.
        let unreadable = shop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unreadable_skus
            .clone();
        let mut extra = x();
        // One request fills the bucket by one; a full bucket answers 429 with the
        // seconds until one has leaked, and every answer says how full it is
        // (`X-Shopify-Shop-Api-Call-Limit: used/size`; shopify.dev, REST Admin API rate
        // limits).
        if !extra.rest.take(1.0) {
            extra.rest_throttled += 1;
            // Rounded up to the tenth: "0.0" while the bucket is still full would send a
            // client back into the same 429.
            let wait = ((1.0 - extra.rest.available) / extra.rest.rate).max(0.0);
            let wait = (wait * 10.0).ceil() / 10.0;
            return reply(
                429,
                &json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}),
                &[("retry-after", format!("{wait:.1}"))],
            );
        }
        let used = (extra.rest.capacity - extra.rest.available).ceil();
        let mut answer = list_orders(&extra, &req, &unreadable);
        answer.headers_mut().insert(
            "x-shopify-shop-api-call-limit",
            format!("{used}/{}", extra.rest.capacity)
                .parse()
                .expect("a valid header value"),
        );
        return answer;
    }
    let version = path
        .strip_prefix("/admin/api/")
        .and_then(|rest| rest.strip_suffix("/graphql.json"))
        .map(str::to_string);
    let Some(version) = version.filter(|_| req.method == hyper::Method::POST) else {
        return reply(404, &json!({"errors": "Not Found"}), &[]);
    };
    let token = req.header("x-shopify-access-token").unwrap_or("");
    let request: Value = req.json().unwrap_or(Value::Null);
    let query = request["query"].as_str().unwrap_or("").to_string();
    let variables = &request["variables"];
    let is_adjust = query.contains("inventoryAdjustQuantities");
    // A write: a set, or an adjustment (logged, charged and keyed alike).
    let is_set = is_adjust || query.contains("inventorySetQuantities");
    let items = set_items(&lock(&shop), variables);
    let log = |outcome: &str| {
        if is_set {
            x().calls.push(SetCall {
                at: Instant::now(),
                items: items.clone(),
                outcome: outcome.to_string(),
            });
        }
    };
    if token != x().token {
        log("unauthorized");
        return reply(
            401,
            &json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}),
            &[],
        );
    }
    let fault = lock(&shop).fault.clone();
    match fault {
        Fault::Status(code) => {
            log(&code.to_string());
            return reply(code, &json!({"errors": "Internal Server Error"}), &[]);
        }
        Fault::Throttle { retry_after_s } => {
            log("429");
            return reply(
                429,
                &json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}),
                &[("retry-after", retry_after_s.to_string())],
            );
        }
        Fault::Hang(delay) => {
            log("504");
            tokio::time::sleep(delay).await;
            return reply(504, &json!({"errors": "timeout"}), &[]);
        }
        Fault::Slow(delay) => tokio::time::sleep(delay).await,
        Fault::None | Fault::SlowAnswer(_) => {}
    }
    let is_variants = query.contains("productVariants(");
    let cost = if is_set {
        MUTATION_COST
    } else if is_variants {
        connection_cost(&query, variables["first"].as_u64().unwrap_or(0) as usize)
    } else {
        1.0 + variables["ids"].as_array().map_or(0, Vec::len) as f64
    };
    if cost > MAX_QUERY_COST {
        return reply(
            200,
            &json!({"errors": [{"message": format!("Query cost is {cost}, which exceeds the single query max cost limit ({MAX_QUERY_COST})."), "extensions": {"code": "MAX_COST_EXCEEDED", "cost": cost, "maxCost": MAX_QUERY_COST}}]}),
            &[],
        );
    }
    // From 2026-04 the `@idempotent` directive is mandatory on inventory mutations
    // (shopify.dev changelog "Making idempotency mandatory for inventory adjustments and
    // refund mutations"), and `compareQuantity` / `ignoreCompareQuantity` are gone
    // ("making-changefromquantity-field-required"): both refused here as Shopify does.
    if is_set && version.as_str() >= "2026-04" {
        let refused = if !query.contains("@idempotent") {
            Some("The @idempotent directive is required for this mutation.".to_string())
        } else {
            let input = &variables["input"];
            let old_field = input
                .get("ignoreCompareQuantity")
                .map(|_| "ignoreCompareQuantity".to_string())
                .or_else(|| {
                    input["quantities"].as_array().and_then(|qs| {
                        qs.iter()
                            .position(|q| q.get("compareQuantity").is_some())
                            .map(|i| format!("quantities.{i}.compareQuantity"))
                    })
                });
            old_field.map(|f| format!("Variable $input of type InventorySetQuantitiesInput! was provided invalid value for {f} (Field is not defined on InventorySetQuantitiesInput)"))
                .or_else(|| {
                    // An adjustment's change must say `changeFromQuantity`, if only `null`.
                    let changes = input["changes"].as_array().filter(|_| is_adjust)?;
                    let i = changes.iter().position(|c| c.get("changeFromQuantity").is_none())?;
                    Some(format!("Variable $input of type InventoryAdjustQuantitiesInput! was provided invalid value for changes.{i}.changeFromQuantity (Expected value to not be null)"))
                })
        };
        if let Some(message) = refused {
            log("invalid");
            return reply(
                200,
                &json!({"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]}),
                &[],
            );
        }
    }
    let key = variables["key"].as_str().map(str::to_string);
    if let (true, Some(key)) = (is_set, &key) {
        x().keys.push(key.clone());
    }
    if let Some(first) = key.as_ref().and_then(|k| x().idempotent.get(k).cloned()) {
        log("replayed");
        return reply(200, &first, &[]);
    }
    {
        let mut s = lock(&shop);
        if !s.spend(cost) {
            let extensions = throttle_status(&s, cost);
            drop(s);
            log("throttled");
            return reply(
                200,
                &json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}], "extensions": extensions}),
                &[],
            );
        }
    }
    let data = if is_set {
        let (data, changed) = {
            let mut s = lock(&shop);
            let (data, outcome, changed) = if is_adjust {
                adjust_quantities(&mut s, variables)
            } else {
                set_quantities(&mut s, &version, variables)
            };
            // Logged before the store's lock is let go: whoever reads the new level
            // (a test's `wait_for`) finds the call that wrote it among `calls()`.
            log(outcome);
            (data, changed)
        };
        if sender.habits().echo {
            for item in changed {
                send_level_webhook(
                    &shop,
                    &sender,
                    &secret,
                    &tokio::runtime::Handle::current(),
                    item,
                );
            }
        }
        data
    } else if is_variants {
        let answer = product_variants(&lock(&shop), &x().more, variables);
        // Charged what was asked for, refunded to what the nodes returned cost.
        if let Ok(data) = &answer {
            let returned = data["productVariants"]["nodes"]
                .as_array()
                .map_or(0, Vec::len);
            let actual = connection_cost(&query, returned);
            if let Some(bucket) = lock(&shop).rate.as_mut() {
                bucket.available = (bucket.available + cost - actual).min(bucket.capacity);
            }
        }
        answer
    } else if query.contains("nodes(") {
        read_nodes(&lock(&shop), variables)
    } else {
        return reply(
            200,
            &json!({"errors": [{"message": "lockstep-sim knows only inventorySetQuantities and nodes"}]}),
            &[],
        );
    };
    let extensions = throttle_status(&lock(&shop), cost);
    let answer = match data {
        Ok(data) => json!({"data": data, "extensions": extensions}),
        Err(message) => json!({"errors": [{"message": message}], "extensions": extensions}),
    };
    {
        let mut s = x();
        if let Some(key) = key {
            s.idempotent.insert(key, answer.clone());
        }
        if is_adjust && s.lose_adjust_replies > 0 {
            s.lose_adjust_replies -= 1;
            return reply(502, &json!({"errors": "Bad Gateway"}), &[]);
        }
        if is_set && s.lose_replies > 0 {
            s.lose_replies -= 1;
            return reply(502, &json!({"errors": "Bad Gateway"}), &[]);
        }
    }
    if let Fault::SlowAnswer(delay) = fault {
        tokio::time::sleep(delay).await;
    }
    reply(200, &answer, &[])
}

/// The items of an `inventorySetQuantities` call (or an adjustment's changes, with
/// their deltas), for the call log.
fn set_items(s: &Shop, variables: &Value) -> Vec<(String, i64, Option<i64>)> {
    let input = &variables["input"];
    let (list, amount) = match input.get("changes") {
        Some(changes) => (changes, "delta"),
        None => (&input["quantities"], "quantity"),
    };
    list.as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|q| {
            let item = gid_number(&q["inventoryItemId"]).unwrap_or(0);
            let compare = q
                .get("changeFromQuantity")
                .or_else(|| q.get("compareQuantity"))
                .and_then(Value::as_i64);
            (sku_of(s, item), q[amount].as_i64().unwrap_or(0), compare)
        })
        .collect()
}

/// Applies an `inventoryAdjustQuantities` call: each change's `delta` added to the
/// level, all or nothing, a `changeFromQuantity` value compared first
/// (https://shopify.dev/docs/api/admin-graphql/2026-04/mutations/inventoryAdjustQuantities).
/// Returns the data with each change's `quantityAfterChange`, the outcome for the log,
/// and the items that changed.
fn adjust_quantities(
    s: &mut Shop,
    variables: &Value,
) -> (Result<Value, String>, &'static str, Vec<u64>) {
    let input = &variables["input"];
    let (Some(changes), Some(_)) = (input["changes"].as_array(), input["reason"].as_str()) else {
        return (
            Err("input.changes and input.reason are required".into()),
            "invalid",
            Vec::new(),
        );
    };
    let mut errors = Vec::new();
    let mut writes = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        let item = gid_number(&c["inventoryItemId"]);
        let Some(delta) = c["delta"].as_i64() else {
            return (
                Err(format!("changes.{i}.delta is required")),
                "invalid",
                Vec::new(),
            );
        };
        let current = match (item, gid_number(&c["locationId"])) {
            (Some(item), Some(LOCATION)) => level_of(s, item),
            _ => None,
        };
        let Some(current) = current else {
            errors.push(json!({"field": ["input", "changes", i.to_string(), "locationId"], "message": "The specified inventory item is not stocked at the location.", "code": "ITEM_NOT_STOCKED_AT_LOCATION"}));
            continue;
        };
        if c["changeFromQuantity"]
            .as_i64()
            .is_some_and(|from| from != current)
        {
            errors.push(json!({"field": ["input", "changes", i.to_string(), "changeFromQuantity"], "message": "The specified compare quantity does not match the current quantity.", "code": "CHANGE_FROM_QUANTITY_STALE"}));
            continue;
        }
        writes.push((item.expect("checked"), current + delta));
    }
    if !errors.is_empty() {
        let data = json!({"inventoryAdjustQuantities": {"inventoryAdjustmentGroup": null, "userErrors": errors}});
        return (Ok(data), "invalid", Vec::new());
    }
    let now = Instant::now();
    let mut changed = Vec::new();
    let mut done = Vec::new();
    for (item, after) in writes {
        if s.write_at(&sku_of(s, item), after, now) != Some(after) {
            changed.push(item);
        }
        done.push(json!({"name": "available", "quantityAfterChange": after,
            "item": {"id": format!("gid://shopify/InventoryItem/{item}")}}));
    }
    let data = json!({"inventoryAdjustQuantities": {"inventoryAdjustmentGroup": {"changes": done}, "userErrors": []}});
    (Ok(data), "adjusted", changed)
}

/// Applies a compare-and-set call: all or nothing. Returns the data (or a top-level
/// error), the outcome for the log, and the items that changed.
fn set_quantities(
    s: &mut Shop,
    version: &str,
    variables: &Value,
) -> (Result<Value, String>, &'static str, Vec<u64>) {
    let input = &variables["input"];
    let change_from = version >= "2026-04";
    let ignore = input["ignoreCompareQuantity"].as_bool().unwrap_or(false);
    let Some(quantities) = input["quantities"].as_array() else {
        return (
            Err("input.quantities is required".into()),
            "invalid",
            Vec::new(),
        );
    };
    let mut errors = Vec::new();
    let mut writes = Vec::new();
    for (i, q) in quantities.iter().enumerate() {
        let item = gid_number(&q["inventoryItemId"]);
        let location = gid_number(&q["locationId"]);
        let Some(quantity) = q["quantity"].as_i64() else {
            return (
                Err(format!("quantities.{i}.quantity is required")),
                "invalid",
                Vec::new(),
            );
        };
        let field = if change_from {
            "changeFromQuantity"
        } else {
            "compareQuantity"
        };
        let compare = match q.get(field) {
            _ if !change_from && ignore => None,
            Some(Value::Null) if change_from => None,
            Some(v) if v.is_i64() => v.as_i64(),
            None if change_from => {
                return (Err(format!("Variable $input of type InventorySetQuantitiesInput! was provided invalid value for quantities.{i}.changeFromQuantity (Expected value to not be null)")), "invalid", Vec::new());
            }
            _ => {
                return (Err(format!("quantities.{i}.compareQuantity is required unless ignoreCompareQuantity is true")), "invalid", Vec::new());
            }
        };
        let current = match (item, location) {
            (Some(item), Some(LOCATION)) => level_of(s, item),
            _ => None,
        };
        let Some(current) = current else {
            errors.push(json!({"field": ["input", "quantities", i.to_string(), "locationId"], "message": "The specified inventory item is not stocked at the location.", "code": "ITEM_NOT_STOCKED_AT_LOCATION"}));
            continue;
        };
        if compare.is_some_and(|c| c != current) {
            let code = if change_from {
                "CHANGE_FROM_QUANTITY_STALE"
            } else {
                "COMPARE_QUANTITY_STALE"
            };
            errors.push(json!({"field": ["input", "quantities", i.to_string(), field], "message": "The specified compare quantity does not match the current quantity.", "code": code}));
            continue;
        }
        writes.push((item.expect("checked"), quantity));
    }
    if !errors.is_empty() {
        let stale = errors
            .iter()
            .all(|e| e["code"].as_str().is_some_and(|c| c.ends_with("_STALE")));
        let data = json!({"inventorySetQuantities": {"inventoryAdjustmentGroup": null, "userErrors": errors}});
        return (
            Ok(data),
            if stale { "stale" } else { "invalid" },
            Vec::new(),
        );
    }
    let now = Instant::now();
    let mut changed = Vec::new();
    for (item, quantity) in writes {
        if s.write_at(&sku_of(s, item), quantity, now) != Some(quantity) {
            changed.push(item);
        }
    }
    let data = json!({"inventorySetQuantities": {"inventoryAdjustmentGroup": {"id": format!("gid://shopify/InventoryAdjustmentGroup/{}", EVENT_IDS.fetch_add(1, Ordering::Relaxed))}, "userErrors": []}});
    (Ok(data), "applied", changed)
}

/// The most a single query may cost, on every plan
/// (https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits).
const MAX_QUERY_COST: f64 = 1_000.0;

/// What a connection of `nodes` nodes costs: one point per object each node selects
/// (Shopify's rule: an object costs 1, a connection its size times its node's cost),
/// counted as the `{` of its `nodes { ... }` selection, plus the connection and its
/// `pageInfo`.
fn connection_cost(query: &str, nodes: usize) -> f64 {
    let per_node = query
        .find("nodes {")
        .map(|at| {
            let mut depth = 0;
            let mut objects = 0;
            for c in query[at..].chars() {
                match c {
                    '{' => {
                        depth += 1;
                        objects += 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            objects
        })
        .unwrap_or(1);
    2.0 + (nodes * per_node) as f64
}

/// `productVariants(first:, after:)`: the listings (inventory item = variant id) and the
/// variants added beside them, by id. `first` 1 to 250; the cursor is opaque to the
/// client (here the last id returned, base64-free but checked).
fn product_variants(s: &Shop, more: &[MoreVariant], variables: &Value) -> Result<Value, String> {
    let first = variables["first"].as_u64().unwrap_or(0) as usize;
    if !(1..=250).contains(&first) {
        return Err(format!(
            "Invalid value for argument 'first': {first}; it must be between 1 and 250"
        ));
    }
    let after: u64 = match variables["after"].as_str() {
        None => 0,
        Some(cursor) => cursor
            .strip_prefix("v1:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("Invalid cursor for current pagination sort: {cursor}"))?,
    };
    let mut all: Vec<(u64, Option<String>, bool)> = s
        .listings
        .values()
        .filter_map(|l| Some((l.id.parse().ok()?, Some(l.sku.clone()), true)))
        .chain(more.iter().map(|m| (m.item, m.sku.clone(), m.tracked)))
        .filter(|(id, _, _)| *id > after)
        .collect();
    all.sort_by_key(|(id, _, _)| *id);
    let has_next = all.len() > first;
    all.truncate(first);
    let nodes: Vec<Value> = all
        .iter()
        .map(|(id, sku, tracked)| {
            json!({
                "id": format!("gid://shopify/ProductVariant/{id}"),
                "sku": sku,
                "inventoryItem": {"id": format!("gid://shopify/InventoryItem/{id}"), "tracked": tracked},
            })
        })
        .collect();
    let end = all.last().map(|(id, _, _)| format!("v1:{id}"));
    Ok(json!({"productVariants": {
        "nodes": nodes,
        "pageInfo": {"hasNextPage": has_next, "endCursor": end},
    }}))
}

/// The `nodes(ids:)` level query.
/// Most items of an input array (`nodes(ids:)`'s ids).
const NODES_IDS_MAX: usize = 250;

fn read_nodes(s: &Shop, variables: &Value) -> Result<Value, String> {
    let location = gid_number(&variables["locationId"]);
    let ids = variables["ids"].as_array().ok_or("ids is required")?;
    // "Input arguments that accept an array have a maximum size of 250 for all APIs.
    // Requests return an error if an input array exceeds 250 items."
    // (https://shopify.dev/docs/api/usage/limits)
    if ids.len() > NODES_IDS_MAX {
        return Err(format!(
            "The input array size of {} is greater than the maximum allowed of {NODES_IDS_MAX}.",
            ids.len()
        ));
    }
    let nodes: Vec<Value> = ids
        .iter()
        .map(|id| {
            let Some((item, shown)) = gid_number(id).and_then(|i| Some((i, level_of(s, i)?)))
            else {
                return Value::Null;
            };
            let level = (location == Some(LOCATION))
                .then(|| json!({"quantities": [{"name": "available", "quantity": shown}]}));
            json!({"id": format!("gid://shopify/InventoryItem/{item}"), "inventoryLevel": level})
        })
        .collect();
    Ok(json!({ "nodes": nodes }))
}

impl crate::sim::Simulator for ShopifySim {
    fn levels(&self) -> std::collections::HashMap<String, i64> {
        ShopifySim::levels(self)
    }

    fn arrivals(&self, sku: &str) -> Vec<crate::sim::Arrival> {
        ShopifySim::arrivals(self, sku)
    }

    fn place(&self, lines: &[(&str, i64)]) -> crate::sim::Cancel<'_> {
        let id = self.place_order(lines);
        Box::new(move || self.cancel_order(id))
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

    const SET: &str = "mutation set($input: InventorySetQuantitiesInput!, $key: String!) @idempotent(key: $key) { inventorySetQuantities(input: $input) { userErrors { code } } }";
    const NODES: &str = "query levels($ids: [ID!]!, $locationId: ID!) { nodes(ids: $ids) { id } }";

    fn call(store: &ShopifySim, query: &str, variables: Value) -> Value {
        Client::new()
            .post(format!("{}/admin/api/2026-04/graphql.json", store.url()))
            .header("x-shopify-access-token", "token")
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn set(store: &ShopifySim, key: &str, quantity: i64, from: i64) -> Value {
        let input = json!({"name": "available", "reason": "correction", "quantities": [{
            "inventoryItemId": "gid://shopify/InventoryItem/101",
            "locationId": "gid://shopify/Location/1",
            "quantity": quantity, "changeFromQuantity": from}]});
        call(store, SET, json!({"input": input, "key": key}))
    }

    fn shown(store: &ShopifySim) -> Value {
        let ids = json!({"ids": ["gid://shopify/InventoryItem/101"], "locationId": "gid://shopify/Location/1"});
        call(store, NODES, ids)["data"]["nodes"][0].clone()
    }

    #[test]
    fn a_set_compares_applies_and_is_read_back() {
        let store = ShopifySim::start("secret", "token", &[("S0", 101)]);
        let applied = set(&store, "k1", 5, 0);
        assert_eq!(
            applied["data"]["inventorySetQuantities"]["userErrors"],
            json!([])
        );
        assert_eq!(
            applied["extensions"]["cost"]["throttleStatus"]["maximumAvailable"],
            1000.0
        );
        assert_eq!(store.level("S0"), Some(5));
        assert_eq!(
            set(&store, "k1", 5, 0),
            applied,
            "a retried key answers the first result"
        );
        let stale = set(&store, "k2", 6, 0);
        assert_eq!(
            stale["data"]["inventorySetQuantities"]["userErrors"][0]["code"],
            "CHANGE_FROM_QUANTITY_STALE"
        );
        assert_eq!(
            shown(&store)["inventoryLevel"]["quantities"][0]["quantity"],
            5
        );
        let outcomes: Vec<String> = store.calls().into_iter().map(|c| c.outcome).collect();
        assert_eq!(outcomes, ["applied", "replayed", "stale"]);
        store.unstock("S0");
        assert_eq!((store.level("S0"), shown(&store)), (None, Value::Null));
        store.drain_bucket();
        let throttled = set(&store, "k3", 1, 5);
        assert_eq!(throttled["errors"][0]["extensions"]["code"], "THROTTLED");
    }

    #[test]
    fn orders_take_units_and_refunds_restock_them() {
        let store = ShopifySim::start("secret", "token", &[("S0", 101)]);
        store.set_level("S0", 10);
        let id = store.place_order(&[("S0", 4)]);
        assert_eq!(store.level("S0"), Some(6));
        store.refund_units(id, 0, 1, "cancel");
        store.edit_remove(id, 0, 1);
        assert_eq!(store.level("S0"), Some(8));
        store.cancel_order(id);
        assert_eq!(store.level("S0"), Some(10));
    }
}
