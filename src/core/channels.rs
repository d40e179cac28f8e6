//! The channels as the core knows them: what each is shown of a SKU (`ChannelRule`), the
//! small id every part names a channel by (`ChannelId`), the one registry that gives ids
//! out (`ChannelRules`), and a table keyed by them (`ByChannel`).
//!
//! An id is the channel's place among the configured channels of one set of settings; the
//! registry is built once from them, so a name is looked up once (at a webhook's door, or
//! when stored views are loaded), never per event by a scan. Ids do not outlive the
//! settings they were given under: what is stored names channels by name
//! (`records::ChannelMark`), and a change of settings re-aligns by name
//! (`realign_channels`).

use std::ops::{Index, IndexMut};
use std::sync::Arc;

use ahash::AHashMap;

/// What to do with a channel's inventory webhook that our expectation does not explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InventoryUpdates {
    /// lockstep is the master: the next push or reconciliation overwrites the edit.
    #[default]
    Ignore,
    /// After a settle window, the unexplained difference becomes an adjustment.
    Delta,
    /// The channel's level is taken as a count.
    Count,
}

/// What a channel is shown: `target = clamp(available - buffer, 0, max)`, and what its
/// own inventory reports mean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRule {
    pub name: String,
    pub buffer: i64,
    pub max: Option<i64>,
    pub inventory_updates: InventoryUpdates,
    /// The channel refuses a write whose compare value is stale (Shopify): a sale it made
    /// before our write cannot have been overwritten by it.
    pub compare_and_set: bool,
}

/// A configured channel, by its place in the registry (`ChannelRules`). `CHANNELS_MAX` is
/// more than any seller configures; the config refuses more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(u16);

/// The most channels one set of settings may configure: what a `ChannelId` can name.
pub const CHANNELS_MAX: usize = u16::MAX as usize;

impl ChannelId {
    /// Its place, for tables kept outside the core (`ByChannel` is the usual one).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The configured channels' rules, and their ids by name. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct ChannelRules {
    rules: Arc<[ChannelRule]>,
    by_name: Arc<AHashMap<String, ChannelId>>,
}

impl PartialEq for ChannelRules {
    fn eq(&self, other: &ChannelRules) -> bool {
        self.rules == other.rules
    }
}

impl Eq for ChannelRules {}

impl ChannelRules {
    /// The registry of `rules`, in their order. Names are unique (the config checks it);
    /// a repeated name keeps its first id.
    ///
    /// # Panics
    /// With more than `CHANNELS_MAX` channels, which `Config::validate` refuses first.
    pub fn new(rules: Vec<ChannelRule>) -> ChannelRules {
        assert!(rules.len() <= CHANNELS_MAX, "too many channels");
        let mut by_name = AHashMap::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            by_name
                .entry(rule.name.clone())
                .or_insert(ChannelId(i as u16));
        }
        ChannelRules {
            rules: rules.into(),
            by_name: Arc::new(by_name),
        }
    }

    /// The id of the channel named `name`, if it is configured.
    pub fn id_of(&self, name: &str) -> Option<ChannelId> {
        self.by_name.get(name).copied()
    }

    /// The rule of a channel. Ids come from this registry, so one is always in range.
    pub fn get(&self, id: ChannelId) -> &ChannelRule {
        &self.rules[id.index()]
    }

    /// The rule of the channel named `name`.
    pub fn named(&self, name: &str) -> Option<&ChannelRule> {
        self.id_of(name).map(|id| self.get(id))
    }

    /// Every channel with its id, in config order.
    pub fn iter(&self) -> impl Iterator<Item = (ChannelId, &ChannelRule)> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, rule)| (ChannelId(i as u16), rule))
    }

    /// A table with one entry per channel, made by `make`.
    pub fn table<T>(&self, mut make: impl FnMut(ChannelId, &ChannelRule) -> T) -> ByChannel<T> {
        ByChannel(self.iter().map(|(id, rule)| make(id, rule)).collect())
    }

    /// A table made by a `make` that may fail: the first failure, or the whole table.
    pub fn try_table<T, E>(
        &self,
        mut make: impl FnMut(ChannelId, &ChannelRule) -> Result<T, E>,
    ) -> Result<ByChannel<T>, E> {
        Ok(ByChannel(
            self.iter()
                .map(|(id, rule)| make(id, rule))
                .collect::<Result<_, _>>()?,
        ))
    }
}

impl From<Vec<ChannelRule>> for ChannelRules {
    fn from(rules: Vec<ChannelRule>) -> ChannelRules {
        ChannelRules::new(rules)
    }
}

impl FromIterator<ChannelRule> for ChannelRules {
    fn from_iter<I: IntoIterator<Item = ChannelRule>>(rules: I) -> ChannelRules {
        ChannelRules::new(rules.into_iter().collect())
    }
}

/// One `T` per configured channel, looked up by id (never by a position of its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByChannel<T>(Vec<T>);

impl<T> ByChannel<T> {
    /// A table of the same channels, each entry made from this one's.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> ByChannel<U> {
        ByChannel(self.0.iter().map(f).collect())
    }

    /// Every entry, in config order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

impl<T> Index<ChannelId> for ByChannel<T> {
    type Output = T;
    fn index(&self, id: ChannelId) -> &T {
        &self.0[id.index()]
    }
}

impl<T> IndexMut<ChannelId> for ByChannel<T> {
    fn index_mut(&mut self, id: ChannelId) -> &mut T {
        &mut self.0[id.index()]
    }
}

impl ChannelRule {
    pub fn target(&self, available: i64) -> i64 {
        let shown = (available - self.buffer).max(0);
        self.max.map_or(shown, |max| shown.min(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> ChannelRule {
        ChannelRule {
            name: name.into(),
            buffer: 0,
            max: None,
            inventory_updates: InventoryUpdates::Ignore,
            compare_and_set: false,
        }
    }

    #[test]
    fn ids_follow_the_configured_order_and_names_find_them() {
        let rules = ChannelRules::new(vec![rule("shop"), rule("woo"), rule("ebay")]);
        let woo = rules.id_of("woo").unwrap();
        assert_eq!(rules.get(woo).name, "woo");
        assert_eq!(rules.id_of("etsy"), None);
        let names: Vec<&str> = rules.iter().map(|(_, r)| r.name.as_str()).collect();
        assert_eq!(names, ["shop", "woo", "ebay"]);
        let table = rules.table(|id, r| (id, r.name.len()));
        assert_eq!(table[woo], (woo, 3));
        assert_eq!(table.map(|(_, len)| len * 2)[woo], 6);
    }
}
