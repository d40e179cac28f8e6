//! The `ebay` kind: an eBay seller over the Sell APIs (CHANNELS.md §5 and "Our choices").
//!
//! Orders come by polling the Fulfillment API: `GET /sell/fulfillment/v1/order` filtered
//! by `lastmodifieddate:[since..until]` in windows, paged by `offset`, every few seconds (`poll_interval_s`,
//! default 5: 17,280 listing calls a day, inside getOrders' daily quota, plus one
//! `getShippingFulfillments` per order with shipping started). eBay's Platform
//! Notifications are SOAP with a per-line `FixedPriceTransaction`, and the order coverage
//! of the JSON Notification API is unverified, so the poll is the path, not a fallback.
//! A line is placed with its order; its shipped units are a running total read from the
//! order's shipping fulfillments (`FULFILLED` counts in full only when they could not be
//! read); a `CANCELED` order releases the units not shipped. Keys
//! `{channel}/{orderId}/{lineItemId}/{transition}`.
//!
//! Outbound: `POST /sell/inventory/v1/bulk_update_price_quantity`, at most 25 SKUs per
//! call, each with its ship-to-location quantity and its offer's available quantity (the
//! listing shows the smaller), read per item from the reply. The catalog maps a SKU to
//! `listing_id/offer_id`; the inventory item's SKU on eBay is the SKU itself.
//!
//! eBay allows 250 revisions per listing per day: every call that changes a listing
//! counts one against it (kept per listing and day, the day being eBay's Pacific day,
//! taken as UTC-8). When a listing has `REVISION_RESERVE` revisions left, only decreases
//! go out (a channel showing too many units oversells; too few only sells less), and at
//! the limit nothing does: held items wait in the outbox and each hold is written to the
//! audit as `withheld`. The counts live in memory: a restart forgets the day's count.
//! Reads: `POST /sell/inventory/v1/bulk_get_inventory_item`, at most 25 SKUs per call
//! (https://developer.ebay.com/api-docs/sell/inventory/resources/inventory_item/methods/bulkGetInventoryItem):
//! reconciliation shares the call budget with the pushes, and one SKU per read spent about
//! half of it on a 200-SKU catalog read every 20 s. Calls carry a user access token
//! from the refresh token (`POST /identity/v1/oauth2/token`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderMap;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::call::{form, json_answer, with_headers, TokenCache};
use super::kind::{self, Kind, Problem};
use super::Pace;

/// Inventory items a getInventoryItems page asks for: its most.
const LISTING_PAGE: usize = 200;
use super::{excerpt, payload, BoxFuture, Caller, Catalog, ChannelAdapter, Delivery, Levels};
use super::{OrderPoll, OutboundRequest, PollPage, PushItem, PushReply, RateLimit, WindowCursor};
use crate::clock::{format_iso8601_millis, now_micros, Micros, MICROS_PER_HOUR};
use crate::config::{ChannelConfig, ChannelKind};
use crate::core::event::{Event, EventKind, LineRef};
use crate::refusal::ApiError;

/// `bulk_get_inventory_item` reads at most 25 inventory items ("Up to 25 inventory item
/// records can be retrieved at one time", BulkGetInventoryItem).
const READ_MAX: usize = 25;
/// `bulk_update_price_quantity` takes at most 25 requests.
pub const BATCH_MAX: usize = 25;
/// Revisions eBay allows per listing per day (`revision_limit` overrides it).
pub const REVISIONS_PER_DAY: u32 = 250;
/// Revisions kept for decreases once a listing comes this close to the limit.
pub const REVISION_RESERVE: u32 = 10;
/// The Inventory API's per-call limit is a daily quota, not a rate: a modest pace.
const DEFAULT_RATE: RateLimit = RateLimit {
    requests_per_second: 5.0,
    burst: 10,
};
const POLL_INTERVAL_DEFAULT_S: u64 = 5;
/// Orders per page of the poll (getOrders allows up to 200).
const PAGE_SIZE: u32 = 200;
/// Orders whose shipped units the poll keeps (`Ebay::shipped`; when full it starts over).
const SHIPPED_KEPT_MAX: usize = 10_000;
/// How far in the past a poll window's end must be to be sent as the filter's end: eBay
/// refuses an end in the future by its clock, and advises reading to "the current time
/// minus 2 minutes" (https://developer.ebay.com/support/knowledge-base/1788): five
/// minutes, three for the two clocks.
const END_MARGIN: Micros = 5 * 60 * crate::clock::MICROS_PER_SECOND;
/// eBay's day ends at midnight Pacific (unverified, so `revision_day_utc_offset_h` can
/// change it); standard time is taken all year, so a day may reset an hour late in
/// summer (never early).
const PACIFIC_OFFSET_H: i64 = -8;

