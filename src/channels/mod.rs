//! Channel adapters: one file per channel kind, all the same shape (`ChannelAdapter`), so
//! adding a channel is adding one file and its simulator.
//!
//! An adapter turns a channel's inbound delivery into engine events (after checking its
//! signature), builds the outbound push request for a batch of (SKU, quantity), reads the
//! push response into per-item outcomes and a throttle signal, and builds and reads the
//! level query that reconciliation uses. It does no I/O itself: `propagate` sends.

pub mod body_hmac;
pub mod catalog;
pub mod payload;
pub mod shopify;
pub mod standard_webhooks;
pub mod webhook;
pub mod woocommerce;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::clock::Micros;
use crate::config::{CatalogRow, ChannelConfig, ChannelKind, RateLimit};
use crate::engine::event::Event;
use crate::ingest::error::ApiError;
pub use catalog::Catalog;

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
    /// Slow down: retry after this long (429 + Retry-After, or a body-level throttle).
    Throttled { retry_after: Duration },
    /// The request failed as a whole; `retryable` is false for an error that a retry of
    /// the same request cannot fix (retried all the same, but slowly).
    Failed { reason: String, retryable: bool },
}

/// An outbound HTTP request, built without I/O.
pub type OutboundRequest = http::Request<Vec<u8>>;

/// The shape every channel kind implements.
pub trait ChannelAdapter: Send + Sync + 'static {
    /// The channel's configured name.
    fn name(&self) -> &str;
    /// Most items one push request may carry.
    fn batch_max(&self) -> usize;
    /// The channel's own rate limit, unless the config overrides it.
    fn default_rate_limit(&self) -> RateLimit;
    /// Verifies and parses an inbound delivery into events (keys and source times set).
    fn inbound(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Micros,
    ) -> Result<Vec<Event>, ApiError>;
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
    /// A channel that never retries a failed delivery (and disables the webhook after a
    /// few): its deliveries wait for room in a busy engine instead of getting 503.
    fn never_refuse(&self) -> bool {
        false
    }
    /// The channel's order poll, the safety net for lost deliveries; `None`: no poll.
    fn order_poll(&self) -> Option<&dyn OrderPoll> {
        None
    }
}

/// One page of a channel's order listing, as engine events.
#[derive(Debug, Default)]
pub struct PollPage {
    pub events: Vec<Event>,
    /// The newest modification time on the page: the next watermark.
    pub newest: Option<Micros>,
    /// Whether another page follows.
    pub more: bool,
}

/// A watermarked order poll: orders modified since a time, page by page.
pub trait OrderPoll: Send + Sync {
    /// Seconds between polls.
    fn interval(&self) -> Duration;
    /// The request for page `page` (from 1) of orders modified after `since`.
    fn poll_request(&self, since: Micros, page: u32) -> OutboundRequest;
    /// Reads one page.
    fn poll_reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        page: u32,
        now: Micros,
    ) -> Result<PollPage, String>;
}

/// Builds the adapter of every configured channel whose kind is implemented; the others
/// are listed in the error so `serve` can say which are not available yet. `catalog` is
/// the whole `[catalog]`; each adapter keeps its own channel's rows.
pub fn build(
    channels: &[ChannelConfig],
    catalog: &[CatalogRow],
) -> (Vec<Arc<dyn ChannelAdapter>>, Vec<String>) {
    let mut adapters: Vec<Arc<dyn ChannelAdapter>> = Vec::new();
    let mut missing = Vec::new();
    for channel in channels {
        let rows = Catalog::of(&channel.name, catalog);
        match channel.kind {
            ChannelKind::Webhook => adapters.push(Arc::new(webhook::Webhook::new(channel))),
            ChannelKind::Shopify => adapters.push(Arc::new(shopify::Shopify::new(channel, rows))),
            ChannelKind::Woocommerce => {
                adapters.push(Arc::new(woocommerce::WooCommerce::new(channel, rows)))
            }
            other => missing.push(format!("{} ({other:?})", channel.name)),
        }
    }
    (adapters, missing)
}

/// The `Unmapped` audit record of something a channel named that the catalog does not
/// map: `what` says what it was (e.g. `item 123 at location 9`); `key` makes redeliveries
/// duplicates.
pub fn unmapped(channel: &str, what: &str, key: String, source_ts: Micros, now: Micros) -> Event {
    Event {
        sku: format!("?{channel}: {what}"),
        kind: crate::engine::event::EventKind::Unmapped,
        qty: 0,
        source: channel.to_string(),
        source_ts,
        received_at: now,
        key,
        line: None,
    }
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

/// Reads a `Retry-After` header given in seconds (the form channels use).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}
