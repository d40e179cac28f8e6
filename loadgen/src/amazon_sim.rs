//! A simulated Amazon seller account, as lockstep's `amazon` kind meets it (CHANNELS.md §4).
//!
//! - Login with Amazon: `POST /auth/o2/token` (refresh-token grant; `invalid_grant` for
//!   wrong credentials) issues the `x-amz-access-token` every SP-API call needs (403
//!   `Unauthorized` otherwise).
//! - Listings: `PATCH /listings/2021-08-01/items/{sellerId}/{sku}` replacing
//!   `/attributes/fulfillment_availability` (5 requests/s, burst 5; 429 `QuotaExceeded`
//!   with `x-amzn-RateLimit-Limit`), answered `ACCEPTED`; `GET` the same path with
//!   `includedData=fulfillmentAvailability`.
//! - Feeds: `POST /feeds/2021-06-30/documents` (a pre-signed upload URL on this server),
//!   `PUT` the upload, `POST /feeds/2021-06-30/feeds` (`JSON_LISTINGS_FEED`, at most 5
//!   per 5 minutes, else 429); the feed's messages are applied after `feed_delay`, when
//!   `getFeed` says `DONE` and names a result document whose processing report lists an
//!   `ERROR` issue for each message not taken (an unknown SKU, a refused listing).
//! - Orders: `GET /orders/v0/orders?LastUpdatedAfter=&LastUpdatedBefore=` (inclusive; the
//!   end at least two minutes past, else 400; newest first; 100 per page, `NextToken`;
//!   0.0167 requests/s, burst 20, unless `set_orders_rate`) and
//!   `GET /orders/v0/orders/{id}/orderItems` (0.5 requests/s, burst 30, unless
//!   `set_order_items_rate`; every item on one page unless `set_order_items_page`, then
//!   `NextToken`). Past a bucket, 429 `QuotaExceeded` without `Retry-After`; every answer
//!   of the two names its bucket's rate in `x-amzn-RateLimit-Limit`. Each order says
//!   `FulfillmentChannel` (`AFN` for one Amazon fulfills, `place_fba_order`, else `MFN`;
//!   the notification's `Summary.FulfillmentType` the same), and `FulfillmentChannels=`
//!   (a comma-separated list) keeps only the orders fulfilled so.
//! - Notifications: `ORDER_CHANGE` goes to the seller's SQS queue only (`queue`, an
//!   `SqsSim`), as SP-API sends it: EventBridge carries the listing notifications alone
//!   (developer-docs.amazon.com/sp-api, "Set up notifications with Amazon EventBridge").
//!   The message body is the notification itself. The `lose` habit drops a notification
//!   and `duplicate` sends it twice (same `NotificationId`, another `MessageId`).
//!   `LISTINGS_ITEM_MFN_QUANTITY_CHANGE` (after a write, when echoes are on, and after a
//!   seller's edit) comes by the EventBridge API destination: the EventBridge envelope
//!   with the destination's shared header, retried 3 times.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::market::{self, gate, lock, now_us, rfc3339, Market, Order, Req, Shop, Stage};
use crate::sim::{reply, Bucket, Delivery, Reply, Sender};
use crate::sqs_sim::SqsSim;

pub const SELLER_ID: &str = "A2SIMSELLER";
pub const MARKETPLACE_ID: &str = "ATVPDKIKX0DER";
/// createFeed: submissions per window.
pub const FEEDS_PER_WINDOW: usize = 5;
const FEED_WINDOW: Duration = Duration::from_secs(300);

/// What only Amazon keeps.
struct Extra {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    token: String,
    auth: (String, String),
    patch_bucket: Bucket,
    /// patchListingsItem's applied rate, requests/s (5 unless set): every answer names it
    /// in `x-amzn-RateLimit-Limit`.
    patch_rate: f64,
    /// getOrderItems' bucket.
    items_bucket: Bucket,
    /// getOrders' bucket.
    orders_bucket: Bucket,
    /// Items per page of getOrderItems (`None`: all of them).
    items_page: Option<usize>,
    /// getOrders calls answered 429.
    orders_throttled: usize,
    feeds: VecDeque<Instant>,
    documents: HashMap<String, Vec<u8>>,
    feed_delay: Duration,
    /// Feeds created (messages each).
    feed_sizes: Vec<usize>,
    /// Each feed's processing: whether it is done (its levels all written, so a client
    /// told DONE reads them), and then its report (`process_feed`).
    feed_results: HashMap<String, (bool, Value)>,
    /// Seller SKUs whose writes Amazon refuses (a listing it will not take).
    refused: std::collections::HashSet<String>,
    /// Feeds still to be refused whole (`refuse_feeds`).
    feeds_to_refuse: usize,
    /// Feeds still to be dropped unsaid (`drop_feeds_unsaid`).
    feeds_to_drop: usize,
    /// Seller SKU → its `fulfillment_availability` entry beyond the quantity (the
    /// seller's handling time and restock date), which a `replace` patch drops and a
    /// `merge` keeps.
    availability: HashMap<String, Value>,
    /// Listings beside the market's, fulfilled by Amazon only (`AmazonSim::add_fba_listing`).
    fba: Vec<String>,
    /// Orders Amazon fulfills from its own warehouses (`place_fba_order`): `AFN` where
    /// the others are `MFN` (ordersV0 `Order.FulfillmentChannel`).
    afn_orders: std::collections::HashSet<u64>,
}

