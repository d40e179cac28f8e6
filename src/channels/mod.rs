//! Channel adapters: one file per channel kind, all the same shape (`ChannelAdapter`), so
//! adding a channel is adding one file and its simulator.
//!
//! An adapter turns a channel's inbound delivery into engine events (after checking its
//! signature), builds the outbound push request for a batch of (SKU, quantity), reads the
//! push response into per-item outcomes and a throttle signal, and builds and reads the
//! level query that reconciliation uses. It does no I/O itself: `propagate` sends.

pub mod standard_webhooks;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::clock::Micros;
use crate::config::{ChannelConfig, ChannelKind, RateLimit};
use crate::engine::event::Event;
use crate::ingest::error::ApiError;

/// One SKU's new quantity for a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushItem {
    pub sku: String,
    pub quantity: i64,
    /// When the change that caused it was received (for the `at` field and for timing).
    pub caused_at: Micros,
}

/// What a push response says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushReply {
    /// The channel took these items (indices into the batch); the rest failed.
    Accepted { acked: Vec<usize> },
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
}

/// Builds the adapter of every configured channel whose kind is implemented; the others
/// are listed in the error so `serve` can say which are not available yet.
pub fn build(channels: &[ChannelConfig]) -> (Vec<Arc<dyn ChannelAdapter>>, Vec<String>) {
    let mut adapters: Vec<Arc<dyn ChannelAdapter>> = Vec::new();
    let mut missing = Vec::new();
    for channel in channels {
        match channel.kind {
            ChannelKind::Webhook => adapters.push(Arc::new(webhook::Webhook::new(channel))),
            other => missing.push(format!("{} ({other:?})", channel.name)),
        }
    }
    (adapters, missing)
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
