//! Walmart's bulk inventory feed: the `walmart` kind's normal write path (`BulkWrite`).
//!
//! - Submit: `POST /v3/feeds?feedType=inventory`, `multipart/form-data` with the feed
//!   file in the part `file`: `{"InventoryHeader": {"version": "1.4"}, "Inventory":
//!   [{"sku", "quantity": {"unit": "EACH", "amount"}}]}` (spec 1.4, one ship node, the
//!   seller's default when none is named); the answer carries the `feedId`
//!   (https://developer.walmart.com/us-marketplace/docs/bulk-inventory-update-feed).
//!   10 feeds an hour, at most 5 MB each, processed within 30 minutes
//!   (https://developer.walmart.com/cl-marketplace/docs/bulk-inventory-update): a feed
//!   carries at most `FEED_ITEMS_MAX` items, well under 5 MB.
//! - Status: `GET /v3/feeds/{feedId}?includeDetails=true&offset=&limit=1000` (the id
//!   percent-encoded, `@` as `%40`); `feedStatus` `RECEIVED`/`INPROGRESS` (still
//!   processing), `PROCESSED` (every item in an end state), `ERROR` (none processed);
//!   per item `itemDetails.itemIngestionStatus[]` with `sku` and `ingestionStatus`
//!   (`SUCCESS`, or `DATA_ERROR`/`SYSTEM_ERROR`/`TIMEOUT_ERROR` with `ingestionErrors`:
//!   the first refuses the item as sent, the other two are Walmart's systems failing),
//!   paged by `offset`/`limit` up to `itemsReceived`
//!   (https://developer.walmart.com/us-marketplace/docs/feed-item-status-api-for-tracking-fitment-files,
//!   https://developer.walmart.com/mx-marketplace/docs/feed-overview,
//!   https://developer.walmart.com/suppliers/docs/understanding-statuses-available-for-feeds).
//! - Urgent: a change down to `urgent_at_or_below` units or fewer (a stock-out, a low
//!   level) cannot wait up to half an hour: it goes by `PUT /v3/inventory` at once.

use std::collections::HashMap;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::call::{json_answer, with_headers};
use super::walmart::{replenished_in, Walmart};
use super::{
    BoxFuture, BulkWrite, Caller, ChannelAdapter, PushItem, PushReply, RateLimit, Submission,
};

/// Most items one feed carries (a few hundred kilobytes: Walmart takes 5 MB).
pub const FEED_ITEMS_MAX: usize = 10_000;
/// Walmart's limit on inventory feeds.
pub const FEEDS_PER_HOUR_DEFAULT: u32 = 10;
/// Changes down to this many units go by `PUT /v3/inventory` at once.
pub const URGENT_AT_OR_BELOW_DEFAULT: i64 = 10;
/// A feed not processed after this long is given up, its items sent again (Walmart
/// documents 30 minutes).
const FEED_WAIT_MAX: Duration = Duration::from_secs(2 * 3_600);
/// Item results per status page (Walmart's maximum).
const STATUS_PAGE: usize = 1_000;

/// The feed settings of one Walmart channel.
#[derive(Clone, Copy, Debug)]
pub struct FeedSettings {
    pub feeds_per_hour: u32,
    pub urgent_at_or_below: i64,
}