/// searchListingsItems: `marketplaceIds` required, `pageSize` 1 to 20 (default 10),
/// `pageToken` from the last answer's `pagination.nextToken` (absent on the last page),
/// `numberOfResults` the total, and no token past 1,000 listings
/// (https://developer-docs.amazon.com/sp-api/reference/searchlistingsitems).
fn search_listings(shop: &Arc<Mutex<Shop>>, x: &Extra, seller: &str, req: &Req) -> Reply {
    if seller != SELLER_ID || req.param("marketplaceIds").as_deref() != Some(MARKETPLACE_ID) {
        return errors(
            400,
            "InvalidInput",
            "Invalid sellerId or marketplaceIds",
            &[],
        );
    }
    let size = req.number("pageSize", 10);
    if !(1..=20).contains(&size) {
        return errors(
            400,
            "InvalidInput",
            "pageSize must be between 1 and 20",
            &[],
        );
    }
    let from: usize = match req.param("pageToken") {
        None => 0,
        Some(t) => match t.parse() {
            Ok(n) => n,
            Err(_) => return errors(400, "InvalidInput", "Invalid pageToken", &[]),
        },
    };
    let mut items: Vec<(String, Value)> = lock(shop)
        .listings
        .values()
        .map(|l| {
            (
                l.id.clone(),
                json!([{"fulfillmentChannelCode": "DEFAULT", "quantity": l.level}]),
            )
        })
        .collect();
    items.extend(x.fba.iter().map(|s| {
        (
            s.clone(),
            json!([{"fulfillmentChannelCode": "AMAZON_NA", "quantity": 4}]),
        )
    }));
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let total = items.len();
    let page: Vec<Value> = items
        .iter()
        .skip(from)
        .take(size)
        .map(|(sku, availability)| json!({"sku": sku, "summaries": [{"marketplaceId": MARKETPLACE_ID, "productType": "PRODUCT",
            "status": ["BUYABLE"], "createdDate": "2026-01-01T00:00:00Z", "lastUpdatedDate": "2026-01-02T00:00:00Z"}],
            "fulfillmentAvailability": availability}))
        .collect();
    let mut answer = json!({"numberOfResults": total, "items": page});
    let next = from + size;
    if next < total.min(1_000) {
        answer["pagination"] = json!({"nextToken": next.to_string()});
    }
    reply(200, &answer, &[("x-amzn-ratelimit-limit", "5.0".into())])
}

/// A running simulated Amazon account.
pub struct AmazonSim {
    pub market: Market,
    /// The seller's SQS queue, where `ORDER_CHANGE` arrives.
    pub queue: SqsSim,
    extra: Arc<Mutex<Extra>>,
}

/// The AWS credentials that may read the seller's queue, and its region.
pub const AWS_ACCESS_KEY_ID: &str = "AKIASIMLOCKSTEP00001";
pub const AWS_SECRET_ACCESS_KEY: &str = "sim/secret/access/key/for/the/orders/queue";
pub const AWS_REGION: &str = "us-east-1";

fn errors(status: u16, code: &str, message: &str, headers: &[(&str, String)]) -> Reply {
    reply(
        status,
        &json!({"errors": [{"code": code, "message": message, "details": ""}]}),
        headers,
    )
}

fn order_id(id: u64) -> String {
    format!("113-{:07}-{:07}", id % 10_000_000, id * 7 % 10_000_000)
}

/// The order's `OrderStatus` (ordersV0.json: Unshipped, PartiallyShipped, Shipped,
/// Canceled, ...).
fn order_status(order: &Order) -> &'static str {
    match order.stage {
        Stage::Placed if order.partly_shipped() => "PartiallyShipped",
        Stage::Placed => "Unshipped",
        Stage::Shipped => "Shipped",
        Stage::Cancelled => "Canceled",
    }
}