/// An eBay seller account.
pub struct Ebay {
    name: String,
    base_url: String,
    catalog: Catalog,
    /// Items per push: `batch_max`, at most `BATCH_MAX`.
    batch_max: usize,
    poll_interval: Duration,
    /// Each order's shipped units per line, per version (`lastModifiedDate` and the count
    /// of `fulfillmentHrefs`): every pass
    /// lists the last five minutes' orders again, and without this each shipped one
    /// would cost a getShippingFulfillments call at every pass (at the default 5 s, 60
    /// calls an order), out of the Fulfillment API's daily call limit.
    shipped: super::fetched::Fetched<ahash::AHashMap<String, i64>>,
    token: TokenCache,
    /// When the spent daily call limit of the Inventory API resets (`None`: not spent).
    quota_reset: std::sync::Mutex<Option<std::time::Instant>>,
    revision_limit: u32,
    /// The UTC offset of eBay's day.
    day_offset: Micros,
    /// Listing id → (eBay day, revisions used that day).
    revisions: Mutex<HashMap<String, (i64, u32)>>,
}

/// The number of the day (starting at UTC+`offset`) of a time.
fn day_of(at: Micros, offset: Micros) -> i64 {
    (at + offset).div_euclid(24 * MICROS_PER_HOUR)
}

/// Whether getOffers answered that the SKU has no offer at all: HTTP 404 whose every error
/// is 25713 ("This Offer is not available"). eBay's getOffers page lists no 404 error,
/// but that is what it answers for an inventory item never offered (integrators handle it
/// so: `nepalez/ebay_api` `offers/list.rb`, `rjdavis3/ebay-sdk` `OfferClientImpl.java`);
/// any other 404 is a failure like every other error.
fn no_offer(status: u16, body: &[u8]) -> bool {
    if status != 404 {
        return false;
    }
    let reply = serde_json::from_slice::<Value>(body).unwrap_or_default();
    let errors = payload::list(&reply["errors"]);
    !errors.is_empty() && errors.iter().all(|e| e["errorId"].as_i64() == Some(25713))
}

/// The page a listing page's `next` names, as a path and query on our base URL. eBay
/// gives a full URI (getInventoryItems, "next": "the URI for the next page"); only its
/// path from `/sell/inventory/v1/inventory_item?` on is taken, and it must be a valid
/// one. Anything else is refused: appended as it came, `@host/...` or `.host/...` would
/// send the seller's token to another host, and a space would not make a request.
fn listing_page_path(next: &str) -> Result<String, String> {
    const PAGE: &str = "/sell/inventory/v1/inventory_item?";
    next.find(PAGE)
        .map(|at| &next[at..])
        .filter(|path| http::uri::PathAndQuery::try_from(*path).is_ok())
        .map(str::to_string)
        .ok_or_else(|| format!("next page {next:?} is not a page of inventory items"))
}

/// How long until the next day (starting at UTC+`offset`) begins.
fn until_next_day(now: Micros, offset: Micros) -> Duration {
    let next = (day_of(now, offset) + 1) * 24 * MICROS_PER_HOUR - offset;
    Duration::from_micros((next - now).max(1) as u64)
}

/// Whether a 429's body is eBay's error 2001, "Too many requests" ("The request limit has
/// been reached for the resource"; developer.ebay.com, the "HTTP 429" error codes): a
/// short-window limit or the daily one.
fn too_many_requests(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|r| {
        payload::list(&r["errors"])
            .iter()
            .any(|e| e["errorId"].as_u64() == Some(2001))
    })
}

/// How long a throttle waits when getRateLimits cannot say which limit was met.
const QUOTA_WAIT_DEFAULT: Duration = Duration::from_secs(60);
/// The longest a spent quota waits: the window is a day.
const QUOTA_WAIT_MAX: Duration = Duration::from_secs(24 * 3_600);

/// The `[[channels]]` keys of kind `ebay`: the app's keys and the seller's refresh token
/// (https://developer.ebay.com/api-docs/static/oauth-refresh-token-request.html), and
/// the revision budget.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    /// The token endpoint, when not `{base_url}/identity/v1/oauth2/token`.
    token_url: Option<String>,
    /// Revisions allowed per listing per day (default 250, eBay's limit).
    revision_limit: Option<u32>,
    /// The UTC offset, in hours, of the day the revision limit counts (default -8:
    /// midnight Pacific standard time; when eBay's day turns is unverified).
    revision_day_utc_offset_h: Option<i64>,
}

impl Kind for Ebay {
    type Settings = Settings;

    fn check(_channel: &ChannelConfig, settings: &Settings) -> Result<(), Problem> {
        let ebay = ChannelKind::Ebay;
        kind::required(&settings.client_id, "client_id", ebay)?;
        kind::required(&settings.client_secret, "client_secret", ebay)?;
        kind::required(&settings.refresh_token, "refresh_token", ebay)?;
        kind::optional_url(&settings.token_url, "token_url")?;
        if settings
            .revision_day_utc_offset_h
            .is_some_and(|h| !(-12..=14).contains(&h))
        {
            return Err(Problem::new("revision_day_utc_offset_h", "-12 to 14 hours"));
        }
        Ok(())
    }

    fn check_item_id(id: &str) -> Result<(), &'static str> {
        if kind::two_numbers(id) {
            Ok(())
        } else {
            Err("an eBay item_id is listing_id/offer_id")
        }
    }

    fn open(
        channel: &ChannelConfig,
        settings: Settings,
        catalog: Catalog,
        _data_dir: &std::path::Path,
    ) -> Ebay {
        Ebay::from_settings(channel, settings, catalog)
    }
}

