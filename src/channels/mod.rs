//! Channel adapters: one file per channel kind, all the same shape (`ChannelAdapter`,
//! and `kind::Kind` for its own config keys), so adding a channel is its file, its
//! simulator, its name in `config.rs`'s `channel_kinds!` list and one line in `kind.rs`.
//!
//! What an adapter does, pure parts first:
//! - `inbound` verifies a delivery's signature and reads it, without I/O: its events, or
//!   the order a thin notification names (`Delivery`). `receive` (here, the one door for
//!   webhook deliveries) fetches that order with the adapter's `fetch`. Orders that come
//!   by a poll (`OrderPoll`) or a queue (`OrderQueue`) have their own readers.
//! - `push_request`/`push_reply` and `read_request`/`read_reply` build and read one
//!   call, without I/O. The conversations around them (`push`, `read`, `authorize`,
//!   `fetch`, an order poll's pages, a bulk submission's status) make their calls
//!   through a `Caller`: pushes, reads and webhook follow-ups spend the channel's budget
//!   (`pacing.rs`); polls, the queue and `call_now` calls do not. By default one call
//!   each; a kind whose write or read takes several calls overrides them.
//!
//! Beside the adapters: `kind.rs` (the registry of kinds: their keys, checks, adapters),
//! `native.rs` (the native event format the API and the `webhook` kind speak),
//! `payload.rs` (reading channel JSON), `strict_json.rs` (request bodies, each name once
//! per object), `body_hmac.rs` and `standard_webhooks.rs`
//! (signatures), `call.rs` and `pacing.rs` (a channel's calls and their budget),
//! `catalog.rs`, `rotating_token.rs`, `walmart_feed.rs` (Walmart's bulk feed),
//! `walmart_orders.rs` (Walmart's orders poll, in windows), `tiktok_warehouses.rs` (a
//! TikTok SKU in several warehouses), `time_cursor.rs` (paging
//! order lists by modification time). A delivery
//! a channel cannot take is refused with `crate::refusal::ApiError`. Channels sit above
//! the engine (they make its events) and below `propagate`, which drives their pushes,
//! reads, polls and queues.

pub mod amazon;
pub mod bigcommerce;
pub mod body_hmac;
pub mod call;
pub mod catalog;
#[cfg(test)]
mod contract_tests;
pub mod ebay;
pub mod etsy;
pub mod fetched;
pub mod kind;
pub mod listing;
pub mod native;
pub mod pacing;
pub mod payload;
pub mod rotating_token;
pub mod shopify;
pub mod standard_webhooks;
pub mod strict_json;
pub mod tiktok;
mod tiktok_warehouses;
pub mod time_cursor;
pub mod walmart;
pub mod walmart_feed;
mod walmart_orders;
pub mod webhook;
pub mod woocommerce;

use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use crate::clock::Micros;
use crate::config::RateLimit;
use crate::core::event::Event;
use crate::refusal::ApiError;
pub use call::{BoxFuture, Caller, Seen};
pub use catalog::Catalog;
pub use pacing::Pace;

/// One SKU's new quantity for a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushItem {
    pub sku: String,
    pub quantity: i64,
    /// What the channel should be showing now (`None`: never acknowledged). Channels with
    /// compare-and-set send it as the compare value.
    pub expected: Option<i64>,
    /// When the change that caused it was received (for the `at` field and for timing).
    pub caused_at: Micros,
    /// A reconciliation repair (`core::PushWanted::repair`): `expected` is the level read.
    pub repair: bool,
}

impl PushItem {
    /// The change a compared write of the item makes to what the channel is expected to
    /// show (`quantity - expected`); `None` for a blind write (no expectation) and for a
    /// repair (compared with a level reconciliation read, not with the expectation).
    pub fn change(&self) -> Option<i64> {
        if self.repair {
            return None;
        }
        Some(self.quantity - self.expected?)
    }
}

