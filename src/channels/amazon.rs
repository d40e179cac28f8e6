//! The `amazon` kind: an Amazon seller account over the Selling Partner API
//! (CHANNELS.md §4 and "Our choices").
//!
//! Inbound, two ways, because SP-API delivers `ORDER_CHANGE` to an SQS queue only and
//! EventBridge carries the listing notifications alone (developer-docs.amazon.com/sp-api,
//! "Set up notifications with Amazon EventBridge"; CHANNELS.md §4):
//! - the seller's SQS queue (`sqs_queue_url`), read by long polls (`ReceiveMessage`, up
//!   to 10 messages, 20 s) over the AWS JSON protocol, signed with Signature Version 4
//!   by AWS's own signer (`aws-sigv4`) with `aws_access_key_id`/`aws_secret_access_key`;
//!   each body is the notification itself, its `MD5OfBody` checked. Messages are deleted
//!   (`DeleteMessageBatch`) only after their events are durable; SQS delivers at least
//!   once and in no order, and a message received twice is a duplicate by
//!   `NotificationId` and by its events' keys.
//! - `POST /webhooks/{name}`: notifications by an EventBridge API destination, so each
//!   body is the EventBridge envelope (`detail-type`, `detail`) around the notification
//!   (a bare notification is taken too). There is no signature: the API destination's
//!   connection sends a header that both sides share (`auth_header = "Name: value"`),
//!   checked in constant time. `NotificationId` deduplicates redeliveries.
//! - `ORDER_CHANGE`: the summary's items move through the order status: `Pending`,
//!   `Unshipped`, `PartiallyShipped` placed; `Shipped` placed and shipped; `Canceled`,
//!   `Unfulfillable` released. Keys `{channel}/{AmazonOrderId}/{OrderItemId}/{transition}`,
//!   the same the order poll makes, so either may come first.
//! - `LISTINGS_ITEM_MFN_QUANTITY_CHANGE`: the quantity Amazon shows, as a `level` (an
//!   echo of our write matches and changes nothing; anything else is an external change,
//!   handled by the channel's `inventory_updates` mode).
//! - The safety net is the Orders API poll: `getOrders` by `LastUpdatedAfter` and
//!   `LastUpdatedBefore`, in windows (paged by `NextToken`), then `getOrderItems` per order.
//! - Orders Amazon fulfills from its own warehouses (FBA: `AFN`, the notification's
//!   `Summary.FulfillmentType`, ordersV0 `Order.FulfillmentChannel`) take nothing from the
//!   seller's stock and are not read: the poll asks for `FulfillmentChannels=MFN` alone,
//!   and an `AFN` notification gives no events (the OrderChangeNotification schema of
//!   amzn/selling-partner-api-models: `FulfillmentType` "MFN or AFN").
//!
//! Outbound: `patchListingsItem` merging into `/attributes/fulfillment_availability`, one SKU
//! per call, at 5 requests/s (burst 5). When the backlog is larger than that path clears
//! in `FEED_AFTER` (3 s), the whole backlog goes as one `JSON_LISTINGS_FEED` instead:
//! create a feed document, upload the JSON to its URL, create the feed; at most 5 feeds
//! per 5 minutes, after which the per-call path carries on. The push then waits for the
//! feed's processing report: a message it names with an `ERROR` issue is a failed push
//! of its SKU, the rest are acknowledged. Reads: `getListingsItem`
//! with `includedData=fulfillmentAvailability`. Every call carries `x-amz-access-token`,
//! a Login with Amazon token from the refresh token.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::call::{form, json_answer, segment, with_headers, Answer, TokenCache, REPLY_BYTES_MAX};
use super::kind::{self, Kind, Problem};
use super::Pace;

/// Listings a searchListingsItems page asks for: its most.
const LISTING_PAGE: usize = 20;
/// The most listings searchListingsItems pages through (its model, `ItemSearchResults`).
const SEARCH_CAP: u64 = 1_000;
use super::{
    excerpt, payload, unmapped, BoxFuture, Caller, Catalog, ChannelAdapter, Delivery, Inbound,
};
use super::{FetchFailure, OrderQueue, QueueMessage};
use super::{Levels, OrderPoll, OutboundRequest, PollPage, PushItem, PushReply, RateLimit, Seen};
use crate::clock::{format_rfc3339, Micros};
use crate::config::{ChannelConfig, ChannelKind};
use crate::core::event::{Event, EventKind, LineRef};
use crate::refusal::ApiError;

/// `patchListingsItem`: 5 requests per second, burst 5, per seller and application.
const DEFAULT_RATE: RateLimit = RateLimit {
    requests_per_second: 5.0,
    burst: 5,
};
/// A backlog the per-call path cannot clear within this long goes as a feed.
const FEED_AFTER: Duration = Duration::from_secs(3);
/// `createFeed`: at most this many submissions per `FEED_WINDOW`.
pub const FEEDS_PER_WINDOW: usize = 5;
pub const FEED_WINDOW: Duration = Duration::from_secs(300);
/// How long a push waits for its feed to be processed before giving up on it (and
/// pushing its items again). Amazon: "not uncommon for feeds to take up to eight hours"
/// under high load (amzn/selling-partner-api-models#657); usually minutes.
const FEED_WAIT_MAX: Duration = Duration::from_secs(20 * 60);
/// Most messages one feed carries (Amazon allows 25,000; smaller feeds process sooner).
const FEED_MESSAGES_MAX: usize = 10_000;
/// getOrderItems: 0.5 requests/s, burst 30 (Orders API v0 usage plan): the poll's item
/// calls wait for it rather than draw 429s.
const ORDER_ITEMS_RATE: RateLimit = RateLimit {
    requests_per_second: 0.5,
    burst: 30,
};
/// getOrders: 0.0167 requests/s (one a minute), burst 20 (Orders API v0 usage plan,
/// https://developer-docs.amazon.com/sp-api/docs/orders-api-v0-reference): the poll's
/// pages wait for it, and a page that meets a 429 anyway waits it out, rather than fail
/// the pass and start over from its first page into the same 429.
const ORDERS_RATE: RateLimit = RateLimit {
    requests_per_second: 0.0167,
    burst: 20,
};
/// How far in the past a window's end must be for getOrders to be sent it as
/// `LastUpdatedBefore`, which must be "at least two minutes before current time"
/// (https://developer-docs.amazon.com/sp-api/reference/getorders; the Orders API v0
/// model, `ordersV0.json`): five minutes, three for the two clocks.
const BEFORE_MARGIN: Micros = 5 * 60 * crate::clock::MICROS_PER_SECOND;
/// Most pages of one order's items followed (getOrderItems answers a `NextToken` while
/// there are more): a channel that pages for ever is an error, not a loop.
const ORDER_ITEM_PAGES_MAX: usize = 100;
/// Orders whose items the poll keeps, so a pass that starts a page again fetches only
/// what it has not (bounded: when full it starts over).
const ORDER_ITEMS_KEPT_MAX: usize = 10_000;
/// Seconds between order polls unless configured (getOrders refills at 1 per minute).
const POLL_INTERVAL_DEFAULT_S: u64 = 60;
const LWA_TOKEN_URL: &str = "https://api.amazon.com/auth/o2/token";
/// `ReceiveMessage`: at most 10 messages, a long poll of at most 20 s (SQS API reference).
const SQS_MESSAGES_MAX: usize = 10;
pub const SQS_WAIT_S: u64 = 20;