impl Ebay {
    /// The wait left on a spent daily quota.
    fn quota_wait(&self) -> Option<Duration> {
        let mut reset = self.quota_reset.lock().unwrap_or_else(|e| e.into_inner());
        match *reset {
            Some(at) if at > std::time::Instant::now() => Some(at - std::time::Instant::now()),
            Some(_) => {
                *reset = None;
                None
            }
            None => None,
        }
    }

    /// Reads which of the Inventory API's limits is spent (`getRateLimits` for the
    /// user's token: `GET /developer/analytics/v1_beta/user_rate_limit/?api_context=sell&
    /// api_name=inventory`; each rate has `remaining` and `reset`, an ISO 8601 time),
    /// remembers when it resets and returns the wait; `None`: no limit is spent (a burst).
    async fn learn_quota_reset(&self, caller: &Caller, auth: HeaderMap) -> Option<Duration> {
        let url = format!(
            "{}/developer/analytics/v1_beta/user_rate_limit/?api_context=sell&api_name=inventory",
            self.base_url
        );
        let request = with_headers(
            http::Request::get(url)
                .body(Vec::new())
                .expect("a validated base_url makes a valid request"),
            auth,
        );
        let wait = match caller.call_now(request).await.and_then(|a| json_answer(&a)) {
            Ok(reply) => {
                let reset = payload::list(&reply["rateLimits"])
                    .iter()
                    .flat_map(|l| payload::list(&l["resources"]))
                    .flat_map(|r| payload::list(&r["rates"]))
                    .filter(|rate| rate["remaining"].as_i64() == Some(0))
                    .filter_map(|rate| payload::time(&rate["reset"]))
                    .max()?;
                Duration::from_micros((reset - now_micros()).max(1_000_000) as u64)
                    .min(QUOTA_WAIT_MAX)
            }
            Err(reason) => {
                tracing::warn!(channel = %self.name, %reason, "getRateLimits failed; waiting the default");
                QUOTA_WAIT_DEFAULT
            }
        };
        tracing::warn!(channel = %self.name, wait_s = wait.as_secs(), "eBay's daily call limit is spent; pushes wait for its reset");
        *self.quota_reset.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now() + wait);
        Some(wait)
    }

    fn from_settings(config: &ChannelConfig, settings: Settings, catalog: Catalog) -> Ebay {
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let token_url = settings
            .token_url
            .clone()
            .unwrap_or_else(|| format!("{base_url}/identity/v1/oauth2/token"));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            settings.client_id.as_deref().unwrap_or_default(),
            settings.client_secret.as_deref().unwrap_or_default()
        ));
        let refresh = settings.refresh_token.clone().unwrap_or_default();
        let token = TokenCache::new("authorization", "Bearer ", move || {
            let body = form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                (
                    "scope",
                    "https://api.ebay.com/oauth/api_scope/sell.inventory https://api.ebay.com/oauth/api_scope/sell.fulfillment",
                ),
            ]);
            http::Request::post(&token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", format!("Basic {basic}"))
                .body(body)
                .expect("a validated token_url makes a valid request")
        });
        Ebay {
            name: config.name.clone(),
            base_url,
            catalog,
            batch_max: kind::batch_max(config, BATCH_MAX, BATCH_MAX),
            poll_interval: Duration::from_secs(
                config.poll_interval_s.unwrap_or(POLL_INTERVAL_DEFAULT_S),
            ),
            shipped: super::fetched::Fetched::new(SHIPPED_KEPT_MAX),
            token,
            quota_reset: std::sync::Mutex::new(None),
            revision_limit: settings.revision_limit.unwrap_or(REVISIONS_PER_DAY),
            day_offset: settings
                .revision_day_utc_offset_h
                .unwrap_or(PACIFIC_OFFSET_H)
                * MICROS_PER_HOUR,
            revisions: Mutex::new(HashMap::new()),
        }
    }

    /// (listing id, offer id) of a SKU.
    fn listing_offer(&self, sku: &str) -> Option<(&str, &str)> {
        self.catalog.item(sku)?.id.split_once('/')
    }

    /// Splits items into those that may go out now and those held by their listing's
    /// revision budget. A listing counts once per call, however many of its SKUs it has.
    fn budget(&self, items: &[PushItem], now: Micros) -> (Vec<usize>, Vec<usize>) {
        let day = day_of(now, self.day_offset);
        let revisions = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        let used = |listing: &str| {
            revisions
                .get(listing)
                .filter(|(d, _)| *d == day)
                .map_or(0, |(_, n)| *n)
        };
        let (mut send, mut held) = (Vec::new(), Vec::new());
        for (i, item) in items.iter().enumerate() {
            let listing = self.listing_offer(&item.sku).map_or("", |(l, _)| l);
            let left = self.revision_limit.saturating_sub(used(listing));
            // A decrease, or a first push whose effect is unknown: worth a reserved
            // revision. An increase only sells more: it waits for the next day.
            let decrease = item.expected.is_none_or(|shown| item.quantity < shown);
            if left == 0 || (left <= REVISION_RESERVE && !decrease) {
                held.push(i);
            } else {
                send.push(i);
            }
        }
        (send, held)
    }

    /// Counts one revision for each listing among `items`.
    fn spend(&self, items: &[&PushItem], now: Micros) {
        let day = day_of(now, self.day_offset);
        let mut revisions = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        let mut listings: Vec<&str> = items
            .iter()
            .filter_map(|i| self.listing_offer(&i.sku).map(|(l, _)| l))
            .collect();
        listings.sort_unstable();
        listings.dedup();
        for listing in listings {
            let entry = revisions.entry(listing.to_string()).or_insert((day, 0));
            if entry.0 != day {
                *entry = (day, 0);
            }
            entry.1 += 1;
        }
    }

    /// The events of one order resource. `shipped` has the units each line has in the
    /// order's shipping fulfillments, when they were read: eBay calls a line `FULFILLED`
    /// once any of its quantity is in one (LineItemFulfillmentStatusEnum:
    /// https://developer.ebay.com/api-docs/sell/fulfillment/types/sel:LineItemFulfillmentStatusEnum),
    /// so only the fulfillments count shipped units; without them a `FULFILLED` line counts
    /// as shipped in full. Shipped units are the line's running total; a cancelled order
    /// (eBay cancels whole orders only) releases the rest.
    pub(crate) fn order_events(
        &self,
        order: &Value,
        shipped: Option<&ahash::AHashMap<String, i64>>,
        now: Micros,
    ) -> Result<Vec<Event>, String> {
        let order_id = payload::id(&order["orderId"]).ok_or("an order without orderId")?;
        let created = payload::source_time(&[payload::time_end(&order["creationDate"])], now);
        let modified = payload::source_time(&[payload::time_end(&order["lastModifiedDate"])], now);
        let cancelled = order["cancelStatus"]["cancelState"] == "CANCELED";
        let mut events = Vec::new();
        let reader = payload::OrderLines::of(&self.name, &order_id, created, now);
        for (i, line) in payload::list(&order["lineItems"]).iter().enumerate() {
            let fields = ("lineItemId", "quantity");
            let Some((line_id, qty)) = reader.read(line, fields, i, &mut events) else {
                continue;
            };
            let fulfilled = line["lineItemFulfillmentStatus"] == "FULFILLED";
            let units = match shipped {
                Some(map) => map.get(&line_id).copied().unwrap_or(0).clamp(0, qty),
                None if fulfilled => qty,
                None => 0,
            };
            let mut transitions = Vec::new();
            if !cancelled || units > 0 {
                transitions.push((EventKind::OrderPlaced, created, qty));
            }
            if units > 0 {
                transitions.push((EventKind::OrderShippedTotal, modified, units));
            }
            if cancelled && units < qty {
                transitions.push((EventKind::OrderReleasedTotal, modified, qty - units));
            }
            let line_ref = LineRef {
                order_id: order_id.clone(),
                line_id,
            };
            let sku = payload::sku(&line["sku"]).filter(|s| self.catalog.item(s).is_some());
            let what = format!("listing {}", line["legacyItemId"].as_str().unwrap_or("?"));
            events.extend(payload::order_line_units(
                &self.name,
                line_ref,
                sku.as_deref(),
                &transitions,
                &what,
                now,
            ));
        }
        payload::stamp_origins(&mut events);
        Ok(events)
    }

    /// Units per line item in the order's shipping fulfillments
    /// (`getShippingFulfillments`: `fulfillments[].lineItems[]` with `lineItemId` and
    /// `quantity`: https://developer.ebay.com/api-docs/sell/fulfillment/types/sel:LineItemReference),
    /// and how many fulfillments the answer held.
    /// `Ok(None)`: eBay refuses to read this order's fulfillments (a 4xx that no retry
    /// changes: `call::refused_for_good`), so the order is read without them; any other
    /// failure fails the pass, which is tried again.
    async fn shipped_units(
        &self,
        caller: &Caller,
        auth: &HeaderMap,
        order_id: &str,
    ) -> Result<Option<(ahash::AHashMap<String, i64>, usize)>, String> {
        let url = format!(
            "{}/sell/fulfillment/v1/order/{}/shipping_fulfillment",
            self.base_url,
            super::call::segment(order_id)
        );
        let request = http::Request::get(url)
            .body(Vec::new())
            .expect("a validated base_url makes a valid request");
        let answer = caller.call_now(with_headers(request, auth.clone())).await?;
        if super::call::refused_for_good(answer.0) {
            super::count_refused(&self.name);
            tracing::warn!(channel = %self.name, order = %order_id, status = answer.0,
                "eBay refuses to read the order's shipping fulfillments: its FULFILLED lines count as shipped in full");
            return Ok(None);
        }
        let reply = json_answer(&answer)?;
        let mut units = ahash::AHashMap::new();
        let fulfillments = payload::list(&reply["fulfillments"]);
        for fulfillment in fulfillments {
            for item in payload::list(&fulfillment["lineItems"]) {
                if let (Some(id), Some(n)) = (
                    payload::id(&item["lineItemId"]),
                    payload::quantity(&item["quantity"]),
                ) {
                    *units.entry(id).or_insert(0) += n;
                }
            }
        }
        Ok(Some((units, fulfillments.len())))
    }
}