/// What a push response says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushReply {
    /// The channel took these items (indices into the batch); the rest failed. `wait`:
    /// the channel says its budget is nearly spent; pause this long before the next call.
    Accepted {
        acked: Vec<usize>,
        wait: Option<Duration>,
    },
    /// A compare-and-set failed for these items (indices into the batch): the channel
    /// shows something other than their `expected`, and nothing in the request was
    /// applied. The pusher reads those items and pushes once more.
    Stale { stale: Vec<usize> },
    /// Like `Accepted`, for a write that replaced a whole group (Etsy's listing): the
    /// group's other SKUs were written back with the quantities read just before
    /// (`written`), so that is what the channel shows for them now. (A quota the answer
    /// found low holds the next round: `ChannelAdapter::pushes_held`.)
    Replaced {
        acked: Vec<usize>,
        written: Vec<(String, i64)>,
        /// How SKUs of the group were shown sold out or back in stock (Etsy's disabled
        /// offering, inactive listing): each becomes an audit record of that kind.
        shown_as: Vec<(String, ShownAs)>,
    },
    /// Some items were taken (`acked`); `held` were not sent because the channel's own
    /// budget for them is spent (eBay's revisions per listing per day): they wait
    /// `retry_in` in the outbox, and the audit says so.
    Held {
        acked: Vec<usize>,
        held: Vec<usize>,
        retry_in: Duration,
    },
    /// Slow down: retry after this long (429 + Retry-After, or a body-level throttle).
    Throttled { retry_after: Duration },
    /// The request failed as a whole; `retryable` is false for an error that a retry of
    /// the same request cannot fix (retried all the same, but slowly).
    Failed { reason: String, retryable: bool },
}

/// How a channel that cannot show a plain 0 shows a SKU sold out, or back in stock
/// (Etsy refuses an all-zero inventory: "One offering must have quantity greater than 0",
/// https://github.com/etsy/open-api/issues/560; `state` set through updateListing,
/// https://developers.etsy.com/documentation/reference#operation/updateListing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShownAs {
    /// Its offering disabled (another of the listing stays above 0).
    OfferingDisabled,
    /// Its whole listing set inactive (every offering at 0).
    ListingDeactivated,
    /// Its listing set active again, stock having returned.
    ListingActivated,
}

/// An outbound HTTP request, built without I/O.
pub type OutboundRequest = http::Request<Vec<u8>>;

/// What one inbound delivery carried: its events, and the channel's id of the
/// notification (remembered once the events are taken, so a redelivery is answered at
/// once).
#[derive(Debug, Default)]
pub struct Inbound {
    pub events: Vec<Event>,
    pub notification: Option<String>,
    /// The time of the payload's newest change, read from the signed payload alone (no
    /// header, no fallback to now): Shopify's `updated_at` of an order placed long ago
    /// and edited now. A delivery older than the idempotency horizon is refused by it,
    /// or by its events' times when an adapter gives none.
    pub changed_at: Option<Micros>,
}

/// What an adapter reads from one delivery, without I/O: the one inbound door
/// (`ChannelAdapter::inbound`). Either the delivery carried what happened, or it is a
/// thin notification naming an order, whose lines `receive` fetches.
#[derive(Debug)]
pub enum Delivery {
    /// The delivery carried its events (none for a topic that says nothing of stock).
    Carried(Inbound),
    /// A thin notification (BigCommerce, Etsy, TikTok Shop send an order's id, not its
    /// lines): `receive` fetches the order with `ChannelAdapter::fetch`, unless the
    /// notification was taken already.
    Names {
        /// The channel's id of the notification (see `Inbound::notification`).
        notification: String,
        /// The order (Etsy: the receipt) whose lines the events come from.
        order_id: String,
    },
}

impl Delivery {
    /// A delivery that carried these events and nothing else.
    pub fn events(events: Vec<Event>) -> Delivery {
        Delivery::Carried(Inbound {
            events,
            ..Inbound::default()
        })
    }

    /// The events the delivery itself carried (none for a thin notification): what the
    /// contract tests read; the engine takes deliveries through `receive`.
    #[cfg(test)]
    pub fn carried(self) -> Vec<Event> {
        match self {
            Delivery::Carried(inbound) => inbound.events,
            Delivery::Names { .. } => Vec::new(),
        }
    }
}

/// A levels read: what the channel shows per SKU (`None`: the channel does not list it).
pub type Levels = Vec<(String, Option<i64>)>;

