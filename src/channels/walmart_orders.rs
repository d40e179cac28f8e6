//! Walmart's orders poll: Get All Orders (`GET /v3/orders`) in windows of modification
//! time, the safety net under Walmart's lightweight order events.
//!
//! What the windows are for. Walmart answers at most 10,000 orders to one query: "you can
//! fetch up to 10,000 orders at a time. If you try to get more than 10,000 orders, the API
//! will return an error" (https://developer.walmart.com/us-marketplace/docs/get-all-orders;
//! the reference, https://developer.walmart.com/us-marketplace/reference/getallorders, says
//! the same; its earlier versions said 20,000). A pass that asked for everything modified
//! since its watermark after a long outage of a busy seller would fail at that point on
//! every pass, its watermark never moving. So a pass asks for `[start, end]` by
//! `lastModifiedStartDate` and `lastModifiedEndDate`, first up to the pass's start; a
//! window whose first page says it holds more than the cap (`meta.totalCount`, "Total no
//! of purchase orders"), or that Walmart refuses with a 4xx, is halved, down to a second.
//! The error's shape is not documented, so any refusal of a wider window is taken as that
//! one; a second still refused fails the pass with Walmart's words.
//!
//! Each window read to its end settles the watermark at its end (`PollPage::settled`),
//! stored at once: the list is not sorted by modification time (the reference's example
//! runs newest `orderDate` first), so the newest time seen says nothing of the orders not
//! yet read, and a pass cut short must not store it. The next window starts a second
//! before the last one ended, whether Walmart's bounds ("modified after", "modified
//! before") include their instant or not; orders read twice are duplicates by their keys.
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
use super::{excerpt, payload, BoxFuture, Caller, ChannelAdapter, OrderPoll, PollPage};
use crate::clock::{format_rfc3339, Micros, MICROS_PER_HOUR, MICROS_PER_SECOND};

/// Most orders Walmart answers to one query.
const QUERY_CAP: i64 = 10_000;
/// The narrowest window: one second, the resolution of the dates sent.
const WINDOW_MIN: Micros = MICROS_PER_SECOND;
/// How far back the orders asked for may have been created (Walmart keeps 180 days).
const CREATED_BACK: Micros = 179 * 24 * MICROS_PER_HOUR;
/// Orders a page asks for (Walmart's default; at most 200).
const PAGE_SIZE: usize = 100;
/// Most 429s one page of the order poll waits out before its pass fails.
const THROTTLED_MAX: u32 = 8;

/// Where a pass is: the window being read, the pass's end, and Walmart's cursor within
/// the window once its first page is read. As a `PollPage::next`: `start-end-until`
/// (Unix microseconds), then the cursor, which starts with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    start: Micros,
    end: Micros,
    until: Micros,
    cursor: Option<String>,
}

impl Window {
    fn encode(&self) -> String {
        let cursor = self.cursor.as_deref().unwrap_or("");
        format!("{}-{}-{}{cursor}", self.start, self.end, self.until)
    }