/// One order item as the readers take it: (OrderItemId, SellerSKU, units ordered, units
/// shipped so far); or where it is in its order and why it cannot be applied
/// (`payload::OrderLines::unreadable`).
type OrderItem = Result<(String, String, i64, i64), (String, String)>;

/// An item of a notification's `Summary.OrderItems` or of getOrderItems' answer, its
/// ordered units in `qty_field` (`Quantity`, `QuantityOrdered`), at `index` of its list.
fn order_item(item: &Value, qty_field: &str, index: usize) -> OrderItem {
    let (id, qty) = payload::line_id_and_quantity(item, ("OrderItemId", qty_field), index)?;
    let Some(seller_sku) = item["SellerSKU"].as_str() else {
        let why = format!("has no `SellerSKU`: {}", payload::shown(&item["SellerSKU"]));
        return Err((id, why));
    };
    let shipped = item["QuantityShipped"].as_i64().unwrap_or(0);
    Ok((id, seller_sku.to_string(), qty, shipped))
}

/// The seller's SQS queue and the credentials that read it.
struct Sqs {
    queue_url: String,
    /// Where the JSON protocol's requests go: the queue URL's origin, path `/`.
    endpoint: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
}

/// An Amazon seller account in one marketplace.
pub struct Amazon {
    name: String,
    base_url: String,
    seller_id: String,
    marketplace_id: String,
    auth_header: String,
    catalog: Catalog,
    rate: RateLimit,
    poll_interval: Duration,
    token: TokenCache,
    seen: Seen,
    /// When each feed of the current window was created.
    feeds: Mutex<VecDeque<Instant>>,
    sqs: Option<Sqs>,
    /// getOrders' own budget.
    orders_bucket: std::sync::Arc<tokio::sync::Mutex<super::pacing::TokenBucket>>,
    /// getOrderItems' own budget.
    order_items_bucket: std::sync::Arc<tokio::sync::Mutex<super::pacing::TokenBucket>>,
    /// Items fetched per (AmazonOrderId, LastUpdateDate): an order unchanged since is not
    /// fetched again when a pass reads its page once more.
    order_items: super::fetched::Fetched<Vec<OrderItem>>,
}

/// The `[[channels]]` keys of kind `amazon`: SP-API's Login with Amazon grant
/// (https://developer-docs.amazon.com/sp-api/docs/connecting-to-the-selling-partner-api),
/// the seller and marketplace, and the SQS queue its notifications go to.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    seller_id: Option<String>,
    marketplace_id: Option<String>,
    /// The header lockstep's own order relay adds, as `Name: value`.
    auth_header: Option<String>,
    /// The seller's SQS queue that SP-API sends `ORDER_CHANGE` to
    /// (`https://sqs.{region}.amazonaws.com/{account}/{name}`).
    sqs_queue_url: Option<String>,
    /// The AWS credentials that may receive and delete the queue's messages.
    aws_access_key_id: Option<String>,
    aws_secret_access_key: Option<String>,
    /// The queue's region, when its URL does not say it (`sqs.{region}.…`).
    aws_region: Option<String>,
    /// The token endpoint, when not Login with Amazon's.
    token_url: Option<String>,
}

impl Settings {
    /// The SQS queue's region: `aws_region`, else the one its URL names
    /// (`sqs.{region}.amazonaws.com`).
    pub fn sqs_region(&self) -> Option<String> {
        if let Some(region) = self.aws_region.as_deref().filter(|r| !r.trim().is_empty()) {
            return Some(region.trim().to_string());
        }
        let url = self.sqs_queue_url.as_deref()?;
        let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
        let region = host.strip_prefix("sqs.")?.split('.').next()?;
        (!region.is_empty() && host.ends_with(".amazonaws.com")).then(|| region.to_string())
    }
}

impl Kind for Amazon {
    type Settings = Settings;

    fn check(channel: &ChannelConfig, settings: &Settings) -> Result<(), Problem> {
        kind::no_batch_max(
            channel,
            "one SKU per patchListingsItem call, a backlog in feeds of up to 10,000 messages",
        )?;
        let amazon = ChannelKind::Amazon;
        for (key, value) in [
            ("client_id", &settings.client_id),
            ("client_secret", &settings.client_secret),
            ("refresh_token", &settings.refresh_token),
            ("seller_id", &settings.seller_id),
            ("marketplace_id", &settings.marketplace_id),
            ("auth_header", &settings.auth_header),
            ("sqs_queue_url", &settings.sqs_queue_url),
            ("aws_access_key_id", &settings.aws_access_key_id),
            ("aws_secret_access_key", &settings.aws_secret_access_key),
        ] {
            kind::required(value, key, amazon)?;
        }
        kind::shared_header(&settings.auth_header, "auth_header")?;
        kind::optional_url(&settings.sqs_queue_url, "sqs_queue_url")?;
        if settings.sqs_region().is_none() {
            return Err(Problem::new(
                "aws_region",
                "required when sqs_queue_url is not https://sqs.{region}.amazonaws.com/…",
            ));
        }
        kind::optional_url(&settings.token_url, "token_url")
    }

    fn open(
        channel: &ChannelConfig,
        settings: Settings,
        catalog: Catalog,
        _data_dir: &std::path::Path,
    ) -> Amazon {
        Amazon::from_settings(channel, settings, catalog)
    }
}