/// The shape every channel kind implements.
pub trait ChannelAdapter: Send + Sync + 'static {
    /// The channel's configured name.
    fn name(&self) -> &str;
    /// Most items one push request may carry.
    fn batch_max(&self) -> usize;
    /// How the channel's calls are paced: its published limit, or an adaptive pace for a
    /// channel that publishes none (the config's `rate_limit` replaces the one and caps
    /// the other: `Pace::configured`).
    fn pace(&self) -> Pace;
    /// Verifies and parses an inbound delivery (its events with keys and source times
    /// set, or the order a thin notification names). No I/O: `receive` does the fetch.
    fn inbound(&self, headers: &HeaderMap, body: &[u8], now: Micros) -> Result<Delivery, ApiError>;
    /// The request that sets these items' quantities on the channel.
    fn push_request(&self, items: &[PushItem], now: Micros) -> OutboundRequest;
    /// Reads the channel's answer to `push_request(items)`.
    fn push_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        items: &[PushItem],
    ) -> PushReply;
    /// The request that reads what the channel shows for these SKUs (reconciliation).
    fn read_request(&self, skus: &[String]) -> OutboundRequest;
    /// Reads the answer to `read_request`: what the channel shows per SKU (`None`: the
    /// channel does not list it).
    fn read_reply(&self, status: u16, body: &[u8]) -> Result<Vec<(String, Option<i64>)>, String>;

    /// Whether the channel lists this SKU (channels that name items by their own ids
    /// carry only the SKUs their catalog maps). A SKU it does not carry is never pushed.
    fn carries(&self, _sku: &str) -> bool {
        true
    }
    /// Splits a push batch into the groups one request may carry together (indices into
    /// `items`): by default one group.
    fn push_groups(&self, items: &[PushItem]) -> Vec<Vec<usize>> {
        vec![(0..items.len()).collect()]
    }
    /// Splits SKUs into the groups one read request may carry together.
    fn read_groups(&self, skus: &[&str]) -> Vec<Vec<usize>> {
        vec![(0..skus.len()).collect()]
    }
    /// How long pushes wait before their next round, while the adapter keeps what is left
    /// of a budget for other calls (Etsy's daily quota near its end, kept for the receipt
    /// fetches and polls that bring orders in); `None`: push. The wait is the pusher's
    /// alone: the channel's budget is not paused for the other calls, as a 429 pauses it.
    fn pushes_held(&self) -> Option<std::time::Duration> {
        None
    }
    /// Why reconciliation's reads stop for now (`None`: read): a daily quota down to the
    /// share kept for pushes and for bringing orders in (Etsy's). The pass fails with
    /// this reason and the next one tries again; reads a push or an operator waits on
    /// are not held.
    fn reads_held(&self) -> Option<String> {
        None
    }
    /// Whether an answer (status, headers, body) is the channel saying "slow down", and
    /// the wait it names: what a reader's call waits out (`Caller::waiting_out`). By
    /// default an HTTP 429 and its `Retry-After`.
    fn throttle(&self, status: u16, headers: &HeaderMap, _body: &[u8]) -> Option<Option<Duration>> {
        call::http_429(status, headers)
    }
    /// A channel that never retries a failed delivery (and disables the webhook after a
    /// few): its deliveries wait for room in a busy engine instead of getting 503.
    fn never_refuse(&self) -> bool {
        false
    }
    /// The channel's order poll, the safety net for lost deliveries; `None`: no poll.
    fn order_poll(&self) -> Option<&dyn OrderPoll> {
        None
    }
    /// The queue the channel delivers orders to (Amazon's SQS); `None`: no queue.
    fn order_queue(&self) -> Option<&dyn OrderQueue> {
        None
    }
    /// The channel's bulk write, processed after it is taken (Walmart's inventory feed);
    /// `None`: every push goes by `push`.
    fn bulk(&self) -> Option<&dyn BulkWrite> {
        None
    }

    /// Fetches the order a thin notification named (`Delivery::Names`) as events; `Err`
    /// says why it could not. Only channels whose notifications are thin have one.
    fn fetch<'a>(
        &'a self,
        _caller: &'a Caller,
        order_id: &'a str,
        _now: Micros,
    ) -> BoxFuture<'a, Result<Vec<Event>, FetchFailure>> {
        Box::pin(async move {
            Err(FetchFailure::Call(format!(
                "{}: this channel's deliveries carry their orders; nothing names order {order_id} to fetch",
                self.name()
            )))
        })
    }

    /// The notification ids this channel has had taken (see `Inbound::notification`).
    fn seen(&self) -> Option<&Seen> {
        None
    }

    /// Credential headers for the next call (an OAuth access token, fetched when due).
    fn authorize<'a>(&'a self, _caller: &'a Caller) -> BoxFuture<'a, Result<HeaderMap, String>> {
        Box::pin(async { Ok(HeaderMap::new()) })
    }

    /// Adds `quantity - expected` to what the channel shows of each item (every item has
    /// `expected`), without a compare: a write that commutes with the channel's own
    /// sales made meanwhile, so it cannot go stale. Answers what each item shows after
    /// it, in order, or (`Err`) the reply: `Throttled` and a `Failed` that is not
    /// retryable were not applied; a retryable `Failed` leaves it unknown whether the
    /// write was applied. `None`: the channel has no such write that a retry cannot apply
    /// twice (Shopify's `inventoryAdjustQuantities`, idempotent from 2026-01).
    fn adjust<'a>(
        &'a self,
        _caller: &'a Caller,
        _items: &'a [PushItem],
    ) -> Option<BoxFuture<'a, Result<Vec<i64>, PushReply>>> {
        None
    }

    /// Pushes one group: by default one `push_request`, read by `push_reply`. Channels
    /// whose write takes more than one call override it.
    fn push<'a>(&'a self, caller: &'a Caller, items: &'a [PushItem]) -> BoxFuture<'a, PushReply> {
        Box::pin(push_once(self, caller, items))
    }

    /// One page of the channel's listings from `cursor` (`None`: the first page), for
    /// `lockstep catalog discover`. Kinds whose listing calls are not built yet say so.
    fn listings<'a>(
        &'a self,
        _caller: &'a Caller,
        _cursor: Option<&'a str>,
    ) -> listing::Listings<'a> {
        let reason = format!(
            "{}: listing this kind's items is not built yet; write its catalog rows by hand",
            self.name()
        );
        Box::pin(async move { Err(listing::ListingError::Failed(reason)) })
    }

    /// Reads one read group: by default one `read_request`, read by `read_reply` and
    /// checked by `check_read`.
    fn read<'a>(
        &'a self,
        caller: &'a Caller,
        skus: &'a [String],
    ) -> BoxFuture<'a, Result<Levels, String>> {
        Box::pin(async move {
            let auth = self.authorize(caller).await?;
            let request = call::with_headers(self.read_request(skus), auth);
            let (status, _, body) = caller.call(request).await?;
            let levels = self.read_reply(status, &body)?;
            self.check_read(skus, &levels)?;
            Ok(levels)
        })
    }
    /// Whether a read's `levels` answer the group `skus` asked (`Err`: the read failed).
    /// By default a SKU left out is not listed; a kind whose answer names every SKU
    /// asked, listed or not, fails a read that leaves one out.
    fn check_read(&self, _skus: &[String], _levels: &Levels) -> Result<(), String> {
        Ok(())
    }
}

