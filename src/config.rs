//! Configuration: the TOML file of DESIGN §4, parsed with serde and then validated so
//! that every problem is reported with the field it is in and why.
//!
//! `[server]` is the engine's own; `[[channels]]` are parsed and validated now and used by
//! propagation; `[catalog]` maps our SKUs to the ids channels use for their items.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
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
            admin_token: None,
            idempotency_days: 7,
            horizon_hours: 72,
        }
    }
}

/// The channel kinds lockstep speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Shopify,
    Woocommerce,
    Bigcommerce,
    Amazon,
    Ebay,
    Walmart,
    Etsy,
    Tiktok,
    Webhook,
}

impl ChannelKind {
    /// Whether the kind names items by its own ids, so that only catalog-mapped SKUs are
    /// pushed to it (the `webhook` kind uses our SKUs).
    pub fn names_items_by_own_ids(self) -> bool {
        self != ChannelKind::Webhook
    }

    /// Credentials a channel of this kind cannot work without.
    fn required(self) -> &'static [&'static str] {
        match self {
            ChannelKind::Shopify => &[
                "webhook_secret",
                "access_token",
                "api_version",
                "location_id",
            ],
            ChannelKind::Woocommerce => &["webhook_secret", "consumer_key", "consumer_secret"],
            ChannelKind::Bigcommerce => &["webhook_secret", "store_hash", "access_token"],
            ChannelKind::Amazon => &[
                "client_id",
                "client_secret",
                "refresh_token",
                "seller_id",
                "marketplace_id",
                "auth_header",
                "sqs_queue_url",
                "aws_access_key_id",
                "aws_secret_access_key",
            ],
            ChannelKind::Ebay => &["client_id", "client_secret", "refresh_token"],
            ChannelKind::Walmart => &["client_id", "client_secret"],
            ChannelKind::Etsy => &[
                "webhook_secret",
                "client_id",
                "shared_secret",
                "refresh_token",
                "shop_id",
            ],
            ChannelKind::Tiktok => &["app_key", "app_secret", "refresh_token", "shop_cipher"],
            ChannelKind::Webhook => &["webhook_secret"],
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

/// `[[channels]]`: one sales channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Webhooks for this channel arrive at `/webhooks/{name}`.
    pub name: String,
    pub kind: ChannelKind,
    pub base_url: String,
    /// The HMAC key of inbound webhooks (and of outbound ones for kind `webhook`).
    pub webhook_secret: Option<String>,
    /// The previous secret, still accepted while a rotation is under way.
    pub previous_webhook_secret: Option<String>,
    // Credentials; which ones a kind needs is `ChannelKind::required`.
    pub access_token: Option<String>,
    pub api_version: Option<String>,
    pub location_id: Option<String>,
    pub consumer_key: Option<String>,
    pub consumer_secret: Option<String>,
    pub store_hash: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Etsy: the app's shared secret, sent with the keystring (`client_id`) in every
    /// call's `x-api-key` as `keystring:shared_secret` (required since 2026-02-09).
    pub shared_secret: Option<String>,
    pub refresh_token: Option<String>,
    pub seller_id: Option<String>,
    pub marketplace_id: Option<String>,
    pub auth_header: Option<String>,
    /// Amazon: the seller's SQS queue that SP-API sends `ORDER_CHANGE` to
    /// (`https://sqs.{region}.amazonaws.com/{account}/{name}`).
    pub sqs_queue_url: Option<String>,
    /// Amazon: the AWS credentials that may receive and delete the queue's messages.
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    /// Amazon: the queue's region, when its URL does not say it (`sqs.{region}.…`).
    pub aws_region: Option<String>,
    pub app_key: Option<String>,
    pub app_secret: Option<String>,
    pub shop_id: Option<String>,
    pub shop_cipher: Option<String>,
    /// The OAuth token endpoint (Amazon's Login with Amazon, eBay, Walmart, Etsy), when
    /// not the kind's default.
    pub token_url: Option<String>,
    /// Walmart: how its webhooks authenticate, as chosen at subscription: `hmac` (the
    /// default; HMAC-SHA256 of the body keyed with `client_secret`) or `basic`
    /// (`webhook_secret` holds `user:password`).
    pub webhook_auth: Option<String>,
    /// eBay: revisions allowed per listing per day (default 250, eBay's limit).
    pub revision_limit: Option<u32>,
    /// eBay: the UTC offset, in hours, of the day the revision limit counts (default -8:
    /// midnight Pacific standard time; when eBay's day turns is unverified).
    pub revision_day_utc_offset_h: Option<i64>,
    /// Walmart: a change to this many units or fewer, downward, cannot wait for the
    /// inventory feed and goes by `PUT /v3/inventory` at once (default 10).
    pub urgent_at_or_below: Option<i64>,
    /// Walmart: inventory feeds per hour, Walmart's limit (default 10); 0 sends every
    /// change by `PUT /v3/inventory`.
    pub feeds_per_hour: Option<u32>,
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
}

fn default_reconcile_interval_s() -> u64 {
    300
}

fn default_reconcile_grace_s() -> u64 {
    60
}

impl ChannelConfig {
    /// The SQS queue's region: `aws_region`, else the one its URL names
    /// (`sqs.{region}.amazonaws.com`).
    pub fn sqs_region(&self) -> Option<String> {
        if let Some(region) = self.aws_region.as_deref().filter(|r| !r.trim().is_empty()) {
            return Some(region.trim().to_string());
        }
        let url = self.sqs_queue_url.as_deref()?;
        let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
        let region = host.strip_prefix("sqs.")?.split('.').next()?;
        (!region.is_empty() && host.ends_with(".amazonaws.com")).then(|| region.to_string())
    }

    fn credential(&self, name: &str) -> Option<&str> {
        let value = match name {
            "webhook_secret" => &self.webhook_secret,
            "access_token" => &self.access_token,
            "api_version" => &self.api_version,
            "location_id" => &self.location_id,
            "consumer_key" => &self.consumer_key,
            "consumer_secret" => &self.consumer_secret,
            "store_hash" => &self.store_hash,
            "client_id" => &self.client_id,
            "client_secret" => &self.client_secret,
            "shared_secret" => &self.shared_secret,
            "refresh_token" => &self.refresh_token,
            "seller_id" => &self.seller_id,
            "marketplace_id" => &self.marketplace_id,
            "auth_header" => &self.auth_header,
            "sqs_queue_url" => &self.sqs_queue_url,
            "aws_access_key_id" => &self.aws_access_key_id,
            "aws_secret_access_key" => &self.aws_secret_access_key,
            "app_key" => &self.app_key,
            "app_secret" => &self.app_secret,
            "shop_id" => &self.shop_id,
            "shop_cipher" => &self.shop_cipher,
            _ => return None,
        };
        value.as_deref()
    }
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
        self.catalog_rows()?;
        Ok(())
    }

    /// Reads and checks the catalog (none when no `[catalog]` is configured).
    pub fn catalog_rows(&self) -> Result<Vec<CatalogRow>, ConfigError> {
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
            check_item_id(*kind, &row.item_id).map_err(|reason| bad(reason.into()))?;
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
                    max: c.max,
                    inventory_updates: c.inventory_updates,
                    compare_and_set: c.kind == ChannelKind::Shopify,
                })
                .collect(),
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
    for field in channel.kind.required() {
        if channel
            .credential(field)
            .is_none_or(|v| v.trim().is_empty())
        {
            return Err(invalid(
                at(field),
                format!("required for kind {:?}", channel.kind),
            ));
        }
    }
    validate_kind_fields(channel, &at)?;
    if !(0..=crate::core::event::QTY_MAX).contains(&channel.buffer) {
        return Err(invalid(at("buffer"), "0 or more units"));
    }
    if channel.max.is_some_and(|m| m < 0) {
        return Err(invalid(at("max"), "0 or more units"));
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

/// The checks of the fields only some kinds take (secrets' forms, headers, versions).
fn validate_kind_fields(
    channel: &ChannelConfig,
    at: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    if channel.kind == ChannelKind::Webhook {
        for (field, secret) in [
            ("webhook_secret", &channel.webhook_secret),
            ("previous_webhook_secret", &channel.previous_webhook_secret),
        ] {
            if let Some(secret) = secret {
                check_whsec(secret).map_err(|reason| invalid(at(field), reason))?;
            }
        }
    }
    if matches!(channel.kind, ChannelKind::Amazon | ChannelKind::Bigcommerce) {
        if let Some(header) = &channel.auth_header {
            let ok = header
                .split_once(':')
                .is_some_and(|(n, v)| !n.trim().is_empty() && !v.trim().is_empty());
            if !ok {
                return Err(invalid(
                    at("auth_header"),
                    "the shared header as \"Name: value\"",
                ));
            }
        }
    }
    if channel.kind == ChannelKind::Etsy {
        // Both go into the `x-api-key` header as `keystring:shared_secret`.
        for (field, value) in [
            ("client_id", &channel.client_id),
            ("shared_secret", &channel.shared_secret),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| !v.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(invalid(
                    at(field),
                    "printable ASCII without spaces (it is sent in the x-api-key header)",
                ));
            }
        }
    }
    if channel.kind == ChannelKind::Amazon {
        if let Some(url) = &channel.sqs_queue_url {
            check_base_url(url).map_err(|reason| invalid(at("sqs_queue_url"), reason))?;
            if channel.sqs_region().is_none() {
                return Err(invalid(
                    at("aws_region"),
                    "required when sqs_queue_url is not https://sqs.{region}.amazonaws.com/…",
                ));
            }
        }
    }
    if channel.kind == ChannelKind::Tiktok && channel.access_token.is_some() {
        // TikTok access tokens expire: lockstep gets its own from the refresh
        // token and keeps the rotated one in the data directory.
        return Err(invalid(
            at("access_token"),
            "not used for kind tiktok (access tokens expire): set refresh_token; lockstep refreshes the access token itself",
        ));
    }
    if let Some(url) = &channel.token_url {
        check_base_url(url).map_err(|reason| invalid(at("token_url"), reason))?;
    }
    if channel
        .revision_day_utc_offset_h
        .is_some_and(|h| !(-12..=14).contains(&h))
    {
        return Err(invalid(at("revision_day_utc_offset_h"), "-12 to 14 hours"));
    }
    for (key, set) in [
        ("urgent_at_or_below", channel.urgent_at_or_below.is_some()),
        ("feeds_per_hour", channel.feeds_per_hour.is_some()),
    ] {
        if set && channel.kind != ChannelKind::Walmart {
            return Err(invalid(
                at(key),
                "only for kind walmart (its inventory feed)",
            ));
        }
    }
    if channel
        .urgent_at_or_below
        .is_some_and(|n| !(0..=crate::core::event::QTY_MAX).contains(&n))
    {
        return Err(invalid(at("urgent_at_or_below"), "0 or more units"));
    }
    if channel.feeds_per_hour.is_some_and(|n| n > 3_600) {
        return Err(invalid(at("feeds_per_hour"), "0 to 3600 feeds an hour"));
    }
    if channel.kind == ChannelKind::Walmart {
        let name_ok = channel
            .auth_header
            .as_deref()
            .is_none_or(|h| http::HeaderName::from_bytes(h.trim().as_bytes()).is_ok());
        if !name_ok {
            return Err(invalid(
                at("auth_header"),
                "for walmart, the name of the header Walmart signs in (authHeaderName)",
            ));
        }
        match channel.webhook_auth.as_deref() {
            None | Some("hmac") => {}
            Some("basic")
                if channel
                    .webhook_secret
                    .as_deref()
                    .is_some_and(|s| s.contains(':')) => {}
            Some("basic") => {
                return Err(invalid(
                    at("webhook_secret"),
                    "webhook_auth = \"basic\" needs webhook_secret = \"user:password\"",
                ))
            }
            Some(_) => return Err(invalid(at("webhook_auth"), "\"hmac\" or \"basic\"")),
        }
    }
    if channel.kind == ChannelKind::Shopify {
        let version = channel.api_version.as_deref().unwrap_or_default();
        let ok = version.len() == 7
            && version.as_bytes()[4] == b'-'
            && version[..4]
                .bytes()
                .chain(version[5..].bytes())
                .all(|b| b.is_ascii_digit());
        if !ok {
            return Err(invalid(
                at("api_version"),
                "a Shopify API version like \"2026-01\"",
            ));
        }
    }
    Ok(())
}

