//! The simulated Walmart seller's bulk inventory feeds, as developer.walmart.com documents
//! them:
//!
//! - `POST /v3/feeds?feedType=inventory` takes a `multipart/form-data` upload whose part
//!   `file` is the feed file (spec 1.4 JSON: `InventoryHeader.version` and `Inventory[]`
//!   of `{sku, quantity: {unit: "EACH", amount}}`), at most 5 MB, 10 feeds an hour (429
//!   with `x-current-token-count` and `x-next-replenishment-time` beyond), and answers
//!   the `feedId` ("Update inventory in bulk",
//!   https://developer.walmart.com/us-marketplace/docs/bulk-inventory-update-feed;
//!   limits: https://developer.walmart.com/cl-marketplace/docs/bulk-inventory-update).
//! - A feed is `RECEIVED`, then `INPROGRESS`, then, after the processing time (30
//!   minutes unless a test sets it), `PROCESSED`: only then are its items applied, each
//!   `SUCCESS` or `DATA_ERROR` (an unknown SKU, a bad quantity), or `SYSTEM_ERROR` for
//!   a SKU a test makes Walmart's systems fail (`Feeds::fail`); a file that is not a
//!   1.4 inventory feed makes the whole feed `ERROR`, nothing applied.
//! - `GET /v3/feeds/{feedId}?includeDetails=true&offset=&limit=` (limit at most 1000)
//!   answers `feedStatus`, the item counts and, with details, one page of
//!   `itemDetails.itemIngestionStatus[]` ("Feed item status API",
//!   https://developer.walmart.com/us-marketplace/docs/feed-item-status-api-for-tracking-fitment-files;
//!   statuses: https://developer.walmart.com/mx-marketplace/docs/feed-overview).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::market::{epoch_ms_at, now_us, Req, Shop};

/// Walmart's upload limit per feed file.
pub const FILE_MAX: usize = 5 * 1024 * 1024;
/// What Walmart documents as a feed's processing time.
pub const PROCESSING_DEFAULT: Duration = Duration::from_secs(30 * 60);

/// One item's end state.
#[derive(Clone, Debug)]
struct ItemResult {
    sku: String,
    /// Why it was not applied: the ingestion status (`DATA_ERROR`, `SYSTEM_ERROR`) and
    /// the error.
    error: Option<(&'static str, String)>,
}

/// One submitted feed.
#[derive(Clone, Debug)]
pub struct Feed {
    pub id: String,
    submitted: Instant,
    submitted_ms: i64,
    ready: Instant,
    file: Vec<u8>,
    /// The items the file carries (0 for a file that does not parse), counted once.
    received: usize,
    /// Set once processed: per item, or the whole feed's error.
    results: Option<Result<Vec<ItemResult>, String>>,
}

impl Feed {
    /// Whether Walmart has processed it.
    pub fn processed(&self) -> bool {
        self.results.is_some()
    }