/// What `adapter`'s channel's throttles look like, for a caller that waits them out
/// (`Caller::waiting_out`).
pub fn throttles_of(adapter: std::sync::Arc<dyn ChannelAdapter>) -> call::Throttles {
    std::sync::Arc::new(move |status, headers, body| adapter.throttle(status, headers, body))
}

/// One push in one call: credentials, `push_request`, `push_reply` (the default `push`,
/// and the per-call path of adapters that also have another).
pub async fn push_once<A: ChannelAdapter + ?Sized>(
    adapter: &A,
    caller: &Caller,
    items: &[PushItem],
) -> PushReply {
    match send_authorized(adapter, caller, adapter.push_request(items, now())).await {
        Ok((status, headers, body)) => adapter.push_reply(status, &headers, &body, items),
        Err(reason) => PushReply::Failed {
            reason,
            retryable: true,
        },
    }
}

/// Sends `request` with the adapter's credentials (`ChannelAdapter::authorize`).
pub async fn send_authorized<A: ChannelAdapter + ?Sized>(
    adapter: &A,
    caller: &Caller,
    request: OutboundRequest,
) -> Result<call::Answer, String> {
    let auth = adapter.authorize(caller).await?;
    caller.call(call::with_headers(request, auth)).await
}

/// Takes one inbound delivery: `inbound` reads it; a thin notification's order is
/// fetched with `fetch` (its calls spend the channel's budget, through `caller`). A
/// notification already taken is answered with no events, without fetching again.
pub async fn receive(
    adapter: &dyn ChannelAdapter,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    now: Micros,
) -> Result<Inbound, ApiError> {
    let taken = |id: &str| adapter.seen().is_some_and(|seen| seen.contains(id));
    match adapter.inbound(headers, body, now)? {
        Delivery::Carried(inbound) => match &inbound.notification {
            Some(id) if taken(id) => Ok(Inbound::default()),
            _ => Ok(inbound),
        },
        Delivery::Names {
            notification,
            order_id,
        } => {
            if taken(&notification) {
                return Ok(Inbound::default());
            }
            let events = match adapter.fetch(caller, &order_id, now).await {
                Ok(events) => events,
                Err(FetchFailure::Call(e)) => {
                    return Err(fetch_failed(&format!("order {order_id}"), &e))
                }
                Err(FetchFailure::Unreadable(why)) => {
                    order_left_out(adapter.name(), &serde_json::json!(order_id), &why);
                    Vec::new()
                }
            };
            Ok(Inbound {
                events,
                notification: Some(notification),
                ..Inbound::default()
            })
        }
    }
}