/// A one-part `multipart/form-data` body carrying `file`, and its content type. Built
/// here because the adapter builds its requests without I/O (reqwest's multipart form
/// is a stream sent by the client); the boundary is random, so it cannot occur in the
/// file.
fn multipart_file(file: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("lockstep-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::with_capacity(file.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"inventory.json\"\r\nContent-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Walmart {
    /// The feed file of `items`.
    fn feed_file(&self, items: &[PushItem]) -> Vec<u8> {
        let inventory: Vec<Value> = items
            .iter()
            .map(|item| {
                json!({"sku": self.seller_sku(&item.sku).unwrap_or(&item.sku),
                       "quantity": {"unit": "EACH", "amount": item.quantity}})
            })
            .collect();
        json!({"InventoryHeader": {"version": "1.4"}, "Inventory": inventory})
            .to_string()
            .into_bytes()
    }
}

/// The reasons Walmart gives in an `ingestionErrors` object.
fn ingestion_errors(errors: &Value) -> String {
    super::payload::list(&errors["ingestionError"])
        .iter()
        .map(|e| {
            format!(
                "{} {}: {}",
                e["type"].as_str().unwrap_or("ERROR"),
                e["code"].as_str().unwrap_or_default(),
                e["description"].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What one page of a feed's status says.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedStatus {
    /// `RECEIVED` or `INPROGRESS`.
    Processing,
    /// `ERROR`: none of it applied, for these reasons.
    Error(String),
    /// `PROCESSED`: this page's items (seller SKU, what became of it) of `received`.
    Processed {
        items: Vec<(String, ItemStatus)>,
        received: usize,
    },
    Unknown(String),
}

/// What a processed feed did with one item (its `ingestionStatus`).
#[derive(Debug, PartialEq, Eq)]
pub enum ItemStatus {
    /// `SUCCESS`.
    Applied,
    /// `SYSTEM_ERROR` or `TIMEOUT_ERROR`: "a downstream Walmart system returned an error"
    /// or "is not available during ingestion … try again"
    /// (https://developer.walmart.com/mx-marketplace/docs/feed-overview, "Ingestion
    /// Statuses"): Walmart's failure, not the item's.
    Failed(String),
    /// `DATA_ERROR`, or a status this code does not know: the item as sent is refused.
    Refused(String),
}

/// Reads one page of `GET /v3/feeds/{feedId}?includeDetails=true`.
pub fn read_status(feed: &Value) -> FeedStatus {
    match feed["feedStatus"].as_str().unwrap_or_default() {
        "RECEIVED" | "INPROGRESS" => FeedStatus::Processing,
        "ERROR" => FeedStatus::Error(ingestion_errors(&feed["ingestionErrors"])),
        "PROCESSED" => FeedStatus::Processed {
            items: super::payload::list(&feed["itemDetails"]["itemIngestionStatus"])
                .iter()
                .map(|item| {
                    let sku = item["sku"].as_str().unwrap_or_default().to_string();
                    let status = item["ingestionStatus"].as_str().unwrap_or_default();
                    let why = || format!("{status} {}", ingestion_errors(&item["ingestionErrors"]));
                    let outcome = match status {
                        "SUCCESS" => ItemStatus::Applied,
                        "SYSTEM_ERROR" | "TIMEOUT_ERROR" => ItemStatus::Failed(why()),
                        _ => ItemStatus::Refused(why()),
                    };
                    (sku, outcome)
                })
                .collect(),
            received: feed["itemsReceived"].as_u64().unwrap_or(0) as usize,
        },
        other => FeedStatus::Unknown(other.to_string()),
    }
}

impl BulkWrite for Walmart {
    fn urgent(&self, target: i64, shown: Option<i64>) -> bool {
        // Downward to a low level: the feed's half hour could sell what is not there.
        target <= self.feed.urgent_at_or_below && shown.is_none_or(|s| target < s)
    }

    fn max_items(&self) -> usize {
        FEED_ITEMS_MAX
    }

    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            requests_per_second: f64::from(self.feed.feeds_per_hour) / 3_600.0,
            // No burst: Walmart gives its tokens back all at once at the replenishment
            // time (`x-next-replenishment-time`), so a burst on top of the rate could
            // spend two windows' feeds in one and draw a 429 that waits for the next.
            burst: 1,
        }
    }

    fn gather(&self) -> Duration {
        // A tenth of the interval between feeds at the budget's rate (36 s at 10 an
        // hour), within 1 s to 1 min.
        let interval = 3_600.0 / f64::from(self.feed.feeds_per_hour.max(1));
        Duration::from_secs_f64((interval / 10.0).clamp(1.0, 60.0))
    }

    fn status_every(&self, waited: Duration, hurry: bool) -> Duration {
        if hurry {
            return Duration::from_secs(2);
        }
        // A tenth of the time waited so far: a quick feed is seen quickly, a slow one is
        // not read 900 times in its half hour.
        (waited / 10).clamp(Duration::from_secs(2), Duration::from_secs(60))
    }

    fn wait_max(&self) -> Duration {
        FEED_WAIT_MAX
    }

    fn submit<'a>(
        &'a self,
        caller: &'a Caller,
        items: &'a [PushItem],
    ) -> BoxFuture<'a, Result<String, PushReply>> {
        Box::pin(async move {
            let failed = |reason: String| PushReply::Failed {
                reason,
                retryable: true,
            };
            let auth = self.authorize(caller).await.map_err(failed)?;
            let (content_type, body) = multipart_file(&self.feed_file(items));
            let mut request =
                self.request(http::Method::POST, "/v3/feeds?feedType=inventory", None);
            *request.body_mut() = body;
            request.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_str(&content_type).expect("an ASCII content type"),
            );
            let (status, headers, answer) = caller
                .call(with_headers(request, auth))
                .await
                .map_err(failed)?;
            if status == 429 {
                let wait = super::retry_after(&headers)
                    .or_else(|| replenished_in(&headers))
                    .unwrap_or(Duration::from_secs(60));
                return Err(PushReply::Throttled { retry_after: wait });
            }
            if let Some(outcome) = super::http_failure(status, &headers, &answer) {
                return Err(outcome);
            }
            let reply: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            reply["feedId"]
                .as_str()
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    failed(format!(
                        "feed answer names no feedId: {}",
                        super::excerpt(&answer)
                    ))
                })
        })
    }

    fn status<'a>(
        &'a self,
        caller: &'a Caller,
        id: &'a str,
        items: &'a [PushItem],
    ) -> BoxFuture<'a, Result<Submission, String>> {
        Box::pin(async move {
            let index: HashMap<&str, usize> = items
                .iter()
                .enumerate()
                .map(|(i, item)| (self.seller_sku(&item.sku).unwrap_or(&item.sku), i))
                .collect();
            let (mut applied, mut failed) = (Vec::new(), Vec::new());
            let mut not_applied = Vec::new();
            let mut offset = 0usize;
            // A feed has no more items than it carried: `itemsReceived` is the channel's
            // number, and with a page that never ends it once kept this loop asking.
            let carried = items.len();
            loop {
                let auth = self.authorize(caller).await?;
                let path = format!(
                    "/v3/feeds/{}?includeDetails=true&offset={offset}&limit={STATUS_PAGE}",
                    utf8_percent_encode(id, NON_ALPHANUMERIC)
                );
                let request = with_headers(self.request(http::Method::GET, &path, None), auth);
                let feed = json_answer(&caller.call(request).await?)?;
                let (items, received) = match read_status(&feed) {
                    FeedStatus::Processing => return Ok(Submission::Pending),
                    FeedStatus::Error(why) => {
                        return Ok(Submission::Failed(format!("feed {id}: ERROR {why}")))
                    }
                    FeedStatus::Unknown(status) => {
                        return Err(format!("feed {id}: unknown feedStatus {status:?}"))
                    }
                    FeedStatus::Processed { items, received } => (items, received),
                };
                for (sku, outcome) in &items {
                    let Some(i) = index.get(sku.as_str()) else {
                        continue;
                    };
                    match outcome {
                        ItemStatus::Applied => applied.push(*i),
                        ItemStatus::Failed(why) => {
                            failed.push(*i);
                            not_applied.push(format!("{sku}: {why}"));
                        }
                        ItemStatus::Refused(why) => not_applied.push(format!("{sku}: {why}")),
                    }
                }
                offset += items.len();
                if items.is_empty() || offset >= received.min(carried) {
                    break;
                }
            }
            for why in &not_applied {
                tracing::warn!(channel = %self.name(), feed = %id, %why, "feed item not applied");
            }
            Ok(Submission::Processed { applied, failed })
        })
    }
}
