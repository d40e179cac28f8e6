//! One channel's slice of the `[catalog]`: our SKU ↔ the channel's own item id (and
//! location). Channels that name items by their own ids (Shopify's inventory items,
//! WooCommerce's product and variation ids) look them up here, both ways.

use ahash::AHashMap;

use crate::config::CatalogRow;

/// The channel's item for one SKU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    /// `None`: the channel's configured location.
    pub location: Option<String>,
}

/// One channel's mappings.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    by_sku: AHashMap<String, Item>,
    /// (item id, location) → SKU; the location is `None` for rows without one.
    by_item: AHashMap<(String, Option<String>), String>,
    /// The last `/`-separated part of each item id → SKU (a WooCommerce variation is
    /// `parent/variation`; replies name only the variation).
    by_leaf: AHashMap<String, String>,
}

impl Catalog {
    /// The rows of `channel`, with item ids and locations normalized by `normalize` (so a
    /// `gid://` id and its number are one id).
    pub fn of(channel: &str, rows: &[CatalogRow]) -> Catalog {
        Catalog::with(channel, rows, |id| id.to_string())
    }

    pub fn with(channel: &str, rows: &[CatalogRow], normalize: impl Fn(&str) -> String) -> Catalog {
        let mut catalog = Catalog::default();
        for row in rows.iter().filter(|r| r.channel == channel) {
            let item = Item {
                id: normalize(&row.item_id),
                location: row.location_id.as_deref().map(&normalize),
            };
            catalog.insert(row.sku.clone(), item);
        }
        catalog
    }

    /// Re-keys every id and location (for adapters that normalize after loading).
    pub fn normalized(&self, normalize: impl Fn(&str) -> String) -> Catalog {
        let mut catalog = Catalog::default();
        for (sku, item) in &self.by_sku {
            let item = Item {
                id: normalize(&item.id),
                location: item.location.as_deref().map(&normalize),
            };
            catalog.insert(sku.clone(), item);
        }
        catalog
    }

    fn insert(&mut self, sku: String, item: Item) {
        let leaf = item.id.rsplit('/').next().unwrap_or(&item.id).to_string();
        self.by_leaf.insert(leaf, sku.clone());
        self.by_item
            .insert((item.id.clone(), item.location.clone()), sku.clone());
        self.by_sku.insert(sku, item);
    }

    /// The SKU whose item id ends in `leaf` (the whole id, or its part after the last `/`).
    pub fn sku_by_leaf(&self, leaf: &str) -> Option<&str> {
        self.by_leaf.get(leaf).map(String::as_str)
    }

    pub fn item(&self, sku: &str) -> Option<&Item> {
        self.by_sku.get(sku)
    }

    /// The SKU of an item at a location: a row naming that location, else a row without
    /// one when `location` is the channel's own (`default_location`).
    pub fn sku_of(
        &self,
        item_id: &str,
        location: Option<&str>,
        default_location: Option<&str>,
    ) -> Option<&str> {
        let exact = self
            .by_item
            .get(&(item_id.to_string(), location.map(str::to_string)));
        let fallback = || {
            (location.is_none() || location == default_location)
                .then(|| self.by_item.get(&(item_id.to_string(), None)))
                .flatten()
        };
        exact.or_else(fallback).map(String::as_str)
    }

    /// Indices of `skus` grouped by the part of their item id before the first `/` (a
    /// WooCommerce parent, an Etsy listing, a TikTok product): what one call may carry
    /// together. Ids without a `/`, and unmapped SKUs, form one group.
    pub fn group_by_parent(&self, skus: &[&str]) -> Vec<Vec<usize>> {
        let mut groups: Vec<(Option<&str>, Vec<usize>)> = Vec::new();
        for (i, sku) in skus.iter().enumerate() {
            let parent = self
                .item(sku)
                .and_then(|item| item.id.split_once('/'))
                .map(|(parent, _)| parent);
            match groups.iter_mut().find(|(p, _)| *p == parent) {
                Some((_, group)) => group.push(i),
                None => groups.push((parent, vec![i])),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sku.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_sku.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sku: &str, channel: &str, item: &str, location: Option<&str>) -> CatalogRow {
        CatalogRow {
            sku: sku.into(),
            channel: channel.into(),
            item_id: item.into(),
            location_id: location.map(str::to_string),
        }
    }

    #[test]
    fn maps_both_ways_and_only_its_own_channel() {
        let rows = [
            row("A", "shop", "11", None),
            row("B", "shop", "12", Some("9")),
            row("C", "woo", "11", None),
        ];
        let catalog = Catalog::of("shop", &rows);
        assert_eq!(catalog.len(), 2);
        assert_eq!(catalog.item("A").unwrap().id, "11");
        assert!(catalog.item("C").is_none(), "another channel's row");
        assert_eq!(catalog.sku_of("11", None, Some("1")), Some("A"));
        assert_eq!(catalog.sku_of("11", Some("1"), Some("1")), Some("A"));
        assert_eq!(
            catalog.sku_of("11", Some("7"), Some("1")),
            None,
            "another location of a row without one is not ours"
        );
        assert_eq!(catalog.sku_of("12", Some("9"), Some("1")), Some("B"));
        assert_eq!(catalog.sku_of("12", Some("1"), Some("1")), None);
    }
}