impl Amazon {
    fn from_settings(config: &ChannelConfig, settings: Settings, catalog: Catalog) -> Amazon {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let token_url = settings
            .token_url
            .clone()
            .unwrap_or_else(|| LWA_TOKEN_URL.to_string());
        let (client_id, client_secret, refresh) = (
            text(&settings.client_id),
            text(&settings.client_secret),
            text(&settings.refresh_token),
        );
        let token = TokenCache::new("x-amz-access-token", "", move || {
            let body = form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &client_id),
                ("client_secret", &client_secret),
            ]);
            http::Request::post(&token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .expect("a validated token_url makes a valid request")
        });
        Amazon {
            name: config.name.clone(),
            base_url: config.base_url.trim_end_matches('/').to_string(),
            seller_id: text(&settings.seller_id),
            marketplace_id: text(&settings.marketplace_id),
            auth_header: text(&settings.auth_header),
            catalog,
            rate: config.rate_limit.unwrap_or(DEFAULT_RATE),
            poll_interval: Duration::from_secs(
                config.poll_interval_s.unwrap_or(POLL_INTERVAL_DEFAULT_S),
            ),
            token,
            seen: Seen::default(),
            feeds: Mutex::new(VecDeque::new()),
            orders_bucket: std::sync::Arc::new(tokio::sync::Mutex::new(
                super::pacing::TokenBucket::new(ORDERS_RATE),
            )),
            order_items_bucket: std::sync::Arc::new(tokio::sync::Mutex::new(
                super::pacing::TokenBucket::new(ORDER_ITEMS_RATE),
            )),
            order_items: super::fetched::Fetched::new(ORDER_ITEMS_KEPT_MAX),
            sqs: settings.sqs_queue_url.as_ref().map(|queue_url| {
                let origin_end = queue_url
                    .find("://")
                    .and_then(|s| queue_url[s + 3..].find('/').map(|p| s + 3 + p))
                    .unwrap_or(queue_url.len());
                Sqs {
                    queue_url: queue_url.clone(),
                    endpoint: format!("{}/", &queue_url[..origin_end]),
                    region: settings.sqs_region().unwrap_or_default(),
                    access_key_id: text(&settings.aws_access_key_id),
                    secret_access_key: text(&settings.aws_secret_access_key),
                }
            }),
        }
    }

    /// An SQS action over the AWS JSON protocol (`POST /`, `X-Amz-Target:
    /// AmazonSQS.{action}`, `Content-Type: application/x-amz-json-1.0`: SQS Developer
    /// Guide, "Making query API requests using AWS JSON protocol"), signed with SigV4.
    fn sqs_request(&self, action: &str, mut input: Value) -> Result<OutboundRequest, String> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        use aws_sigv4::sign::v4;
        let sqs = self.sqs.as_ref().ok_or("no sqs_queue_url configured")?;
        input["QueueUrl"] = json!(sqs.queue_url);
        let body = input.to_string().into_bytes();
        let target = format!("AmazonSQS.{action}");
        let content_type = "application/x-amz-json-1.0";
        let mut request = http::Request::post(&sqs.endpoint)
            .header("content-type", content_type)
            .header("x-amz-target", &target)
            .body(body)
            .map_err(|e| format!("the SQS endpoint is not usable: {e}"))?;
        let identity = aws_credential_types::Credentials::new(
            sqs.access_key_id.clone(),
            sqs.secret_access_key.clone(),
            None,
            None,
            "lockstep-config",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&sqs.region)
            .name("sqs")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("SigV4 parameters: {e}"))?
            .into();
        let headers = [
            ("content-type", content_type),
            ("x-amz-target", target.as_str()),
        ];
        let signable = SignableRequest::new(
            "POST",
            &sqs.endpoint,
            headers.into_iter(),
            SignableBody::Bytes(request.body()),
        )
        .map_err(|e| format!("SigV4: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("SigV4: {e}"))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The seller SKU on Amazon of one of our SKUs.
    fn seller_sku(&self, sku: &str) -> Option<&str> {
        self.catalog.item(sku).map(|i| i.id.as_str())
    }

    fn listing_path(&self, seller_sku: &str) -> String {
        format!(
            "/listings/2021-08-01/items/{}/{}?marketplaceIds={}",
            self.seller_id,
            utf8_percent_encode(seller_sku, NON_ALPHANUMERIC),
            self.marketplace_id
        )
    }

    /// The backlog above which the feed is the faster path.
    fn feed_after_items(&self) -> usize {
        (self.rate.requests_per_second * FEED_AFTER.as_secs_f64()).ceil() as usize
    }

    /// Whether a feed may be created now (5 per 5 minutes).
    fn feed_room(&self) -> bool {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        while feeds.front().is_some_and(|t| t.elapsed() >= FEED_WINDOW) {
            feeds.pop_front();
        }
        feeds.len() < FEEDS_PER_WINDOW
    }

    /// The patch value: `merge` (SP-API changelog 2025-06-16, "…now include a JSON patch
    /// merge operation") changes only the quantity of the `DEFAULT` entry, so the seller's
    /// `lead_time_to_ship_max_days` and `restock_date` survive; `replace` would drop them.
    fn fulfillment_availability(quantity: i64) -> Value {
        json!([{"fulfillment_channel_code": "DEFAULT", "quantity": quantity}])
    }

    /// The events of one order's items, from a notification or the poll. Each item is
    /// placed; its `QuantityShipped` is its shipped running total (`PartiallyShipped`
    /// ships some units: ordersV0.json `OrderItem.QuantityShipped`, and the notification
    /// Summary's `OrderItems[].QuantityShipped`:
    /// https://developer-docs.amazon.com/sp-api/docs/orders-api-v0-reference); once the
    /// order is `Shipped`, `Canceled` or `Unfulfillable`, the units not shipped are
    /// released. Amazon has no cancellation of some units of an item (sellers cancel
    /// whole orders), so a partial release only follows a whole order's end.
    fn order_events(
        &self,
        order_id: &str,
        status: &str,
        items: &[OrderItem],
        purchased: Micros,
        changed: Micros,
        now: Micros,
    ) -> Vec<Event> {
        let ended = match status {
            "Pending" | "Unshipped" | "PartiallyShipped" => false,
            "Shipped" | "Canceled" | "Unfulfillable" => true,
            // PendingAvailability (pre-orders), InvoiceUnconfirmed: nothing held yet.
            _ => return Vec::new(),
        };
        let mut events = Vec::new();
        let reader = payload::OrderLines::of(&self.name, order_id, purchased, now);
        for item in items {
            let (item_id, seller_sku, qty, reported) = match item {
                // No units ordered: nothing to apply.
                Ok((_, _, 0, _)) => continue,
                Ok(read) => read,
                Err((place, why)) => {
                    events.push(reader.unreadable(place, why));
                    continue;
                }
            };
            let line = LineRef {
                order_id: order_id.to_string(),
                line_id: item_id.clone(),
            };
            let shipped = match status {
                // Shipped without a count says every unit shipped.
                "Shipped" if *reported == 0 => *qty,
                _ => (*reported).clamp(0, *qty),
            };
            let mut transitions = Vec::new();
            if status != "Canceled" && status != "Unfulfillable" || shipped > 0 {
                transitions.push((EventKind::OrderPlaced, purchased, *qty));
            }
            if shipped > 0 {
                transitions.push((EventKind::OrderShippedTotal, changed, shipped));
            }
            if ended && shipped < *qty {
                transitions.push((EventKind::OrderReleasedTotal, changed, qty - shipped));
            }
            let sku = self.catalog.sku_of(seller_sku, None, None);
            let what = format!("seller SKU {seller_sku}");
            events.extend(payload::order_line_units(
                &self.name,
                line,
                sku,
                &transitions,
                &what,
                now,
            ));
        }
        payload::stamp_origins(&mut events);
        events
    }

    /// An `ORDER_CHANGE` notification's payload.
    fn order_change(
        &self,
        payload: &Value,
        event_time: Micros,
        now: Micros,
    ) -> Result<Vec<Event>, ApiError> {
        let change = &payload["OrderChangeNotification"];
        let order_id = payload::required_id(
            &change["AmazonOrderId"],
            "OrderChangeNotification.AmazonOrderId",
        )?;
        let summary = &change["Summary"];
        // Fulfilled by Amazon from its own stock: nothing of the seller's moves.
        if summary["FulfillmentType"] == "AFN" {
            return Ok(Vec::new());
        }
        let status = summary["OrderStatus"].as_str().ok_or_else(|| {
            payload::invalid("OrderChangeNotification.Summary.OrderStatus", "is missing")
        })?;
        let changed = payload::source_time(
            &[
                payload::time_end(&change["OrderChangeTrigger"]["TimeOfOrderChange"]),
                Some(event_time),
            ],
            now,
        );
        let purchased = payload::source_time(
            &[payload::time_end(&summary["PurchaseDate"]), Some(changed)],
            now,
        );
        let items: Vec<OrderItem> = payload::list(&summary["OrderItems"])
            .iter()
            .enumerate()
            .map(|(i, item)| order_item(item, "Quantity", i))
            .collect();
        Ok(self.order_events(&order_id, status, &items, purchased, changed, now))
    }

    /// A `LISTINGS_ITEM_MFN_QUANTITY_CHANGE` payload: what Amazon now shows.
    fn quantity_change(&self, payload: &Value, key: String, at: Micros, now: Micros) -> Vec<Event> {
        let seller_sku = payload["Sku"].as_str().unwrap_or_default();
        let Some(sku) = self.catalog.sku_of(seller_sku, None, None) else {
            return vec![unmapped(
                &self.name,
                &format!("listing {seller_sku}"),
                key,
                at,
                now,
            )];
        };
        let Some(quantity) = payload["Quantity"].as_i64() else {
            return Vec::new();
        };
        vec![Event {
            sku: sku.to_string(),
            kind: EventKind::Level,
            qty: quantity,
            source: self.name.clone(),
            source_ts: at,
            received_at: now,
            key,
            line: None,
            origin: None,
        }]
    }

    /// Checks and reads one delivery: its events and its `NotificationId`.
    fn take(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Inbound, ApiError> {
        super::body_hmac::check_shared_header(headers, &self.auth_header)?;
        self.notification(body, now)
    }

    /// Reads one notification: its events and its `NotificationId`.
    fn notification(&self, body: &[u8], now: Micros) -> Result<Inbound, ApiError> {
        let envelope = payload::json(body)?;
        // EventBridge wraps the notification in `detail`; SQS bodies do not.
        let notification = envelope.get("detail").unwrap_or(&envelope);
        let id = payload::required_id(
            &notification["NotificationMetadata"]["NotificationId"],
            "NotificationMetadata.NotificationId",
        )?;
        if self.seen.contains(&id) {
            return Ok(Inbound::default());
        }
        let event_time =
            payload::source_time(&[payload::time_end(&notification["EventTime"])], now);
        let payload = &notification["Payload"];
        let events = match notification["NotificationType"]
            .as_str()
            .unwrap_or_default()
        {
            "ORDER_CHANGE" => self.order_change(payload, event_time, now)?,
            "LISTINGS_ITEM_MFN_QUANTITY_CHANGE" => self.quantity_change(
                payload,
                format!("{}/level/{id}", self.name),
                event_time,
                now,
            ),
            _ => Vec::new(),
        };
        Ok(Inbound {
            events,
            notification: Some(id),
            ..Inbound::default()
        })
    }

    /// One feed: create the document, upload the messages, create the feed, then wait for
    /// its processing report. Returns the items Amazon took: message `n + 1` is item `n`,
    /// and a message the report names with an `ERROR` issue was not applied.
    async fn push_feed(
        &self,
        caller: &Caller,
        items: &[PushItem],
    ) -> Result<Vec<usize>, PushReply> {
        let auth = self.authorize(caller).await.map_err(failed)?;
        let post = |path: &str, body: Value| {
            let request = http::Request::post(self.url(path))
                .header("content-type", "application/json")
                .body(body.to_string().into_bytes())
                .expect("a validated base_url makes a valid request");
            with_headers(request, auth.clone())
        };
        let created = caller
            .call(post(
                "/feeds/2021-06-30/documents",
                json!({"contentType": "application/json; charset=UTF-8"}),
            ))
            .await
            .map_err(failed)?;
        let document = reply_json(&created)?;
        let (Some(document_id), Some(upload_url)) = (
            document["feedDocumentId"].as_str(),
            document["url"].as_str(),
        ) else {
            return Err(failed(format!("createFeedDocument: {document}")));
        };
        let messages: Vec<Value> = items
            .iter()
            .enumerate()
            .map(|(n, item)| {
                json!({
                    "messageId": n + 1,
                    "sku": self.seller_sku(&item.sku).unwrap_or(&item.sku),
                    "operationType": "PATCH",
                    "productType": "PRODUCT",
                    "patches": [{"op": "merge", "path": "/attributes/fulfillment_availability",
                                 "value": Self::fulfillment_availability(item.quantity)}],
                })
            })
            .collect();
        let feed = json!({
            "header": {"sellerId": self.seller_id, "version": "2.0", "issueLocale": "en_US"},
            "messages": messages,
        });
        // The upload URL is pre-signed: no access token on it.
        let upload = http::Request::put(upload_url)
            .header("content-type", "application/json; charset=UTF-8")
            .body(feed.to_string().into_bytes())
            .map_err(|e| failed(format!("the upload URL is not usable: {e}")))?;
        let uploaded = caller.call_now(upload).await.map_err(failed)?;
        if !(200..300).contains(&uploaded.0) {
            return Err(failed(format!("feed upload: HTTP {}", uploaded.0)));
        }
        let submitted = caller
            .call(post(
                "/feeds/2021-06-30/feeds",
                json!({"feedType": "JSON_LISTINGS_FEED", "marketplaceIds": [self.marketplace_id],
                       "inputFeedDocumentId": document_id}),
            ))
            .await
            .map_err(failed)?;
        let feed_id = reply_json(&submitted)?["feedId"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| failed("createFeed answered no feedId".into()))?;
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Instant::now());
        let refused = self
            .feed_errors(caller, &auth, &feed_id, items.len())
            .await?;
        for (message, why) in &refused {
            tracing::warn!(channel = %self.name, feed = %feed_id, feed_message = message, why = %why, "feed message refused");
        }
        Ok((0..items.len())
            .filter(|n| !refused.iter().any(|(m, _)| *m == *n as u64 + 1))
            .collect())
    }

    /// Waits for a feed to be processed (`getFeed` until `DONE`, at most `FEED_WAIT_MAX`,
    /// checking at growing intervals inside its 2 requests/s), downloads its processing
    /// report (`getFeedDocument`, GZIP when it says so) and returns the messages it names
    /// with an `ERROR` issue and why (feeds_2021-06-30.json; the JSON_LISTINGS_FEED
    /// report: `issues[]` with `messageId`, `severity`, `message`, in
    /// amzn/selling-partner-api-models `schemas/feeds/listings-feed-processing-report-schema-v2.json`).
    /// `CANCELLED` or `FATAL` fails the whole feed: "some, none, or all" of it may have
    /// been applied, so every item is pushed again (merge patches of absolute values).
    /// So does a report whose ERROR names no message (the schema: `messageId` "Not
    /// provided if the error is not related to a message (e.g. feed formatting issue)"),
    /// or whose `summary.messagesAccepted` is fewer than the `messages` no issue names:
    /// some were not applied, and the report does not say which.
    async fn feed_errors(
        &self,
        caller: &Caller,
        auth: &HeaderMap,
        feed_id: &str,
        messages: usize,
    ) -> Result<Vec<(u64, String)>, PushReply> {
        let get = |url: String, signed: bool| {
            let request = http::Request::get(url)
                .body(Vec::new())
                .expect("a validated base_url makes a valid request");
            if signed {
                with_headers(request, auth.clone())
            } else {
                request
            }
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        let document = loop {
            let answer = caller
                .call_now(get(
                    self.url(&format!("/feeds/2021-06-30/feeds/{}", segment(feed_id))),
                    true,
                ))
                .await
                .map_err(failed)?;
            let feed = reply_json(&answer)?;
            match feed["processingStatus"].as_str().unwrap_or_default() {
                "DONE" => match feed["resultFeedDocumentId"].as_str() {
                    Some(id) => break id.to_string(),
                    None => return Err(failed(format!("feed {feed_id} is DONE without a report"))),
                },
                "CANCELLED" | "FATAL" => {
                    return Err(failed(format!(
                        "feed {feed_id}: {}",
                        feed["processingStatus"]
                    )))
                }
                _ if started.elapsed() >= FEED_WAIT_MAX => {
                    return Err(failed(format!(
                        "feed {feed_id} not processed after {} s",
                        FEED_WAIT_MAX.as_secs()
                    )))
                }
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        };
        let answer = caller
            .call_now(get(
                self.url(&format!(
                    "/feeds/2021-06-30/documents/{}",
                    segment(&document)
                )),
                true,
            ))
            .await
            .map_err(failed)?;
        let located = reply_json(&answer)?;
        // The pre-signed URL is the channel's: checked as a URI, never trusted to be one.
        let url = located["url"]
            .as_str()
            .filter(|u| u.starts_with("http") && http::Uri::try_from(*u).is_ok())
            .ok_or_else(|| failed(format!("getFeedDocument {document}: no valid url")))?;
        // A pre-signed URL: no access token on it.
        let (status, _, mut body) = caller
            .call_now(get(url.to_string(), false))
            .await
            .map_err(failed)?;
        if !(200..300).contains(&status) {
            return Err(failed(format!("feed report download: HTTP {status}")));
        }
        if located["compressionAlgorithm"] == "GZIP" {
            body = gunzip_at_most(&body, REPLY_BYTES_MAX)
                .map_err(|e| failed(format!("feed report: {e}")))?;
        }
        let report: Value = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("feed report: not JSON: {e}")))?;
        let mut refused = Vec::new();
        for issue in payload::list(&report["issues"]) {
            if issue["severity"] != "ERROR" {
                continue;
            }
            let why = issue["message"].as_str().unwrap_or("no message");
            match issue["messageId"].as_u64() {
                Some(message) => refused.push((message, why.to_string())),
                None => {
                    return Err(failed(format!(
                        "feed {feed_id} refused whole (its report names no message): {why}"
                    )))
                }
            }
        }
        let named = (1..=messages as u64)
            .filter(|m| refused.iter().any(|(r, _)| r == m))
            .count();
        let accepted = report["summary"]["messagesAccepted"].as_u64();
        if accepted.is_none_or(|accepted| accepted < (messages - named) as u64) {
            return Err(failed(format!(
                "feed {feed_id}: its report accepts {} of {messages} messages and refuses \
                 {named} by name; the rest are pushed again",
                accepted.map_or("an unknown number".to_string(), |a| a.to_string())
            )));
        }
        Ok(refused)
    }
}

fn failed(reason: String) -> PushReply {
    PushReply::Failed {
        reason,
        retryable: true,
    }
}

/// A 2xx JSON answer, or the push outcome of a non-2xx one.
fn reply_json(answer: &Answer) -> Result<Value, PushReply> {
    let (status, headers, body) = answer;
    if let Some(outcome) = super::http_failure(*status, headers, body) {
        return Err(outcome);
    }
    json_answer(answer).map_err(failed)
}

impl ChannelAdapter for Amazon {
    fn name(&self) -> &str {
        &self.name
    }

    /// A whole backlog when a feed can take it, else one second of per-call pushes.
    fn batch_max(&self) -> usize {
        if self.feed_room() {
            FEED_MESSAGES_MAX
        } else {
            self.feed_after_items().max(1)
        }
    }

    fn pace(&self) -> Pace {
        Pace::Published(DEFAULT_RATE)
    }

    fn carries(&self, sku: &str) -> bool {
        self.seller_sku(sku).is_some()
    }

    fn inbound(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Delivery, ApiError> {
        self.take(headers, body, now).map(Delivery::Carried)
    }

    fn seen(&self) -> Option<&Seen> {
        Some(&self.seen)
    }

    fn authorize<'a>(&'a self, caller: &'a Caller) -> BoxFuture<'a, Result<HeaderMap, String>> {
        Box::pin(self.token.headers(caller))
    }

    /// searchListingsItems (`GET /listings/2021-08-01/items/{sellerId}`, 20 a page, by
    /// `pageToken`, with `fulfillmentAvailability`)
    /// (https://developer-docs.amazon.com/sp-api/reference/searchlistingsitems): the
    /// seller SKU is both the SKU field and the id lockstep writes to. A listing with no
    /// `DEFAULT` (merchant-fulfilled) quantity is fulfilled by Amazon: listed as one
    /// lockstep cannot write. Amazon pages through at most 1,000 listings; a larger
    /// account is named in the error (its rest needs the All Listings report, not built).
    fn listings<'a>(
        &'a self,
        caller: &'a Caller,
        cursor: Option<&'a str>,
    ) -> super::listing::Listings<'a> {
        use super::listing::{sku_field, Listing, ListingError, ListingPage};
        Box::pin(async move {
            let mut path = format!(
                "/listings/2021-08-01/items/{}?marketplaceIds={}&includedData=summaries,fulfillmentAvailability&pageSize={LISTING_PAGE}",
                self.seller_id, self.marketplace_id
            );
            if let Some(token) = cursor {
                path.push_str(&format!(
                    "&pageToken={}",
                    utf8_percent_encode(token, NON_ALPHANUMERIC)
                ));
            }
            let request = http::Request::get(self.url(&path))
                .body(Vec::new())
                .expect("a validated base_url makes a valid request");
            let request = with_headers(request, self.authorize(caller).await?);
            let (status, _, body) = caller.call(request).await?;
            let reply = super::call::json_reply(status, &body)?;
            let items = reply["items"].as_array().ok_or("no items")?;
            let listings = items
                .iter()
                .filter_map(|item| {
                    let sku = sku_field(item["sku"].as_str())?;
                    let channels = payload::list(&item["fulfillmentAvailability"]);
                    let merchant = channels
                        .iter()
                        .find(|c| c["fulfillmentChannelCode"] == "DEFAULT");
                    Some(Listing::keyed_by_sku(
                        sku,
                        merchant.and_then(|c| c["quantity"].as_i64()),
                        (merchant.is_none() && !channels.is_empty()).then(|| {
                            "fulfilled by Amazon (no DEFAULT quantity the seller sets)".to_string()
                        }),
                    ))
                })
                .collect();
            let next = reply["pagination"]["nextToken"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            let found = reply["numberOfResults"].as_u64().unwrap_or(0);
            if next.is_none() && found > SEARCH_CAP {
                return Err(ListingError::Failed(format!(
                    "Amazon pages through at most {SEARCH_CAP} listings and this account has {found}: the rest need the All Listings report, which discovery does not read yet; write their rows by hand"
                )));
            }
            Ok(ListingPage {
                listings,
                next,
                pause: Duration::ZERO,
            })
        })
    }

    /// A backlog over `feed_after_items` goes as one feed; otherwise one SKU per call.
    fn push_groups(&self, items: &[PushItem]) -> Vec<Vec<usize>> {
        if items.len() > self.feed_after_items() && self.feed_room() {
            vec![(0..items.len()).collect()]
        } else {
            (0..items.len()).map(|i| vec![i]).collect()
        }
    }

    fn read_groups(&self, skus: &[&str]) -> Vec<Vec<usize>> {
        (0..skus.len()).map(|i| vec![i]).collect()
    }

    fn push<'a>(&'a self, caller: &'a Caller, items: &'a [PushItem]) -> BoxFuture<'a, PushReply> {
        Box::pin(async move {
            if items.len() > 1 {
                return match self.push_feed(caller, items).await {
                    Ok(acked) => PushReply::Accepted { acked, wait: None },
                    Err(outcome) => outcome,
                };
            }
            super::push_once(self, caller, items).await
        })
    }

    fn push_request(&self, items: &[PushItem], _now: Micros) -> OutboundRequest {
        let item = &items[0];
        let seller_sku = self.seller_sku(&item.sku).unwrap_or(&item.sku);
        let body = json!({
            "productType": "PRODUCT",
            "patches": [{"op": "merge", "path": "/attributes/fulfillment_availability",
                         "value": Self::fulfillment_availability(item.quantity)}],
        });
        http::Request::patch(self.url(&self.listing_path(seller_sku)))
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .expect("a validated base_url makes a valid request")
    }

    fn push_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        _items: &[PushItem],
    ) -> PushReply {
        if status == 401 {
            self.token.forget();
        }
        // The rate Amazon applies to this seller and operation (`x-amzn-RateLimit-Limit`,
        // SP-API "Usage plans and rate limits"): when it is below the pace configured,
        // each accepted call is followed by one interval of it, and a 429 (which has no
        // Retry-After) waits one interval too.
        let applied = applied_rate(headers);
        let interval = |rate: f64| super::pacing::wait_secs(1.0 / rate);
        if status == 429 {
            return PushReply::Throttled {
                retry_after: applied.map_or(Duration::from_secs(1), interval),
            };
        }
        if let Some(outcome) = super::http_failure(status, headers, body) {
            return outcome;
        }
        // The pusher's own bucket may hold a burst of tokens, so the wait is a whole
        // interval of the applied rate, with the pacer's 10% headroom.
        let wait = applied
            .filter(|r| *r < self.rate.requests_per_second)
            .map(|r| interval(r * 0.9));
        let reply: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match reply["status"].as_str() {
            Some("ACCEPTED") => PushReply::Accepted {
                acked: vec![0],
                wait,
            },
            _ => PushReply::Failed {
                reason: format!("patchListingsItem: {}", excerpt(body)),
                retryable: false,
            },
        }
    }

    fn read_request(&self, skus: &[String]) -> OutboundRequest {
        let seller_sku = self.seller_sku(&skus[0]).unwrap_or(&skus[0]);
        let url = self.url(&format!(
            "{}&includedData=fulfillmentAvailability",
            self.listing_path(seller_sku)
        ));
        http::Request::get(url)
            .body(Vec::new())
            .expect("a validated base_url makes a valid request")
    }

    fn read_reply(&self, status: u16, body: &[u8]) -> Result<Levels, String> {
        if status == 404 {
            return Ok(Vec::new());
        }
        let reply = super::call::json_reply(status, body)?;
        let seller_sku = reply["sku"].as_str().ok_or("the reply names no sku")?;
        let sku = self
            .catalog
            .sku_of(seller_sku, None, None)
            .ok_or("the reply names a SKU the catalog does not map")?;
        let quantity = payload::list(&reply["fulfillmentAvailability"])
            .iter()
            .find(|f| f["fulfillmentChannelCode"] == "DEFAULT")
            .and_then(|f| f["quantity"].as_i64());
        Ok(vec![(sku.to_string(), quantity)])
    }

    fn order_poll(&self) -> Option<&dyn OrderPoll> {
        Some(self)
    }

    fn order_queue(&self) -> Option<&dyn OrderQueue> {
        self.sqs.as_ref().map(|_| self as &dyn OrderQueue)
    }
}