impl ChannelAdapter for Ebay {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_max(&self) -> usize {
        self.batch_max
    }

    fn pace(&self) -> Pace {
        Pace::Published(DEFAULT_RATE)
    }

    fn carries(&self, sku: &str) -> bool {
        self.listing_offer(sku).is_some()
    }

    /// eBay has no order webhooks here: anything posted to its endpoint is refused.
    fn inbound(
        &self,
        _headers: &HeaderMap,
        _body: &[u8],
        _now: Micros,
    ) -> Result<Delivery, ApiError> {
        Err(ApiError::new(
            hyper::StatusCode::NOT_FOUND,
            "no_inbound_webhooks",
            "eBay orders are polled from the Fulfillment API; this channel takes no webhooks",
        ))
    }

    fn authorize<'a>(&'a self, caller: &'a Caller) -> BoxFuture<'a, Result<HeaderMap, String>> {
        Box::pin(self.token.headers(caller))
    }

    /// getInventoryItems (`GET /sell/inventory/v1/inventory_item`, 200 a page, following
    /// the answer's `next`: eBay documents `offset` as a page number, so the link is
    /// trusted over arithmetic), then getOffers (`GET /sell/inventory/v1/offer?sku=`) for
    /// each SKU, whose published offers are the items lockstep writes
    /// (`listing_id/offer_id`)
    /// (https://developer.ebay.com/api-docs/sell/inventory/resources/inventory_item/methods/getInventoryItems,
    /// https://developer.ebay.com/api-docs/sell/inventory/resources/offer/methods/getOffers).
    /// A SKU offered twice (an auction beside a fixed price) is two items, reported as a
    /// duplicate; an unpublished offer, and an inventory item with no offer at all (404,
    /// `no_offer`), are listed as ones lockstep cannot write. Listings
    /// made outside the Inventory API are not there until migrated
    /// (`bulkMigrateListing`), and lockstep could not write them anyway.
    fn listings<'a>(
        &'a self,
        caller: &'a Caller,
        cursor: Option<&'a str>,
    ) -> super::listing::Listings<'a> {
        use super::listing::{sku_field, Listing, ListingError, ListingPage};
        Box::pin(async move {
            let path = match cursor {
                Some(cursor) => listing_page_path(cursor)?,
                None => format!("/sell/inventory/v1/inventory_item?limit={LISTING_PAGE}&offset=0"),
            };
            let get = |path: &str| {
                http::Request::get(format!("{}{path}", self.base_url))
                    .body(Vec::new())
                    .expect("a validated base_url makes a valid request")
            };
            let call = |path: String| async move {
                let request = with_headers(get(&path), self.authorize(caller).await?);
                Ok::<_, ListingError>(caller.call(request).await?)
            };
            let (status, _, body) = call(path).await?;
            let page = super::call::json_reply(status, &body)?;
            let mut listings = Vec::new();
            for item in payload::list(&page["inventoryItems"]) {
                let Some(sku) = sku_field(item["sku"].as_str()) else {
                    continue;
                };
                let (status, _, body) = call(format!(
                    "/sell/inventory/v1/offer?sku={}",
                    utf8_percent_encode(&sku, NON_ALPHANUMERIC)
                ))
                .await?;
                if no_offer(status, &body) {
                    listings.push(Listing {
                        sku: Some(sku.clone()),
                        item_id: sku,
                        location_id: None,
                        level: item["availability"]["shipToLocationAvailability"]["quantity"]
                            .as_i64(),
                        problem: Some(
                            "the inventory item has no offer: nothing of it is for sale to write"
                                .into(),
                        ),
                    });
                    continue;
                }
                let offers = super::call::json_reply(status, &body)?;
                for offer in payload::list(&offers["offers"]) {
                    let offer_id =
                        payload::id(&offer["offerId"]).ok_or("an offer without offerId")?;
                    let listing = payload::id(&offer["listing"]["listingId"]);
                    listings.push(Listing {
                        sku: Some(sku.clone()),
                        item_id: format!(
                            "{}/{offer_id}",
                            listing.as_deref().unwrap_or("unpublished")
                        ),
                        location_id: None,
                        level: item["availability"]["shipToLocationAvailability"]["quantity"]
                            .as_i64(),
                        problem: listing.is_none().then(|| {
                            format!("offer {offer_id} is not published: it has no listing to write")
                        }),
                    });
                }
            }
            let next = match page["next"].as_str().filter(|n| !n.is_empty()) {
                Some(next) => Some(listing_page_path(next)?),
                None => None,
            };
            Ok(ListingPage {
                listings,
                next,
                pause: Duration::ZERO,
            })
        })
    }

    fn push<'a>(&'a self, caller: &'a Caller, items: &'a [PushItem]) -> BoxFuture<'a, PushReply> {
        Box::pin(async move {
            let now = now_micros();
            let (send, held) = self.budget(items, now);
            let retry_in = until_next_day(now, self.day_offset).min(Duration::from_secs(3_600));
            if send.is_empty() {
                return PushReply::Held {
                    acked: Vec::new(),
                    held,
                    retry_in,
                };
            }
            if let Some(wait) = self.quota_wait() {
                return PushReply::Throttled { retry_after: wait };
            }
            let subset: Vec<PushItem> = send.iter().map(|i| items[*i].clone()).collect();
            let auth = match self.authorize(caller).await {
                Ok(auth) => auth,
                Err(reason) => {
                    return PushReply::Failed {
                        reason,
                        retryable: true,
                    }
                }
            };
            let request = with_headers(self.push_request(&subset, now), auth.clone());
            let reply = match caller.call(request).await {
                Ok((429, headers, body)) if too_many_requests(&body) => {
                    // A burst limit or the daily call limit: getRateLimits tells which,
                    // and when a spent limit resets.
                    let wait = self.learn_quota_reset(caller, auth).await;
                    let burst = super::retry_after(&headers).unwrap_or(Duration::from_secs(1));
                    return PushReply::Throttled {
                        retry_after: wait.unwrap_or(burst),
                    };
                }
                Ok((status, headers, body)) => {
                    // Any answer but a refusal of the whole call may have revised listings.
                    if (200..300).contains(&status) {
                        self.spend(&subset.iter().collect::<Vec<_>>(), now);
                    }
                    self.push_reply(status, &headers, &body, &subset)
                }
                Err(reason) => PushReply::Failed {
                    reason,
                    retryable: true,
                },
            };
            match reply {
                PushReply::Accepted { acked, wait } => {
                    let acked = acked.into_iter().map(|i| send[i]).collect();
                    if held.is_empty() {
                        PushReply::Accepted { acked, wait }
                    } else {
                        PushReply::Held {
                            acked,
                            held,
                            retry_in,
                        }
                    }
                }
                other => other,
            }
        })
    }

    fn push_request(&self, items: &[PushItem], _now: Micros) -> OutboundRequest {
        let requests: Vec<Value> = items
            .iter()
            .map(|item| {
                let offer = self.listing_offer(&item.sku).map_or("", |(_, o)| o);
                json!({
                    "sku": item.sku,
                    "shipToLocationAvailability": {"quantity": item.quantity},
                    "offers": [{"offerId": offer, "availableQuantity": item.quantity}],
                })
            })
            .collect();
        http::Request::post(format!(
            "{}/sell/inventory/v1/bulk_update_price_quantity",
            self.base_url
        ))
        .header("content-type", "application/json")
        .body(json!({ "requests": requests }).to_string().into_bytes())
        .expect("a validated base_url makes a valid request")
    }

    fn push_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        items: &[PushItem],
    ) -> PushReply {
        if status == 401 {
            self.token.forget();
        }
        if let Some(outcome) = super::http_failure(status, headers, body) {
            return outcome;
        }
        let Ok(reply) = serde_json::from_slice::<Value>(body) else {
            return PushReply::Failed {
                reason: format!("reply is not JSON: {}", excerpt(body)),
                retryable: true,
            };
        };
        // 200 or 207 (multi-status): one response for the inventory item (no `offerId`)
        // and one per offer, each with its own status ("the result for each offer and/or
        // inventory item", PriceQuantityResponse). A SKU is taken only when every
        // response about it says 200: the listing shows min(offer, ship-to-location).
        let mut verdict: ahash::AHashMap<&str, bool> = ahash::AHashMap::new();
        for r in payload::list(&reply["responses"]) {
            if let Some(sku) = r["sku"].as_str() {
                let ok = r["statusCode"].as_u64() == Some(200);
                *verdict.entry(sku).or_insert(true) &= ok;
            }
        }
        let acked = items
            .iter()
            .enumerate()
            .filter(|(_, i)| verdict.get(i.sku.as_str()) == Some(&true))
            .map(|(n, _)| n)
            .collect();
        PushReply::Accepted { acked, wait: None }
    }

    fn read_groups(&self, skus: &[&str]) -> Vec<Vec<usize>> {
        let all: Vec<usize> = (0..skus.len()).collect();
        all.chunks(READ_MAX).map(<[usize]>::to_vec).collect()
    }

    fn read_request(&self, skus: &[String]) -> OutboundRequest {
        let requests: Vec<Value> = skus.iter().map(|sku| json!({ "sku": sku })).collect();
        http::Request::post(format!(
            "{}/sell/inventory/v1/bulk_get_inventory_item",
            self.base_url
        ))
        .header("content-type", "application/json")
        .body(json!({ "requests": requests }).to_string().into_bytes())
        .expect("a validated base_url makes a valid request")
    }

    /// The answer speaks of every SKU asked (404: not listed): a SKU it leaves out was not
    /// read, and must not pass for unlisted.
    fn check_read(&self, skus: &[String], levels: &Levels) -> Result<(), String> {
        every_sku_answered(skus, levels)
    }

    /// One `GetInventoryItemResponse` per SKU, each with its own `statusCode`: 200 with
    /// the `inventoryItem`, 404 for a SKU eBay does not know (not listed: `None`). Any
    /// other status fails the read: a SKU that could not be read must not pass for
    /// unlisted.
    fn read_reply(&self, status: u16, body: &[u8]) -> Result<Levels, String> {
        let reply = super::call::json_reply(status, body)?;
        let mut levels = Vec::new();
        for r in payload::list(&reply["responses"]) {
            let sku = r["sku"].as_str().ok_or("a response names no sku")?;
            match r["statusCode"].as_u64() {
                Some(200) => {
                    let availability = &r["inventoryItem"]["availability"];
                    let quantity = availability["shipToLocationAvailability"]["quantity"].as_i64();
                    levels.push((sku.to_string(), quantity));
                }
                Some(404) => levels.push((sku.to_string(), None)),
                other => {
                    return Err(format!(
                        "eBay could not read {sku}: status {other:?}, {}",
                        excerpt(r["errors"].to_string().as_bytes())
                    ))
                }
            }
        }
        Ok(levels)
    }

    fn order_poll(&self) -> Option<&dyn OrderPoll> {
        Some(self)
    }
}