impl AmazonSim {
    /// Adds a listing (its seller SKU) fulfilled by Amazon only: no `DEFAULT` quantity.
    pub fn add_fba_listing(&self, seller_sku: &str) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fba
            .push(seller_sku.to_string());
    }

    /// Starts an account listing `items` (our SKU, seller SKU on Amazon), LWA credentials
    /// `(client_id, client_secret, refresh_token)`, and the API destination's shared
    /// header `auth` (name, value).
    pub fn start(items: &[(&str, &str)], lwa: (&str, &str, &str), auth: (&str, &str)) -> AmazonSim {
        let extra = Arc::new(Mutex::new(Extra {
            client_id: lwa.0.into(),
            client_secret: lwa.1.into(),
            refresh_token: lwa.2.into(),
            token: "Atza|sim-token-1".into(),
            auth: (auth.0.into(), auth.1.into()),
            patch_bucket: Bucket::new(5.0, 5.0),
            patch_rate: 5.0,
            items_bucket: Bucket::new(30.0, 0.5),
            orders_bucket: Bucket::new(20.0, 0.0167),
            items_page: None,
            orders_throttled: 0,
            feeds: VecDeque::new(),
            documents: HashMap::new(),
            feed_delay: Duration::ZERO,
            feed_sizes: Vec::new(),
            feed_results: HashMap::new(),
            refused: Default::default(),
            feeds_to_refuse: 0,
            feeds_to_drop: 0,
            availability: items
                .iter()
                .map(|(_, seller_sku)| {
                    let entry = json!({"fulfillment_channel_code": "DEFAULT", "quantity": 0,
                                       "lead_time_to_ship_max_days": 3, "restock_date": "2027-01-15"});
                    (seller_sku.to_string(), entry)
                })
                .collect(),
            fba: Vec::new(),
            afn_orders: Default::default(),
        }));
        let state = extra.clone();
        let market = Market::start(
            items,
            3,
            Arc::new(move |shop, sender, req| handle(shop, sender, &state, req)),
        );
        let queue = SqsSim::start(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION);
        AmazonSim {
            market,
            queue,
            extra,
        }
    }

    fn extra(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The LWA token endpoint (the channel's `token_url`).
    pub fn token_url(&self) -> String {
        format!("{}/auth/o2/token", self.market.url())
    }

    /// Feed messages are applied this long after the feed is created.
    pub fn set_feed_delay(&self, delay: Duration) {
        self.extra().feed_delay = delay;
    }

    /// patchListingsItem's applied rate for this seller from now on (burst 1 below 5/s):
    /// Amazon can lower it per selling partner, and says so in `x-amzn-RateLimit-Limit`.
    pub fn set_patch_rate(&self, per_second: f64) {
        let mut e = self.extra();
        e.patch_rate = per_second;
        e.patch_bucket = Bucket::new(per_second.clamp(1.0, 5.0), per_second);
    }

    /// getOrders' bucket for this seller from now on (Amazon may apply another rate than
    /// its default plan, and names it in `x-amzn-RateLimit-Limit`).
    pub fn set_orders_rate(&self, burst: f64, per_second: f64) {
        self.extra().orders_bucket = Bucket::new(burst, per_second);
    }

    /// getOrderItems' bucket for this seller from now on, as `set_orders_rate`.
    pub fn set_order_items_rate(&self, burst: f64, per_second: f64) {
        self.extra().items_bucket = Bucket::new(burst, per_second);
    }

    /// How many getOrders calls were answered 429.
    pub fn orders_throttled(&self) -> usize {
        self.extra().orders_throttled
    }

    /// getOrderItems answers at most `items` items a page, with a `NextToken` for the rest.
    pub fn set_order_items_page(&self, items: usize) {
        self.extra().items_page = Some(items.max(1));
    }

    /// The listing's `fulfillment_availability` entry as Amazon keeps it.
    pub fn availability(&self, seller_sku: &str) -> Value {
        self.extra()
            .availability
            .get(seller_sku)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Writes to `seller_sku` are refused from now on: a feed's processing report names
    /// each of its messages with an `ERROR` issue, a patch is answered `INVALID`, and
    /// nothing of either is applied.
    pub fn refuse_listing(&self, seller_sku: &str) {
        self.extra().refused.insert(seller_sku.to_string());
    }

    /// The next `n` feeds are refused whole, as a feed Amazon cannot read is: the report's
    /// one ERROR issue names no message ("Not provided if the error is not related to a
    /// message (e.g. feed formatting issue)", listings-feed-processing-report-schema-v2)
    /// and none of the feed is applied.
    pub fn refuse_feeds(&self, n: usize) {
        self.extra().feeds_to_refuse = n;
    }

    /// The next `n` feeds apply none of their messages and their reports name no issue:
    /// only `summary.messagesAccepted` (0) says so.
    pub fn drop_feeds_unsaid(&self, n: usize) {
        self.extra().feeds_to_drop = n;
    }

    /// The number of messages of each feed created so far.
    pub fn feeds(&self) -> Vec<usize> {
        self.extra().feed_sizes.clone()
    }

    /// A buyer's order: stock lowered, `ORDER_CHANGE` (Unshipped) sent. Returns its id.
    pub fn place_order(&self, lines: &[(&str, i64)]) -> String {
        let id = self.market.shop().place(lines);
        self.notify_order(id, "BuyerPurchased");
        order_id(id)
    }

    /// A buyer's order Amazon fulfills from its own stock (FBA): the seller's own
    /// quantity does not move, and the order says `AFN` (ordersV0 `FulfillmentChannel`,
    /// the notification's `Summary.FulfillmentType`). Returns its id.
    pub fn place_fba_order(&self, lines: &[(&str, i64)]) -> String {
        let id = {
            let mut shop = self.market.shop();
            let id = shop.place(lines);
            for (sku, quantity) in lines {
                if let Some(listing) = shop.listings.get_mut(*sku) {
                    listing.level += quantity;
                }
            }
            id
        };
        self.extra().afn_orders.insert(id);
        self.notify_order(id, "BuyerPurchased");
        order_id(id)
    }

    /// Ships or cancels an order, with its `ORDER_CHANGE`.
    pub fn advance(&self, order: &str, stage: Stage) {
        let id = self.internal_id(order);
        self.market.shop().advance(id, stage);
        self.notify_order(id, "OrderStatusChange");
    }

    /// `units` of the order's item `line` ship (the order is `PartiallyShipped` while
    /// others are open), with its `ORDER_CHANGE`.
    pub fn ship_units(&self, order: &str, line: usize, units: i64) {
        let id = self.internal_id(order);
        self.market.shop().ship_units(id, line, units);
        self.notify_order(id, "OrderStatusChange");
    }

    /// A seller's edit in Seller Central: the listing's quantity set, and Amazon's
    /// `LISTINGS_ITEM_MFN_QUANTITY_CHANGE` sent (as for any quantity change).
    pub fn seller_edit(&self, sku: &str, quantity: i64) {
        let seller_sku = {
            let mut shop = self.market.shop();
            let listing = shop.listings.get_mut(sku).expect("a listed SKU");
            listing.level = quantity;
            listing.id.clone()
        };
        let detail = notification(
            "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
            json!({"SellerId": SELLER_ID, "FulfillmentChannelCode": "DEFAULT", "Sku": seller_sku, "Quantity": quantity}),
        );
        let auth = self.extra().auth.clone();
        send(
            &self.market,
            &auth,
            "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
            detail,
        );
    }

    fn internal_id(&self, order: &str) -> u64 {
        let shop = self.market.shop();
        *shop
            .orders
            .keys()
            .find(|id| order_id(**id) == order)
            .expect("an order of this account")
    }

    fn notify_order(&self, id: u64, reason: &str) {
        let channel = fulfillment_channel(&self.extra().afn_orders, id);
        let detail = {
            let shop = self.market.shop();
            let o = &shop.orders[&id];
            let items: Vec<Value> = o
                .lines
                .iter()
                .map(|l| {
                    let status = if l.open() == 0 && l.shipped > 0 {
                        "Shipped"
                    } else {
                        "Unshipped"
                    };
                    json!({"OrderItemId": l.id.to_string(), "SellerSKU": shop.listings[&l.sku].id,
                           "Quantity": l.quantity, "QuantityShipped": l.shipped,
                           "OrderItemStatus": status, "IsBuyerRequestedCancel": false})
                })
                .collect();
            let payload = json!({"OrderChangeNotification": {
                "NotificationLevel": "OrderLevel", "SellerId": SELLER_ID,
                "AmazonOrderId": order_id(id), "OrderChangeType": "OrderStatusChange",
                "OrderChangeTrigger": {"TimeOfOrderChange": rfc3339(o.modified_us), "ChangeReason": reason},
                "Summary": {"MarketplaceId": MARKETPLACE_ID, "OrderStatus": order_status(o),
                            "PurchaseDate": rfc3339(o.created_us), "FulfillmentType": channel,
                            "OrderItems": items},
            }});
            notification("ORDER_CHANGE", payload)
        };
        let habits = self.market.sender.habits();
        if rand::random_bool(habits.lose.clamp(0.0, 1.0)) {
            return;
        }
        let copies = if rand::random_bool(habits.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            self.queue.send(detail.to_string());
        }
    }
}

/// Applies one patch of `/attributes/fulfillment_availability` and returns the quantity:
/// `replace` sets the whole attribute (the seller's `lead_time_to_ship_max_days` and
/// `restock_date` are gone), `merge` (added 2025-06-16, SP-API changelog "…now include a
/// JSON patch merge operation"; tutorial "Merge a listing") changes only the fields sent,
/// and needs the `fulfillment_channel_code` selector.
fn apply_patch(
    availability: &mut HashMap<String, Value>,
    seller_sku: &str,
    patch: &Value,
) -> Result<i64, String> {
    if patch["path"] != "/attributes/fulfillment_availability" {
        return Err("the patch path must be /attributes/fulfillment_availability".into());
    }
    let value = &patch["value"][0];
    let quantity = value["quantity"]
        .as_i64()
        .ok_or("value[0].quantity is required")?;
    let code = value["fulfillment_channel_code"]
        .as_str()
        .unwrap_or_default();
    match patch["op"].as_str() {
        Some("replace") => {
            availability.insert(seller_sku.to_string(), value.clone());
        }
        Some("merge") if !code.is_empty() => {
            let entry = availability
                .entry(seller_sku.to_string())
                .or_insert_with(|| json!({}));
            for (k, v) in value.as_object().into_iter().flatten() {
                entry[k] = v.clone();
            }
        }
        Some("merge") => {
            return Err("merge needs a non-empty fulfillment_channel_code selector".into())
        }
        other => return Err(format!("unsupported op {other:?}")),
    }
    Ok(quantity)
}

/// An SP-API notification with a fresh `NotificationId`.
fn notification(kind: &str, payload: Value) -> Value {
    let now = rfc3339(now_us());
    json!({
        "NotificationVersion": "1.0", "NotificationType": kind, "PayloadVersion": "1.0",
        "EventTime": now, "Payload": payload,
        "NotificationMetadata": {
            "ApplicationId": "amzn1.sellerapps.app.sim", "SubscriptionId": "sub-sim",
            "PublishTime": now, "NotificationId": format!("{:032x}", rand::random::<u128>()),
        },
    })
}

/// The EventBridge event around a notification, with the API destination's header.
fn envelope(
    auth: &(String, String),
    kind: &str,
    detail: Value,
) -> (Vec<(String, String)>, Vec<u8>) {
    let event = json!({
        "version": "0", "id": format!("{:032x}", rand::random::<u128>()),
        "detail-type": kind,
        "source": "aws.partner/sellingpartnerapi.amazon.com/amzn1.sellerapps.app.sim",
        "account": "123456789012", "time": rfc3339(now_us()), "region": "us-east-1",
        "resources": [], "detail": detail,
    });
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        (auth.0.clone(), auth.1.clone()),
    ];
    (headers, event.to_string().into_bytes())
}

fn send(market: &Market, auth: &(String, String), kind: &str, detail: Value) {
    let (headers, body) = envelope(auth, kind, detail);
    market.deliver(kind, headers, body);
}

/// The echo after a write: `LISTINGS_ITEM_MFN_QUANTITY_CHANGE`.
fn echo(sender: &Arc<Sender>, auth: &(String, String), seller_sku: &str, quantity: i64) {
    if !sender.habits().echo {
        return;
    }
    let detail = notification(
        "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
        json!({"SellerId": SELLER_ID, "FulfillmentChannelCode": "DEFAULT", "Sku": seller_sku, "Quantity": quantity}),
    );
    let (headers, body) = envelope(auth, "LISTINGS_ITEM_MFN_QUANTITY_CHANGE", detail);
    let build = move || Delivery {
        headers: headers.clone(),
        body: body.clone(),
    };
    sender.send(
        &tokio::runtime::Handle::current(),
        "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
        Arc::new(build),
    );
}

fn quota_exceeded(_: u64) -> Reply {
    errors(
        429,
        "QuotaExceeded",
        "You exceeded your quota for the requested resource.",
        &[("x-amzn-ratelimit-limit", "5.0".into())],
    )
}

/// One call of an operation with a bucket of its own: the `x-amzn-RateLimit-Limit` its
/// answer carries, or past the bucket the 429 Amazon answers (`QuotaExceeded`, no
/// `Retry-After`, the same header).
fn spend(bucket: &mut Bucket) -> Result<(&'static str, String), Box<Reply>> {
    let applied = ("x-amzn-ratelimit-limit", bucket.rate.to_string());
    if bucket.take(1.0) {
        return Ok(applied);
    }
    Err(Box::new(errors(
        429,
        "QuotaExceeded",
        "You exceeded your quota for the requested resource.",
        &[applied],
    )))
}

fn internal(code: u16) -> Reply {
    errors(
        code,
        "InternalFailure",
        "We encountered an internal error. Please try again.",
        &[],
    )
}

fn handle(
    shop: &Arc<Mutex<Shop>>,
    sender: &Arc<Sender>,
    extra: &Arc<Mutex<Extra>>,
    req: Req,
) -> Reply {
    let x = || extra.lock().unwrap_or_else(|e| e.into_inner());
    if req.path == "/auth/o2/token" {
        let field = |name: &str| req.form(name);
        let e = x();
        let ok = field("grant_type").as_deref() == Some("refresh_token")
            && field("refresh_token").as_deref() == Some(&e.refresh_token)
            && field("client_id").as_deref() == Some(&e.client_id)
            && field("client_secret").as_deref() == Some(&e.client_secret);
        return if ok {
            reply(
                200,
                &json!({"access_token": e.token, "refresh_token": e.refresh_token, "token_type": "bearer", "expires_in": 3600}),
                &[],
            )
        } else {
            reply(
                400,
                &json!({"error": "invalid_grant", "error_description": "The request has an invalid grant parameter : refresh_token"}),
                &[],
            )
        };
    }
    if let Some(["upload", doc]) = req.route("/").as_deref() {
        // A pre-signed URL: no access token.
        x().documents.insert(doc.to_string(), req.body.to_vec());
        return reply(200, &json!({}), &[]);
    }
    if let Some(["report", feed]) = req.route("/").as_deref() {
        // The result document's pre-signed URL: no access token.
        // Its result document exists once the feed is processed.
        return match x().feed_results.get(*feed) {
            Some((true, report)) => reply(200, report, &[]),
            _ => reply(404, &json!({}), &[]),
        };
    }
    if req.header("x-amz-access-token") != Some(x().token.as_str()) {
        return errors(
            403,
            "Unauthorized",
            "Access to requested resource is denied.",
            &[],
        );
    }
    if let Some(route) = req.route("/listings/2021-08-01/items/") {
        if let [seller] = route.as_slice() {
            return search_listings(shop, &x(), seller, &req);
        }
        let [seller, seller_sku] = route.as_slice() else {
            return errors(404, "NotFound", "Resource not found", &[]);
        };
        let seller_sku = market::decode(seller_sku);
        if *seller != SELLER_ID || req.param("marketplaceIds").as_deref() != Some(MARKETPLACE_ID) {
            return errors(
                400,
                "InvalidInput",
                "Invalid sellerId or marketplaceIds",
                &[],
            );
        }
        let found = lock(shop)
            .by_id(&seller_sku)
            .map(|l| (l.sku.clone(), l.level));
        let Some((sku, level)) = found else {
            return errors(
                404,
                "NOT_FOUND",
                &format!("SKU '{seller_sku}' not found in marketplace {MARKETPLACE_ID}"),
                &[],
            );
        };
        return match req.method {
            hyper::Method::GET => reply(
                200,
                &json!({"sku": seller_sku, "fulfillmentAvailability": [{"fulfillmentChannelCode": "DEFAULT", "quantity": level}]}),
                &[],
            ),
            hyper::Method::PATCH => {
                if let Some(r) = gate(shop, &req.path, quota_exceeded, internal) {
                    return r;
                }
                let rate = x().patch_rate.to_string();
                if !x().patch_bucket.take(1.0) {
                    lock(shop).log_call(&req.path, 1, 429);
                    return errors(
                        429,
                        "QuotaExceeded",
                        "You exceeded your quota for the requested resource.",
                        &[("x-amzn-ratelimit-limit", rate)],
                    );
                }
                if x().refused.contains(&seller_sku) {
                    // A listing Amazon will not take: `INVALID` with its issues
                    // (listingsItems_2021-08-01.json, ListingsItemSubmissionResponse).
                    lock(shop).log_call(&req.path, 1, 200);
                    return reply(
                        200,
                        &json!({"sku": seller_sku, "status": "INVALID", "submissionId": format!("{:x}", rand::random::<u64>()),
                                "issues": [{"code": "4000001", "message": "The listing is not available for this operation.", "severity": "ERROR"}]}),
                        &[("x-amzn-ratelimit-limit", rate)],
                    );
                }
                let body = req.json().unwrap_or(Value::Null);
                let patch = &body["patches"][0];
                let applied = apply_patch(&mut x().availability, &seller_sku, patch);
                let Ok(quantity) = applied else {
                    lock(shop).log_call(&req.path, 1, 400);
                    return errors(400, "InvalidInput", &applied.err().unwrap_or_default(), &[]);
                };
                {
                    let mut s = lock(shop);
                    s.write(&sku, quantity);
                    s.log_call(&req.path, 1, 200);
                }
                echo(sender, &x().auth, &seller_sku, quantity);
                reply(
                    200,
                    &json!({"sku": seller_sku, "status": "ACCEPTED", "submissionId": format!("{:x}", rand::random::<u64>()), "issues": []}),
                    &[("x-amzn-ratelimit-limit", rate)],
                )
            }
            _ => errors(405, "MethodNotAllowed", "Method not allowed", &[]),
        };
    }
    match (req.method.clone(), req.path.as_str()) {
        (hyper::Method::POST, "/feeds/2021-06-30/documents") => {
            let id = format!("amzn1.tortuga.4.na.{:x}", rand::random::<u64>());
            let host = req.header("host").unwrap_or("127.0.0.1").to_string();
            reply(
                201,
                &json!({"feedDocumentId": id, "url": format!("http://{host}/upload/{id}")}),
                &[],
            )
        }
        (hyper::Method::POST, "/feeds/2021-06-30/feeds") => create_feed(shop, sender, extra, &req),
        (hyper::Method::GET, path) if path.starts_with("/feeds/2021-06-30/feeds/") => {
            // getFeed: IN_QUEUE, then DONE with its result document (feeds_2021-06-30.json).
            let id = path.trim_start_matches("/feeds/2021-06-30/feeds/");
            let e = x();
            match e.feed_results.get(id) {
                Some((true, _)) => reply(
                    200,
                    &json!({"feedId": id, "feedType": "JSON_LISTINGS_FEED", "marketplaceIds": [MARKETPLACE_ID],
                            "processingStatus": "DONE", "resultFeedDocumentId": format!("result-{id}")}),
                    &[],
                ),
                Some(_) => reply(
                    200,
                    &json!({"feedId": id, "feedType": "JSON_LISTINGS_FEED", "marketplaceIds": [MARKETPLACE_ID],
                            "processingStatus": "IN_QUEUE"}),
                    &[],
                ),
                None => errors(404, "NotFound", "Feed not found", &[]),
            }
        }
        (hyper::Method::GET, path) if path.starts_with("/feeds/2021-06-30/documents/result-") => {
            // getFeedDocument: where the processing report can be downloaded.
            let feed = path.trim_start_matches("/feeds/2021-06-30/documents/result-");
            let host = req.header("host").unwrap_or("127.0.0.1").to_string();
            reply(
                200,
                &json!({"feedDocumentId": format!("result-{feed}"), "url": format!("http://{host}/report/{feed}")}),
                &[],
            )
        }
        (hyper::Method::GET, "/orders/v0/orders") => {
            let spent = {
                let mut e = x();
                let spent = spend(&mut e.orders_bucket);
                e.orders_throttled += usize::from(spent.is_err());
                spent
            };
            match spent {
                Ok(applied) => {
                    let afn = x().afn_orders.clone();
                    list_orders(shop, &afn, &req, &[applied])
                }
                Err(throttled) => *throttled,
            }
        }
        (hyper::Method::GET, path)
            if path.starts_with("/orders/v0/orders/") && path.ends_with("/orderItems") =>
        {
            // getOrderItems: 0.5 requests/s, burst 30 (Orders API v0 usage plan); past it
            // 429 QuotaExceeded, no Retry-After, the applied rate in x-amzn-RateLimit-Limit.
            let (spent, per_page) = {
                let mut e = x();
                (spend(&mut e.items_bucket), e.items_page)
            };
            let applied = match spent {
                Ok(applied) => [applied],
                Err(throttled) => return *throttled,
            };
            let id = path
                .trim_start_matches("/orders/v0/orders/")
                .trim_end_matches("/orderItems");
            let s = lock(shop);
            let Some(o) = s.orders.values().find(|o| order_id(o.id) == id) else {
                return errors(404, "NotFound", "Order not found", &[]);
            };
            // The errors getOrderItems documents for its 400 and 403, and its 5xx.
            match s.refusal_of(o) {
                Some(403) => {
                    let why = "Access to requested resource is denied.";
                    return errors(403, "Unauthorized", why, &[]);
                }
                Some(404) => return errors(404, "NotFound", "Order not found", &[]),
                // The 500 and 503 SP-API answers with (its error codes' table, e.g.
                // https://developer-docs.amazon.com/sp-api/docs/external-fulfillment-errors).
                Some(500) => {
                    return errors(500, "InternalFailure", "Internal failure occurred.", &[]);
                }
                Some(503) => {
                    let why = "Temporary failure occurred, retry operation.";
                    return errors(503, "ServiceUnavailable", why, &[]);
                }
                Some(status) => {
                    let why = "Request has missing or invalid parameters and cannot be parsed.";
                    return errors(status, "InvalidInput", why, &[]);
                }
                None => {}
            }
            let offset: usize = req.number("NextToken", 0);
            let per_page = per_page.unwrap_or(usize::MAX);
            let items: Vec<Value> = o.lines.iter().skip(offset).take(per_page).map(|l| {
                json!({"OrderItemId": l.id.to_string(), "SellerSKU": s.listings[&l.sku].id, "QuantityOrdered": l.quantity, "QuantityShipped": l.shipped})
            }).collect();
            let mut payload = json!({"AmazonOrderId": id, "OrderItems": items});
            if offset.saturating_add(per_page) < o.lines.len() {
                payload["NextToken"] = json!((offset + per_page).to_string());
            }
            reply(200, &json!({ "payload": payload }), &applied)
        }
        _ => errors(404, "NotFound", "Resource not found", &[]),
    }
}

fn create_feed(
    shop: &Arc<Mutex<Shop>>,
    sender: &Arc<Sender>,
    extra: &Arc<Mutex<Extra>>,
    req: &Req,
) -> Reply {
    let body = req.json().unwrap_or(Value::Null);
    let (document, delay, auth) = {
        let mut e = extra.lock().unwrap_or_else(|e| e.into_inner());
        while e.feeds.front().is_some_and(|t| t.elapsed() >= FEED_WINDOW) {
            e.feeds.pop_front();
        }
        if e.feeds.len() >= FEEDS_PER_WINDOW {
            lock(shop).log_call(&req.path, 0, 429);
            return quota_exceeded(60);
        }
        if body["feedType"] != "JSON_LISTINGS_FEED" {
            return errors(400, "InvalidInput", "Unsupported feedType", &[]);
        }
        let id = body["inputFeedDocumentId"].as_str().unwrap_or_default();
        let Some(document) = e.documents.get(id).cloned() else {
            return errors(
                400,
                "InvalidInput",
                "inputFeedDocumentId was not uploaded",
                &[],
            );
        };
        e.feeds.push_back(Instant::now());
        (document, e.feed_delay, e.auth.clone())
    };
    let feed: Value = serde_json::from_slice(&document).unwrap_or(Value::Null);
    let feed_id = format!("{}", rand::random::<u32>());
    let messages: Vec<Value> = feed["messages"].as_array().cloned().unwrap_or_default();
    {
        let mut e = extra.lock().unwrap_or_else(|e| e.into_inner());
        e.feed_sizes.push(messages.len());
        e.feed_results.insert(feed_id.clone(), (false, Value::Null));
    }
    lock(shop).log_call(&req.path, messages.len(), 202);
    let (shop, sender, extra) = (shop.clone(), sender.clone(), extra.clone());
    let processed = feed_id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        process_feed(&shop, &sender, &extra, &auth, &processed, &messages);
    });
    reply(202, &json!({"feedId": feed_id}), &[])
}