impl OrderQueue for Amazon {
    fn receive<'a>(
        &'a self,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Vec<QueueMessage>, String>> {
        Box::pin(async move {
            let request = self.sqs_request(
                "ReceiveMessage",
                json!({"MaxNumberOfMessages": SQS_MESSAGES_MAX, "WaitTimeSeconds": SQS_WAIT_S}),
            )?;
            let answer = caller.call_now(request).await?;
            let reply = json_answer(&answer).map_err(|e| format!("ReceiveMessage: {e}"))?;
            let mut messages = Vec::new();
            for m in payload::list(&reply["Messages"]) {
                let (Some(id), Some(handle), Some(body)) = (
                    m["MessageId"].as_str(),
                    m["ReceiptHandle"].as_str(),
                    m["Body"].as_str(),
                ) else {
                    return Err(format!(
                        "ReceiveMessage: a message without its id, handle or body: {}",
                        excerpt(m.to_string().as_bytes())
                    ));
                };
                // The body as SQS stored it: a damaged one is left to come again.
                if let Some(md5) = m["MD5OfBody"].as_str() {
                    if !md5.eq_ignore_ascii_case(&md5_hex(body.as_bytes())) {
                        tracing::warn!(channel = %self.name, queue_message = id, "MD5OfBody does not match the body; left in the queue");
                        continue;
                    }
                }
                messages.push(QueueMessage {
                    id: id.to_string(),
                    handle: handle.to_string(),
                    body: body.to_string(),
                });
            }
            Ok(messages)
        })
    }

    fn events(&self, body: &str, now: Micros) -> Result<Inbound, String> {
        self.notification(body.as_bytes(), now)
            .map_err(|e| format!("{}: {}", e.code, e.message))
    }

    fn delete<'a>(
        &'a self,
        caller: &'a Caller,
        messages: &'a [QueueMessage],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut failed = Vec::new();
            for chunk in messages.chunks(SQS_MESSAGES_MAX) {
                let entries: Vec<Value> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, m)| json!({"Id": i.to_string(), "ReceiptHandle": m.handle}))
                    .collect();
                let request =
                    self.sqs_request("DeleteMessageBatch", json!({"Entries": entries}))?;
                let answer = caller.call_now(request).await?;
                let reply = json_answer(&answer).map_err(|e| format!("DeleteMessageBatch: {e}"))?;
                // A 200 can carry failed entries (SQS API reference, DeleteMessageBatch).
                for f in payload::list(&reply["Failed"]) {
                    let i: usize = f["Id"].as_str().and_then(|i| i.parse().ok()).unwrap_or(0);
                    failed.push(format!(
                        "{}: {}",
                        chunk.get(i).map_or("?", |m| m.id.as_str()),
                        f["Code"]
                    ));
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "DeleteMessageBatch failed for {}",
                    failed.join(", ")
                ))
            }
        })
    }
}

