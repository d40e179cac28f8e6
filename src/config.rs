//! Configuration: the TOML file of DESIGN §4, parsed with serde and then validated so
//! that every problem is reported with the field it is in and why.
//!
//! `[server]` is the engine's own. `[[channels]]`: the keys every kind shares are parsed
//! and validated here; a kind's own keys stay in `ChannelConfig::settings`, read and
//! checked by that kind's file (`channels::check`; `cli::load_config` runs both).
//! `[catalog]` maps our SKUs to the ids channels use for their items (each kind checks
//! the form of its own ids through `catalog_rows_checked`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::clock::{Micros, MICROS_PER_HOUR};
use crate::core::channels::CHANNELS_MAX;
use crate::core::event::SKU_BYTES_MAX;
use crate::core::{ChannelId, ChannelRule, ChannelRules, CoreConfig};

/// A configuration problem: the field it is in and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The dotted path of the field, e.g. `channels[1].base_url`.
    pub field: String,
    pub reason: String,
}

/// The shortest admin token taken on a listener open to the network.
pub const ADMIN_TOKEN_CHARS_MIN: usize = 16;
/// The longest idempotency window: ten years.
pub const IDEMPOTENCY_DAYS_MAX: u32 = 3_653;
/// The longest reordering horizon: a year.
pub const HORIZON_HOURS_MAX: u32 = 8_784;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    pub catalog: Option<CatalogConfig>,
    /// Where the file was read from; relative paths inside it are relative to its folder.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The one HTTP listener: webhooks, the API, /healthz and /metrics.
    pub listen: SocketAddr,
    /// An extra listener serving only /metrics, for scrapers on another interface.
    pub metrics_listen: Option<SocketAddr>,
    /// Most connections a listener takes at once (default: what the open-file limit
    /// leaves after the shards' storage, up to 16,384).
    pub connections_max: Option<usize>,
    pub data_dir: PathBuf,
    /// 0: one shard per core (or, on existing data, the count it was created with).
    pub shards: usize,
    /// Pin each shard thread to a core of its own (shard i on core i mod cores). Off by
    /// default: the HTTP workers and the storage's workers run on every core, so a pinned
    /// shard waits for its core while another stands idle (measured: one-event ingest 5%
    /// faster unpinned on 2 cores, README "Unpinned shards"). For a machine whose other
    /// cores are kept for the rest.
    pub pin_shards: bool,
    /// When set, `/v1/*` requires `Authorization: Bearer <admin_token>`.
    pub admin_token: Option<String>,
    /// How long idempotency keys are kept: longer than every channel's retry window.
    pub idempotency_days: u32,
    /// Movements older than this are folded; counts older than this are stale.
    pub horizon_hours: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            metrics_listen: None,
            connections_max: None,
            data_dir: PathBuf::from("lockstep-data"),
            shards: 0,
            pin_shards: false,
            admin_token: None,
            idempotency_days: 7,
            horizon_hours: 72,
        }
    }
}

/// Declares `ChannelKind` and `ChannelKind::ALL` from one list, so the list of every kind
/// cannot miss one.
macro_rules! channel_kinds {
    ($($kind:ident),+ $(,)?) => {
        /// The channel kinds lockstep speaks (`kind = "..."`, lowercase). Each has its
        /// file in `channels/` and its line in `channels::kind`'s registry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum ChannelKind {
            $($kind),+
        }

        impl ChannelKind {
            /// Every kind, in the order declared.
            pub const ALL: &'static [ChannelKind] = &[$(ChannelKind::$kind),+];
        }
    };
}

channel_kinds!(
    Shopify,
    Woocommerce,
    Bigcommerce,
    Amazon,
    Ebay,
    Walmart,
    Etsy,
    Tiktok,
    Webhook,
);