/// A feed's processing, when its time comes: each message taken (its availability and
/// level written together) or named in the report with an ERROR issue
/// (listings-feed-processing-report-schema-v2.json: `issues[]` with `messageId`, `sku`,
/// `code`, `severity`, `message`); then the report, and DONE. Nothing of a feed shows
/// before it is processed, and DONE only once all of it does: a feed reported done before
/// its last level was written let a client read an old level after DONE.
fn process_feed(
    shop: &Arc<Mutex<Shop>>,
    sender: &Arc<Sender>,
    extra: &Arc<Mutex<Extra>>,
    auth: &(String, String),
    feed_id: &str,
    messages: &[Value],
) {
    let mut accepted = 0;
    let mut issues = Vec::new();
    let (refused_whole, dropped) = {
        let mut e = extra.lock().unwrap_or_else(|e| e.into_inner());
        let refuse = e.feeds_to_refuse > 0;
        e.feeds_to_refuse = e.feeds_to_refuse.saturating_sub(1);
        let drop = !refuse && e.feeds_to_drop > 0;
        if drop {
            e.feeds_to_drop -= 1;
        }
        (refuse, drop)
    };
    if refused_whole {
        issues.push(json!({"code": "4000002", "severity": "ERROR",
                           "message": "The feed could not be read: it does not conform to the feed schema."}));
    }
    for m in messages.iter().filter(|_| !refused_whole && !dropped) {
        let seller_sku = m["sku"].as_str().unwrap_or_default().to_string();
        // Amazon's lock order: its own state, then the shop's.
        let mut e = extra.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = lock(shop);
        let sku = s.by_id(&seller_sku).map(|l| l.sku.clone());
        let applied = match &sku {
            _ if e.refused.contains(&seller_sku) => {
                Err("The listing is not available for this operation.".to_string())
            }
            None => Err(format!("SKU {seller_sku} does not exist.")),
            Some(sku) => apply_patch(&mut e.availability, &seller_sku, &m["patches"][0])
                .inspect(|quantity| s.write(sku, *quantity)),
        };
        drop((s, e));
        match applied {
            Ok(quantity) => {
                accepted += 1;
                echo(sender, auth, &seller_sku, quantity);
            }
            Err(message) => issues.push(
                json!({"messageId": m["messageId"], "sku": seller_sku, "code": "4000001",
                       "severity": "ERROR", "message": message}),
            ),
        }
    }
    let report = json!({
        "header": {"sellerId": SELLER_ID, "version": "2.0", "feedId": feed_id},
        "issues": issues,
        "summary": {"errors": issues.len(), "warnings": 0,
                    "messagesProcessed": if refused_whole { 0 } else { messages.len() },
                    "messagesAccepted": accepted,
                    "messagesInvalid": if refused_whole { 0 } else { issues.len() }},
    });
    let mut e = extra.lock().unwrap_or_else(|e| e.into_inner());
    e.feed_results.insert(feed_id.to_string(), (true, report));
}