fn now() -> Micros {
    crate::clock::now_micros()
}

/// Why the order a thin notification named was not taken (`ChannelAdapter::fetch`).
#[derive(Debug)]
pub enum FetchFailure {
    /// A call failed (the channel down, throttled, a 5xx, a 401, 403 or 407, another 4xx
    /// that another try may change, an answer that is no JSON): the delivery is answered
    /// 503, so the channel delivers it again.
    Call(String),
    /// The channel answered, and what it gave cannot be read (an order without its id,
    /// lines that are not a list, a 4xx refusing it for good: `if_refused`): every
    /// delivery would read the same. The order is left out (`order_left_out`) and the
    /// delivery answered 200: refused, it would come back for good, and BigCommerce
    /// deactivates a hook after about 48 hours of failures, every later order with it.
    Unreadable(String),
}

impl FetchFailure {
    /// `Unreadable` for an answer that is the channel's final word on what was named
    /// (`call::refused_for_good`): 404 or 410, it is not there (deleted since; were it a
    /// store's replica a moment behind its notification, the poll reads the order once
    /// it is there), or another such 4xx, it is refused. Asking again reads the same, so
    /// a pass or a delivery that failed at it would fail at it for good.
    pub fn if_refused(answer: &call::Answer, what: &str) -> Result<(), FetchFailure> {
        match answer.0 {
            404 | 410 => Err(FetchFailure::Unreadable(format!(
                "{what} is not there (HTTP {})",
                answer.0
            ))),
            status if call::refused_for_good(status) => Err(FetchFailure::Unreadable(format!(
                "{what} is refused (HTTP {status}: {})",
                excerpt(&answer.2)
            ))),
            _ => Ok(()),
        }
    }
}

impl From<String> for FetchFailure {
    /// A call's error (`?` on a `Caller` result).
    fn from(reason: String) -> FetchFailure {
        FetchFailure::Call(reason)
    }
}

/// The answer to a delivery whose follow-up call to the channel failed: 503, so the
/// channel delivers it again (and the order poll, where there is one, finds it anyway).
pub fn fetch_failed(what: &str, reason: &str) -> ApiError {
    ApiError::new(
        hyper::StatusCode::SERVICE_UNAVAILABLE,
        "channel_unreachable",
        format!("could not fetch {what} from the channel: {reason}"),
    )
}

/// One page of a channel's order listing, as engine events.
#[derive(Debug, Default)]
pub struct PollPage {
    pub events: Vec<Event>,
    /// The newest modification time on the page: the next watermark of a poll that does
    /// not read windows (`OrderPoll::windowed`); a windowed poll's is not used.
    pub newest: Option<Micros>,
    /// Where the next page starts (a page number, the channel's token, or a
    /// modification time and page: `time_cursor.rs`); `None`: last.
    pub next: Option<String>,
    /// The channel says the window asked for holds more than one query answers: the
    /// poll narrows it (`propagate::poll_window`).
    pub too_wide: Option<TooWide>,
    /// How many pages the window holds, where the channel counts its orders on a
    /// window's first page (eBay's `total`, TikTok's `total_count`, Walmart's
    /// `totalCount`): a window of more pages than the poll reads at once is narrowed
    /// there rather than after reading them.
    pub pages: Option<u64>,
    /// Orders listed whose follow-up read failed in a way another try may mend
    /// (`propagate::set_aside`): read again at every pass (`OrderPoll::read_again`),
    /// while the poll reads on past them.
    pub set_aside: Vec<SetAside>,
    /// How many orders' follow-up reads have failed one after another, none read since.
    failing_in_a_row: usize,
}

/// An order a poll's page set aside: its id, the order as the list gave it (what
/// `OrderPoll::read_again` reads it from), and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SetAside {
    pub id: String,
    pub listed: Value,
    pub why: String,
}

/// Most orders a page sets aside one after another, none read between them
/// (`PollPage::set_aside`): a follow-up read failing for more in a row is failing for
/// every order (the call down, throttled past its retries, the credentials or their
/// scope wrong), not for each order's own sake, and the page fails as a pass did before
/// orders were set aside: logged, shown on the console, read again from the watermark.
/// It also bounds the calls such an outage costs a pass. Orders failing for their own
/// sake with others read between them are set aside however many.
pub const SET_ASIDE_IN_A_ROW_MAX: usize = 3;