/// The form of a catalog `item_id` for kinds whose ids have one.
fn check_item_id(kind: ChannelKind, id: &str) -> Result<(), &'static str> {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match kind {
        ChannelKind::Shopify => {
            let n = id
                .strip_prefix("gid://shopify/InventoryItem/")
                .unwrap_or(id);
            if number(n) {
                Ok(())
            } else {
                Err("a Shopify item_id is the inventory item's number or its gid://shopify/InventoryItem/ form")
            }
        }
        ChannelKind::Woocommerce => match id.split_once('/') {
            None if number(id) => Ok(()),
            Some((parent, variation)) if number(parent) && number(variation) => Ok(()),
            _ => Err("a WooCommerce item_id is a product id, or parent/variation for a variation"),
        },
        ChannelKind::Bigcommerce if number(id) => Ok(()),
        ChannelKind::Bigcommerce => Err("a BigCommerce item_id is the variant id"),
        ChannelKind::Ebay | ChannelKind::Etsy | ChannelKind::Tiktok => match id.split_once('/') {
            Some((a, b)) if number(a) && number(b) => Ok(()),
            _ => Err(match kind {
                ChannelKind::Ebay => "an eBay item_id is listing_id/offer_id",
                ChannelKind::Etsy => "an Etsy item_id is listing_id/product_id",
                _ => "a TikTok Shop item_id is product_id/sku_id",
            }),
        },
        // Amazon and Walmart name items by the seller SKU listed there (any text).
        _ => Ok(()),
    }
}