/// The rate Amazon says it applies to this seller, application and operation
/// (`x-amzn-RateLimit-Limit`, requests a second; "returned on a best-effort basis":
/// https://developer-docs.amazon.com/sp-api/docs/response-format), when it is one.
fn applied_rate(headers: &HeaderMap) -> Option<f64> {
    headers
        .get("x-amzn-ratelimit-limit")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|r| r.is_finite() && *r > 0.0)
}

/// Hex MD5 of a message body, as SQS gives `MD5OfBody`.
fn md5_hex(body: &[u8]) -> String {
    use md5::Digest as _;
    md5::Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Amazon {
    /// One order's items (OrderItemId, SellerSKU, QuantityOrdered, QuantityShipped), paced on
    /// getOrderItems' own budget, every page of them (`NextToken`, getOrderItems:
    /// "If NextToken is provided, it's used to retrieve the next page of order items").
    /// An item that cannot be read, the items past `ORDER_ITEM_PAGES_MAX` pages, and those
    /// of a page Amazon refuses for good (`FetchFailure::if_refused`) are `Err` items:
    /// recorded, and the order's other items taken. With them, whether the read may be
    /// kept for this version of the order (`order_items`): not after a refusal, so that
    /// the next pass listing the order asks again.
    async fn fetch_order_items(
        &self,
        caller: &Caller,
        get: &(dyn Fn(String) -> OutboundRequest + Sync),
        order_id: &str,
    ) -> Result<(Vec<OrderItem>, bool), String> {
        let path = format!("/orders/v0/orders/{}/orderItems", segment(order_id));
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..ORDER_ITEM_PAGES_MAX {
            let page_path = match &next {
                Some(token) => format!(
                    "{path}?NextToken={}",
                    utf8_percent_encode(token, NON_ALPHANUMERIC)
                ),
                None => path.clone(),
            };
            let page = match self
                .order_items_page(caller, get, order_id, page_path)
                .await
            {
                Ok(page) => page,
                // Amazon's final word on these items (400 or 404 among getOrderItems'
                // answers: https://developer-docs.amazon.com/sp-api/reference/getorderitems):
                // a pass that failed at it would fail at it for good, no later order
                // reaching the poll. The items read are taken and the rest recorded after
                // them, as below. Not kept: integrators meet passing 400s too (a
                // `NextToken` Amazon could not decode), and the next pass that lists the
                // order asks again, taking the items if Amazon gives them then.
                Err(FetchFailure::Unreadable(why)) => {
                    super::count_refused(&self.name);
                    tracing::warn!(channel = %self.name, order = %order_id, %why, "Amazon refuses to give the order's items; recorded");
                    let why = format!("and those after it are not read: {why}");
                    items.push(Err((payload::line_place(items.len()), why)));
                    return Ok((items, false));
                }
                Err(FetchFailure::Call(e)) => return Err(e),
            };
            // An item's place counts across pages: each page's items follow the last's.
            let before = items.len();
            items.extend(
                payload::list(&page["payload"]["OrderItems"])
                    .iter()
                    .enumerate()
                    .map(|(i, item)| order_item(item, "QuantityOrdered", before + i)),
            );
            match page["payload"]["NextToken"]
                .as_str()
                .filter(|t| !t.is_empty())
            {
                Some(token) => next = Some(token.to_string()),
                None => return Ok((items, true)),
            }
        }
        // Asking again would page the same way: the items read are taken, and the rest
        // is named in the audit (one record after them) rather than failing every pass
        // at this order, which would stop the poll for good.
        let why = format!(
            "and those after it are not read: getOrderItems still paging after {ORDER_ITEM_PAGES_MAX} pages"
        );
        items.push(Err((payload::line_place(items.len()), why)));
        Ok((items, true))
    }

    /// One page of an order's items; a 429 waits and tries again (a few times). The rate
    /// Amazon names on its answers paces the calls after it.
    async fn order_items_page(
        &self,
        caller: &Caller,
        get: &(dyn Fn(String) -> OutboundRequest + Sync),
        order_id: &str,
        path: String,
    ) -> Result<Value, FetchFailure> {
        const TRIES: u32 = 3;
        for _ in 0..TRIES {
            let answer = caller.call(get(path.clone())).await?;
            let mut bucket = self.order_items_bucket.lock().await;
            if let Some(rate) = applied_rate(&answer.1) {
                bucket.named_rate(rate);
            }
            if answer.0 == 429 {
                bucket.throttled(Duration::from_secs(2));
                continue;
            }
            drop(bucket);
            FetchFailure::if_refused(&answer, &format!("getOrderItems for {order_id}"))?;
            return Ok(json_answer(&answer)?);
        }
        Err(FetchFailure::Call(format!(
            "getOrderItems for {order_id}: still throttled after {TRIES} tries"
        )))
    }
}

/// `getOrders` by `LastUpdatedAfter` and `LastUpdatedBefore` (both inclusive: "after (or
/// at)", "before (or at)"), 100 a page, paged by `NextToken` sent with the same query
/// (https://developer-docs.amazon.com/sp-api/reference/getorders). The list's order is
/// not documented, so it is read in windows (`OrderPoll::windowed`); a window ending less
/// than `BEFORE_MARGIN` ago is sent without its end, on every page of it.
impl OrderPoll for Amazon {
    fn interval(&self) -> Duration {
        self.poll_interval
    }

    fn windowed(&self) -> bool {
        true
    }

    fn page<'a>(
        &'a self,
        caller: &'a Caller,
        since: Micros,
        until: Option<Micros>,
        cursor: Option<String>,
        now: Micros,
    ) -> BoxFuture<'a, Result<PollPage, String>> {
        Box::pin(async move {
            let auth = self.authorize(caller).await?;
            let get = self.getter(auth);
            let mut path = format!(
                "/orders/v0/orders?MarketplaceIds={}&FulfillmentChannels=MFN&LastUpdatedAfter={}&MaxResultsPerPage=100",
                self.marketplace_id,
                utf8_percent_encode(&format_rfc3339(since), NON_ALPHANUMERIC)
            );
            // The same query on every page of a window, `NextToken` added
            // (`WindowCursor`): integrators meet a refusal otherwise.
            let window = super::WindowCursor::read(cursor, until, now, BEFORE_MARGIN)?;
            if let Some(end) = window.end {
                path.push_str(&format!(
                    "&LastUpdatedBefore={}",
                    utf8_percent_encode(&format_rfc3339(end), NON_ALPHANUMERIC)
                ));
            }
            if !window.position.is_empty() {
                path.push_str(&format!(
                    "&NextToken={}",
                    utf8_percent_encode(&window.position, NON_ALPHANUMERIC)
                ));
            }
            // Paced on getOrders' own budget, at the rate Amazon names once it names one.
            let orders_caller = caller
                .paced_by(self.orders_bucket.clone())
                .waiting_out_throttles();
            let answer = orders_caller.call(get(path)).await?;
            if let Some(rate) = applied_rate(&answer.1) {
                self.orders_bucket.lock().await.named_rate(rate);
            }
            let listing = json_answer(&answer)?;
            let items_caller = caller.paced_by(self.order_items_bucket.clone());
            let mut page = PollPage {
                next: listing["payload"]["NextToken"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(|t| window.at(t.to_string())),
                ..PollPage::default()
            };
            for order in payload::list(&listing["payload"]["Orders"]) {
                match self.polled_order(&items_caller, &get, order, now).await {
                    Ok(events) => page.took(events),
                    // The items call failed for this order: set aside, read again at
                    // every pass (`propagate::set_aside`), while the pass reads on.
                    Err(why) => {
                        let id = payload::id(&order["AmazonOrderId"]).unwrap_or_default();
                        page.set_aside(id, order, why)?;
                    }
                }
            }
            Ok(page)
        })
    }

    fn read_again<'a>(
        &'a self,
        caller: &'a Caller,
        listed: &'a Value,
        now: Micros,
    ) -> BoxFuture<'a, Result<Vec<Event>, String>> {
        Box::pin(async move {
            let get = self.getter(self.authorize(caller).await?);
            let items_caller = caller.paced_by(self.order_items_bucket.clone());
            self.polled_order(&items_caller, &get, listed, now).await
        })
    }
}