impl ChannelKind {
    /// The kind as the config names it (`kind = "woocommerce"`).
    pub fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }

    /// Whether the kind names items by its own ids, so that only catalog-mapped SKUs are
    /// pushed to it (the `webhook` kind uses our SKUs).
    pub fn names_items_by_own_ids(self) -> bool {
        self != ChannelKind::Webhook
    }

    /// The most one listing's stock write accepts, where the channel documents a bound
    /// that a seller's stock can reach: a target above it would be refused, write after
    /// write, and the listing never updated, so the kind's bound caps what it is shown
    /// (`core_config`), as `max` does. Shopify's bound (1,000,000,000) and BigCommerce's
    /// (2,147,483,647) are at or above what one event may count (`QTY_MAX`); Amazon's
    /// `fulfillment_availability` has `minimum: 0` and no maximum, eBay's quantity is an
    /// int32, and Walmart and WooCommerce say nothing.
    pub fn shown_max(self) -> Option<i64> {
        match self {
            // Update Inventory: "non-negative numbers (include number 0) And less then
            // 99999" (Partner Center's text, as lywzx/tiktok-partner-api copied it:
            // packages/tk-origin-api/src/products/UpdateInventory.ts). Read literally:
            // at most 99,998, which is also safe if TikTok meant 99,999.
            ChannelKind::Tiktok => Some(99_998),
            // Etsy's API answers "There was a problem with /quantity : cannot be greater
            // than 999" (quoted in https://github.com/etsy/open-api/issues/214); its
            // published spec states no maximum. Our simulator takes 0 to 999 an offering.
            ChannelKind::Etsy => Some(999),
            _ => None,
        }
    }
}

pub use crate::core::InventoryUpdates;

/// A rate limit override: the channel's defaults come from its adapter.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

/// `[[channels]]`: one sales channel. The keys every kind shares are fields here; a
/// kind's own keys (credentials, ids, its limits) stay in `settings`, read and checked by
/// that kind's file in `channels/` (its `Settings`), so a new kind adds no field here.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelConfig {
    /// Webhooks for this channel arrive at `/webhooks/{name}`.
    pub name: String,
    pub kind: ChannelKind,
    pub base_url: String,
    /// The HMAC key of inbound webhooks (and of outbound ones for kind `webhook`).
    pub webhook_secret: Option<String>,
    /// The previous secret, still accepted while a rotation is under way.
    pub previous_webhook_secret: Option<String>,
    /// Units held back from this channel: it is pushed `available - buffer`.
    #[serde(default)]
    pub buffer: i64,
    /// The most this channel is ever shown.
    pub max: Option<i64>,
    pub rate_limit: Option<RateLimit>,
    /// Items per push request, at most the channel's own limit.
    pub batch_max: Option<usize>,
    #[serde(default)]
    pub inventory_updates: InventoryUpdates,
    /// Seconds between reconciliations of this channel (default 300).
    #[serde(default = "default_reconcile_interval_s")]
    pub reconcile_interval_s: u64,
    /// Seconds a shortfall (the channel shows less than its target) must persist before
    /// reconciliation raises it: it may be an order not ingested yet (default 60).
    #[serde(default = "default_reconcile_grace_s")]
    pub reconcile_grace_s: u64,
    /// Seconds between polls of the channel's order listing, for kinds that poll
    /// (WooCommerce: the safety net for lost deliveries; default 60).
    pub poll_interval_s: Option<u64>,
    /// Which waiting SKU a channel is pushed first when its budget cannot carry every
    /// change at once (default `risk`).
    #[serde(default)]
    pub push_order: PushOrder,
    /// How a channel the data directory has not seen before starts (default `observe`):
    /// read and planned, written only once approved (`propagate/sync_state.rs`).
    #[serde(default)]
    pub first_sync: FirstSync,
    /// Every other key of the block: the kind's own, which its `Settings` in
    /// `channels/<kind>.rs` reads, refusing any it does not know (serde cannot deny
    /// unknown fields beside a flattened table, so the kind does).
    #[serde(flatten)]
    pub settings: toml::Table,
}

impl ChannelConfig {
    /// Whether the channel refuses a write whose compare value it does not show
    /// (compare-and-set): Shopify, whose `inventorySetQuantities` sends every item with an
    /// expectation with it (`changeFromQuantity`, `compareQuantity` before 2026-04) and
    /// refuses the call if the store shows another (`CHANGE_FROM_QUANTITY_STALE`,
    /// https://shopify.dev/docs/api/admin-graphql/2026-04/mutations/inventorySetQuantities).
    /// A sale the channel made before such a write cannot have been overwritten by it
    /// (`core::ChannelRule::compare_and_set`), and a write that took its compare changed
    /// what the channel showed by `quantity - expected` (`propagate::stale`).
    pub fn compares(&self) -> bool {
        self.kind == ChannelKind::Shopify
    }
}