impl OrderPoll for Ebay {
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
            // eBay documents the filter's times with milliseconds, as in
            // `lastmodifieddate:[2016-03-21T08:25:43.511Z..]`, "with or without an ending
            // timestamp", inclusive (getOrders, "filter":
            // https://developer.ebay.com/api-docs/sell/fulfillment/resources/order/methods/getOrders);
            // it is not told to take more digits. An end in the future is
            // refused (error 30850, "Start and end dates can't be in the future"), so a
            // window ending less than `END_MARGIN` ago is sent without one, on every page
            // of it (`WindowCursor`). The list's order is not documented: it is read in
            // windows (`OrderPoll::windowed`).
            let window = WindowCursor::read(cursor, until, now, END_MARGIN)?;
            let (offset, total_before) = offset_and_total(&window.position)?;
            let end = window.end.map(format_iso8601_millis).unwrap_or_default();
            let filter = format!("lastmodifieddate:[{}..{end}]", format_iso8601_millis(since));
            let url = format!(
                "{}/sell/fulfillment/v1/order?filter={}&limit={PAGE_SIZE}&offset={offset}",
                self.base_url,
                utf8_percent_encode(&filter, NON_ALPHANUMERIC)
            );
            let request = http::Request::get(url)
                .body(Vec::new())
                .expect("a validated base_url makes a valid request");
            let reply = json_answer(&caller.call_now(with_headers(request, auth.clone())).await?)?;
            let orders = payload::list(&reply["orders"]);
            let mut page = PollPage::default();
            for order in orders {
                match self.polled_order(caller, &auth, order, now).await {
                    Ok(events) => page.took(events),
                    // The fulfillments call failed for this order: set aside, read again
                    // at every pass (`propagate::set_aside`), while the pass reads on.
                    Err(why) => {
                        let id = payload::id(&order["orderId"]).unwrap_or_default();
                        page.set_aside(id, order, why)?;
                    }
                }
            }
            // Without its total a page cannot say whether the window has more.
            let total = reply["total"]
                .as_u64()
                .ok_or("eBay's orders page has no total")?;
            page.next = next_page(offset, orders.len() as u64, total_before, total)
                .map(|next| window.at(format!("{next}.{total}")));
            if orders.is_empty() && offset < total && page.next.is_none() {
                // Counted but not listed: nothing to read, and nothing to fail on.
                tracing::warn!(
                    offset,
                    total,
                    "eBay's orders page is empty short of its total"
                );
            }
            // The count of a window sent with its end: one sent without counts every
            // order up to eBay's now, which narrowing it would not change.
            if offset == 0 && window.end.is_some() {
                page.pages = Some(total.div_ceil(u64::from(PAGE_SIZE)));
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
            let auth = self.authorize(caller).await?;
            self.polled_order(caller, &auth, listed, now).await
        })
    }
}

