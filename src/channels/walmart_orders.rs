//! Walmart's orders poll: Get All Orders (`GET /v3/orders`) in windows of modification
//! time, the safety net under Walmart's lightweight order events.
//!
//! What the windows are for. Walmart answers at most 10,000 orders to one query: "you can
//! fetch up to 10,000 orders at a time. If you try to get more than 10,000 orders, the API
//! will return an error" (https://developer.walmart.com/us-marketplace/docs/get-all-orders;
//! the reference, https://developer.walmart.com/us-marketplace/reference/getallorders, says
//! the same; its earlier versions said 20,000). A pass that asked for everything modified
//! since its watermark after a long outage of a busy seller would fail at that point on
//! every pass, its watermark never moving. So the poll reads windows of modification time
//! (`propagate::poll_window`), asked for by `lastModifiedStartDate` and
//! `lastModifiedEndDate` (in milliseconds, the resolution of Walmart's dates). A window
//! whose first page says it holds more than the cap (`meta.totalCount`, "Total no of
//! purchase orders") is too wide, as is one Walmart refuses with a 4xx no retry changes on
//! any page (`call::refused_for_good`; not a 404, below): the
//! poll narrows it, down to two seconds. The error's shape is not documented, so any refusal
//! of a wider window is taken as that one; a window that narrow still refused fails the pass with
//! Walmart's words.
//!
//! Walmart answers a query that matches nothing with a 404, `CONTENT_NOT_FOUND.GMP_ORDER_API`
//! "Orders not found for given search parameters" (not in its pages; integrators catch it:
//! the kmcconnell Walmart SDK's CHANGELOG, 1.3.4; fulfilio/python-walmart PR #14): an
//! empty window, read whole.
//!
//! The list is not sorted by modification time (the reference's example runs newest
//! `orderDate` first), which is why it is read in windows (`OrderPoll::windowed`).
//!
//! `createdStartDate` is sent too, 179 days back: the reference gives it a default of
//! "current date - 7 days", so without it an order created a week ago and cancelled today
//! would not be listed (Walmart keeps orders 180 days). Pages follow `nextCursor`, the
//! next request's query string as Walmart gives it, sent as it came.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use super::call::{json_answer, with_headers};
use super::walmart::{throttle_wait, Walmart};
use super::{excerpt, payload, BoxFuture, Caller, ChannelAdapter, OrderPoll, PollPage, TooWide};
use crate::clock::{format_iso8601_millis, Micros, MICROS_PER_HOUR};

/// Most orders Walmart answers to one query.
const QUERY_CAP: i64 = 10_000;
/// How far back the orders asked for may have been created (Walmart keeps 180 days).
const CREATED_BACK: Micros = 179 * 24 * MICROS_PER_HOUR;
/// Orders a page asks for (Walmart's default; at most 200).
const PAGE_SIZE: usize = 100;
/// Most 429s one call of the orders list waits out before its pass fails.
const THROTTLED_MAX: u32 = 8;

/// A window's first page's query: the window, and orders created in the last 179 days.
fn first_query(start: Micros, end: Micros, now: Micros) -> String {
    let date =
        |t: Micros| utf8_percent_encode(&format_iso8601_millis(t), NON_ALPHANUMERIC).to_string();
    format!(
        "?createdStartDate={}&lastModifiedStartDate={}&lastModifiedEndDate={}&limit={PAGE_SIZE}",
        date(now - CREATED_BACK),
        date(start),
        date(end),
    )
}

/// The orders' `nextCursor` is the next request's query string as Walmart gives it:
/// checked to be one, so a hostile cursor fails this pass with a reason instead of a
/// panic building the request.
fn check_cursor(cursor: &str) -> Result<(), String> {
    let query = format!("/v3/orders{cursor}");
    if cursor.starts_with('?') && http::uri::PathAndQuery::try_from(query).is_ok() {
        Ok(())
    } else {
        Err(format!("nextCursor {cursor:?} is not a query string"))
    }
}

/// What an answer says of its window.
#[derive(Debug, PartialEq, Eq)]
enum Answered {
    /// Nothing matches: 404 with the orders API's `CONTENT_NOT_FOUND.GMP_ORDER_API` (the
    /// gateway's `CONTENT_NOT_FOUND.GMP_GATEWAY_API` for a wrong path is a failure), in
    /// `errors` as a list, or as `{"errors": {"error": [...]}}`, the shape the kmcconnell
    /// SDK parses it from.
    Empty,
    /// Refused: a 4xx no retry changes (`call::refused_for_good`) other than a 404.
    Refused,
    /// A page of a window holding more than the cap (`meta.totalCount`).
    OverCap,
    /// Anything else: a page, or a failure `json_answer` names.
    Page,
}

fn answered(status: u16, body: &[u8]) -> Answered {
    let reply = serde_json::from_slice::<Value>(body).unwrap_or_default();
    let not_found = || {
        payload::list(&reply["errors"])
            .iter()
            .chain(payload::list(&reply["errors"]["error"]))
            .any(|e| e["code"] == "CONTENT_NOT_FOUND.GMP_ORDER_API")
    };
    if status == 404 && not_found() {
        return Answered::Empty;
    }
    // Another 404 is no answer about the window (a gateway's), and a 4xx that another
    // try may change fails the pass to be read again (`call::refused_for_good`).
    if status != 404 && super::call::refused_for_good(status) {
        return Answered::Refused;
    }
    let total = reply["list"]["meta"]["totalCount"].as_i64();
    if (200..300).contains(&status) && total.is_some_and(|n| n > QUERY_CAP) {
        return Answered::OverCap;
    }
    Answered::Page
}