/// `push_order`: how a channel's outbox orders the SKUs waiting for its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushOrder {
    /// Stock-outs first, then the SKUs the channel shows the most units beyond what they
    /// have, weighed by how fast they sell against what is left; increases last.
    #[default]
    Risk,
    /// The oldest change first, whatever it is: kept to measure `risk` against.
    FirstCome,
}

/// `first_sync`: whether a new channel waits for approval before lockstep writes to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstSync {
    /// Observe first: read the channel's levels, take its orders, plan, write nothing
    /// until `lockstep approve` (a store that is live today is never overwritten unseen).
    #[default]
    Observe,
    /// Push from the start: for automated set-ups, the demo and loadgen. Set on a channel
    /// that is observing, it approves it at the next start.
    Push,
}

fn default_reconcile_interval_s() -> u64 {
    300
}

fn default_reconcile_grace_s() -> u64 {
    60
}

/// `[catalog]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// A CSV file with the header `sku,channel,item_id,location_id`.
    pub path: PathBuf,
}

/// One row of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CatalogRow {
    pub sku: String,
    pub channel: String,
    pub item_id: String,
    #[serde(default)]
    pub location_id: Option<String>,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path.display().to_string(), format!("cannot read: {e}")))?;
        let mut config = Config::parse(&text)?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.validate()?;
        Ok(config)
    }

    /// `load`, for the command that writes the catalog (`lockstep catalog discover`):
    /// a configured catalog file that does not exist yet is not an error.
    pub fn load_before_catalog(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path.display().to_string(), format!("cannot read: {e}")))?;
        let mut config = Config::parse(&text)?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let missing = config
            .catalog
            .as_ref()
            .is_some_and(|c| !config.base_dir.join(&c.path).exists());
        match missing {
            true => config.validate_channels()?,
            false => config.validate()?,
        }
        Ok(config)
    }

    /// Parses TOML; the error names the key and the line.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| {
            let field = e.span().map_or_else(String::new, |span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            });
            invalid(field, e.message().to_string())
        })
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_channels()?;
        self.catalog_rows()?;
        Ok(())
    }

    /// `validate` without the catalog.
    fn validate_channels(&self) -> Result<(), ConfigError> {
        validate_server(&self.server)?;
        if self.channels.len() > CHANNELS_MAX {
            return Err(invalid(
                "channels",
                format!("{} channels; at most {CHANNELS_MAX}", self.channels.len()),
            ));
        }
        let mut names = HashSet::new();
        for (i, channel) in self.channels.iter().enumerate() {
            validate_channel(i, channel, &mut names)?;
        }
        Ok(())
    }

    /// Reads and checks the catalog (none when no `[catalog]` is configured).
    pub fn catalog_rows(&self) -> Result<Vec<CatalogRow>, ConfigError> {
        self.catalog_rows_checked(|_, _| Ok(()))
    }

    /// Reads the catalog, checking each `item_id` with `item_id` (the form each channel
    /// kind gives its ids is the kind's own: `channels::check` passes it).
    pub fn catalog_rows_checked(
        &self,
        item_id: impl Fn(ChannelKind, &str) -> Result<(), &'static str>,
    ) -> Result<Vec<CatalogRow>, ConfigError> {
        let Some(catalog) = &self.catalog else {
            return Ok(Vec::new());
        };
        let path = self.base_dir.join(&catalog.path);
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_path(&path)
            .map_err(|e| {
                invalid(
                    "catalog.path",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
        let headers = reader
            .headers()
            .map_err(|e| invalid("catalog.path", format!("{}: {e}", path.display())))?
            .clone();
        let header: Vec<&str> = headers.iter().collect();
        if header != ["sku", "channel", "item_id", "location_id"]
            && header != ["sku", "channel", "item_id"]
        {
            return Err(invalid(
                "catalog.path",
                format!(
                    "{}: the header must be sku,channel,item_id,location_id (found {})",
                    path.display(),
                    header.join(",")
                ),
            ));
        }
        let kinds: std::collections::HashMap<&str, ChannelKind> = self
            .channels
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        let mut seen = HashSet::new();
        let mut rows = Vec::new();
        for (i, row) in reader.deserialize::<CatalogRow>().enumerate() {
            let line = i + 2;
            let mut row = row.map_err(|e| {
                invalid(
                    "catalog.path",
                    format!("{} line {line}: {e}", path.display()),
                )
            })?;
            if row.location_id.as_deref() == Some("") {
                row.location_id = None;
            }
            let bad = |reason: String| {
                invalid(
                    "catalog.path",
                    format!("{} line {line}: {reason}", path.display()),
                )
            };
            if row.sku.is_empty() || row.sku.len() > SKU_BYTES_MAX {
                return Err(bad(format!("sku must be 1 to {SKU_BYTES_MAX} bytes")));
            }
            let Some(kind) = kinds.get(row.channel.as_str()) else {
                return Err(bad(format!("channel {:?} is not configured", row.channel)));
            };
            if row.item_id.is_empty() {
                return Err(bad("item_id is empty".into()));
            }
            item_id(*kind, &row.item_id).map_err(|reason| bad(reason.into()))?;
            if !seen.insert((
                row.channel.clone(),
                row.item_id.clone(),
                row.location_id.clone(),
            )) {
                return Err(bad(format!(
                    "item {:?} of channel {:?} is mapped twice",
                    row.item_id, row.channel
                )));
            }
            rows.push(row);
        }
        Ok(rows)
    }

    /// The settings that decide stock, as the core takes them.
    pub fn core_config(&self) -> CoreConfig {
        CoreConfig {
            horizon_us: Micros::from(self.server.horizon_hours) * MICROS_PER_HOUR,
            channels: self
                .channels
                .iter()
                .map(|c| ChannelRule {
                    name: c.name.clone(),
                    buffer: c.buffer,
                    max: match (c.max, c.kind.shown_max()) {
                        (Some(max), Some(bound)) => Some(max.min(bound)),
                        (max, bound) => max.or(bound),
                    },
                    inventory_updates: c.inventory_updates,
                    compare_and_set: c.compares(),
                })
                .collect(),
            // Set by the engine: from the settings history and the shards' clocks.
            ..CoreConfig::default()
        }
    }

    /// The one registry of the configured channels' ids (`core::ChannelRules`).
    pub fn registry(&self) -> ChannelRules {
        self.core_config().channels
    }

    /// The configuration of a channel of this config's registry.
    pub fn channel(&self, id: ChannelId) -> &ChannelConfig {
        &self.channels[id.index()]
    }

    /// How long idempotency keys are kept.
    pub fn key_retention_us(&self) -> Micros {
        Micros::from(self.server.idempotency_days) * 24 * MICROS_PER_HOUR
    }
}

/// `[server]`'s checks.
fn validate_server(server: &ServerConfig) -> Result<(), ConfigError> {
    if server.data_dir.as_os_str().is_empty() {
        return Err(invalid("server.data_dir", "must not be empty"));
    }
    if server
        .connections_max
        .is_some_and(|n| n == 0 || n > 1_000_000)
    {
        return Err(invalid("server.connections_max", "1 to 1,000,000"));
    }
    if server.shards > 1024 {
        return Err(invalid(
            "server.shards",
            "at most 1024 (0 means one per core)",
        ));
    }
    if server
        .admin_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err(invalid(
            "server.admin_token",
            "must not be empty; leave it out to disable",
        ));
    }
    // Open to the network, the token is all that stands between anyone who can reach
    // the listener and the stock, and nothing limits how many a caller may try: a short
    // one ("change-me", a word) is guessed. On loopback, only this machine can try.
    if let Some(token) = server
        .admin_token
        .as_deref()
        .filter(|t| !server.listen.ip().is_loopback() && t.chars().count() < ADMIN_TOKEN_CHARS_MIN)
    {
        return Err(invalid(
            "server.admin_token",
            format!(
                "is {} characters; at least {ADMIN_TOKEN_CHARS_MIN} when listen ({}) is not a \
                 loopback address (a random one: openssl rand -hex 24)",
                token.chars().count(),
                server.listen
            ),
        ));
    }
    if server.admin_token.is_none() && !server.listen.ip().is_loopback() {
        // The admin API shares the listener with the public webhooks: without a
        // token, anyone who can deliver a webhook could set stock.
        return Err(invalid(
            "server.admin_token",
            format!(
                "required when listen ({}) is not a loopback address: /v1/* would be open to the network",
                server.listen
            ),
        ));
    }
    if server.idempotency_days == 0 {
        return Err(invalid(
            "server.idempotency_days",
            "must be at least 1: channels retry for days",
        ));
    }
    // Upper bounds keep the microsecond arithmetic far from overflow (`u32::MAX`
    // days is 11 million years).
    if server.idempotency_days > IDEMPOTENCY_DAYS_MAX {
        return Err(invalid(
            "server.idempotency_days",
            format!("at most {IDEMPOTENCY_DAYS_MAX} (ten years)"),
        ));
    }
    if server.horizon_hours > HORIZON_HOURS_MAX {
        return Err(invalid(
            "server.horizon_hours",
            format!("at most {HORIZON_HOURS_MAX} (a year)"),
        ));
    }
    if server.horizon_hours == 0 {
        return Err(invalid("server.horizon_hours", "must be at least 1"));
    }
    Ok(())
}

/// `channels[i]`'s checks; `names` holds the names of the channels before it.
fn validate_channel<'a>(
    i: usize,
    channel: &'a ChannelConfig,
    names: &mut HashSet<&'a str>,
) -> Result<(), ConfigError> {
    let at = |field: &str| format!("channels[{i}].{field}");
    let name_ok = !channel.name.is_empty()
        && channel.name.len() <= 64
        && channel
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(invalid(
            at("name"),
            "1 to 64 characters of a-z, 0-9, '-' and '_' (it is a URL path segment)",
        ));
    }
    if channel.name == "api" {
        // The native API's events are the source `api`'s.
        return Err(invalid(at("name"), "\"api\" is the native API's own name"));
    }
    if !names.insert(channel.name.as_str()) {
        return Err(invalid(
            at("name"),
            format!("{:?} is used by another channel", channel.name),
        ));
    }
    check_base_url(&channel.base_url).map_err(|reason| invalid(at("base_url"), reason))?;
    // TOML has no null: `""` is how a key gets "cleared", and an empty HMAC key is one
    // anyone can sign with.
    for (key, secret) in [
        ("webhook_secret", &channel.webhook_secret),
        ("previous_webhook_secret", &channel.previous_webhook_secret),
    ] {
        if secret.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(invalid(
                at(key),
                "is empty: anyone can sign with an empty key; remove the line to have none",
            ));
        }
    }
    if !(0..=crate::core::event::QTY_MAX).contains(&channel.buffer) {
        return Err(invalid(at("buffer"), "0 or more units"));
    }
    if channel.max.is_some_and(|m| m < 0) {
        return Err(invalid(at("max"), "0 or more units"));
    }
    if let (Some(max), Some(bound)) = (channel.max, channel.kind.shown_max()) {
        if max > bound {
            return Err(invalid(
                at("max"),
                format!(
                    "at most {bound}: {} accepts no more for one listing (without `max`, it is \
                     shown up to that)",
                    channel.kind.name()
                ),
            ));
        }
    }
    if let Some(limit) = channel.rate_limit {
        if !(limit.requests_per_second > 0.0 && limit.requests_per_second.is_finite()) {
            return Err(invalid(
                at("rate_limit.requests_per_second"),
                "a positive number",
            ));
        }
        if limit.burst == 0 {
            return Err(invalid(at("rate_limit.burst"), "at least 1"));
        }
    }
    if channel.reconcile_interval_s == 0 {
        return Err(invalid(at("reconcile_interval_s"), "at least 1 second"));
    }
    if channel.poll_interval_s == Some(0) {
        return Err(invalid(at("poll_interval_s"), "at least 1 second"));
    }
    if channel.batch_max == Some(0) {
        return Err(invalid(at("batch_max"), "at least 1"));
    }
    Ok(())
}