/// Fields of a listed order that hold the buyer's personal data (Amazon's `BuyerInfo`
/// and `ShippingAddress`, BigCommerce's `billing_address`, eBay's `buyer` and
/// `fulfillmentStartInstructions`' ship-to, notes and addresses, and its line items'
/// `giftDetails`: the recipient's email and the sender's name): left out, at any depth,
/// of what is kept for `OrderPoll::read_again`, which reads none of them, so that the
/// data directory holds no customer's name or address.
const PERSONAL: &[&str] = &[
    "BuyerInfo",
    "ShippingAddress",
    "BuyerTaxInformation",
    "billing_address",
    "customer_message",
    "staff_notes",
    "ip_address",
    "ip_address_v6",
    "buyer",
    "fulfillmentStartInstructions",
    "buyerCheckoutNotes",
    "giftDetails",
];

/// Removes the `PERSONAL` fields from `value`, in its objects at every depth: eBay keeps
/// a gift's recipient inside each line item, not beside the order's own fields.
fn strip_personal(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.retain(|key, _| !PERSONAL.contains(&key.as_str()));
            fields.values_mut().for_each(strip_personal);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_personal),
        _ => {}
    }
}

impl PollPage {
    /// Takes the events of an order read.
    pub fn took(&mut self, events: Vec<Event>) {
        self.events.extend(events);
        self.failing_in_a_row = 0;
    }

    /// Sets the order `id` aside (`propagate::set_aside`), its follow-up read failed with
    /// `why`; after `SET_ASIDE_IN_A_ROW_MAX` set aside in a row, the page fails with `why`.
    pub fn set_aside(&mut self, id: String, order: &Value, why: String) -> Result<(), String> {
        if self.failing_in_a_row >= SET_ASIDE_IN_A_ROW_MAX {
            return Err(format!(
                "the follow-up read failed for more than {SET_ASIDE_IN_A_ROW_MAX} orders in a row, so for every order, not one (order {id}: {why})"
            ));
        }
        self.failing_in_a_row += 1;
        let mut listed = order.clone();
        strip_personal(&mut listed);
        self.set_aside.push(SetAside { id, listed, why });
        Ok(())
    }
}

/// How a channel says a window of its order list is too wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TooWide {
    /// The page holds orders but the window more than the channel's cap: read on once
    /// the window cannot be narrowed.
    OverCap,
    /// Refused, the reason given: the pass fails with it once the window cannot be
    /// narrowed.
    Refused(String),
}

/// One message of a channel's queue.
#[derive(Clone, Debug)]
pub struct QueueMessage {
    /// The queue's id of the message (the same on every receive of it).
    pub id: String,
    /// What deletes this receive of it.
    pub handle: String,
    pub body: String,
}

/// A queue a channel delivers its notifications to (Amazon sends `ORDER_CHANGE` to an
/// SQS queue only: https://developer-docs.amazon.com/sp-api/docs/set-up-notifications-with-amazon-eventbridge):
/// read by long polls; a message is deleted only once its events are durable, so one
/// that is not is received again after its visibility timeout
/// (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-visibility-timeout.html).
pub trait OrderQueue: Send + Sync {
    /// One long poll: the messages now visible (possibly none).
    fn receive<'a>(
        &'a self,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Vec<QueueMessage>, String>>;
    /// The events of one message and its notification id; `Err` for a message that can
    /// never be taken (not JSON, a field missing): it stays in the queue, whose redrive
    /// policy moves it aside after its receive count.
    fn events(&self, body: &str, now: Micros) -> Result<Inbound, String>;
    /// Deletes these messages (taken and durable); `Err` names what failed (those
    /// messages come again, and their events are duplicates by their keys).
    fn delete<'a>(
        &'a self,
        caller: &'a Caller,
        messages: &'a [QueueMessage],
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// A bulk write the channel processes after taking it (Walmart's inventory feed: 10
/// per hour, processed within 30 minutes). It is the normal path of a channel that has
/// one; the changes that cannot wait that long (`urgent`: a stock-out, a low level) go
/// by `push` at once, even while an older value of the same SKU is in a submission.
/// The pusher acknowledges a submission's items only once its status says they were
/// applied; an item pushed by `push` meanwhile is pushed again after the submission,
/// which may have overwritten it.
pub trait BulkWrite: Send + Sync {
    /// Whether showing `target` (the channel shows `shown`) must go by `push` now.
    fn urgent(&self, target: i64, shown: Option<i64>) -> bool;
    /// Most items one submission carries.
    fn max_items(&self) -> usize;
    /// The submissions' own budget.
    fn rate_limit(&self) -> RateLimit;
    /// How long changes gather before a submission takes them: one spends a scarce token
    /// on a burst of changes, not one token per change.
    fn gather(&self) -> Duration;
    /// How long between reads of a pending submission's status, `waited` since it was
    /// taken; `hurry`: it holds an item that `push` has written since (read sooner, so
    /// that what the submission overwrites is put right sooner).
    fn status_every(&self, waited: Duration, hurry: bool) -> Duration;
    /// A submission not processed after this long is given up (its items pushed again).
    fn wait_max(&self) -> Duration;
    /// Submits `items`: the channel's id of the submission, or the reply that says why
    /// not (`Throttled`, `Failed`).
    fn submit<'a>(
        &'a self,
        caller: &'a Caller,
        items: &'a [PushItem],
    ) -> BoxFuture<'a, Result<String, PushReply>>;
    /// Reads a submission's status: its outcome for `items`; `Err` for a read that failed
    /// (read again later).
    fn status<'a>(
        &'a self,
        caller: &'a Caller,
        id: &'a str,
        items: &'a [PushItem],
    ) -> BoxFuture<'a, Result<Submission, String>>;
}