impl OrderPoll for Walmart {
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
            let first = cursor.is_none();
            let query = match cursor {
                Some(cursor) => {
                    check_cursor(&cursor)?;
                    cursor
                }
                None => first_query(since, until.unwrap_or(now), now),
            };
            let answer = self.orders_call(caller, &query).await?;
            let mut page = PollPage::default();
            match answered(answer.0, &answer.2) {
                // A window's first page only: a 404 past it (a cursor gone stale) is a
                // failure, not the rest of the window read.
                Answered::Empty if first => return Ok(page),
                Answered::Refused => {
                    page.too_wide = Some(TooWide::Refused(format!(
                        "Walmart refused the orders modified from {} to {}, a window as narrow as this poll reads (more than {QUERY_CAP} orders in it, or another refusal): HTTP {}: {}",
                        format_iso8601_millis(since),
                        format_iso8601_millis(until.unwrap_or(now)),
                        answer.0,
                        excerpt(&answer.2)
                    )));
                    return Ok(page);
                }
                Answered::OverCap => page.too_wide = Some(TooWide::OverCap),
                Answered::Empty | Answered::Page => {}
            }
            let reply = json_answer(&answer)?;
            let list = &reply["list"];
            if first {
                page.pages = list["meta"]["totalCount"]
                    .as_u64()
                    .map(|n| n.div_ceil(PAGE_SIZE as u64));
            }
            for order in payload::list(&list["elements"]["order"]) {
                // Keyed by it: orders without one would all share one key.
                if payload::id(&order["purchaseOrderId"]).is_none() {
                    let why = "an order without purchaseOrderId";
                    super::order_left_out(self.name(), &order["purchaseOrderId"], &why);
                    continue;
                }
                let (events, newest) = self.order_events(order, now);
                page.events.extend(events);
                page.newest = page.newest.max(newest);
            }
            let next = list["meta"]["nextCursor"]
                .as_str()
                .filter(|c| !c.is_empty());
            if let Some(cursor) = next {
                check_cursor(cursor)?;
            }
            page.next = next.map(str::to_string);
            Ok(page)
        })
    }
}

impl Walmart {
    /// One call of the orders list. The orders API has a token bucket of its own
    /// (Walmart's throttling page: "Rate limits vary by API"), apart from the inventory
    /// calls'. A 429 is waited out until its tokens come back: a pass of more pages than
    /// the bucket holds that failed on it would, its watermark unmoved, fail on the same
    /// page at every interval, and the orders past it would never be read.
    async fn orders_call(
        &self,
        caller: &Caller,
        query: &str,
    ) -> Result<(u16, http::HeaderMap, Vec<u8>), String> {
        let mut throttled = 0;
        loop {
            let auth = self.authorize(caller).await?;
            let request = with_headers(
                self.request(http::Method::GET, &format!("/v3/orders{query}"), None),
                auth,
            );
            let answer = caller.call_now(request).await?;
            if answer.0 != 429 || throttled == THROTTLED_MAX {
                return Ok(answer);
            }
            throttled += 1;
            tokio::time::sleep(throttle_wait(&answer.1).max(Duration::from_millis(100))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_that_is_not_a_query_string_is_refused() {
        assert!(check_cursor("?limit=100&nextCursor=abc%3D").is_ok());
        assert!(check_cursor("?nextCursor=a b").is_err());
        assert!(check_cursor("/../v3/items").is_err());
        assert!(check_cursor("?a=\u{0}").is_err());
    }

    #[test]
    fn an_answer_is_empty_refused_over_the_cap_or_a_page() {
        let page = |total: i64| {
            serde_json::to_vec(&serde_json::json!({"list": {"meta": {"totalCount": total}}}))
                .unwrap()
        };
        assert_eq!(answered(200, &page(QUERY_CAP + 1)), Answered::OverCap);
        assert_eq!(answered(200, &page(QUERY_CAP)), Answered::Page);
        assert_eq!(answered(400, b"{}"), Answered::Refused);
        let not_found = br#"{"errors": [{"code": "CONTENT_NOT_FOUND.GMP_ORDER_API"}]}"#;
        assert_eq!(answered(404, not_found), Answered::Empty);
        let nested = br#"{"errors": {"error": [{"code": "CONTENT_NOT_FOUND.GMP_ORDER_API"}]}}"#;
        assert_eq!(answered(404, nested), Answered::Empty);
        let gateway = br#"{"errors": [{"code": "CONTENT_NOT_FOUND.GMP_GATEWAY_API"}]}"#;
        assert_eq!(answered(404, gateway), Answered::Page);
        // Neither halves nor ends a window: the credentials, the throttle, another 404,
        // a 4xx another try may change, a server's failure.
        for status in [401, 403, 404, 407, 408, 409, 421, 423, 425, 429, 500, 503] {
            assert_eq!(answered(status, b"{}"), Answered::Page, "{status}");
        }
    }
}