    fn decode(text: &str) -> Result<Window, String> {
        let (times, cursor) = match text.find('?') {
            Some(at) => (&text[..at], Some(&text[at..])),
            None => (text, None),
        };
        let bad = || {
            format!(
                "the poll's cursor {:?} is not one it wrote",
                excerpt(text.as_bytes())
            )
        };
        let times: Vec<Micros> = times
            .split('-')
            .map(|t| t.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let [start, end, until] = times[..] else {
            return Err(bad());
        };
        if !(start < end && end <= until) {
            return Err(bad());
        }
        if let Some(cursor) = cursor {
            check_cursor(cursor)?;
        }
        Ok(Window {
            start,
            end,
            until,
            cursor: cursor.map(str::to_string),
        })
    }

    /// The first page's query: the window, and orders created in the last 179 days.
    fn first_query(&self, now: Micros) -> String {
        let date =
            |t: Micros| utf8_percent_encode(&format_rfc3339(t), NON_ALPHANUMERIC).to_string();
        format!(
            "?createdStartDate={}&lastModifiedStartDate={}&lastModifiedEndDate={}&limit={PAGE_SIZE}",
            date(now - CREATED_BACK),
            date(self.start),
            date(self.end),
        )
    }

    /// The window's first half, or `None` when it is a second already.
    fn halved(&self) -> Option<Window> {
        (self.end - self.start > WINDOW_MIN).then(|| Window {
            end: self.start + ((self.end - self.start) / 2).max(WINDOW_MIN),
            cursor: None,
            ..self.clone()
        })
    }

    /// The window after this one, read to its end: up to the pass's end, from a second
    /// before this one's end; `None` when this one reached the pass's end.
    fn after(&self) -> Option<Window> {
        (self.end < self.until).then(|| Window {
            start: self.end - WINDOW_MIN,
            end: self.until,
            until: self.until,
            cursor: None,
        })
    }
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

/// Whether a first page's answer says its window holds more than Walmart answers to one
/// query: a refusal (a 4xx other than the credentials' and the throttle's), or a
/// `totalCount` over the cap.
fn over_cap(status: u16, body: &[u8]) -> bool {
    if (400..500).contains(&status) {
        return ![401, 403, 429].contains(&status);
    }
    serde_json::from_slice::<Value>(body).is_ok_and(|r| {
        r["list"]["meta"]["totalCount"]
            .as_i64()
            .is_some_and(|n| n > QUERY_CAP)
    })
}

impl OrderPoll for Walmart {
    fn interval(&self) -> Duration {
        self.poll_interval
    }

    fn page<'a>(
        &'a self,
        caller: &'a Caller,
        since: Micros,
        cursor: Option<String>,
        now: Micros,
    ) -> BoxFuture<'a, Result<PollPage, String>> {
        Box::pin(async move {
            let mut window = match cursor {
                Some(cursor) => Window::decode(&cursor)?,
                None => Window {
                    start: since,
                    end: now.max(since + WINDOW_MIN),
                    until: now.max(since + WINDOW_MIN),
                    cursor: None,
                },
            };
            let answer = loop {
                let query = match &window.cursor {
                    Some(cursor) => cursor.clone(),
                    None => window.first_query(now),
                };
                let answer = self.orders_call(caller, &query).await?;
                if window.cursor.is_none() && over_cap(answer.0, &answer.2) {
                    if let Some(half) = window.halved() {
                        window = half;
                        continue;
                    }
                    if answer.0 >= 400 {
                        return Err(format!(
                            "Walmart refused the orders modified from {} to {}, a window of a second (more than {QUERY_CAP} orders in it, or another refusal): HTTP {}: {}",
                            format_rfc3339(window.start),
                            format_rfc3339(window.end),
                            answer.0,
                            excerpt(&answer.2)
                        ));
                    }
                }
                break answer;
            };
            let reply = json_answer(&answer)?;
            let list = &reply["list"];
            let mut page = PollPage::default();
            for order in payload::list(&list["elements"]["order"]) {
                let (events, newest) = self.order_events(order, now);
                page.events.extend(events);
                page.newest = page.newest.max(newest);
            }
            let next_cursor = list["meta"]["nextCursor"]
                .as_str()
                .filter(|c| !c.is_empty());
            let next = match next_cursor {
                Some(cursor) => {
                    check_cursor(cursor)?;
                    Some(Window {
                        cursor: Some(cursor.to_string()),
                        ..window
                    })
                }
                None => {
                    page.settled = Some(window.end);
                    window.after()
                }
            };
            page.next = next.map(|w| w.encode());
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
    fn a_window_halves_to_a_second_and_the_next_overlaps_its_end_by_one() {
        let s = MICROS_PER_SECOND;
        let whole = Window {
            start: 100 * s,
            end: 200 * s,
            until: 200 * s,
            cursor: None,
        };
        let half = whole.halved().unwrap();
        assert_eq!(
            (half.start, half.end, half.until),
            (100 * s, 150 * s, 200 * s)
        );
        let mut narrow = half.clone();
        while let Some(h) = narrow.halved() {
            narrow = h;
        }
        assert_eq!(narrow.end - narrow.start, s);
        let next = half.after().unwrap();
        assert_eq!((next.start, next.end), (149 * s, 200 * s));
        assert_eq!(next.after(), None);
        // A window and its cursor come back as they were written.
        let paged = Window {
            cursor: Some("?limit=100&soIndex=2&poIndex=2".into()),
            ..half
        };
        assert_eq!(Window::decode(&paged.encode()), Ok(paged));
        for bad in ["", "1-2", "3-2-4", "1-2-3?a b", "a-b-c", "1-2-3-4"] {
            assert!(Window::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_count_over_the_cap_or_a_refusal_halves_but_credentials_and_throttles_do_not() {
        let page = |total: i64| {
            serde_json::to_vec(&serde_json::json!({"list": {"meta": {"totalCount": total}}}))
                .unwrap()
        };
        assert!(over_cap(200, &page(QUERY_CAP + 1)));
        assert!(!over_cap(200, &page(QUERY_CAP)));
        assert!(over_cap(400, b"{}"));
        for status in [401, 403, 429, 500, 503] {
            assert!(!over_cap(status, b"{}"), "{status}");
        }
    }
}