/// What a submission's status says of its items (indices into them).
#[derive(Debug, PartialEq, Eq)]
pub enum Submission {
    /// Not processed yet.
    Pending,
    /// Processed: `applied` shows now; `failed` was not applied for a cause of the
    /// channel's own (Walmart's `SYSTEM_ERROR`, `TIMEOUT_ERROR`: a downstream system,
    /// "try again"), so it goes again like a failed call, not held or named; the rest
    /// were refused (Walmart's `DATA_ERROR`, an item missing from the status).
    Processed {
        applied: Vec<usize>,
        failed: Vec<usize>,
    },
    /// Nothing of it was applied (Walmart's feed `ERROR`, or given up).
    Failed(String),
}

/// A watermarked order poll: orders modified since a time, page by page.
pub trait OrderPoll: Send + Sync {
    /// Seconds between polls.
    fn interval(&self) -> Duration;
    /// Whether the list takes an end bound and is read in windows of modification time
    /// (`propagate::poll_window`): a list not sorted by modification time, whose newest
    /// time seen says nothing of the orders not yet read. Otherwise the newest time seen
    /// is the watermark, which is right for a list sorted oldest modification first (the
    /// `time_cursor.rs` polls).
    fn windowed(&self) -> bool {
        false
    }
    /// Reads one page of the orders modified after `since` (and, for a `windowed` poll,
    /// up to `until`), from `cursor` (`None`: the first page).
    fn page<'a>(
        &'a self,
        caller: &'a Caller,
        since: Micros,
        until: Option<Micros>,
        cursor: Option<String>,
        now: Micros,
    ) -> BoxFuture<'a, Result<PollPage, String>>;
    /// Reads again an order a page set aside (`PollPage::set_aside`), from the order as
    /// it was listed: its events, or why it stays aside. A poll whose pages set nothing
    /// aside is never asked.
    fn read_again<'a>(
        &'a self,
        _caller: &'a Caller,
        _listed: &'a Value,
        _now: Micros,
    ) -> BoxFuture<'a, Result<Vec<Event>, String>> {
        Box::pin(async { Err("this channel's poll sets no order aside".to_string()) })
    }
}

/// Where a windowed poll is within a window, for a channel that refuses an end bound too
/// close to its own now (Amazon's `LastUpdatedBefore` must be "at least two minutes
/// before current time"; eBay's filter refuses an end in the future, error 30850): the end
/// is decided once, at the window's first page (`WindowCursor::first`), and every page of
/// the window sends the same query, since a query that changed under a page token or an
/// offset would move orders past it. As a `PollPage::next`: the end (`-` for none), `|`,
/// then the channel's own position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCursor {
    /// The end bound sent: `None` for a window ending less than the margin ago, whose
    /// list then runs on to the channel's now (more orders than the window, never fewer).
    pub end: Option<Micros>,
    /// The channel's position in the window's list.
    pub position: String,
}

impl WindowCursor {
    /// A window's first page: its end when that is more than `margin` in the past.
    pub fn first(until: Option<Micros>, now: Micros, margin: Micros) -> WindowCursor {
        WindowCursor {
            end: until.filter(|until| *until < now - margin),
            position: String::new(),
        }
    }

