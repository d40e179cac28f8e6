//! A TikTok Shop SKU stocked in more than one warehouse: what its inventory write carries.
//!
//! Update Inventory takes a SKU's stock per warehouse, and "You must include all warehouse
//! IDs assigned to this SKU. Do not omit any or add unrelated warehouses"
//! (https://partner.tiktokshop.com/docv2/page/6503068fc20ad60284b38858). A write that
//! leaves one out is refused: 12019028 "Multiple warehouses detected. Include all
//! warehouse IDs and details.", 12052037 "Cannot update inventory" (missing or incorrect
//! warehouse IDs), 12052533 "Removal, addition, and change of warehouses are not
//! permitted" (Partner Center's error tables; which one comes is not documented, so any
//! counts: as the answer's `code`, an entry's of `data.errors`, or, as the page's own
//! example of a refusal puts a warehouse's, under the wrapper 12052990 "Batch update
//! inventory error." in the entry's `detail.extra_errors`). For a SKU with one warehouse
//! the id is optional, and the write stays as it was.
//!
//! lockstep sets one warehouse's stock per SKU: the channel's `location_id`, else the
//! SKU's first (the one reads take). The SKU's other warehouses are written with what Get
//! Product showed for them just before the write, so they keep their stock: lockstep does
//! not own it. A sale from another warehouse between that read and the write is written
//! over (the unit comes back there), the window of one call; a seller who wants lockstep to
//! own a SKU's whole stock keeps it in one warehouse.
//!
//! Which SKUs have several is learned from every answer of the server's that lists a
//! SKU's warehouses (reconciliation's reads, the read before a write) and from a write
//! refused for them; only those SKUs' pushes read first. A refused SKU the read shows in
//! one warehouse (a `location_id` not its own) is not written again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::{json, Value};

use super::payload;

/// TikTok's codes for a write whose warehouses are not the SKU's.
const WAREHOUSE_CODES: [i64; 3] = [12019028, 12052037, 12052533];

/// One SKU's stock per warehouse, as Get Product lists it: (warehouse id, quantity).
pub type Stock = Vec<(String, i64)>;

/// TikTok SKU ids known to be stocked in more than one warehouse.
#[derive(Default)]
pub struct Several(Mutex<HashSet<String>>);

impl Several {
    /// An answer listed SKU `sku_id` in `warehouses` warehouses.
    pub fn learn(&self, sku_id: &str, warehouses: usize) {
        let mut several = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if warehouses > 1 {
            several.insert(sku_id.to_string());
        } else {
            several.remove(sku_id);
        }
    }

    /// TikTok refused a write of `sku_id` for its warehouses.
    pub fn refused(&self, sku_id: &str) {
        let mut several = self.0.lock().unwrap_or_else(|e| e.into_inner());
        several.insert(sku_id.to_string());
    }

    pub fn has(&self, sku_id: &str) -> bool {
        let several = self.0.lock().unwrap_or_else(|e| e.into_inner());
        several.contains(sku_id)
    }
}

/// Each SKU's stock per warehouse in a Get Product answer's `data`, by SKU id.
pub fn stock_of(product: &Value) -> HashMap<String, Stock> {
    payload::list(&product["skus"])
        .iter()
        .filter_map(|s| {
            let stock = payload::list(&s["inventory"])
                .iter()
                .filter_map(|i| Some((payload::id(&i["warehouse_id"])?, i["quantity"].as_i64()?)))
                .collect();
            Some((payload::id(&s["id"])?, stock))
        })
        .collect()
}

/// The `inventory` of one SKU's write: `quantity` at `ours` (else at the first warehouse
/// `stock` lists, else with no warehouse named), and every other warehouse in `stock` at
/// what it showed.
pub fn inventory(quantity: i64, ours: Option<&str>, stock: Option<&Stock>) -> Vec<Value> {
    let listed = stock.map(Vec::as_slice).unwrap_or_default();
    let ours = ours.or(listed.first().map(|(w, _)| w.as_str()));
    let mut inventory = vec![match ours {
        Some(w) => json!({"warehouse_id": w, "quantity": quantity}),
        None => json!({"quantity": quantity}),
    }];
    inventory.extend(
        listed
            .iter()
            .filter(|(w, _)| Some(w.as_str()) != ours)
            .map(|(w, q)| json!({"warehouse_id": w, "quantity": q})),
    );
    inventory
}

/// The SKU ids of `asked` that a write's answer refused for their warehouses: those its
/// `data.errors` name with one of the codes (the entry's, or one in its
/// `detail.extra_errors`), or all of them when the answer's own code is one and it names
/// none.
pub fn refused_for_warehouses(reply: &Value, asked: &[&str]) -> Vec<String> {
    let warehouses = |e: &Value| {
        e["code"]
            .as_i64()
            .is_some_and(|c| WAREHOUSE_CODES.contains(&c))
    };
    let named: Vec<String> = payload::list(&reply["data"]["errors"])
        .iter()
        .filter(|e| {
            warehouses(e)
                || payload::list(&e["detail"]["extra_errors"])
                    .iter()
                    .any(warehouses)
        })
        .filter_map(|e| payload::id(&e["detail"]["sku_id"]))
        .collect();
    if named.is_empty() && warehouses(reply) {
        return asked.iter().map(|s| s.to_string()).collect();
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_carries_the_quantity_and_the_others_what_they_showed() {
        let stock: Stock = vec![("7000".into(), 4), ("7001".into(), 5)];
        assert_eq!(
            inventory(9, None, Some(&stock)),
            vec![
                json!({"warehouse_id": "7000", "quantity": 9}),
                json!({"warehouse_id": "7001", "quantity": 5})
            ]
        );
        assert_eq!(
            inventory(9, Some("7001"), Some(&stock)),
            vec![
                json!({"warehouse_id": "7001", "quantity": 9}),
                json!({"warehouse_id": "7000", "quantity": 4})
            ]
        );
        // One warehouse, not read: as before, the configured one or none named.
        assert_eq!(inventory(3, None, None), vec![json!({"quantity": 3})]);
        assert_eq!(
            inventory(3, Some("7000"), None),
            vec![json!({"warehouse_id": "7000", "quantity": 3})]
        );
    }

    #[test]
    fn a_refusal_names_its_skus_or_the_whole_write() {
        let named = json!({"code": 17019003, "data": {"errors": [
            {"code": 12019028, "detail": {"sku_id": "81"}},
            {"code": 17019003, "detail": {"sku_id": "82"}}]}});
        assert_eq!(refused_for_warehouses(&named, &["81", "82"]), vec!["81"]);
        // The page's own example: the answer's code 0, the entry's the wrapper 12052990,
        // the warehouse's code under it.
        let wrapped = json!({"code": 0, "data": {"errors": [{"code": 12052990,
            "message": "Batch update inventory error.",
            "detail": {"sku_id": "82", "extra_errors": [{"warehouse_id": "7001", "code": 12019028}]}}]}});
        assert_eq!(refused_for_warehouses(&wrapped, &["81", "82"]), vec!["82"]);
        let whole = json!({"code": 12052037, "data": {}});
        assert_eq!(
            refused_for_warehouses(&whole, &["81", "82"]),
            vec!["81", "82"]
        );
        let fine = json!({"code": 0, "data": {"errors": []}});
        assert!(refused_for_warehouses(&fine, &["81"]).is_empty());
    }
}