impl Amazon {
    /// Builds a GET of a path under the Selling Partner API, with `auth`'s headers.
    fn getter(&self, auth: HeaderMap) -> impl Fn(String) -> OutboundRequest + Sync + '_ {
        move |path: String| {
            let request = http::Request::get(self.url(&path))
                .body(Vec::new())
                .expect("a validated base_url makes a valid request");
            with_headers(request, auth.clone())
        }
    }

    /// The events of one order as getOrders listed it, its items read (or remembered for
    /// this version of it: `order_items`). `Err`: the items call failed in a way another
    /// try may mend (a refusal for good is recorded, and the rest taken).
    async fn polled_order(
        &self,
        items_caller: &Caller,
        get: &(dyn Fn(String) -> OutboundRequest + Sync),
        order: &Value,
        now: Micros,
    ) -> Result<Vec<Event>, String> {
        let Some(order_id) = payload::id(&order["AmazonOrderId"]) else {
            let why = "an order without AmazonOrderId";
            super::order_left_out(&self.name, &order["AmazonOrderId"], &why);
            return Ok(Vec::new());
        };
        // Asked for MFN alone; one listed anyway costs no getOrderItems call.
        if order["FulfillmentChannel"] == "AFN" {
            return Ok(Vec::new());
        }
        let updated = payload::time_end(&order["LastUpdateDate"]);
        let status = order["OrderStatus"].as_str().unwrap_or_default();
        let version = order["LastUpdateDate"].as_str().unwrap_or_default();
        let items = match self.order_items.get(&order_id, version) {
            Some(items) => items,
            None => {
                let (items, keep) = self.fetch_order_items(items_caller, get, &order_id).await?;
                if keep {
                    self.order_items.keep(&order_id, version, items.clone());
                }
                items
            }
        };
        let purchased =
            payload::source_time(&[payload::time_end(&order["PurchaseDate"]), updated], now);
        let changed = payload::source_time(&[updated], now);
        Ok(self.order_events(&order_id, status, &items, purchased, changed, now))
    }
}

/// A GZIP body inflated, up to `max` bytes: the compressed size is bounded where it is
/// read (`REPLY_BYTES_MAX`), but a few MiB of GZIP can inflate to many GiB.
fn gunzip_at_most(body: &[u8], max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| format!("not GZIP: {e}"))?;
    if plain.len() > max {
        return Err(format!("inflates to more than {max} bytes"));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        out.write_all(bytes).unwrap();
        out.finish().unwrap()
    }

    #[test]
    fn a_report_that_inflates_past_the_limit_is_refused_not_inflated() {
        // 64 MiB of zeros: about 64 KiB of GZIP, well under what a reply may be.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let err = gunzip_at_most(&bomb, REPLY_BYTES_MAX).unwrap_err();
        assert!(err.contains("more than"), "{err}");
        assert_eq!(
            gunzip_at_most(&gzip(b"{}"), REPLY_BYTES_MAX).unwrap(),
            b"{}"
        );
        assert!(gunzip_at_most(b"plain", REPLY_BYTES_MAX).is_err());
    }
}