/// `AFN` for an order Amazon fulfills (`place_fba_order`), else `MFN`.
fn fulfillment_channel(afn_orders: &std::collections::HashSet<u64>, id: u64) -> &'static str {
    if afn_orders.contains(&id) {
        "AFN"
    } else {
        "MFN"
    }
}

/// getOrders: `MarketplaceIds` and `LastUpdatedAfter` required, `LastUpdatedBefore` at
/// least two minutes ago, `FulfillmentChannels` (a comma-separated list of `AFN`, `MFN`)
/// keeps only the orders fulfilled so, `NextToken` pages one query.
fn list_orders(
    shop: &Arc<Mutex<Shop>>,
    afn_orders: &std::collections::HashSet<u64>,
    req: &Req,
    headers: &[(&str, String)],
) -> Reply {
    if req.param("MarketplaceIds").as_deref() != Some(MARKETPLACE_ID) {
        return errors(400, "InvalidInput", "MarketplaceIds is required", &[]);
    }
    let Some(after) = req
        .param("LastUpdatedAfter")
        .and_then(|t| market::parse_rfc3339(&t))
    else {
        return errors(
            400,
            "InvalidInput",
            "LastUpdatedAfter or CreatedAfter is required",
            &[],
        );
    };
    // `LastUpdatedBefore`: "equal to or after the `LastUpdatedAfter` date and at least two
    // minutes before current time", or a 400 InvalidInput whose message names no rule
    // (getOrders reference; selling-partner-api-models issue 974).
    let before = match req.param("LastUpdatedBefore") {
        None => i64::MAX,
        Some(text) => match market::parse_rfc3339(&text) {
            Some(before) if before >= after && before <= now_us() - 120_000_000 => before,
            _ => return errors(400, "InvalidInput", "This is an invalid input", &[]),
        },
    };
    // The token pages one query: "NextToken doesn't affect any filters that you include
    // in your request" (the getOrders model since 2024-09), so a page sent with other
    // filters than the token's is refused here.
    let offset: usize = match req.param("NextToken") {
        None => 0,
        Some(token) => match token.split('.').collect::<Vec<_>>()[..] {
            [offset, a, b] if a == after.to_string() && b == before.to_string() => {
                offset.parse().unwrap_or(0)
            }
            _ => return errors(400, "InvalidInput", "Invalid NextToken for this query", &[]),
        },
    };
    let per_page: usize = req.number("MaxResultsPerPage", 100).clamp(1, 100);
    let mut s = lock(shop);
    // Both bounds are inclusive ("after (or at)", "before (or at)"); the order is not
    // documented.
    let wanted = req.param("FulfillmentChannels");
    let orders: Vec<_> = s
        .modified_within(after - 1, before)
        .into_iter()
        .filter(|o| {
            let channel = fulfillment_channel(afn_orders, o.id);
            wanted
                .as_deref()
                .is_none_or(|w| w.split(',').any(|c| c == channel))
        })
        .collect();
    let page: Vec<Value> = orders
        .iter()
        .skip(offset)
        .take(per_page)
        .map(|o| {
            let id = (!s.is_unreadable(o)).then(|| order_id(o.id));
            json!({"AmazonOrderId": id, "PurchaseDate": rfc3339(o.created_us),
                        "LastUpdateDate": rfc3339(o.modified_us), "OrderStatus": order_status(o),
                        "FulfillmentChannel": fulfillment_channel(afn_orders, o.id),
                        "MarketplaceId": MARKETPLACE_ID})
        })
        .collect();
    let mut payload = json!({"Orders": page});
    if offset + per_page < orders.len() {
        payload["NextToken"] = json!(format!("{}.{after}.{before}", offset + per_page));
    }
    reply(200, &json!({ "payload": payload }), headers)
}

