//! What an order poll fetched about each order, kept per version of the order (its
//! modification time as the channel wrote it), so that a pass which reads the same page
//! again does not fetch it again. Every pass starts a window back from its watermark
//! (`propagate::poll::OVERLAP_S`), so a busy store's recent orders are listed at every
//! pass; without this each of them would cost its follow-up calls again, out of the
//! budget the pushes share. An order changed since has another version and is fetched.
//! The versions: Amazon's `LastUpdateDate` for getOrderItems
//! (https://developer-docs.amazon.com/sp-api/docs/orders-api-v0-reference), BigCommerce's
//! `date_modified` for an order's products
//! (https://developer.bigcommerce.com/docs/rest-management/orders), eBay's
//! `lastModifiedDate` for getShippingFulfillments
//! (https://developer.ebay.com/api-docs/sell/fulfillment/resources/order/methods/getOrders).
//!
//! What the channel refused to give is not kept: the next pass that lists the order asks
//! again (an Amazon refusal of an order's items may pass).
//!
//! Bounded: when full it forgets everything and starts over, which costs one pass its
//! fetches again and nothing else (the events built from a fetch are duplicates by their
//! keys when they were taken before).

use std::sync::Mutex;

use ahash::AHashMap;

/// Fetched values by (order id, version).
pub struct Fetched<T> {
    kept: Mutex<AHashMap<(String, String), T>>,
    max: usize,
}

impl<T: Clone> Fetched<T> {
    /// Keeps at most `max` orders' values.
    pub fn new(max: usize) -> Fetched<T> {
        Fetched {
            kept: Mutex::new(AHashMap::new()),
            max,
        }
    }

    /// What was fetched for this version of the order, if it was.
    pub fn get(&self, order: &str, version: &str) -> Option<T> {
        self.lock()
            .get(&(order.to_string(), version.to_string()))
            .cloned()
    }

    /// Keeps what was fetched for this version of the order.
    pub fn keep(&self, order: &str, version: &str, value: T) {
        let mut kept = self.lock();
        if kept.len() >= self.max {
            kept.clear();
        }
        kept.insert((order.to_string(), version.to_string()), value);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AHashMap<(String, String), T>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_kept_another_is_not_and_a_full_memo_starts_over() {
        let fetched = Fetched::new(2);
        fetched.keep("1", "v1", 10);
        assert_eq!(fetched.get("1", "v1"), Some(10));
        assert_eq!(fetched.get("1", "v2"), None, "the order changed since");
        fetched.keep("2", "v1", 20);
        fetched.keep("3", "v1", 30);
        assert_eq!(fetched.get("1", "v1"), None, "full: started over");
        assert_eq!(fetched.get("3", "v1"), Some(30));
    }
}