impl Ebay {
    /// The events of one order as getOrders listed it, its shipped units read from its
    /// shipping fulfillments when it has any (or remembered for this version of it:
    /// `shipped`). `Err`: the fulfillments call failed in a way another try may mend.
    async fn polled_order(
        &self,
        caller: &Caller,
        auth: &HeaderMap,
        order: &Value,
        now: Micros,
    ) -> Result<Vec<Event>, String> {
        // An order with anything shipped: its fulfillments count the units.
        let started = |v: &Value| v.as_str().is_some_and(|s| s != "NOT_STARTED");
        let shipping = started(&order["orderFulfillmentStatus"])
            || payload::list(&order["lineItems"])
                .iter()
                .any(|l| started(&l["lineItemFulfillmentStatus"]));
        // The version: `lastModifiedDate` and how many fulfillments the order
        // names (`fulfillmentHrefs`, "getShippingFulfillment call URIs" for the
        // order's fulfillments: https://developer.ebay.com/api-docs/sell/fulfillment/types/sel:Order),
        // so a new package is read even if eBay does not move the date for it
        // (its docs do not say what moves it).
        let modified = order["lastModifiedDate"].as_str().unwrap_or_default();
        let packages = payload::list(&order["fulfillmentHrefs"]).len();
        let version = format!("{modified}|{packages}");
        let shipped = match (shipping, payload::id(&order["orderId"])) {
            (true, Some(id)) => match self.shipped.get(&id, &version) {
                Some(units) => Some(units),
                None => match self.shipped_units(caller, auth, &id).await? {
                    Some((units, read)) => {
                        // Not kept when it may be read before eBay shows it all:
                        // no date, no units, or fewer fulfillments than the order
                        // names.
                        if !modified.is_empty() && !units.is_empty() && read >= packages {
                            self.shipped.keep(&id, &version, units.clone());
                        }
                        Some(units)
                    }
                    None => None,
                },
            },
            _ => None,
        };
        // An order that cannot be read (no id) is left out and said, not allowed to
        // fail the pass: the poll is eBay's only way in for orders, and every pass
        // would stop at it for good, every order after it unread. (A line without
        // an id is its own record, `payload::OrderLines`.)
        match self.order_events(order, shipped.as_ref(), now) {
            Ok(events) => Ok(events),
            Err(why) => {
                super::order_left_out(&self.name, &order["orderId"], &why);
                Ok(Vec::new())
            }
        }
    }
}