impl crate::sim::Simulator for AmazonSim {
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::blocking::Client;

    #[test]
    fn a_feed_is_done_only_once_its_levels_are_written() {
        // A feed reported DONE at a time fixed when it was created let a client polling
        // getFeed read the old levels: the timer that starts writing them fires a little
        // after that time (1 ms resolution), and DONE was said meanwhile.
        const N: usize = 3_000;
        let names: Vec<(String, String)> = (0..N)
            .map(|i| (format!("A{i}"), format!("AMZ-{i}")))
            .collect();
        let items: Vec<(&str, &str)> = names
            .iter()
            .map(|(s, id)| (s.as_str(), id.as_str()))
            .collect();
        let sim = AmazonSim::start(&items, ("id", "secret", "refresh"), ("x-auth", "v"));
        sim.set_feed_delay(Duration::from_millis(100));
        let url = sim.market.url();
        let client = Client::new();
        let api = |req: reqwest::blocking::RequestBuilder| {
            req.header("x-amz-access-token", "Atza|sim-token-1")
                .send()
                .unwrap()
                .json::<Value>()
                .unwrap()
        };
        let document = api(client.post(format!("{url}/feeds/2021-06-30/documents")));
        let messages: Vec<Value> = (0..N)
            .map(|i| {
                json!({"messageId": i + 1, "sku": format!("AMZ-{i}"), "operationType": "PATCH",
                "patches": [{"op": "replace", "path": "/attributes/fulfillment_availability",
                    "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": 7}]}]})
            })
            .collect();
        let upload = document["url"].as_str().unwrap().to_string();
        client
            .put(upload)
            .body(json!({"messages": messages}).to_string())
            .send()
            .unwrap();
        let id = document["feedDocumentId"].as_str().unwrap();
        let feed = api(client
            .post(format!("{url}/feeds/2021-06-30/feeds"))
            .json(&json!({"feedType": "JSON_LISTINGS_FEED", "inputFeedDocumentId": id})));
        let feed = feed["feedId"].as_str().unwrap();
        // Nothing of it shows before it is processed: neither a listing's availability
        // (it once changed at once, ahead of the level), nor its report.
        assert_eq!(sim.availability("AMZ-0")["quantity"], 0);
        let report = client.get(format!("{url}/report/{feed}")).send().unwrap();
        assert_eq!(report.status(), 404);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = api(client.get(format!("{url}/feeds/2021-06-30/feeds/{feed}")));
            if status["processingStatus"] == "DONE" {
                break;
            }
            assert!(Instant::now() < deadline, "never done: {status}");
        }
        let levels = sim.market.levels();
        let behind = (0..N)
            .filter(|i| levels.get(&format!("A{i}")) != Some(&7))
            .count();
        assert_eq!(behind, 0, "levels not written when the feed said DONE");
        assert_eq!(sim.availability("AMZ-0")["quantity"], 7);
        let report = api(client.get(format!("{url}/report/{feed}")));
        assert_eq!(report["summary"]["messagesAccepted"], N);
    }
}