/// Checks an `http://` or `https://` URL with a host (a channel's `base_url`, and the
/// URLs some kinds take beside it).
pub fn check_base_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

/// The design's example config (DESIGN §4), for the tests of the config and the kinds.
#[cfg(test)]
pub(crate) const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:7700"
data_dir = "lockstep-data"
shards = 0
admin_token = "change-me"

[[channels]]
name = "shop"
kind = "shopify"
base_url = "https://example.myshopify.com"
api_version = "2026-01"
webhook_secret = "s"
access_token = "shpat_x"
location_id = "gid://shopify/Location/1"
buffer = 2

[[channels]]
name = "woo"
kind = "woocommerce"
base_url = "https://shop.example"
webhook_secret = "s"
consumer_key = "ck_x"
consumer_secret = "cs_x"

[[channels]]
name = "erp"
kind = "webhook"
base_url = "https://erp.example/lockstep/stock"
webhook_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_in_examples_is_valid_with_its_catalog() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lockstep.toml");
        let config = Config::load(&path).unwrap();
        let rows = config.catalog_rows().unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(
            rows[2].location_id.as_deref(),
            Some("gid://shopify/Location/2")
        );
        assert_eq!(rows[3].item_id, "1201/1207");
    }

    #[test]
    fn the_design_example_is_valid() {
        let config = Config::parse(EXAMPLE).unwrap();
        config.validate().unwrap();
        assert_eq!(config.channels.len(), 3);
        assert_eq!(config.channels[0].buffer, 2);
        assert_eq!(config.server.idempotency_days, 7);
    }

    /// A kind's documented bound caps what its channels are shown, below a larger `max`
    /// or without one; a `max` above the bound is refused by name.
    #[test]
    fn a_kind_s_bound_caps_what_it_is_shown_and_a_larger_max_is_refused() {
        let tiktok = |max: &str| {
            format!(
                "{EXAMPLE}\n[[channels]]\nname = \"tt\"\nkind = \"tiktok\"\n\
                 base_url = \"https://open-api.tiktokglobalshop.com\"\n{max}"
            )
        };
        let maxes = |text: &str| -> Vec<Option<i64>> {
            let config = Config::parse(text).unwrap();
            config.validate().unwrap();
            config
                .core_config()
                .channels
                .iter()
                .map(|(_, rule)| rule.max)
                .collect()
        };
        assert_eq!(maxes(&tiktok("")), [None, None, None, Some(99_998)]);
        assert_eq!(maxes(&tiktok("max = 500")), [None, None, None, Some(500)]);
        let error = Config::parse(&tiktok("max = 99999"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(error.field, "channels[3].max");
        assert!(
            error
                .reason
                .starts_with("at most 99998: tiktok accepts no more"),
            "{error:?}"
        );
    }

    #[test]
    fn an_empty_webhook_secret_is_refused_by_name() {
        for (text, field) in [
            (
                EXAMPLE.replace(
                    "webhook_secret = \"s\"\naccess_token",
                    "webhook_secret = \" \"\naccess_token",
                ),
                "channels[0].webhook_secret",
            ),
            (
                EXAMPLE.replace("buffer = 2", "buffer = 2\nprevious_webhook_secret = \"\""),
                "channels[0].previous_webhook_secret",
            ),
        ] {
            let err = Config::parse(&text).unwrap().validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.reason.contains("empty"), "{err}");
        }
    }

    #[test]
    fn more_channels_than_an_id_can_name_are_refused() {
        let mut config = Config::parse(EXAMPLE).unwrap();
        let first = config.channels[0].clone();
        config.channels = (0..=CHANNELS_MAX)
            .map(|i| ChannelConfig {
                name: format!("c{i}"),
                ..first.clone()
            })
            .collect();
        assert_eq!(config.validate().unwrap_err().field, "channels");
    }

    #[test]
    fn errors_name_the_field() {
        let bad_url = EXAMPLE.replace("https://shop.example", "ftp://shop.example");
        assert_eq!(
            Config::parse(&bad_url)
                .unwrap()
                .validate()
                .unwrap_err()
                .field,
            "channels[1].base_url"
        );

        let twice = EXAMPLE.replace("name = \"woo\"", "name = \"shop\"");
        assert_eq!(
            Config::parse(&twice).unwrap().validate().unwrap_err().field,
            "channels[1].name"
        );

        let unknown = EXAMPLE.replace("shards = 0", "shard = 0");
        let err = Config::parse(&unknown).unwrap_err();
        assert!(err.reason.contains("unknown field `shard`"), "{err}");
        assert_eq!(err.field, "line 5");

        let kind = EXAMPLE.replace("kind = \"woocommerce\"", "kind = \"magento\"");
        assert!(Config::parse(&kind).unwrap_err().reason.contains("magento"));
    }

    #[test]
    fn windows_near_u32_max_are_refused() {
        for (line, at) in [
            ("idempotency_days = 4294967295", "server.idempotency_days"),
            ("horizon_hours = 4294967295", "server.horizon_hours"),
        ] {
            let text = EXAMPLE.replacen("[server]", &format!("[server]\n{line}"), 1);
            let err = Config::parse(&text).unwrap().validate().unwrap_err();
            assert_eq!(err.field, at, "{err}");
        }
    }
}