/// Where the page after one at `offset` of `len` orders starts, if there is one. Orders
/// modified while a window is read leave it, and the orders after them move up the list,
/// past the offset: when the window's total has dropped by `d` since the page before
/// (`total_before`), the next page starts `d` before this one, which it reads again
/// (duplicates by their keys), even after an empty page.
fn next_page(offset: u64, len: u64, total_before: Option<u64>, total: u64) -> Option<u64> {
    let next = match total_before.filter(|before| *before > total) {
        Some(before) => offset.saturating_sub(before - total),
        None if len == 0 => return None,
        None => offset + len,
    };
    (next < total).then_some(next)
}

/// A poll cursor's position: the offset, and the window's total when the page before was
/// read (`None` at a window's first page).
fn offset_and_total(position: &str) -> Result<(u64, Option<u64>), String> {
    if position.is_empty() {
        return Ok((0, None));
    }
    let bad = || format!("the poll's position {position:?} is not one it wrote");
    let (offset, total) = position.split_once('.').ok_or_else(bad)?;
    Ok((
        offset.parse().map_err(|_| bad())?,
        Some(total.parse().map_err(|_| bad())?),
    ))
}

/// Whether a read's answer speaks of every SKU asked (`Err` names the first it left out).
fn every_sku_answered(skus: &[String], levels: &Levels) -> Result<(), String> {
    match skus
        .iter()
        .find(|s| !levels.iter().any(|(read, _)| read == *s))
    {
        Some(missing) => Err(format!("eBay's answer to a read left out {missing}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_whose_total_drops_is_paged_again_from_before() {
        // [A B C D E], two a page: A leaves the window after the first page, so C moves
        // to offset 1 and the page at 2 reads D E: the next starts at 1, C included.
        assert_eq!(next_page(0, 2, None, 5), Some(2));
        assert_eq!(next_page(2, 2, Some(5), 4), Some(1));
        assert_eq!(next_page(1, 2, Some(4), 4), Some(3));
        assert_eq!(next_page(3, 1, Some(4), 4), None);
        // A total that grows (an order listed late) only reads some twice.
        assert_eq!(next_page(2, 2, Some(4), 6), Some(4));
        assert_eq!(next_page(1, 2, Some(9), 2), Some(0));
        // An empty page after a drop steps back too: 201 orders, one left after the
        // first page of 200, the page at 200 is empty, the one at 199 is not.
        assert_eq!(next_page(200, 0, Some(201), 200), Some(199));
        assert_eq!(next_page(0, 0, None, 0), None);
        assert_eq!(next_page(200, 0, Some(200), 200), None);
        assert_eq!(offset_and_total(""), Ok((0, None)));
        assert_eq!(offset_and_total("400.812"), Ok((400, Some(812))));
        assert!(offset_and_total("400").is_err());
        assert!(offset_and_total("a.1").is_err());
    }

    #[test]
    fn a_read_that_leaves_a_sku_out_fails() {
        let skus = vec!["E0".to_string(), "E1".to_string()];
        let both = vec![("E0".to_string(), Some(3)), ("E1".to_string(), None)];
        assert_eq!(every_sku_answered(&skus, &both), Ok(()));
        let one = vec![("E0".to_string(), Some(3))];
        assert_eq!(
            every_sku_answered(&skus, &one),
            Err("eBay's answer to a read left out E1".to_string())
        );
    }

    #[test]
    fn the_ebay_day_turns_at_midnight_pacific() {
        // 2026-11-27T07:59:59Z is 23:59:59 the day before in UTC-8.
        let before = crate::clock::parse_rfc3339("2026-11-27T07:59:59Z").unwrap();
        let after = crate::clock::parse_rfc3339("2026-11-27T08:00:00Z").unwrap();
        let pacific = PACIFIC_OFFSET_H * MICROS_PER_HOUR;
        assert_eq!(day_of(after, pacific), day_of(before, pacific) + 1);
        assert_eq!(until_next_day(before, pacific), Duration::from_secs(1));
    }
}