fn check_base_url(url: &str) -> Result<(), String> {
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

/// A Standard Webhooks secret: `whsec_` and base64 of at least 24 bytes.
fn check_whsec(secret: &str) -> Result<(), String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("a Standard Webhooks secret starts with \"whsec_\"")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the part after \"whsec_\" is not base64: {e}"))?;
    if bytes.len() < 24 {
        return Err(format!("the key is {} bytes; use at least 24", bytes.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
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
        let missing = EXAMPLE.replace("consumer_secret = \"cs_x\"", "");
        let err = Config::parse(&missing).unwrap().validate().unwrap_err();
        assert_eq!(err.field, "channels[1].consumer_secret");

        let bad_url = EXAMPLE.replace("https://shop.example", "ftp://shop.example");
        assert_eq!(
            Config::parse(&bad_url)
                .unwrap()
                .validate()
                .unwrap_err()
                .field,
            "channels[1].base_url"
        );

        let bad_secret = EXAMPLE.replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "plain");
        assert_eq!(
            Config::parse(&bad_secret)
                .unwrap()
                .validate()
                .unwrap_err()
                .field,
            "channels[2].webhook_secret"
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
    fn marketplace_settings_are_checked() {
        let walmart = "\n[[channels]]\nname = \"wm\"\nkind = \"walmart\"\nbase_url = \"https://m.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\n";
        let field = |extra: &str| {
            Config::parse(&format!("{EXAMPLE}{walmart}{extra}"))
                .unwrap()
                .validate()
                .err()
                .map(|e| e.field)
        };
        assert_eq!(field(""), None);
        assert_eq!(
            field("auth_header = \"WM-Sig: x\""),
            Some("channels[3].auth_header".into())
        );
        assert_eq!(
            field("webhook_auth = \"oauth\""),
            Some("channels[3].webhook_auth".into())
        );
        assert_eq!(
            field("webhook_auth = \"basic\""),
            Some("channels[3].webhook_secret".into())
        );
        assert_eq!(
            field("token_url = \"nope\""),
            Some("channels[3].token_url".into())
        );
        assert_eq!(
            field("revision_day_utc_offset_h = 20"),
            Some("channels[3].revision_day_utc_offset_h".into())
        );
        assert_eq!(field("feeds_per_hour = 0\nurgent_at_or_below = 25"), None);
        for (line, at) in [
            ("idempotency_days = 4294967295", "server.idempotency_days"),
            ("horizon_hours = 4294967295", "server.horizon_hours"),
        ] {
            let text = EXAMPLE.replacen("[server]", &format!("[server]\n{line}"), 1);
            let err = Config::parse(&text).unwrap().validate().unwrap_err();
            assert_eq!(err.field, at, "{err}");
        }
        assert_eq!(
            field("feeds_per_hour = 100000"),
            Some("channels[3].feeds_per_hour".into())
        );
        assert_eq!(
            field("urgent_at_or_below = -1"),
            Some("channels[3].urgent_at_or_below".into())
        );
        // The feed keys are Walmart's alone.
        let woo = EXAMPLE.replacen(
            "kind = \"woocommerce\"",
            "kind = \"woocommerce\"\nfeeds_per_hour = 5",
            1,
        );
        let err = Config::parse(&woo).unwrap().validate().unwrap_err();
        assert!(err.reason.contains("only for kind walmart"), "{err}");
        let amazon = "\n[[channels]]\nname = \"az\"\nkind = \"amazon\"\nbase_url = \"https://sp.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\nrefresh_token = \"r\"\nseller_id = \"A\"\nmarketplace_id = \"M\"\nauth_header = \"no-colon\"\nsqs_queue_url = \"https://sqs.eu-west-1.amazonaws.com/1/q\"\naws_access_key_id = \"AK\"\naws_secret_access_key = \"SK\"\n";
        let err = Config::parse(&format!("{EXAMPLE}{amazon}"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "channels[3].auth_header");
    }

    #[test]
    fn the_sqs_region_comes_from_the_queue_url_or_aws_region() {
        let amazon = "\n[[channels]]\nname = \"az\"\nkind = \"amazon\"\nbase_url = \"https://sp.example\"\nclient_id = \"i\"\nclient_secret = \"s\"\nrefresh_token = \"r\"\nseller_id = \"A\"\nmarketplace_id = \"M\"\nauth_header = \"k: v\"\naws_access_key_id = \"AK\"\naws_secret_access_key = \"SK\"\n";
        let parse = |extra: &str| Config::parse(&format!("{EXAMPLE}{amazon}{extra}")).unwrap();
        let missing = parse("").validate().unwrap_err();
        assert_eq!(missing.field, "channels[3].sqs_queue_url");
        let aws = parse("sqs_queue_url = \"https://sqs.eu-west-1.amazonaws.com/1/q\"");
        assert!(aws.validate().is_ok());
        assert_eq!(aws.channels[3].sqs_region().as_deref(), Some("eu-west-1"));
        let local = parse("sqs_queue_url = \"http://127.0.0.1:9/1/q\"");
        assert_eq!(
            local.validate().unwrap_err().field,
            "channels[3].aws_region"
        );
        let named = parse("sqs_queue_url = \"http://127.0.0.1:9/1/q\"\naws_region = \"us-east-2\"");
        assert!(named.validate().is_ok());
        assert_eq!(named.channels[3].sqs_region().as_deref(), Some("us-east-2"));
    }

    #[test]
    fn etsy_needs_its_shared_secret_in_a_header_safe_form() {
        let etsy = "\n[[channels]]\nname = \"et\"\nkind = \"etsy\"\nbase_url = \"https://e.example\"\nwebhook_secret = \"w\"\nclient_id = \"key\"\nrefresh_token = \"r\"\nshop_id = \"1\"\n";
        let field = |extra: &str| {
            Config::parse(&format!("{EXAMPLE}{etsy}{extra}"))
                .unwrap()
                .validate()
                .err()
                .map(|e| e.field)
        };
        assert_eq!(field(""), Some("channels[3].shared_secret".into()));
        assert_eq!(field("shared_secret = \"s3cret\""), None);
        assert_eq!(
            field("shared_secret = \"has space\""),
            Some("channels[3].shared_secret".into())
        );
    }
}
