//! Where the next page of an order poll starts when the channel lists orders oldest
//! modification first: after the newest modification the last page showed, not at the
//! next page number.
//!
//! A page number counts positions in a list that moves while a pass reads it. An order
//! the shop modifies between two requests (staff complete it) goes to the end, every
//! order after it slides up one, and the order that slid onto the page already read is
//! never seen; once the watermark has passed it, no later pass sees it either. A
//! modification time cannot be slid past. Orders modified within one instant of the
//! channel's resolution (a second) are told apart by page numbers within that instant,
//! the one place the bound cannot move.
//!
//! The cursor is `after/page`: list orders modified after `after` (microseconds), the
//! `page`th page of them. The channels' filters and sorts it rests on, each at a second's
//! resolution (inclusive or not, a bound one second back lists that second again):
//! - WooCommerce: `GET /wp-json/wc/v3/orders` with `modified_after`,
//!   `orderby=modified`, `order=asc`, `page`, `per_page` at most 100
//!   (https://woocommerce.github.io/woocommerce-rest-api-docs/#list-all-orders);
//!   `date_modified_gmt` is stored to the second.
//! - BigCommerce: `GET /v2/orders` with `min_date_modified`,
//!   `sort=date_modified:asc`, `page`, `limit` (orders.v2.oas2.yml, "Get All Orders",
//!   https://developer.bigcommerce.com/docs/rest-management/orders#get-all-orders);
//!   `date_modified` is RFC 2822, to the second.
//! - Etsy: `getShopReceipts` with `min_last_modified` (Unix seconds), `sort_on=updated`,
//!   `sort_order=asc`, `limit`, `offset`
//!   (https://developers.etsy.com/documentation/reference#operation/getShopReceipts).

use crate::clock::{Micros, MICROS_PER_SECOND};

/// The resolution every channel paged this way keeps modification times at: a second.
const RESOLUTION: Micros = MICROS_PER_SECOND;

/// A poll page's place: orders modified after `after`, its `page`th page (from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeCursor {
    pub after: Micros,
    pub page: u32,
}

impl TimeCursor {
    /// The page a cursor names; the first after `since` when there is none.
    pub fn read(cursor: Option<&str>, since: Micros) -> Result<TimeCursor, String> {
        let Some(cursor) = cursor else {
            return Ok(TimeCursor {
                after: since,
                page: 1,
            });
        };
        cursor
            .split_once('/')
            .and_then(|(after, page)| {
                Some(TimeCursor {
                    after: after.parse().ok()?,
                    page: page.parse().ok().filter(|p| *p >= 1)?,
                })
            })
            .ok_or_else(|| format!("poll cursor {cursor:?} is not after/page"))
    }

    /// The cursor of the page after this one, which showed orders up to `newest`: `None`
    /// when the channel said there are no more. The bound moves to one `RESOLUTION`
    /// before `newest`, so the orders of that instant are listed again (taken once: an
    /// order's events have keys) rather than skipped; where that does not move it (more
    /// than a page within one instant), the page number does.
    pub fn next(&self, newest: Option<Micros>, more: bool) -> Option<String> {
        if !more {
            return None;
        }
        let bound = newest.map_or(self.after, |n| n.saturating_sub(RESOLUTION));
        let next = if bound > self.after {
            TimeCursor {
                after: bound,
                page: 1,
            }
        } else {
            TimeCursor {
                after: self.after,
                page: self.page.saturating_add(1),
            }
        };
        Some(format!("{}/{}", next.after, next.page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    #[test]
    fn the_bound_moves_to_the_newest_instant_and_pages_only_within_one() {
        let first = TimeCursor::read(None, 100 * S).unwrap();
        assert_eq!(
            first,
            TimeCursor {
                after: 100 * S,
                page: 1
            }
        );
        // A page up to 160 s: the next lists from the instant before, page 1.
        let next = first.next(Some(160 * S), true).unwrap();
        assert_eq!(next, format!("{}/1", 159 * S));
        let at = TimeCursor::read(Some(&next), 0).unwrap();
        // A page all within that instant: the bound cannot move, the page does.
        assert_eq!(
            at.next(Some(160 * S), true).unwrap(),
            format!("{}/2", 159 * S)
        );
        assert_eq!(at.next(Some(170 * S), false), None);
        // A newest at the end of its second (BigCommerce's and Etsy's times are read
        // so): the bound falls just before the second, which is listed again.
        let end = 160 * S + 999_999;
        assert_eq!(
            first.next(Some(end), true).unwrap(),
            format!("{}/1", 160 * S - 1)
        );
        assert!(TimeCursor::read(Some("3"), 0).is_err());
        assert!(TimeCursor::read(Some("3/0"), 0).is_err());
    }
}