    /// The items the file carries (0 for a file that does not parse).
    pub fn items(&self) -> usize {
        self.received
    }
}

/// The feeds of one seller.
pub struct Feeds {
    pub list: Vec<Feed>,
    pub processing: Duration,
    /// Seller SKUs whose feed items Walmart refuses (`DATA_ERROR`), for tests.
    pub refuse: Vec<String>,
    /// Seller SKUs whose feed items a downstream Walmart system fails (`SYSTEM_ERROR`:
    /// "wait … and then try again"), for tests.
    pub fail: Vec<String>,
    capacity: u32,
    left: u32,
    period: Duration,
    next: Instant,
}

impl Default for Feeds {
    fn default() -> Feeds {
        let period = Duration::from_secs(3_600);
        Feeds {
            list: Vec::new(),
            processing: PROCESSING_DEFAULT,
            refuse: Vec::new(),
            fail: Vec::new(),
            capacity: 10,
            left: 10,
            period,
            next: Instant::now() + period,
        }
    }
}

/// The `file` part of a `multipart/form-data` body (RFC 7578): the bytes between its
/// headers' blank line and the next boundary delimiter.
fn file_part(req: &Req) -> Result<Vec<u8>, String> {
    let content_type = req.header("content-type").unwrap_or_default();
    let boundary = content_type
        .strip_prefix("multipart/form-data")
        .and_then(|rest| {
            rest.split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
        })
        .map(|b| b.trim_matches('"').to_string())
        .ok_or("Content-Type must be multipart/form-data with a boundary")?;
    let body = &req.body[..];
    let delimiter = format!("--{boundary}");
    let text_at = |from: usize| find(body, delimiter.as_bytes(), from);
    let mut at = text_at(0).ok_or("no multipart boundary in the body")?;
    loop {
        let start = at + delimiter.len();
        if body[start..].starts_with(b"--") {
            return Err("no part named \"file\"".into());
        }
        let headers_end = find(body, b"\r\n\r\n", start).ok_or("a part without headers")?;
        let headers = String::from_utf8_lossy(&body[start..headers_end]).to_ascii_lowercase();
        let next = text_at(headers_end).ok_or("a part without a closing boundary")?;
        let named_file = headers.lines().any(|l| {
            l.starts_with("content-disposition: form-data")
                && l.split(';').any(|p| p.trim() == "name=\"file\"")
        });
        if named_file {
            // The part's content ends with the CRLF before the delimiter.
            let end = next.saturating_sub(2).max(headers_end + 4);
            return Ok(body[headers_end + 4..end].to_vec());
        }
        at = next;
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The items of a 1.4 inventory feed file: (seller SKU, unit, amount).
fn parse_file(file: &[u8]) -> Result<Vec<(String, Value, Value)>, String> {
    let feed: Value =
        serde_json::from_slice(file).map_err(|e| format!("the feed file is not JSON: {e}"))?;
    if feed["InventoryHeader"]["version"] != "1.4" {
        return Err("InventoryHeader.version must be 1.4".into());
    }
    let items = feed["Inventory"]
        .as_array()
        .ok_or("Inventory must be an array")?;
    Ok(items
        .iter()
        .map(|i| {
            (
                i["sku"].as_str().unwrap_or_default().to_string(),
                i["quantity"]["unit"].clone(),
                i["quantity"]["amount"].clone(),
            )
        })
        .collect())
}

impl Feeds {
    /// The upload budget: `capacity` feeds, all back every `period`.
    pub fn set_budget(&mut self, capacity: u32, period: Duration) {
        self.capacity = capacity;
        self.left = capacity;
        self.period = period;
        self.next = Instant::now() + period;
    }

    /// `POST /v3/feeds`: the feed's id, or the error answer (status, code, description,
    /// headers).
    #[allow(clippy::type_complexity)]
    pub fn submit(
        &mut self,
        req: &Req,
    ) -> Result<String, (u16, String, Vec<(&'static str, String)>)> {
        if req.param("feedType").as_deref() != Some("inventory") {
            return Err((400, "feedType must be inventory".into(), Vec::new()));
        }
        let now = Instant::now();
        while now >= self.next {
            self.left = self.capacity;
            self.next += self.period;
        }
        let next_ms = epoch_ms_at(self.next);
        if self.left == 0 {
            return Err((
                429,
                "Too many requests".into(),
                vec![
                    ("x-current-token-count", "0".into()),
                    ("x-next-replenishment-time", next_ms.to_string()),
                ],
            ));
        }
        if req.body.len() > FILE_MAX {
            return Err((413, "the feed file is larger than 5 MB".into(), Vec::new()));
        }
        let file = file_part(req).map_err(|e| (400, e, Vec::new()))?;
        self.left -= 1;
        let id = format!("{:032X}@AU8BAQA", rand::random::<u128>());
        self.list.push(Feed {
            id: id.clone(),
            submitted: now,
            submitted_ms: now_us() / 1_000,
            ready: now + self.processing,
            received: parse_file(&file).map_or(0, |items| items.len()),
            file,
            results: None,
        });
        Ok(id)
    }

    /// Processes the feeds whose time has come: their items written to the shop.
    pub fn process_due(&mut self, shop: &mut Shop) {
        let now = Instant::now();
        let (refuse, fail) = (self.refuse.clone(), self.fail.clone());
        for feed in self
            .list
            .iter_mut()
            .filter(|f| f.results.is_none() && f.ready <= now)
        {
            let results = parse_file(&feed.file).map(|items| {
                items
                    .into_iter()
                    .map(|(sku, unit, amount)| {
                        let amount = amount.as_i64().filter(|a| *a >= 0 && unit == "EACH");
                        let listed = shop.by_id(&sku).map(|l| l.sku.clone());
                        let error = match (listed, amount) {
                            _ if fail.contains(&sku) => Some((
                                "SYSTEM_ERROR",
                                "ERR_INT_SYS_0001001: downstream system error",
                            )),
                            _ if refuse.contains(&sku) => Some((
                                "DATA_ERROR",
                                "ERR_EXT_DATA_0801001: item is not ready for inventory",
                            )),
                            (None, _) => Some(("DATA_ERROR", "ERR_EXT_DATA_0101001: SKU not found")),
                            (_, None) => Some(("DATA_ERROR", "ERR_EXT_DATA_0801002: quantity.unit EACH and a quantity.amount of 0 or more are required")),
                            (Some(ours), Some(amount)) => {
                                shop.write(&ours, amount);
                                None
                            }
                        };
                        ItemResult {
                            sku,
                            error: error.map(|(status, why)| (status, why.to_string())),
                        }
                    })
                    .collect()
            });
            feed.results = Some(results);
        }
    }

    /// `GET /v3/feeds/{feedId}`.
    pub fn status(&self, id: &str, req: &Req) -> Result<Value, (u16, String)> {
        let feed = self
            .list
            .iter()
            .find(|f| f.id == id)
            .ok_or((404, format!("feed {id} not found")))?;
        let details = req.param("includeDetails").as_deref() == Some("true");
        let offset = req.number("offset", 0);
        let limit = req.number("limit", 50);
        if limit > 1_000 {
            return Err((400, "limit must not be more than 1000".into()));
        }
        let received = feed.items();
        let base = |status: &str| {
            json!({"feedId": feed.id, "feedStatus": status, "feedSubmissionDate": feed.submitted_ms,
                   "itemsReceived": received, "offset": offset, "limit": limit})
        };
        let results = match &feed.results {
            None => {
                // Received, then in progress after a tenth of its time.
                let started = feed.submitted.elapsed() > (feed.ready - feed.submitted) / 10;
                let mut answer = base(if started { "INPROGRESS" } else { "RECEIVED" });
                answer["itemsSucceeded"] = json!(0);
                answer["itemsFailed"] = json!(0);
                answer["itemsProcessing"] = json!(received);
                return Ok(answer);
            }
            Some(Err(why)) => {
                let mut answer = base("ERROR");
                answer["ingestionErrors"] = json!({"ingestionError": [
                    {"type": "DATA_ERROR", "code": "ERR_EXT_DATA_0001001", "field": "", "description": why}]});
                return Ok(answer);
            }
            Some(Ok(results)) => results,
        };
        let failed = results.iter().filter(|r| r.error.is_some()).count();
        let mut answer = base("PROCESSED");
        answer["itemsSucceeded"] = json!(results.len() - failed);
        answer["itemsFailed"] = json!(failed);
        answer["itemsProcessing"] = json!(0);
        if details {
            let page: Vec<Value> = results
                .iter()
                .enumerate()
                .skip(offset)
                .take(limit)
                .map(|(index, r)| {
                    let status = r.error.as_ref().map_or("SUCCESS", |(status, _)| *status);
                    let mut item = json!({"martId": 0, "sku": r.sku, "index": index,
                                          "ingestionStatus": status});
                    if let Some((status, why)) = &r.error {
                        let (code, description) = why.split_once(": ").unwrap_or(("", why));
                        item["ingestionErrors"] = json!({"ingestionError": [
                            {"type": status, "code": code, "field": "sku", "description": description}]});
                    }
                    item
                })
                .collect();
            answer["itemDetails"] = json!({"itemIngestionStatus": page});
        }
        Ok(answer)
    }
}