    /// The cursor a page was given, or the first page's when none.
    pub fn read(
        cursor: Option<String>,
        until: Option<Micros>,
        now: Micros,
        margin: Micros,
    ) -> Result<WindowCursor, String> {
        let Some(text) = cursor else {
            return Ok(WindowCursor::first(until, now, margin));
        };
        let bad = || {
            format!(
                "the poll's cursor {:?} is not one it wrote",
                excerpt(text.as_bytes())
            )
        };
        let (end, position) = text.split_once('|').ok_or_else(bad)?;
        let end = match end {
            "-" => None,
            end => Some(end.parse().map_err(|_| bad())?),
        };
        Ok(WindowCursor {
            end,
            position: position.to_string(),
        })
    }

    /// The next page's cursor, at `position`.
    pub fn at(&self, position: String) -> String {
        match self.end {
            Some(end) => format!("{end}|{position}"),
            None => format!("-|{position}"),
        }
    }
}

pub use kind::{build, check};

/// The `Unmapped` audit record of something a channel named that the catalog does not
/// map: `what` says what it was (e.g. `item 123 at location 9`); `key` makes redeliveries
/// duplicates.
pub fn unmapped(channel: &str, what: &str, key: String, source_ts: Micros, now: Micros) -> Event {
    Event {
        sku: format!("?{channel}: {what}"),
        kind: crate::core::event::EventKind::Unmapped,
        qty: 0,
        source: channel.to_string(),
        source_ts,
        received_at: now,
        key,
        line: None,
        origin: None,
    }
}

/// An order a poll listed, or a notification named, that cannot be read (no id, lines
/// that are not a list, a follow-up read refused for good: `FetchFailure::if_refused`; a
/// line alone that cannot be is its own record:
/// `payload::OrderLines`): left out, said and counted
/// (`lockstep_channel_events_refused_total`), never allowed to fail the pass. A pass that
/// failed on it would fail on it again every time, the window or cursor never moving
/// past it, so every later order of the channel would go unread by the poll, which is
/// the safety net under lost webhooks (and eBay's only way in). `order`: the order's id
/// as the channel gave it, for the log.
pub fn order_left_out(channel: &str, order: &serde_json::Value, why: &dyn std::fmt::Display) {
    count_refused(channel);
    tracing::warn!(%channel, %order, %why, "an order the channel listed cannot be read; left out");
}

/// Counts one thing a channel gave, or refused to give, that lockstep could not take
/// (`lockstep_channel_events_refused_total`): an order left out, a follow-up read the
/// channel refused for good. An alert on it rising is what tells an operator that a
/// refusal meets every order while the poll itself reads as healthy.
pub fn count_refused(channel: &str) {
    metrics::counter!("lockstep_channel_events_refused_total", "channel" => channel.to_string())
        .increment(1);
}

/// A non-2xx push reply as an outcome, the same for every channel: 429 throttles (its
/// `Retry-After`, else 1 s), 5xx and 408 are retried, anything else is retried slowly;
/// `None` for a 2xx, which the adapter reads.
pub fn http_failure(status: u16, headers: &HeaderMap, body: &[u8]) -> Option<PushReply> {
    match status {
        200..=299 => None,
        429 => Some(PushReply::Throttled {
            retry_after: retry_after(headers).unwrap_or(Duration::from_secs(1)),
        }),
        _ => Some(PushReply::Failed {
            reason: format!("HTTP {status}: {}", excerpt(body)),
            retryable: status >= 500 || status == 408,
        }),
    }
}

/// A short, safe excerpt of a reply body for error messages.
pub fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// Reads a `Retry-After` header given in seconds (the form channels use), at most
/// `pacing::WAIT_MAX`.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(pacing::wait_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_cursor_keeps_the_end_its_first_page_chose() {
        let m = 300;
        let first = WindowCursor::read(None, Some(1_000), 2_000, m).unwrap();
        assert_eq!(first.end, Some(1_000));
        // Less than the margin ago: no end, on every page of the window, even once the
        // end is past the margin.
        let open = WindowCursor::read(None, Some(1_000), 1_200, m).unwrap();
        assert_eq!(open.end, None);
        let next = open.at("tok.en|1".into());
        let again = WindowCursor::read(Some(next), Some(1_000), 9_000, m).unwrap();
        assert_eq!((again.end, again.position.as_str()), (None, "tok.en|1"));
        let bounded = WindowCursor::read(Some(first.at("7".into())), Some(1), 1, m).unwrap();
        assert_eq!((bounded.end, bounded.position.as_str()), (Some(1_000), "7"));
        for bad in ["", "7", "x|7", "1.5|7"] {
            assert!(
                WindowCursor::read(Some(bad.into()), None, 0, m).is_err(),
                "{bad}"
            );
        }
    }
}
